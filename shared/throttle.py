"""A cheap "is it time yet?" for periodic checks made inside a message loop."""

from __future__ import annotations

import time

# How often the services look at their watched files (rules, watchlist, entity table): a stat()
# per file, so a change is live within seconds without a restart.
RELOAD_CHECK_SECONDS = 2.0


class Every:
    """``due()`` is true at most once per ``seconds`` (monotonic clock), never at creation."""

    def __init__(self, seconds: float = RELOAD_CHECK_SECONDS) -> None:
        self.seconds = seconds
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
