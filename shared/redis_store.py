"""Redis connection, and the keys more than one service reads or writes.

All keys start with ``nw:`` and name their owner, so that an operator can tell them apart. A
service's private keys are documented beside its code (``services/clean/dedup.py``,
``services/alert/service.py``, ``services/fetch/service.py``); the ones here cross services:

- ``nw:url:<article id>``: the life of an article URL. fetch sets ``inflight:<publisher>`` (short
  TTL) when it publishes the page; the alert stage, the last one, sets ``done`` (long TTL) once it
  has matched the tagged article and its alerts are on the broker. A URL is fetched only while it is
  neither, so a page lost on the way (a broker that died with it) is fetched again, and a finished
  one never is. A page a stage dead-letters is given up (``failed: dead-lettered by <stage>: …``,
  ``give_up_url``, by the runtime).
- ``nw:fetch:inflight:<publisher>`` (hash: article id → the item, JSON), ``nw:fetch:publisher:<id>``
  (heartbeat, ``PUBLISHER_TTL_SECONDS``) and ``nw:fetch:publishers`` (set of ids): the pages each
  fetch process has in flight, and whether it still runs. The alert stage's ``done`` takes the page
  out of its publisher's hash (``mark_url_done``, one script); a fetch process takes over the pages
  of a publisher whose heartbeat expired (``services/fetch/service.py``), and the local runner's
  drain counts what is left (``pages_in_flight``).
- ``nw:alert:fired:<alert id>``: the article that claimed a (rule, story) alert (the alert stage).
- ``nw:alert:sent:<alert id>``: the alert is on the broker (the runtime's once-key); its value is the
  article that made it.
- ``nw:once:pending:<once-key>``, ``nw:once:offsets:<topic>``, ``nw:once:instance:<id>``: the runtime's
  publish-once protocol (``shared.once``).
- ``nw:alert:shown:<alert id>``: the local runner, the alert topic's subscriber in the embedded
  setup, has shown the alert. After a loss of the in-memory broker, an alert sent but not shown
  went down with it: the runner re-arms it (``newswatch.runner.rearm_lost_alerts``).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from shared.settings import Settings


def _options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"decode_responses": False, "health_check_interval": 30, "socket_timeout": 10,
                               "socket_connect_timeout": 5}
    if settings.redis_password:
        options["password"] = settings.redis_password  # a password in the URL wins over this one
    return options


def connect_blocking(settings: Settings) -> redis.Redis:
    """The same connection as ``connect``, for code without an event loop (the local runner's)."""
    return redis.Redis.from_url(settings.redis_url, **_options(settings))


def connect(settings: Settings, max_connections: int | None = None) -> aioredis.Redis:
    """The client every service uses: ``NEWSWATCH_REDIS_URL`` (``rediss://`` for TLS, and a user and
    password in it if wanted), with ``NEWSWATCH_REDIS_PASSWORD`` when the URL carries no password.

    With ``max_connections``, commands beyond that many at once wait for a connection (a blocking
    pool) instead of failing: for a process with thousands of concurrent tasks (fetch)."""
    options = _options(settings)
    if max_connections is None:
        return aioredis.Redis.from_url(settings.redis_url, **options)
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=max_connections, timeout=30,
                                                    **options)
    return aioredis.Redis(connection_pool=pool)


