"""Redis connection and the idempotency helpers every stage uses.

All keys start with ``nw:`` and name their stage, so that an operator can tell them apart:
``nw:fetch:url:<hash>``, ``nw:clean:...``, ``nw:alert:fired:<rule>:<story>``.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30,
                                   socket_timeout=10, socket_connect_timeout=5)


def as_str(value: object) -> str:
    """A Redis reply as text (the client is set up for bytes; its type hints allow str and bool too)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")
