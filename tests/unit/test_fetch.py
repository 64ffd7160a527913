"""fetch: sources, feeds, sitemaps, URL ids, politeness and safety against a local server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from newswatch.demo.content import ARTICLES, SITES
from newswatch.demo.server import feed_path, serve_in_thread, sources_yaml
from newswatch.local import free_port
from services.fetch.feeds import (
    Item,
    SitemapError,
    Source,
    SourcesError,
    article_id,
    load_sources,
    parse_feed,
    parse_sitemap,
    parse_sources,
)
from services.fetch.politeness import (
    AddressPolicy,
    FetchError,
    HostGate,
    PoliteClient,
    check_url_safe,
    robots_key,
)
from services.fetch.service import Action, FetchPolicy, FetchStage, due_key, page_action, retry_key
from shared import redis_store
from shared.retry import Backoff
from shared.runtime import Emit
from shared.settings import Settings
from shared.topics import RAW_PAGES
from tests.conftest import ROOT


def test_article_id_ignores_tracking_and_fragments() -> None:
    a = article_id("https://Example.org/news/1?utm_source=x&id=3#comments")
    assert a == article_id("https://example.org/news/1?id=3")
    assert a != article_id("https://example.org/news/2?id=3")


def test_sources_validation() -> None:
    ok = parse_sources({"sources": [{"id": "s", "feeds": ["https://a.org/rss"], "lang": "fr"}]})
    assert ok[0].feeds == ("https://a.org/rss",)
    with pytest.raises(SourcesError, match="not an http"):
        parse_sources({"sources": [{"id": "s", "feeds": ["file:///etc/passwd"]}]})
    with pytest.raises(SourcesError, match="lists no feeds"):
        parse_sources({"sources": [{"id": "s"}]})
    single = parse_sources({"sources": [{"id": "s", "sitemaps": "https://a.org/sm.xml", "poll_seconds": 30}]})
    assert single[0].sitemaps == ("https://a.org/sm.xml",) and single[0].poll_seconds == 30.0


def test_sitemap_with_news_extension() -> None:
    body = b"""<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
      xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"><url><loc>https://a.org/1</loc>
      <news:news><news:publication><news:language>fr</news:language></news:publication>
      <news:publication_date>2026-11-01T10:00:00Z</news:publication_date><news:title>Titre</news:title>
      </news:news></url></urlset>"""
    items, nested = parse_sitemap(body)
    assert nested == [] and items[0].url == "https://a.org/1" and items[0].title == "Titre"
    assert items[0].lang == "fr" and items[0].published.startswith("2026-11-01")
    with pytest.raises(SitemapError):
        parse_sitemap(b"<urlset")


@pytest.fixture(scope="module")
def sites() -> str:  # type: ignore[misc]
    port = free_port()
    server, _ = serve_in_thread("127.0.0.1", port, pace=0)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_demo_feeds_list_their_articles(sites: str) -> None:
    async def go() -> None:
        client = PoliteClient("test", 5, 1_000_000, 0.0, sites.split("//")[1])
        for site in SITES:
            response = await client.get(sites + feed_path(site))
            feed = parse_feed(response.body, response.url)
            assert feed.lang == site.lang
            assert {i.url.rsplit("/", 1)[1] for i in feed.items} == {
                f"{a.slug}.html" for a in ARTICLES if a.site == site.id}
        await client.aclose()
    asyncio.run(go())


def test_limits_robots_and_private_addresses(sites: str) -> None:
    async def go() -> None:
        small = PoliteClient("test", 5, 500, 0.0, sites.split("//")[1])
        with pytest.raises(FetchError, match="limit"):
            await small.get(sites + "/courrier-caucase/feed.xml")
        with pytest.raises(FetchError, match="robots"):
            await small.get(sites + "/private/page.html")
        await small.aclose()
        with pytest.raises(FetchError, match="not a public address"):
            await check_url_safe(sites + "/courrier-caucase/feed.xml", AddressPolicy(""))
        with pytest.raises(FetchError, match="non-public"):
            await check_url_safe("http://localhost:1/", AddressPolicy("127.0.0.1:1"))
        await check_url_safe(sites + "/courrier-caucase/feed.xml", AddressPolicy(sites.split("//")[1]))
        with pytest.raises(FetchError, match="scheme"):
            await check_url_safe("file:///etc/passwd", AddressPolicy("localhost"))
    asyncio.run(go())


def test_host_gate_spaces_requests() -> None:
    async def go() -> float:
        gate = HostGate(0.2)
        started = time.monotonic()
        for _ in range(3):
            async with gate.slot("h"):
                pass
        return time.monotonic() - started
    assert asyncio.run(go()) >= 0.4


# --- the HTTP policy, against scripted servers on 127.0.0.1 and a real Redis -------------------------

FETCH_DB = 7  # a Redis database of its own, flushed by every test


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""  # answered 304 when the request carries it in If-None-Match


class Script:
    """What a local server answers, path by path: a list of replies taken in turn, the last one repeated."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, float, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.base = ""

    def set(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.routes[path] = list(replies)

    def take(self, path: str, headers: dict[str, str]) -> Reply:
        with self.lock:
            self.requests.append((path, time.monotonic(), headers))
            replies = self.routes.get(path)
            if not replies:
                return Reply(404, b"not here")
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if reply.etag and headers.get("if-none-match") == reply.etag:
            return Reply(304, headers={"etag": reply.etag})
        return reply

    def hits(self, path: str) -> list[float]:
        with self.lock:
            return [t for p, t, _ in self.requests if p == path]

    def headers_of(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, _, h in self.requests if p == path]

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def script() -> Iterator[Script]:
    state = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reply = state.take(self.path, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.etag and reply.status != 304:
                self.send_header("ETag", reply.etag)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.status != 304:
                self.wfile.write(reply.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def fetch_settings(redis_port: int, script: Script) -> Settings:
    url = f"redis://127.0.0.1:{redis_port}/{FETCH_DB}"
    redis.Redis.from_url(url).flushdb()
    return Settings.from_env({"NEWSWATCH_REDIS_URL": url, "NEWSWATCH_ALLOW_HOSTS": script.base.split("//")[1],
                              "NEWSWATCH_HOST_DELAY_SECONDS": "0", "NEWSWATCH_HTTP_TIMEOUT": "5",
                              "NEWSWATCH_POLL_SECONDS": "0.1"})


def fast_policy(**changes: Any) -> FetchPolicy:
    base = FetchPolicy(max_attempts=8, page_backoff=Backoff(initial=0.05, cap=0.1), start_jitter=0.0,
                       feed_backoff=Backoff(initial=0.05, cap=0.1))
    return replace(base, **changes)


class FakeOutlet:
    """Collects what fetch publishes and runs the after-callbacks, as the runtime's Outlet does once acked."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, Emit]] = []

    async def deliver_retrying(self, outputs: Sequence[Emit], stop: asyncio.Event | None = None) -> bool:
        for out in outputs:
            self.sent.append((time.monotonic(), out))
        for out in outputs:
            if out.after is not None:
                await out.after()
        return True


def rss(*urls: str) -> bytes:
    items = "".join(f"<item><title>t</title><link>{u}</link></item>" for u in urls)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><language>en</language>'
            f"{items}</channel></rss>").encode()


def urlset(*urls: str) -> bytes:
    body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>'.encode()


def sitemap_index(*urls: str) -> bytes:
    body = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return (f'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}'
            "</sitemapindex>").encode()


def sample(name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(s.value for metric in REGISTRY.collect() for s in metric.samples
               if s.name == name and labels.items() <= s.labels.items())


async def run_until(stage: FetchStage, outlet: FakeOutlet, done: Callable[[], bool], timeout: float,
                    linger: float = 0.3) -> None:
    """Run the stage until ``done()`` (then ``linger`` seconds more, to catch extra requests) or the timeout."""
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(outlet, stop))
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.02)
    await asyncio.sleep(linger)
    stop.set()
    await task


async def url_state(stage: FetchStage, url: str) -> str:
    return await redis_store.url_state(stage.redis, article_id(url))


def test_page_503_twice_then_200_is_published_once_after_retry_after(script: Script, fetch_settings: Settings) -> None:
    page = script.url("/a.html")
    # The feed answers 304 after its first poll: the retries must not depend on it listing the page again.
    script.set("/feed.xml", Reply(200, rss(page), etag='"v1"'))
    script.set("/a.html", Reply(503, b"busy", {"Retry-After": "1"}), Reply(503, b"busy", {"Retry-After": "1"}),
               Reply(200, b"<html><body>ok</body></html>", {"Content-Type": "text/html"}))
    source = Source(id="t-503", feeds=(script.url("/feed.xml"),), poll_seconds=0.1)
    consumed = sample("newswatch_messages_consumed_total", stage="fetch")
    timed = sample("newswatch_processing_seconds_count", stage="fetch")

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        # the source's series exist at zero from the start
        assert REGISTRY.get_sample_value("newswatch_fetch_pages_total", {"source": source.id, "outcome": "retry"}) == 0
        assert REGISTRY.get_sample_value("newswatch_fetch_last_success_timestamp_seconds", {"source": source.id}) == 0
        outlet = FakeOutlet()
        await run_until(stage, outlet, lambda: bool(outlet.sent), timeout=6.0, linger=0.5)
        hits = script.hits("/a.html")
        assert len(hits) == 3, hits
        assert hits[1] - hits[0] >= 0.95 and hits[2] - hits[1] >= 0.95  # Retry-After honoured
        assert len(outlet.sent) == 1
        sent_at, emit = outlet.sent[0]
        assert sent_at - hits[0] >= 1.9 and emit.key == article_id(page)
        assert emit.topic is RAW_PAGES and emit.event.http_status == 200  # type: ignore[attr-defined]
        assert await url_state(stage, page) == redis_store.inflight_value(stage.replica)
        assert not await stage.redis.exists(retry_key(article_id(page)))
        assert await stage.redis.zcard(due_key(source.id)) == 0
        assert any(h.get("if-none-match") == '"v1"' for h in script.headers_of("/feed.xml"))  # polled, 304
        await stage.redis.aclose()
    started = time.time()
    asyncio.run(go())
    # three page fetches (two 503s, then the 200), each counted in and timed once, whatever the feed relisted
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="retry") == 2
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="published") == 1
    assert sample("newswatch_messages_consumed_total", stage="fetch") == consumed + 3
    assert sample("newswatch_processing_seconds_count", stage="fetch") == timed + 3
    assert sample("newswatch_fetch_items_total", source=source.id, state="new") == 1  # one poll listed it (200)
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="ok", status_class="2xx") == 1
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="unchanged", status_class="3xx") >= 1
    assert sample("newswatch_fetch_last_success_timestamp_seconds", source=source.id) >= started


def test_items_seen_again_are_counted_as_seen_not_taken_in(script: Script, fetch_settings: Settings) -> None:
    pages = [script.url(f"/s{n}.html") for n in range(3)]
    script.set("/feed.xml", Reply(200, rss(*pages)))  # no validators: parsed again at every poll
    for n in range(3):
        script.set(f"/s{n}.html", Reply(200, b"<html><body>ok</body></html>", {"Content-Type": "text/html"}))
    source = Source(id="t-seen", feeds=(script.url("/feed.xml"),), poll_seconds=0.1)
    consumed = sample("newswatch_messages_consumed_total", stage="fetch")

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        outlet = FakeOutlet()
        await run_until(stage, outlet, lambda: len(script.hits("/feed.xml")) >= 4, timeout=5.0)
        assert len(outlet.sent) == 3
        await stage.redis.aclose()
    asyncio.run(go())
    polls = len(script.hits("/feed.xml"))
    assert sample("newswatch_fetch_items_total", source=source.id, state="new") == 3
    assert sample("newswatch_fetch_items_total", source=source.id, state="seen") == 3 * (polls - 1)
    assert sample("newswatch_messages_consumed_total", stage="fetch") == consumed + 3  # not 3 * polls
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="published") == 3


def test_a_restarted_fetch_reads_a_304_feed_whole_once_and_takes_a_lost_page_again(
        script: Script, fetch_settings: Settings) -> None:
    page, other = script.url("/lost.html"), script.url("/kept.html")
    script.set("/feed.xml", Reply(200, rss(page, other), etag='"v1"'))  # 304 to If-None-Match "v1"
    for path in ("/lost.html", "/kept.html"):
        script.set(path, Reply(200, b"<html><body>ok</body></html>", {"Content-Type": "text/html"}))
    source = Source(id="t-lost", feeds=(script.url("/feed.xml"),), poll_seconds=0.1)

    async def go() -> None:
        first = FetchStage(fetch_settings, [source], fast_policy())
        outlet = FakeOutlet()
        await run_until(first, outlet, lambda: len(outlet.sent) == 2 and len(script.hits("/feed.xml")) >= 3, 5.0)
        assert [h.get("if-none-match") for h in script.headers_of("/feed.xml")][:3] == [None, '"v1"', '"v1"']
        # the page of /kept.html went all the way; the one of /lost.html was lost with the broker and
        # its in-flight mark expired
        await redis_store.mark_url_done(first.redis, article_id(other), 3600)
        await first.redis.delete(redis_store.url_key(article_id(page)))
        await first.redis.aclose()
        polls_before = len(script.hits("/feed.xml"))

        second = FetchStage(fetch_settings, [source], fast_policy())
        again = FakeOutlet()
        await run_until(second, again, lambda: bool(again.sent), 5.0)
        assert script.headers_of("/feed.xml")[polls_before].get("if-none-match") is None  # read whole once
        assert [emit.key for _, emit in again.sent] == [article_id(page)]
        assert len(script.hits("/kept.html")) == 1
        await second.redis.aclose()
    asyncio.run(go())


def test_pages_in_flight_of_a_dead_fetch_are_taken_over_and_fetched_again_at_once(
        script: Script, fetch_settings: Settings) -> None:
    # issue 21, case 2: a run killed with kill -9 left a page in flight; its feed answers 304 from
    # then on, so it is never listed again: the next fetch process takes it over by the heartbeat
    page, done = script.url("/stuck.html"), script.url("/done.html")
    script.set("/feed.xml", Reply(200, rss(page, done), etag='"v1"'))
    for path in ("/stuck.html", "/done.html"):
        script.set(path, Reply(200, b"<html><body>ok</body></html>", {"Content-Type": "text/html"}))
    source = Source(id="t-takeover", feeds=(script.url("/feed.xml"),), poll_seconds=0.1)

    async def go() -> None:
        dead = FetchStage(fetch_settings, [source], fast_policy())
        outlet = FakeOutlet()
        await run_until(dead, outlet, lambda: len(outlet.sent) == 2, 5.0)
        stuck = await url_state(dead, page)
        assert stuck == redis_store.inflight_value(dead.replica)
        # the alert stage finishes one: it leaves the dead process's in-flight hash
        await redis_store.mark_url_done(dead.redis, article_id(done), 3600)
        assert await dead.redis.hkeys(redis_store.inflight_key(dead.replica)) == [article_id(page).encode()]
        with redis.Redis.from_url(fetch_settings.redis_url) as sync:
            assert redis_store.pages_in_flight(sync) == {dead.replica: 1}

        heir = FetchStage(fetch_settings, [source], fast_policy())
        heir.outlet = again = FakeOutlet()
        assert await heir.take_over() == 0  # its heartbeat has not expired: it may be running still
        assert again.sent == []
        # kill -9: its heartbeat stops and expires (PUBLISHER_TTL_SECONDS); here, at once
        await dead.redis.delete(redis_store.publisher_key(dead.replica))
        hits = len(script.hits("/stuck.html"))
        assert await heir.take_over() == 1
        await asyncio.wait_for(asyncio.gather(*heir._taking_over), 5.0)
        assert [emit.key for _, emit in again.sent] == [article_id(page)]
        assert len(script.hits("/stuck.html")) == hits + 1 and len(script.hits("/done.html")) == 1
        assert await url_state(heir, page) == redis_store.inflight_value(heir.replica)
        assert not await heir.redis.exists(redis_store.inflight_key(dead.replica))
        assert await heir.take_over() == 0  # taken once, by one process
        with redis.Redis.from_url(fetch_settings.redis_url) as sync:
            assert redis_store.pages_in_flight(sync) == {heir.replica: 1}
            await redis_store.mark_url_done(heir.redis, article_id(page), 3600)
            assert redis_store.pages_in_flight(sync) == {}
        # a live process's beat keeps only its own pages still in flight in its hash
        await heir.beat()
        assert await heir.redis.hlen(redis_store.inflight_key(heir.replica)) == 0
        assert await heir.redis.ttl(redis_store.publisher_key(heir.replica)) > 0
        for stage in (dead, heir):
            await stage.http.aclose()
            await stage.redis.aclose()
    asyncio.run(go())


def test_page_429_with_retry_after_is_published_after_it(script: Script, fetch_settings: Settings) -> None:
    page = script.url("/b.html")
    script.set("/feed.xml", Reply(200, rss(page)))
    script.set("/b.html", Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, b"<html>ok</html>"))
    source = Source(id="t-429", feeds=(script.url("/feed.xml"),), poll_seconds=0.1)

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        outlet = FakeOutlet()
        await run_until(stage, outlet, lambda: bool(outlet.sent), timeout=5.0, linger=0.4)
        hits = script.hits("/b.html")
        assert len(hits) == 2 and hits[1] - hits[0] >= 0.95
        assert len(outlet.sent) == 1 and outlet.sent[0][0] - hits[0] >= 0.95
        assert await url_state(stage, page) == redis_store.inflight_value(stage.replica)
        await stage.redis.aclose()
    asyncio.run(go())
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="retry") == 1
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="published") == 1


def test_404_and_410_are_final_at_once(script: Script, fetch_settings: Settings) -> None:
    gone404, gone410 = script.url("/gone-404.html"), script.url("/gone-410.html")
    script.set("/feed.xml", Reply(200, rss(gone404, gone410)))  # listed again at every poll
    script.set("/gone-404.html", Reply(404, b"no"))
    script.set("/gone-410.html", Reply(410, b"gone"))
    source = Source(id="t-gone", feeds=(script.url("/feed.xml"),), poll_seconds=0.1)
    failed = sample("newswatch_messages_failed_total", stage="fetch", topic="sources", kind="poison")

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        outlet = FakeOutlet()
        await run_until(stage, outlet, lambda: len(script.hits("/feed.xml")) >= 4, timeout=5.0)
        assert len(script.hits("/gone-404.html")) == 1 and len(script.hits("/gone-410.html")) == 1
        assert await url_state(stage, gone404) == "failed: http 404"
        assert await url_state(stage, gone410) == "failed: http 410"
        assert not outlet.sent
        assert not await stage.redis.exists(retry_key(article_id(gone404)))
        await stage.redis.aclose()
    asyncio.run(go())
    assert sample("newswatch_messages_failed_total", stage="fetch", topic="sources", kind="poison") == failed + 2
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="gave_up") == 2


def test_500_forever_is_given_up_after_max_attempts(script: Script, fetch_settings: Settings) -> None:
    page = script.url("/broken.html")
    script.set("/feed.xml", Reply(200, rss(page)))
    script.set("/broken.html", Reply(500, b"oops"))
    source = Source(id="t-500", feeds=(script.url("/feed.xml"),), poll_seconds=0.1)
    failed = sample("newswatch_messages_failed_total", stage="fetch")

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy(max_attempts=3))
        outlet = FakeOutlet()

        async def settled() -> str:
            return await url_state(stage, page)
        states: list[str] = []

        async def watch() -> None:
            while not states or not states[-1]:
                states.append(await settled())
                await asyncio.sleep(0.05)
        watcher = asyncio.create_task(watch())
        await run_until(stage, outlet, watcher.done, timeout=4.0, linger=0.6)
        watcher.cancel()
        assert len(script.hits("/broken.html")) == 3
        assert await url_state(stage, page) == "failed: http 500 after 3 attempts"
        assert not outlet.sent
        assert not await stage.redis.exists(retry_key(article_id(page)))
        assert await stage.redis.zcard(due_key(source.id)) == 0
        await stage.redis.aclose()
    asyncio.run(go())
    assert sample("newswatch_messages_failed_total", stage="fetch") == failed + 1
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="retry") == 2
    assert sample("newswatch_fetch_pages_total", source=source.id, outcome="gave_up") == 1


def test_network_error_is_retried_later_without_blocking(fetch_settings: Settings) -> None:
    port = free_port()
    page = f"http://127.0.0.1:{port}/nobody-listens.html"
    source = Source(id="t-net", pages=(page,))
    fetch_settings = replace(fetch_settings, allow_hosts=f"127.0.0.1:{port}")

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy(max_attempts=2,
                                                                 page_backoff=Backoff(initial=0.3, cap=0.3, jitter=0)))
        stage.outlet = FakeOutlet()
        item = Item(url=page)
        assert await stage._fetch_item(source, item) == "retry"
        saved = await stage.redis.hgetall(retry_key(article_id(page)))
        assert saved[b"attempts"] == b"1" and float(saved[b"not_before"]) > time.time()
        assert await stage._fetch_item(source, item) == "waiting"  # not before its time
        assert await stage.retry_due(source) == 0
        await asyncio.sleep(0.35)
        assert await stage.retry_due(source) == 1  # due: taken from the due set, not from a listing
        assert (await url_state(stage, page)).startswith("failed: ")
        assert (await url_state(stage, page)).endswith("after 2 attempts")
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())


def test_sitemap_index_is_followed_with_conditional_get(script: Script, fetch_settings: Settings) -> None:
    a1, a2, b1, a3 = (script.url(p) for p in ("/a/1.html", "/a/2.html", "/b/1.html", "/a/3.html"))
    script.set("/sm/index.xml", Reply(200, sitemap_index(script.url("/sm/a.xml"), script.url("/sm/b.xml")),
                                      etag='"i1"'))
    script.set("/sm/a.xml", Reply(200, urlset(a1, a2), etag='"a1"'))
    script.set("/sm/b.xml", Reply(200, urlset(b1), etag='"b1"'))
    source = Source(id="t-smi", sitemaps=(script.url("/sm/index.xml"),))

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        assert {i.url for i in await stage._listed(source)} == {a1, a2, b1}
        assert await stage._listed(source) == []  # index and children unchanged (304)
        assert script.headers_of("/sm/a.xml")[-1].get("if-none-match") == '"a1"'
        script.set("/sm/a.xml", Reply(200, urlset(a1, a2, a3), etag='"a2"'))
        # The index is unchanged, but its children are still polled: the new article is found.
        assert {i.url for i in await stage._listed(source)} == {a1, a2, a3}
        assert len(script.hits("/sm/index.xml")) == 3 and len(script.hits("/sm/b.xml")) == 3
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())


def test_sitemap_index_nesting_is_bounded(script: Script, fetch_settings: Settings) -> None:
    leaf = script.url("/x/1.html")
    script.set("/i0.xml", Reply(200, sitemap_index(script.url("/i1.xml"), script.url("/sx.xml"),
                                                   script.url("/sy.xml"))))
    script.set("/i1.xml", Reply(200, sitemap_index(script.url("/i2.xml"), script.url("/i0.xml"))))  # a cycle
    script.set("/i2.xml", Reply(200, sitemap_index(script.url("/deep.xml"))))  # depth 2: not followed
    script.set("/sx.xml", Reply(200, urlset(leaf)))
    script.set("/sy.xml", Reply(200, urlset(script.url("/y/1.html"))))  # third child: over the limit of 2
    script.set("/deep.xml", Reply(200, urlset(script.url("/deep/1.html"))))
    source = Source(id="t-deep", sitemaps=(script.url("/i0.xml"),))

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy(max_sitemap_depth=2, max_child_sitemaps=2))
        assert [i.url for i in await stage._listed(source)] == [leaf]
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    assert [len(script.hits(p)) for p in ("/i0.xml", "/i1.xml", "/i2.xml", "/sx.xml", "/sy.xml", "/deep.xml")] == [
        1, 1, 1, 1, 0, 0]


def test_sitemap_answering_500_is_an_error_and_backed_off(script: Script, fetch_settings: Settings) -> None:
    # The error page is a well-formed sitemap: its status alone must stop it from being read.
    script.set("/sm.xml", Reply(500, urlset(script.url("/stale.html")), {"Retry-After": "1"}),
               Reply(200, urlset(script.url("/fresh.html"))))
    source = Source(id="t-sm500", sitemaps=(script.url("/sm.xml"),))
    errors = sample("newswatch_fetch_polls_total", source=source.id, outcome="error")

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        assert await stage._listed(source) == []
        assert sample("newswatch_fetch_polls_total", source=source.id, outcome="error",
                      status_class="5xx") == errors + 1
        assert await stage._listed(source) == []  # backed off: not asked again before Retry-After
        assert len(script.hits("/sm.xml")) == 1
        assert sample("newswatch_fetch_polls_total", source=source.id, outcome="backoff", status_class="none") == 1
        assert sample("newswatch_fetch_last_success_timestamp_seconds", source=source.id) == 0
        await asyncio.sleep(1.05)
        assert [i.url for i in await stage._listed(source)] == [script.url("/fresh.html")]
        assert sample("newswatch_fetch_polls_total", source=source.id, outcome="ok") == 1
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())


def test_broken_feeds_are_errors_with_a_log_line(script: Script, fetch_settings: Settings,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    script.set("/forbidden.xml", Reply(403, b"no"))
    script.set("/html.xml", Reply(200, b"<html><body><p>not a feed</p></body></html>", {"Content-Type": "text/html"}))
    script.set("/ok.xml", Reply(200, rss(script.url("/p.html"))))
    source = Source(id="t-feeds", feeds=tuple(script.url(p) for p in ("/forbidden.xml", "/html.xml", "/ok.xml")))

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        with caplog.at_level(logging.WARNING, logger="services.fetch.service"):
            assert [i.url for i in await stage._listed(source)] == [script.url("/p.html")]
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="error") == 2
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="error", status_class="4xx") == 1  # 403
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="error", status_class="2xx") == 1  # html
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="ok") == 1
    messages = [(r.getMessage(), getattr(r, "feed", "")) for r in caplog.records]
    assert ("feed poll failed: HTTP 403; check the URL in the sources file", script.url("/forbidden.xml")) in messages
    assert ("feed poll failed: the body is not a feed; backing off", script.url("/html.xml")) in messages


def test_page_actions() -> None:
    assert page_action(200) is Action.PUBLISH and page_action(203) is Action.PUBLISH
    assert all(page_action(s) is Action.RETRY for s in (408, 429, 500, 502, 503, 504))
    assert all(page_action(s) is Action.FINAL for s in (204, 300, 304, 400, 401, 403, 404, 410, 451))


@pytest.mark.parametrize(("text", "expected"), [
    (b"sources:\n  - id: s\n    feeds: [ftp://a.org/rss]\n",
     r"sources\.yaml: \$\.sources\[0\]\.feeds\[0\]: 'ftp://a\.org/rss' is not an http\(s\) URL"),
    (b"sources:\n  - id: s\n    pages: [https://a.org/x]\n  - feeds: [https://a.org/rss]\n",
     r"sources\.yaml: .*missing required field `id` - at `\$\.sources\[1\]`"),
    (b"sources:\n  - id: s\n    feeds: [https://a.org/rss]\n    poll_seconds: -5\n",
     r"sources\.yaml: .*`float` > 0\.0 - at `\$\.sources\[0\]\.poll_seconds`"),
    (b"sources:\n  - id: caf\xe9\n    feeds: [https://a.org/rss]\n",
     r"sources\.yaml: line 2: byte 0xe9 is not UTF-8"),
    (b"sources:\n  - id: s\n    feed: [https://a.org/rss]\n",
     r"sources\.yaml: .*unknown field `feed` - at `\$\.sources\[0\]`"),
    (b"sources:\n  - id: s\n    feeds: [https://a.org/rss]\n  - id: s\n    feeds: [https://b.org/rss]\n",
     r"sources\.yaml: \$\.sources\[1\]\.id: id 's' is used twice"),
    (b"sources:\n  - id: s\n    lang: fr\n", r"sources\.yaml: \$\.sources\[0\]: source 's' lists no feeds"),
    (b"", r"sources\.yaml: the file is empty"),
    (b"sources: [\n", r"sources\.yaml: line \d+, column \d+: not valid YAML"),
])
def test_bad_sources_file_gives_a_clear_error(tmp_path: Path, text: bytes, expected: str) -> None:
    path = tmp_path / "sources.yaml"
    path.write_bytes(text)
    with pytest.raises(SourcesError, match=expected):
        load_sources(path)


def test_shipped_and_demo_sources_files_load(tmp_path: Path) -> None:
    shipped = load_sources(ROOT / "config/sources.yaml")
    assert shipped and all(s.feeds or s.sitemaps or s.pages for s in shipped)
    demo = tmp_path / "demo.yaml"
    demo.write_text(sources_yaml("http://127.0.0.1:8808", 1.0))
    loaded = load_sources(demo)
    assert [s.id for s in loaded] == [site.id for site in SITES]
    assert all(s.poll_seconds == 1.0 and s.feeds[0].startswith("http://127.0.0.1:8808/") for s in loaded)


def test_robots_txt_trouble_is_retried_and_a_disallow_is_final(script: Script, fetch_settings: Settings) -> None:
    page, private = script.url("/r.html"), script.url("/private/p.html")
    script.set("/robots.txt", Reply(503, b"busy"))
    script.set("/r.html", Reply(200, b"<html>ok</html>"))
    source = Source(id="t-robots", pages=(page,))

    async def go() -> None:
        stage = FetchStage(fetch_settings, [source], fast_policy())
        stage.outlet = FakeOutlet()
        assert await stage._fetch_item(source, Item(url=page)) == "retry"  # robots.txt unavailable: later
        assert await url_state(stage, page) == ""
        assert script.hits("/r.html") == []
        script.set("/robots.txt", Reply(200, b"User-agent: *\nDisallow: /private/\n"))
        stage.http._robots.clear()
        assert await stage.redis.exists(robots_key(script.base))  # shared with the other replicas
        await stage.redis.delete(robots_key(script.base))  # as if its 5 minutes were over
        assert await stage._fetch_item(source, Item(url=private)) == "failed"
        assert (await url_state(stage, private)).endswith("disallowed by robots.txt")
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
