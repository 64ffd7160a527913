"""The one backoff helper of the code base: capped exponential delays with jitter, and the
HTTP ``Retry-After`` header read as a delay.

Jitter spreads the retries of many replicas (or many hosts) so that they do not hit a recovering
Redis, broker or web server in lock-step.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number ``attempt`` (1 = the first retry): ``initial * factor**(attempt-1)``,
    at most ``cap``, then multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    initial: float = 0.2
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        if not self.jitter:
            return base
        spread = (rng or random).uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(self.cap * (1.0 + self.jitter), base * spread)

    async def sleep(self, attempt: int, stop: asyncio.Event | None = None) -> bool:
        """Wait the delay for ``attempt``; return False at once if ``stop`` is set meanwhile."""
        delay = self.delay(attempt)
        if stop is None:
            await asyncio.sleep(delay)
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        return not stop.is_set()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delta-seconds or an HTTP date); None if absent
    or unreadable. Never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