def as_str(value: object) -> str:
    """A Redis reply as text (the client is set up for bytes; its type hints allow str and bool too)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


# The compare-and-delete of ``delete_if_holds``; public for a pipeline that releases a claim with its writes.
DELETE_IF_HOLDS = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"


async def delete_if_holds(client: aioredis.Redis, key: str, value: str) -> bool:
    """Delete ``key`` only while it still holds ``value`` (a claim given back by its own holder, not one
    another process took meanwhile), in one script. True if it was deleted."""
    return bool(await client.eval(DELETE_IF_HOLDS, 1, key, value))


URL_INFLIGHT = "inflight"
URL_DONE = "done"
INFLIGHT_PREFIX = "nw:fetch:inflight:"
PUBLISHERS_KEY = "nw:fetch:publishers"
# A fetch process beats every PUBLISHER_BEAT_SECONDS; one silent for PUBLISHER_TTL_SECONDS is gone and
# its pages in flight are taken over (the once-keys' instance heartbeat has the same figures).
PUBLISHER_BEAT_SECONDS = 4.0
PUBLISHER_TTL_SECONDS = 15


def inflight_value(publisher: str) -> str:
    """The state of a URL in flight, naming the fetch process that published it."""
    return f"{URL_INFLIGHT}:{publisher}"


def is_inflight(state: str) -> bool:
    return state == URL_INFLIGHT or state.startswith(URL_INFLIGHT + ":")


def inflight_key(publisher: str) -> str:
    return INFLIGHT_PREFIX + publisher


def publisher_key(publisher: str) -> str:
    return f"nw:fetch:publisher:{publisher}"


def alert_claim_key(alert_id: str) -> str:
    return f"nw:alert:fired:{alert_id}"


def alert_sent_key(alert_id: str) -> str:
    return f"nw:alert:sent:{alert_id}"


def alert_shown_key(alert_id: str) -> str:
    return f"nw:alert:shown:{alert_id}"


ALERT_SENT_PREFIX = alert_sent_key("")


def url_key(article_id: str) -> str:
    return f"nw:url:{article_id}"


async def url_state(client: aioredis.Redis, article_id: str) -> str:
    """"" (unknown), "inflight", "done", or why it was given up ("failed: …")."""
    value = await client.get(url_key(article_id))
    return as_str(value) if value is not None else ""


async def mark_url(client: aioredis.Redis, article_id: str, state: str, ttl_seconds: float) -> None:
    await client.set(url_key(article_id), state, ex=max(1, int(ttl_seconds)))


# KEYS: the URL's state; ARGV: TTL, the in-flight hashes' prefix, the article id. The page leaves
# the hash of the process that has it in flight (named in the state) as the state becomes done.
_MARK_DONE = """
local was = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[1])
if was and string.sub(was, 1, 9) == 'inflight:' then
  redis.call('HDEL', ARGV[2] .. string.sub(was, 10), ARGV[3])
end
return 1
"""


async def mark_url_done(client: aioredis.Redis, article_id: str, ttl_seconds: float) -> None:
    await client.eval(_MARK_DONE, 1, url_key(article_id), max(1, int(ttl_seconds)), INFLIGHT_PREFIX, article_id)


# KEYS: the URL's state; ARGV: TTL, the in-flight hashes' prefix, the article id, the new state. Only a URL
# still in flight is given up (one done, or given up already, stays as it is).
_GIVE_UP = """
local was = redis.call('GET', KEYS[1])
if not was or (was ~= 'inflight' and string.sub(was, 1, 9) ~= 'inflight:') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[1])
if string.sub(was, 1, 9) == 'inflight:' then
  redis.call('HDEL', ARGV[2] .. string.sub(was, 10), ARGV[3])
end
return 1
"""


async def give_up_url(client: aioredis.Redis, article_id: str, reason: str, ttl_seconds: float) -> bool:
    """A page in flight that a stage dead-lettered will not come through: its URL is given up
    (``failed: …``, as fetch gives up a page), so it is neither fetched again at every expiry of its
    in-flight mark nor counted in flight. True if it was in flight."""
    state = f"failed: {reason}"[:500]
    return bool(await client.eval(_GIVE_UP, 1, url_key(article_id), max(1, int(ttl_seconds)), INFLIGHT_PREFIX,
                                  article_id, state))


def pages_in_flight(client: redis.Redis) -> dict[str, int]:
    """publisher → its pages still in flight (published, not done), for every fetch process known;
    a blocking client (the local runner's)."""
    found: dict[str, int] = {}
    for raw in client.smembers(PUBLISHERS_KEY):
        publisher = as_str(raw)
        ids = [as_str(a) for a in client.hkeys(inflight_key(publisher))]
        if not ids:
            continue
        states = client.mget([url_key(a) for a in ids])
        mine = inflight_value(publisher).encode("utf-8")
        count = sum(1 for state in states if state == mine)
        if count:
            found[publisher] = count
    return found
