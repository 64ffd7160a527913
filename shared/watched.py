"""A value loaded from config files (rules, watchlist, entity tables), reloaded when a file
changes: the load runs off the event loop, the new value replaces the old one in one assignment,
and a broken edit keeps the last good value (and says why, in the log and in ``error``)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often the files are looked at: a stat() per file, so a change is live within seconds.
CHECK_SECONDS = 2.0


def _stamp(paths: Sequence[str]) -> tuple[tuple[float, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime, st.st_size))
        except OSError:
            out.append((-1.0, -1))
    return tuple(out)


class Watched(Generic[T]):
    """``value`` is ``load()``'s result; ``await refresh()`` reloads it if a file changed.

    The first load happens in the constructor and raises: a service does not start on a broken file."""

    def __init__(self, what: str, paths: Sequence[str], load: Callable[[], T],
                 check_seconds: float = CHECK_SECONDS) -> None:
        self.what = what
        self.paths = [p for p in paths if p]
        self._load = load
        self.check_seconds = check_seconds
        self._stamp = _stamp(self.paths)
        self._checked = time.monotonic()
        self.value: T = load()
        self.error = ""
        self.version = 1
        self._lock = asyncio.Lock()

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self._checked < self.check_seconds:
            return False
        self._checked = now
        return True

    async def refresh(self, force: bool = False) -> bool:
        """Reload if a file changed since the last load (checked at most every ``check_seconds``)."""
        if not (force or self._due()):
            return False
        stamp = _stamp(self.paths)
        if stamp == self._stamp and not force:
            return False
        async with self._lock:
            self._stamp = stamp
            try:
                value = await asyncio.to_thread(self._load)
            except Exception as exc:  # any failure to load keeps the last good value
                self.error = str(exc) or repr(exc)
                log.error(f"{self.what} reload failed; keeping the previous {self.what}",
                          extra={"error": self.error[:1000], "files": self.paths})
                return False
            self.value = value
            self.error = ""
            self.version += 1
            log.info(f"{self.what} reloaded", extra={"files": self.paths, "version": self.version})
            return True
