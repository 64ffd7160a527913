"""fetch's wiring: poll sources → raw-pages, as a source stage of the runtime (no input topic).

Per source, a loop polls its feeds, sitemaps and pages every ``poll_seconds`` and, between polls,
wakes for the pages whose retry is due. Every article URL that has no state
(``shared.redis_store``: ``nw:url:<id>``) and is not waiting for a retry is fetched and published.
Once the broker has acknowledged the page, its URL is in flight for
``NEWSWATCH_INFLIGHT_TTL_SECONDS``, in the name of this process (``inflight:<replica>``, and in its
hash ``nw:fetch:inflight:<replica>``); the alert stage, the last one, marks it done once it has the
article and its alerts are on the broker. A page whose publisher is gone (its heartbeat
``nw:fetch:publisher:<replica>`` expired) is taken over by another fetch process and fetched again
at once (``take_over``); a page lost while its publisher runs is fetched again once the in-flight
mark expires, while its feed lists it.

HTTP policy for article pages (after redirects, each hop checked by ``politeness.PoliteClient``):

| answer                                         | action                                                    |
|------------------------------------------------|-----------------------------------------------------------|
| 2xx (but 204/205)                              | published; the URL is in flight once the broker acked it  |
| 408, 429, 5xx, network error or timeout, the   | retried later: attempt counted, next try not before       |
| host's robots.txt answering 429/5xx            | Retry-After (capped at 1 h) or else the shared Backoff;   |
|                                                | given up after ``max_attempts`` (8) attempts              |
| 404, 410                                       | given up at once                                          |
| other 4xx, 3xx not followed, too many          | given up at once (a page taken over from a dead process:  |
| redirects, 204/205, other statuses, robots.txt | left unknown instead, for its feed to list it again)      |
| refusal, size cap, non-public address, a       |                                                           |
| response head h11 refuses (over 100 KiB: too   |                                                           |
| many or too long headers)                      |                                                           |
| a page over the broker's message cap (poison)  | given up                                                  |

"Given up" = ``nw:url:<id>`` set to ``failed: <reason>`` for ``NEWSWATCH_URL_TTL_DAYS``. Every page
fetch counts in ``newswatch_fetch_pages_total{source, outcome=published|retry|gave_up}``; a page given
up also in ``newswatch_messages_failed_total{stage="fetch"}``. A page waiting for its retry blocks neither
the poll loop nor other URLs: it is skipped until its time, then fetched by the source's loop, even
if its feed no longer lists it or answers 304.

Feeds and sitemaps (conditional GET, ``newswatch_fetch_polls_total{source, outcome, status_class}``;
an ok or unchanged poll sets ``newswatch_fetch_last_success_timestamp_seconds{source}``):

| answer                                   | action                                                        |
|------------------------------------------|---------------------------------------------------------------|
| 2xx                                      | parsed (outcome ok); ETag / Last-Modified kept for the next   |
|                                          | conditional GET; links with another scheme or over 2,048      |
|                                          | characters refused (``newswatch_fetch_refused_total``, logged |
|                                          | once); a body that is no feed/sitemap: error, backed off as   |
|                                          | below (a login page answered with 200 at every poll)          |
| 304                                      | unchanged (a sitemap index's children are still polled)       |
| 408, 429, 5xx, network error or timeout  | error; the feed is not polled again before Retry-After (capped |
|                                          | at 1 h) or else the shared Backoff (outcome backoff meanwhile) |
| other 4xx, other 3xx, robots.txt, limits | error, with a log line naming the source, URL and status      |

Pages listed under a source's ``pages``: the first fetch is an article page's (table above); after
that the page is asked again every poll with a conditional GET (its ETag / Last-Modified and a
digest of its body kept in ``nw:fetch:feed:<id of the page URL>``). A 304, or the same body, sends
nothing; a changed body goes out as a new version under its own article id
(``page_version_id``), which clean ties to the page's story when it is a near-duplicate of the
last version.

A sitemap index is followed: its child sitemaps are fetched (each with conditional GET) down to
``max_sitemap_depth`` (2) levels below the configured sitemap, at most ``max_child_sitemaps`` (50)
per index and ``max_sitemaps_per_poll`` (100) per configured sitemap and poll.

Redis keys of fetch (besides ``nw:url:<id>``):

- ``nw:fetch:feed:<id of the feed/sitemap URL>``: hash ``etag``, ``last_modified`` and, for a
  sitemap index, ``children`` (JSON list); TTL ``NEWSWATCH_URL_TTL_DAYS``.
- ``nw:fetch:retry:<article id>``: hash ``attempts``, ``not_before`` (epoch seconds), ``reason``,
  ``url``, ``title``, ``published``, ``lang`` of a page waiting for a retry; TTL URL TTL.
- ``nw:fetch:due:<source id>``: sorted set of the source's article ids waiting for a retry, scored
  by ``not_before``; TTL URL TTL, refreshed.
- ``nw:fetch:lease:<id of the feed/sitemap/page URL>``: the replica polling it (``SET NX PX``, for
  its poll interval, renewed by that replica's next poll): replicas share the sources. One Lua
  call before the GET takes the lease, reads the feed's hash and reserves the host's slot; the
  writes after it are batched every 50 ms. The feed's hash also keeps ``interval`` (adaptive)
  and ``items`` (a digest of what it listed, to tell a change).
- ``nw:fetch:claim:<article id>``: the fetcher getting that page now (an article listed in several
  feeds, or seen by two replicas, is fetched once); it expires ``NEWSWATCH_HTTP_DEADLINE`` + 30 s
  after it was taken, so a page whose fetcher was killed waits that long at most.
- ``nw:fetch:host:<host:port>`` and ``nw:fetch:robots:<origin>``: see ``politeness``.
- ``nw:fetch:publisher:<replica>`` (heartbeat, 15 s, beaten every 4 s), ``nw:fetch:publishers`` (set)
  and ``nw:fetch:inflight:<replica>`` (hash: article id → item): see ``shared.redis_store``.

A feed or sitemap listed twice (in one source or two, same normalised URL) is polled once, under
the first source listing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import redis.asyncio as aioredis

from services.fetch.feeds import (
    FeedResult,
    Item,
    SitemapError,
    Source,
    SourcesError,
    article_id,
    cut,
    is_http_url,
    load_sources,
    normalise_url,
    parse_feed,
    parse_sitemap,
    screen,
)
from services.fetch.politeness import FetchError, PoliteClient, Reservation, Response, host_key, reserve_lua
from shared import events, health, metrics, pipeline, redis_store
from shared.failures import Kind, PoisonInput, classify
from shared.retry import Backoff, parse_retry_after
from shared.runtime import Emit, cpu
from shared.settings import Settings
from shared.topics import RAW_PAGES

log = logging.getLogger(__name__)

STAGE = "fetch"


class Action(enum.Enum):
    PUBLISH = "publish"
    RETRY = "retry"
    FINAL = "final"


RETRIED_STATUSES = frozenset({408, 429})


def page_action(status: int) -> Action:
    """What an article page's final HTTP status (after redirects) means."""
    if 200 <= status < 300 and status not in {204, 205}:
        return Action.PUBLISH
    if status in RETRIED_STATUSES or 500 <= status < 600:
        return Action.RETRY
    return Action.FINAL


@dataclass(frozen=True)
class FetchPolicy:
    """Retry and sitemap limits (defaults for production; tests shrink the timings)."""

    max_attempts: int = 8  # page requests that failed transiently before the URL is given up
    page_backoff: Backoff = field(default_factory=lambda: Backoff(initial=30.0, cap=3600.0))
    feed_backoff: Backoff = field(default_factory=lambda: Backoff(initial=60.0, cap=3600.0))
    retry_after_cap: float = 3600.0  # longest Retry-After honoured
    max_sitemap_depth: int = 2
    max_child_sitemaps: int = 50  # per sitemap index and poll
    max_sitemaps_per_poll: int = 100  # per configured sitemap (the index, its children, theirs)
    retry_batch: int = 100  # due page retries taken per wake-up of a source's loop
    start_jitter: float = 2.0  # first polls spread over up to this many seconds
    due_refresh: float = 300.0  # a source's page retries are looked up in Redis at least this often (the
    # replica that scheduled a retry wakes for it by itself; this finds those another replica scheduled)
    page_concurrency: int = 8  # pages of one source fetched at once (the host gate limits each host)
    adapt_min: float = 0.25  # a feed that changes at every poll is polled down to interval * adapt_min
    adapt_max: float = 4.0  # one that never changes up to interval * adapt_max
    adapt_faster: float = 0.5  # interval factor after a poll that found something new
    adapt_slower: float = 1.5  # interval factor after a poll that found nothing new
    write_behind_seconds: float = 0.05  # the polls' Redis writes are batched over this long


class Publisher(Protocol):
    """What fetch needs of the runtime's ``Outlet``."""

    async def deliver_retrying(self, outputs: Sequence[Emit], stop: asyncio.Event | None = None) -> bool: ...


def retry_key(aid: str) -> str:
    return f"nw:fetch:retry:{aid}"


def due_key(source_id: str) -> str:
    return f"nw:fetch:due:{source_id}"


def doc_key(url: str) -> str:
    return f"nw:fetch:feed:{article_id(url)}"


def lease_key(url: str) -> str:
    return f"nw:fetch:lease:{article_id(url)}"


def claim_key(aid: str) -> str:
    return f"nw:fetch:claim:{aid}"


def dedupe_sources(sources: Sequence[Source]) -> list[Source]:
    """The sources with every feed and sitemap kept under the first source listing it (normalised URL):
    a feed listed twice, in one source or in two, is polled once."""
    seen: dict[tuple[str, str], str] = {}
    out: list[Source] = []
    for source in sources:
        kept: dict[str, list[str]] = {"feed": [], "sitemap": []}
        for kind, urls in (("feed", source.feeds), ("sitemap", source.sitemaps)):
            for url in urls:
                key = (kind, normalise_url(url))
                if key in seen:
                    log.info(f"{kind} listed twice, polled once", extra={
                        "source": source.id, kind: url, "polled_by": seen[key]})
                    continue
                seen[key] = source.id
                kept[kind].append(url)
        out.append(replace(source, feeds=tuple(kept["feed"]), sitemaps=tuple(kept["sitemap"])))
    return out


Hash = dict[Any, Any]  # a Redis hash as the client returns it (bytes keys and values here)


# KEYS: the feed's lease, its hash, its host's slot; ARGV: replica, lease ms, host spacing µs (0: none).
# Returns {leased 0/1, the hash as a flat list, µs until the host slot (-1: none reserved)}.
# A lease this replica holds still is its own (its last poll's write may not have shortened it yet).
_POLL_START = """
local leased = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not leased and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  leased = true
end
local cached = redis.call('HGETALL', KEYS[2])
local wait = -1
if leased and tonumber(ARGV[3]) > 0 then
""" + reserve_lua("KEYS[3]", "ARGV[3]") + """
end
return {leased and 1 or 0, cached, wait}
"""


# KEYS: this process's heartbeat, the publishers' set, its in-flight hash; ARGV: its id, heartbeat TTL,
# the URL state key prefix, the state its pages in flight have.
_BEAT = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
local ids = redis.call('HKEYS', KEYS[3])
for _, id in ipairs(ids) do
  if redis.call('GET', ARGV[3] .. id) ~= ARGV[4] then
    redis.call('HDEL', KEYS[3], id)
  end
end
return #ids
"""
# KEYS: a dead process's heartbeat, the publishers' set, its in-flight hash; ARGV: its id, the URL
# state key prefix, the state its pages in flight have. Returns the items of its pages still in flight
# (their state removed: the taker fetches them as new), nothing if it beats after all.
_TAKE_OVER = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {}
end
local entries = redis.call('HGETALL', KEYS[3])
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
local out = {}
for i = 1, #entries, 2 do
  local state = ARGV[2] .. entries[i]
  if redis.call('GET', state) == ARGV[3] then
    redis.call('DEL', state)
    table.insert(out, entries[i + 1])
  end
end
return out
"""


def page_digest(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()[:20]


def page_version_id(url: str, digest: str) -> str:
    """The article id of a changed version of a polled page (its first version has ``article_id(url)``)."""
    return hashlib.sha1(f"{article_id(url)}:{digest}".encode()).hexdigest()[:20]


def _text(data: Hash, name: str) -> str:
    value = data.get(name.encode())
    return redis_store.as_str(value) if value is not None else ""


@dataclass
class _DocBackoff:
    attempts: int = 0
    not_before: float = 0.0  # epoch seconds


class FetchStage:
    decl: ClassVar[pipeline.StageDecl] = pipeline.FETCH

    def __init__(self, settings: Settings, sources: list[Source], policy: FetchPolicy | None = None) -> None:
        self.settings = settings
        self.sources = dedupe_sources(sources)
        self.policy = policy or FetchPolicy()
        self.url_ttl = settings.url_ttl_days * 86400
        self.replica = uuid.uuid4().hex[:12]
        self.redis: aioredis.Redis = redis_store.connect(settings, max_connections=128)
        self.http = PoliteClient(settings.user_agent, settings.http_timeout, settings.max_page_bytes,
                                 settings.host_delay_seconds, settings.allow_hosts,
                                 deadline=settings.http_deadline, host_concurrency=settings.host_concurrency,
                                 redis=self.redis)
        self.outlet: Publisher | None = None
        self._docs: dict[str, _DocBackoff] = {}  # feed/sitemap URL → its backoff (in memory)
        self._last_outcome: dict[str, str] = {}  # feed/sitemap URL → outcome of its last GET
        self._read_whole: set[str] = set()  # feeds/sitemaps this process has had a 2xx for
        self._changed: dict[str, bool] = {}  # feed/sitemap URL → whether its last 2xx listed something new
        self._deferred: dict[str, dict[Any, Any]] = {}  # feed URL → hash fields its poll writes at its end
        self._intervals: dict[str, float] = {}  # feed URL → its current poll interval (also in Redis)
        self._due_hint: dict[str, float] = {}  # source id → epoch of its next page retry known here
        self._sleeping: set[asyncio.Task[Any]] = set()  # source loops between two steps
        self._reserved: dict[str, Reservation] = {}  # feed/sitemap URL → its host slot, taken with its lease
        # feed/sitemap URL → its last poll's writes not sent yet (hash key, fields, lease key, lease ms)
        self._write_behind: dict[str, tuple[str, dict[Any, Any], str, int]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._start_script: Any = self.redis.register_script(_POLL_START)
        self._beat_script: Any = self.redis.register_script(_BEAT)
        self._takeover_script: Any = self.redis.register_script(_TAKE_OVER)
        self._inflight = redis_store.inflight_key(self.replica)
        self._by_id = {source.id: source for source in self.sources}
        self._taking_over: set[asyncio.Task[Any]] = set()
        self._refusals_logged: set[bytes] = set()  # (feed, link) digests of the refusals logged already
        for source in self.sources:
            metrics.init_source(source.id)

    async def start(self) -> None:
        await self.redis.ping()

    async def run(self, outlet: Publisher, stop: asyncio.Event) -> None:
        self.outlet = outlet
        loops = [asyncio.create_task(self.run_source(s, stop)) for s in self.sources]
        waker = asyncio.create_task(self._wake_on_stop(stop))
        heart = asyncio.create_task(self._keep_alive(stop), name="fetch-heartbeat")
        try:
            await asyncio.gather(*loops)
        finally:
            waker.cancel()
            heart.cancel()
            for task in list(self._taking_over):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.flush_writes()
            await self.http.aclose()

    async def _wake_on_stop(self, stop: asyncio.Event) -> None:
        """Cancel the sleep of every source loop once ``stop`` is set (a loop at work finishes its step).
        One waiter on the event instead of one per loop and wake-up: with thousands of sources, the
        per-loop ``wait_for(stop.wait())`` cost more than the polls."""
        await stop.wait()
        for task in list(self._sleeping):
            task.cancel()

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        """Sleep, or return early once ``stop`` is set."""
        task = asyncio.current_task()
        if stop.is_set() or task is None:
            return
        self._sleeping.add(task)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            task.uncancel()
        finally:
            self._sleeping.discard(task)

    # --- pages in flight of a process that is gone ----------------------------------------------------

    async def beat(self) -> None:
        """This process runs: its heartbeat set, its id in the publishers' set, and its in-flight
        hash rid of the pages that are no longer its own in flight (done, given up, expired)."""
        await self._beat_script(keys=[redis_store.publisher_key(self.replica), redis_store.PUBLISHERS_KEY,
                                      self._inflight],
                                args=[self.replica, redis_store.PUBLISHER_TTL_SECONDS, redis_store.url_key(""),
                                      redis_store.inflight_value(self.replica)])

    async def take_over(self, stop: asyncio.Event | None = None) -> int:
        """Take over the pages in flight of every fetch process whose heartbeat has expired, and fetch
        them again now: they went out on the broker but never came through (a run killed with its
        in-memory broker, or the broker lost them), and their feeds may not list them again (a 304).
        One script per dead process takes its hash whole, so two replicas never share one. Returns
        how many pages were taken over."""
        publishers = [redis_store.as_str(p) for p in await self.redis.smembers(redis_store.PUBLISHERS_KEY)]
        others = [p for p in publishers if p != self.replica]
        if not others:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for publisher in others:
            pipe.exists(redis_store.publisher_key(publisher))
        alive = await pipe.execute()
        taken = 0
        for publisher, beating in zip(others, alive, strict=True):
            if beating:
                continue
            raw = await self._takeover_script(
                keys=[redis_store.publisher_key(publisher), redis_store.PUBLISHERS_KEY,
                      redis_store.inflight_key(publisher)],
                args=[publisher, redis_store.url_key(""), redis_store.inflight_value(publisher)])
            items = [json.loads(redis_store.as_str(entry)) for entry in raw]
            if items:
                log.warning("pages in flight of a fetch process that is gone: fetched again now",
                            extra={"publisher": publisher, "pages": len(items)})
            for entry in items:
                source = self._by_id.get(str(entry.get("source", "")))
                if source is None:  # a source no longer configured: its page goes with it
                    continue
                item = Item(url=str(entry["url"]), title=str(entry.get("title", "")),
                            published=str(entry.get("published", "")), lang=str(entry.get("lang", "")))
                task = asyncio.create_task(self._fetch_item(source, item, stop, taken_over=True))
                self._taking_over.add(task)
                task.add_done_callback(self._taking_over.discard)
                taken += 1
        return taken

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.beat()
                health.dependency_ok(STAGE, "redis")
                await self.take_over(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the polls wait for it too; beat again later
                if classify(exc) is Kind.TRANSIENT:
                    metrics.dependency_error(STAGE, exc)
                log.warning("fetch heartbeat or take-over failed", extra={"error": repr(exc)[:300]})
            await self._sleep(redis_store.PUBLISHER_BEAT_SECONDS, stop)

    # --- feeds and sitemaps -------------------------------------------------------------------------

    def _back_off_doc(self, source: Source, url: str, kind: str, why: str, retry_after: float | None,
                      message: str = "") -> None:
        state = self._docs.setdefault(url, _DocBackoff())
        state.attempts += 1
        delay = (min(retry_after, self.policy.retry_after_cap) if retry_after is not None
                 else self.policy.feed_backoff.delay(state.attempts))
        state.not_before = time.time() + delay
        log.warning(message or f"{kind} poll failed, backing off", extra={
            "source": source.id, kind: url, "error": cut(why, 500), "attempt": state.attempts,
            "retry_in": round(delay, 3)})

    def _parsed(self, url: str) -> None:
        """The feed or sitemap answered one that parsed: its backoff, if any, is over."""
        self._docs.pop(url, None)

    def _refuse(self, source: Source, url: str, kind: str, refused: Sequence[tuple[str, str]]) -> None:
        """Count the links a poll refused (``newswatch_fetch_refused_total``), and log each once per
        process (a feed lists it at every poll), cut to a bounded length."""
        for reason, link in refused:
            metrics.FETCH_REFUSED.labels(source.id, reason).inc()
            digest = hashlib.sha1(f"{url} {link}".encode("utf-8", "replace")).digest()
            if digest in self._refusals_logged:
                continue
            if len(self._refusals_logged) >= 100_000:
                self._refusals_logged.clear()
            self._refusals_logged.add(digest)
            log.warning(f"{kind} lists a link fetch refuses", extra={
                "source": source.id, kind: url, "reason": reason, "link": cut(link), "chars": len(link)})

    async def _get_doc(self, source: Source, url: str, kind: str,
                       cached: Hash | None = None) -> tuple[str, Response | None, Hash]:
        """Conditional GET of a feed or sitemap: (outcome, response when 2xx, the stored cache hash).

        outcome: "ok" (2xx; the caller parses and counts), "unchanged" (304), "error", "backoff"."""
        outcome, response, cached = await self._get_doc_once(source, url, kind, cached)
        self._last_outcome[url] = outcome
        if outcome == "ok":
            self._read_whole.add(url)
        return outcome, response, cached

    async def _get_doc_once(self, source: Source, url: str, kind: str,
                            cached: Hash | None) -> tuple[str, Response | None, Hash]:
        state = self._docs.get(url)
        if state is not None and state.not_before > time.time():
            metrics.poll(source.id, "backoff", None)
            log.debug(f"{kind} backed off", extra={"source": source.id, kind: url})
            return "backoff", None, {}
        reserved = self._reserved.pop(url, None)
        if cached is None:
            cached = await self.redis.hgetall(doc_key(url))
        headers = {}
        # This process reads every feed and sitemap whole once before it asks conditionally: a 304
        # would hide the items whose pages were lost while in flight (a broker that died with them, a
        # run stopped before they were done), and those are fetched again only when listed.
        if kind == "page" or url in self._read_whole:
            if _text(cached, "etag"):
                headers["if-none-match"] = _text(cached, "etag")
            if _text(cached, "last_modified"):
                headers["if-modified-since"] = _text(cached, "last_modified")
        try:
            response = await self.http.get(url, headers, reserved=reserved)
        except FetchError as exc:
            metrics.poll(source.id, "error", None)
            if exc.permanent:
                log.warning(f"{kind} poll failed", extra={"source": source.id, kind: url, "error": cut(str(exc), 500)})
            else:  # robots.txt unreachable: asked again then, not after the growing backoff
                self._back_off_doc(source, url, kind, str(exc), exc.retry_after)
            return "error", None, cached
        status = response.status
        if status == 304:
            self._docs.pop(url, None)
            metrics.poll(source.id, "unchanged", status)
            return "unchanged", None, cached
        metrics.FETCHED_BYTES.labels(source.id).inc(len(response.body))
        if 200 <= status < 300:  # its backoff ends once it parses (``_parsed``): a 200 login page backs off too
            return "ok", response, cached
        metrics.poll(source.id, "error", status)
        if status in RETRIED_STATUSES or 500 <= status < 600:
            self._back_off_doc(source, url, kind, f"HTTP {status}", parse_retry_after(response.retry_after))
        else:
            log.warning(f"{kind} poll failed: HTTP {status}; check the URL in the sources file",
                        extra={"source": source.id, kind: url, "status": status})
        return "error", None, cached

    async def _remember(self, url: str, response: Response, items: Sequence[Item], cached: Hash,
                        children: list[str] | None = None) -> None:
        """Keep the validators of a parsed feed/sitemap for the next conditional GET, and whether it changed
        (written with the poll's other writes when the poll defers them, ``_deferred``)."""
        digest = article_id(" ".join(sorted(i.url for i in items)) + " " + " ".join(children or []))
        previous = _text(cached, "items")
        if previous:  # the first poll tells nothing about how often it changes
            self._changed[url] = previous != digest
        mapping: dict[Any, Any] = {"etag": response.etag, "last_modified": response.last_modified,
                   "children": json.dumps(children or []), "items": digest}
        if url in self._deferred:
            self._deferred[url].update(mapping)
            return
        key = doc_key(url)
        await self.redis.hset(key, mapping=mapping)
        await self.redis.expire(key, self.url_ttl)

    async def _feed_items(self, source: Source, url: str, cached: Hash | None = None) -> list[Item]:
        _, response, cached = await self._get_doc(source, url, "feed", cached)
        if response is None:
            return []
        try:  # a large feed is parsed off the event loop
            if len(response.body) > 200_000:
                feed = await cpu(parse_feed, response.body, response.url)
            else:
                feed = parse_feed(response.body, response.url)
        except Exception as exc:  # parse_feed reports in .error; anything else is still a broken feed
            feed = FeedResult(error=f"{type(exc).__name__}: {exc}"[:300])
        if feed.error:
            # Backed off like an HTTP error: a feed URL answering a login or error page with 200
            # answers it at every poll (counted as outcome error, status class 2xx).
            metrics.poll(source.id, "error", response.status)
            self._back_off_doc(source, url, "feed", feed.error, None,
                               "feed poll failed: the body is not a feed; backing off")
            return []
        self._parsed(url)
        metrics.poll(source.id, "ok", response.status)
        items, refused = screen(feed.items, feed.refused)
        if refused:
            self._refuse(source, url, "feed", refused)
        await self._remember(url, response, items, cached)
        return items

    async def _sitemap_items(self, source: Source, url: str, depth: int, visited: set[str],
                             cached: Hash | None = None) -> list[Item]:
        """Items of a sitemap and, for an index, of its children (bounded; see the module docstring)."""
        if url in visited:
            return []
        if len(visited) >= self.policy.max_sitemaps_per_poll:
            log.warning("sitemap poll limit reached, the rest waits for the next poll",
                        extra={"source": source.id, "sitemap": url, "limit": self.policy.max_sitemaps_per_poll})
            return []
        visited.add(url)
        outcome, response, cached = await self._get_doc(source, url, "sitemap", cached)
        items: list[Item] = []
        if outcome == "unchanged":
            try:
                children = [str(c) for c in json.loads(_text(cached, "children") or "[]")]
            except ValueError:
                children = []
        elif response is not None:
            dropped: list[str] = []
            try:
                items, children = parse_sitemap(response.body, dropped)
            except SitemapError as exc:
                metrics.poll(source.id, "error", response.status)
                self._back_off_doc(source, url, "sitemap", str(exc), None,
                                   "sitemap poll failed: the body is not a sitemap; backing off")
                return []
            self._parsed(url)
            metrics.poll(source.id, "ok", response.status)
            items, refused = screen(items, dropped)
            if refused:
                self._refuse(source, url, "sitemap", refused)
            await self._remember(url, response, items, cached, children)
        else:
            return []
        children = [c for c in dict.fromkeys(children) if is_http_url(c)]
        if children and depth >= self.policy.max_sitemap_depth:
            log.warning("sitemap index nested too deep, its children are not followed",
                        extra={"source": source.id, "sitemap": url, "depth": depth, "children": len(children)})
            return items
        if len(children) > self.policy.max_child_sitemaps:
            log.warning("sitemap index lists too many sitemaps, the first ones are followed",
                        extra={"source": source.id, "sitemap": url, "children": len(children),
                               "followed": self.policy.max_child_sitemaps})
            children = children[:self.policy.max_child_sitemaps]
        for child in children:
            items.extend(await self._sitemap_items(source, child, depth + 1, visited))
        return items

    async def _listed(self, source: Source) -> list[Item]:
        """Every item the source's feeds, sitemaps and pages list now."""
        items: list[Item] = []
        for feed_url in source.feeds:
            items.extend(await self._feed_items(source, feed_url))
        for sitemap_url in source.sitemaps:
            items.extend(await self._sitemap_items(source, sitemap_url, 0, set()))
        items.extend(Item(url=page) for page in source.pages)
        return items

    # --- pages --------------------------------------------------------------------------------------

    async def _forget_retry(self, source: Source, aid: str) -> None:
        await self.redis.delete(retry_key(aid))
        await self.redis.zrem(due_key(source.id), aid)

    async def _give_up(self, source: Source, item: Item, aid: str, reason: str) -> None:
        await redis_store.mark_url(self.redis, aid, f"failed: {reason}"[:500], self.url_ttl)
        await self._forget_retry(source, aid)
        metrics.FETCH_PAGES.labels(source.id, "gave_up").inc()
        metrics.MESSAGES_FAILED.labels(STAGE, pipeline.SOURCE_INPUT, "poison").inc()
        log.warning("page given up", extra={"source": source.id, "url": cut(item.url), "id": aid,
                                            "reason": cut(reason, 500)})

    def _gone(self, source: Source, item: Item, reason: str) -> str:
        log.warning("page taken over is not there now: left for its feed to list again", extra={
            "source": source.id, "url": cut(item.url), "reason": cut(reason, 500)})
        return "gone"

    async def _retry_later(self, source: Source, item: Item, aid: str, reason: str, retry_after: float | None) -> None:
        key = retry_key(aid)
        attempts = int(await self.redis.hincrby(key, "attempts", 1))
        if attempts >= self.policy.max_attempts:
            await self._give_up(source, item, aid, f"{reason} after {attempts} attempts")
            return
        delay = (min(retry_after, self.policy.retry_after_cap) if retry_after is not None
                 else self.policy.page_backoff.delay(attempts))
        not_before = time.time() + delay
        await self.redis.hset(key, mapping={
            "not_before": repr(not_before), "reason": reason[:500], "url": item.url, "title": item.title,
            "published": item.published, "lang": item.lang})
        await self.redis.expire(key, self.url_ttl)
        await self.redis.zadd(due_key(source.id), {aid: not_before})
        await self.redis.expire(due_key(source.id), self.url_ttl)
        self._due_hint[source.id] = min(self._due_hint.get(source.id, not_before), not_before)
        metrics.FETCH_PAGES.labels(source.id, "retry").inc()
        log.warning("page fetch failed, retrying later", extra={
            "source": source.id, "url": cut(item.url), "id": aid, "error": cut(reason, 500), "attempt": attempts,
            "retry_in": round(delay, 3)})

    async def _fetch_item(self, source: Source, item: Item, stop: asyncio.Event | None = None,
                          taken_over: bool = False) -> str:
        """Fetch and publish one article URL; returns what happened (for logs and tests):
        known, waiting, published, retry, failed, gone, stopped.

        ``taken_over``: a page published before by a process that is gone (``take_over``). A final
        answer to it now (404, a refusal) is not taken as final for good: the URL is left unknown
        ("gone"), to be fetched like a new one if a feed lists it again (a site that took the page
        down for a while; the demo sites, which start their timeline again at each run)."""
        aid = article_id(item.url)
        if await self.redis.exists(redis_store.url_key(aid)):
            return "known"
        retry = await self.redis.hgetall(retry_key(aid))
        not_before = _text(retry, "not_before")
        if not_before and float(not_before) > time.time():
            return "waiting"
        # One fetcher per URL at a time, across sources and replicas (an article listed in five feeds).
        # The claim outlives one request's deadline, not a whole redirect chain: a fetcher killed
        # mid-page holds it that long at most, and a second fetch of a page is harmless downstream.
        claim_ms = int((self.settings.http_deadline + 30) * 1000)
        if not await self.redis.set(claim_key(aid), self.replica, nx=True, px=claim_ms):
            return "busy"
        metrics.MESSAGES_CONSUMED.labels(STAGE, pipeline.SOURCE_INPUT).inc()
        started = time.perf_counter()
        try:
            return await self._fetch_claimed(source, item, aid, retry, stop, taken_over)
        finally:
            metrics.PROCESSING_SECONDS.labels(STAGE).observe(time.perf_counter() - started)
            await self.redis.delete(claim_key(aid))

    async def _fetch_claimed(self, source: Source, item: Item, aid: str, retry: Hash,
                             stop: asyncio.Event | None, taken_over: bool = False) -> str:
        if await self.redis.exists(redis_store.url_key(aid)):  # settled meanwhile by another fetcher
            return "known"
        try:
            response = await self.http.get(item.url)
        except FetchError as exc:
            if exc.permanent:
                if taken_over:
                    return self._gone(source, item, str(exc))
                await self._give_up(source, item, aid, str(exc))
                return "failed"
            await self._retry_later(source, item, aid, str(exc), None)
            return "retry"
        metrics.FETCHED_BYTES.labels(source.id).inc(len(response.body))
        action = page_action(response.status)
        if action is Action.RETRY:
            await self._retry_later(source, item, aid, f"http {response.status}",
                                    parse_retry_after(response.retry_after))
            return "retry"
        if action is Action.FINAL:
            if taken_over:
                return self._gone(source, item, f"http {response.status}")
            await self._give_up(source, item, aid, f"http {response.status}")
            return "failed"
        if item.url in source.pages:  # a page polled again later: its validators for a conditional GET
            await self._remember_page(item.url, response)
        return await self._publish(source, item, aid, response, retry, stop)

    async def _remember_page(self, url: str, response: Response) -> None:
        key = doc_key(url)
        await self.redis.hset(key, mapping={"etag": response.etag, "last_modified": response.last_modified,
                                            "body": page_digest(response.body)})
        await self.redis.expire(key, self.url_ttl)

    async def _repoll_page(self, source: Source, url: str) -> str:
        """A page of the source's ``pages`` fetched before, asked again with a conditional GET (the
        validators its last answer gave): a 304, or the same body, is nothing new; a changed body
        is published as a new version of the page (its own article id: ``page_version_id``), which
        clean ties to the page's story when it is a near-duplicate of the last version.
        Returns: busy (another replica's turn), unchanged, same, published, or the error outcome."""
        base, _, _ = self._bounds(source)
        leased, cached = await self._poll_start(url, base)
        if not leased:
            return "busy"
        outcome, response, cached = await self._get_doc(source, url, "page", cached)
        if response is None:
            return outcome
        self._parsed(url)
        metrics.poll(source.id, "ok", response.status)
        digest = page_digest(response.body)
        if digest == _text(cached, "body") or page_action(response.status) is not Action.PUBLISH:
            await self._remember_page(url, response)
            return "same"
        aid = page_version_id(url, digest)
        if await self.redis.exists(redis_store.url_key(aid)):  # that version went out already
            await self._remember_page(url, response)
            return "same"
        result = await self._publish(source, Item(url=url), aid, response, {}, None)
        if result == "published":
            await self._remember_page(url, response)
        return result

    async def _publish(self, source: Source, item: Item, aid: str, response: Response, retry: Hash,
                       stop: asyncio.Event | None) -> str:
        page = events.RawPage(
            id=aid, url=item.url, final_url=response.url, source=source.id, fetched_at=time.time(),
            http_status=response.status, content_type=response.content_type, body=response.body,
            feed_title=item.title, feed_published=item.published, lang_hint=item.lang or source.lang,
        )

        async def in_flight() -> None:
            # Only now that the broker holds the page is the URL in flight: a crash before re-fetches it.
            # The state names this process, and its in-flight hash holds the item: should this process
            # die, another takes the page over once its heartbeat has expired (``_take_over``).
            ttl = max(1, int(self.settings.inflight_ttl_seconds))
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(redis_store.url_key(aid), redis_store.inflight_value(self.replica), ex=ttl)
            pipe.hset(self._inflight, aid, json.dumps({"source": source.id, "url": item.url, "title": item.title,
                                                       "published": item.published, "lang": item.lang}))
            pipe.expire(self._inflight, ttl + 3600)
            pipe.sadd(redis_store.PUBLISHERS_KEY, self.replica)  # (its beat adds it too; a page can come first)
            await pipe.execute()
            if retry:
                await self._forget_retry(source, aid)

        assert self.outlet is not None
        try:
            delivered = await self.outlet.deliver_retrying([Emit(RAW_PAGES, aid, page, after=in_flight)], stop)
        except PoisonInput as exc:
            await self._give_up(source, item, aid, f"unpublishable: {exc}")
            return "failed"
        if not delivered:
            return "stopped"
        metrics.FETCH_PAGES.labels(source.id, "published").inc()
        log.info("page published", extra={"source": source.id, "url": item.url, "id": aid})
        return "published"

    async def retry_due(self, source: Source, stop: asyncio.Event | None = None) -> int:
        """Fetch the source's pages whose retry is due; returns how many were tried."""
        due = await self.redis.zrangebyscore(due_key(source.id), "-inf", time.time(), start=0,
                                             num=self.policy.retry_batch)
        tried = 0
        for raw in due:
            if stop is not None and stop.is_set():
                break
            aid = redis_store.as_str(raw)
            data = await self.redis.hgetall(retry_key(aid))
            url = _text(data, "url")
            if not url or await self.redis.exists(redis_store.url_key(aid)):
                await self._forget_retry(source, aid)  # expired, or settled meanwhile
                continue
            not_before = float(_text(data, "not_before") or 0)
            if not_before > time.time():  # rescheduled meanwhile (another source listing it)
                await self.redis.zadd(due_key(source.id), {aid: not_before})
                continue
            item = Item(url=url, title=_text(data, "title"), published=_text(data, "published"),
                        lang=_text(data, "lang"))
            await self._fetch_item(source, item, stop)
            tried += 1
        return tried

    async def _next_due(self, source: Source) -> float | None:
        first = await self.redis.zrange(due_key(source.id), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def _fetch_items(self, source: Source, items: Sequence[Item], stop: asyncio.Event | None) -> None:
        """Fetch the items' pages, ``page_concurrency`` at once (the host gate spaces each host)."""
        by_id = {article_id(i.url): i for i in items}
        pipe = self.redis.pipeline(transaction=False)
        for aid in by_id:
            pipe.exists(redis_store.url_key(aid))
        known = await pipe.execute() if by_id else []
        new = sum(1 for seen in known if not seen)
        metrics.FETCH_ITEMS.labels(source.id, "new").inc(new)
        metrics.FETCH_ITEMS.labels(source.id, "seen").inc(len(items) - new)
        # New URLs are fetched; a configured page fetched before is asked again, conditionally.
        todo = [(item, bool(seen)) for item, seen in zip(by_id.values(), known, strict=True)
                if not seen or item.url in source.pages]
        gate = asyncio.Semaphore(self.policy.page_concurrency)

        async def one(item: Item, seen: bool) -> None:
            async with gate:
                if stop is None or not stop.is_set():
                    if seen:
                        await self._repoll_page(source, item.url)
                    else:
                        await self._fetch_item(source, item, stop)
        results = await asyncio.gather(*(one(i, seen) for i, seen in todo), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def poll(self, source: Source, stop: asyncio.Event | None = None) -> int:
        """One poll of every feed, sitemap and page of one source; returns how many items it listed."""
        items = await self._listed(source)
        await self._fetch_items(source, items, stop)
        return len(items)

    def _bounds(self, source: Source) -> tuple[float, float, float]:
        base = source.poll_seconds or self.settings.poll_seconds
        return base, base * self.policy.adapt_min, base * self.policy.adapt_max

    async def _poll_start(self, url: str, interval: float) -> tuple[bool, Hash]:
        """One Redis call: the feed's lease for this replica, the feed's hash, and (when leased) the
        slot of its host reserved for the GET (``self._reserved``). Returns (leased, the hash)."""
        gate = self.http.gate
        host = self.http.gate_host(url) if gate.shared else None
        if host is not None and not gate.idle(host):
            host = None  # its request will wait here anyway: its slot is reserved when its turn comes
        spacing = gate.spacing() if host is not None else 0.0
        leased, flat, wait_us = await self._start_script(
            keys=[lease_key(url), doc_key(url), host_key(host or "-")],
            args=[self.replica, max(1, int(interval * 1000)), int(spacing * 1_000_000)])
        cached: Hash = dict(zip(flat[::2], flat[1::2], strict=True))
        if leased and host is not None and int(wait_us) >= 0:
            self._reserved[url] = Reservation(host, spacing, time.monotonic() + int(wait_us) / 1_000_000)
        return bool(leased), cached

    async def _poll_doc(self, source: Source, kind: str, url: str) -> tuple[list[Item], float]:
        """Poll one feed or sitemap if this replica holds its lease: (items, seconds until the next poll).

        The interval adapts: shorter after a poll that found something new, longer after one that
        did not (304 or the same items), within ``adapt_min``..``adapt_max`` times the configured one;
        it is kept in Redis with the feed, so every replica reads the same. Redis: one call before
        the GET (``_poll_start``); the writes after it go out in batches (``_write_behind``)."""
        base, low, high = self._bounds(source)
        key, lease = doc_key(url), lease_key(url)
        interval = min(high, max(low, self._intervals.get(url, base)))
        leased, cached = await self._poll_start(url, interval)
        pending = self._write_behind.get(url)
        if pending is not None:  # this replica's last poll of it, newer than what Redis holds yet
            cached = {**cached, **{k.encode(): str(v).encode() for k, v in pending[1].items()}}
        stored = _text(cached, "interval")
        if stored:
            interval = min(high, max(low, float(stored)))
        if not leased:  # another replica polls it this time
            return [], interval
        self._changed.pop(url, None)
        self._deferred[url] = {}
        try:
            if kind == "feed":
                items = await self._feed_items(source, url, cached)
            else:
                items = await self._sitemap_items(source, url, 0, set(), cached)
        finally:
            mapping = self._deferred.pop(url, {})
        changed = self._changed.get(url)
        if changed is not None:  # a 2xx that was parsed (errors and backoffs keep the interval)
            interval = max(low, interval * self.policy.adapt_faster) if changed \
                else min(high, interval * self.policy.adapt_slower)
        elif self._last_outcome.get(url) == "unchanged":
            interval = min(high, interval * self.policy.adapt_slower)
        self._intervals[url] = interval
        mapping["interval"] = repr(interval)
        self._write_behind[url] = (key, mapping, lease, max(1, int(interval * 1000)))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())
        return items, interval

    async def _flush_soon(self) -> None:
        """The polls' writes of the last ``write_behind_seconds``, in one pipeline: the feed's
        validators, digest and interval, and its lease's length (the next poll's time across
        replicas). Lost in a crash, they cost one full GET at the next poll, nothing else."""
        await asyncio.sleep(self.policy.write_behind_seconds)
        await self.flush_writes()

    async def flush_writes(self) -> None:
        writes, self._write_behind = self._write_behind, {}
        if not writes:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, mapping, lease, lease_ms in writes.values():
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.url_ttl)
            pipe.pexpire(lease, lease_ms)
        try:
            await pipe.execute()
        except Exception as exc:  # Redis away: the next polls read older validators, no more
            metrics.dependency_error(STAGE, exc)
            log.warning("feed state not written, kept for the next batch",
                        extra={"feeds": len(writes), "error": repr(exc)})
            self._write_behind = {**writes, **self._write_behind}

    async def run_source(self, source: Source, stop: asyncio.Event) -> None:
        base, _, _ = self._bounds(source)
        docs = [("feed", u) for u in source.feeds] + [("sitemap", u) for u in source.sitemaps]
        # Spread the first polls so that many sources do not all start at once.
        await self._sleep(random.uniform(0, min(base, self.policy.start_jitter)), stop)
        next_doc = dict.fromkeys(docs, 0.0)
        next_pages = 0.0
        while not stop.is_set():
            try:
                now = time.monotonic()
                items: list[Item] = []
                for doc in docs:
                    if next_doc[doc] <= now and not stop.is_set():
                        got, interval = await self._poll_doc(source, *doc)
                        # Every interval from when the poll was due, not from when it ended (a
                        # poll waiting for its host's turn does not stretch the period); a poll
                        # late by more than an interval is not followed by a catch-up burst.
                        next_doc[doc] = max(next_doc[doc] + interval, time.monotonic()) if next_doc[doc] \
                            else time.monotonic() + interval
                        items.extend(got)
                if source.pages and next_pages <= now:
                    next_pages = now + base
                    items.extend(Item(url=page) for page in source.pages)
                if items:
                    await self._fetch_items(source, items, stop)
                # Page retries: Redis is asked when one is due by what this replica knows (it scheduled
                # it), and at least every ``due_refresh`` seconds (one another replica scheduled).
                if self._due_hint.get(source.id, 0.0) <= time.time():
                    await self.retry_due(source, stop)
                    due = await self._next_due(source)
                    refresh = time.time() + self.policy.due_refresh
                    self._due_hint[source.id] = min(due, refresh) if due is not None else refresh
                wake = min([*next_doc.values(), next_pages if source.pages else float("inf")])
                wait = min(wake - time.monotonic(), self._due_hint[source.id] - time.time())
                health.dependency_ok(STAGE, "redis")  # a whole step without a failure: Redis answered
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one broken source must not stop the others
                if classify(exc) is Kind.TRANSIENT:
                    metrics.dependency_error(STAGE, exc)
                    log.warning("poll interrupted, retried at the next poll",
                                extra={"source": source.id, "error": repr(exc)})
                else:
                    metrics.MESSAGES_FAILED.labels(STAGE, pipeline.SOURCE_INPUT, "unknown").inc()
                    log.exception("poll failed", extra={"source": source.id})
                wait = base
            await self._sleep(min(max(0.01, wait), 3600.0), stop)


def main() -> None:
    from shared.logs import setup_logging
    from shared.runtime import run_service

    settings = Settings.from_env()
    setup_logging("fetch", settings.log_level, settings.log_format)
    try:
        sources = load_sources(settings.sources)
    except SourcesError as exc:  # a clear message, not a traceback: the file needs fixing
        raise SystemExit(f"fetch: {exc}") from exc
    run_service("fetch", [FetchStage(settings, sources)], settings)
