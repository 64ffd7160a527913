"""fetch against misbehaving servers on 127.0.0.1 (issue 12): slow drips, endless bodies, gzip and
entity bombs, redirects into the local network, redirect loops, robots.txt tricks, wrong charsets,
invalid XML, feeds listed twice, two replicas sharing sources and hosts. Real Redis (``redis_port``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
import redis

from services.fetch.feeds import Item, SitemapError, Source, article_id, parse_feed, parse_sitemap
from services.fetch.politeness import AddressPolicy, FetchError, PoliteClient, is_public, normalise_path
from services.fetch.service import FetchStage, dedupe_sources, doc_key
from shared import redis_store
from shared.events import RawPage
from shared.retry import Backoff
from shared.settings import Settings
from tests.unit.test_fetch import FakeOutlet, fast_policy, rss, run_until, sample

DB = 8  # a Redis database of its own, flushed by every test

Handler = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A local server answering each path with a handler that writes what it likes, as slowly as it likes."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        state = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with state.lock:
                    state.requests.append((self.path, time.monotonic()))
                    route = state.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> list[float]:
        with self.lock:
            return [t for p, t in self.requests if p == path]

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests]

    def answer(self, path: str, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            for name, value in (headers or {}).items():
                h.send_header(name, value)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        self.routes[path] = route

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.answer(path, status, b"", {"Location": location})

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other_server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def settings(redis_port: int, server: Server) -> Settings:
    url = f"redis://127.0.0.1:{redis_port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    return Settings.from_env({"NEWSWATCH_REDIS_URL": url, "NEWSWATCH_ALLOW_HOSTS": f"127.0.0.1:{server.port}",
                              "NEWSWATCH_HOST_DELAY_SECONDS": "0", "NEWSWATCH_HTTP_TIMEOUT": "5",
                              "NEWSWATCH_HTTP_DEADLINE": "5", "NEWSWATCH_POLL_SECONDS": "0.2"})


def client(server: Server, **kwargs: Any) -> PoliteClient:
    options: dict[str, Any] = {"deadline": 5.0, "host_concurrency": 2}
    options.update(kwargs)
    max_bytes = options.pop("max_bytes", 1_000_000)
    delay = options.pop("delay", 0.0)
    return PoliteClient("newswatch-test/1.0", 5, max_bytes, delay, f"127.0.0.1:{server.port}", **options)


def fetch(c: PoliteClient, url: str) -> Any:
    async def go() -> Any:
        try:
            return await c.get(url)
        finally:
            await c.aclose()
    return asyncio.run(go())


# --- safety ----------------------------------------------------------------------------------------

def test_slow_drip_ends_at_the_deadline_and_another_source_on_the_host_keeps_its_pace(
        server: Server, settings: Settings) -> None:
    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(60):  # a byte every 0.3 s, for at most 18 s
            if server.stopping.is_set():
                return
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.3)
    server.routes["/drip.html"] = drip
    server.answer("/b/feed.xml", 200, rss(), {"Content-Type": "application/rss+xml"})
    slow = Source(id="t-drip", pages=(server.url("/drip.html"),), poll_seconds=0.2)
    busy = Source(id="t-pace", feeds=(server.url("/b/feed.xml"),), poll_seconds=0.2)
    settings = replace(settings, http_deadline=1.0, host_delay_seconds=0.05)

    async def go() -> None:
        stage = FetchStage(settings, [slow, busy], fast_policy(adapt_min=1.0, adapt_max=1.0))
        outlet = FakeOutlet()
        started = time.monotonic()
        await run_until(stage, outlet, lambda: time.monotonic() - started > 3.0, timeout=4.0, linger=0)
        retry = await stage.redis.hgetall(f"nw:fetch:retry:{article_id(slow.pages[0])}")
        assert b"deadline" in retry[b"reason"], retry
        await stage.redis.aclose()
    asyncio.run(go())
    drips = server.hits("/drip.html")
    assert 2 <= len(drips) <= 4, drips  # each ended at its 1 s deadline, then retried
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(drips))
    polls = server.hits("/b/feed.xml")
    assert len(polls) >= 10, polls  # every ~0.2 s for 3 s, whatever the drip holds
    assert max(b - a for a, b in itertools.pairwise(polls)) < 0.6


def test_endless_body_is_cut_at_the_cap(server: Server) -> None:
    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.end_headers()
        for _ in range(2000):  # 128 MB at most, close-delimited
            if server.stopping.is_set():
                return
            h.wfile.write(b"a" * 65536)
    server.routes["/endless.html"] = endless
    started = time.monotonic()
    with pytest.raises(FetchError, match="1000000-byte limit") as info:
        fetch(client(server), server.url("/endless.html"))
    assert info.value.permanent and time.monotonic() - started < 3


def test_gzip_bomb_is_refused_without_expanding_past_the_cap(server: Server) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(200)) + packer.flush()  # 200 MB → ~200 KB
    assert len(bomb) < 300_000
    server.answer("/bomb.html", 200, bomb, {"Content-Encoding": "gzip", "Content-Type": "text/html"})
    with pytest.raises(FetchError, match="after gzip decoding"):
        fetch(client(server, max_bytes=5_000_000), server.url("/bomb.html"))
    # A small gzip body is decoded.
    server.answer("/small.html", 200, _gzip(b"<html>ok</html>"), {"Content-Encoding": "gzip",
                                                                  "Content-Type": "text/html"})
    assert fetch(client(server), server.url("/small.html")).body == b"<html>ok</html>"


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>"""


def test_billion_laughs_feed_and_sitemap_are_refused_as_errors(server: Server, settings: Settings,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    feed = BILLION_LAUGHS + b'<rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title>' \
        b"<link>http://a.org/1</link></item></channel></rss>"
    sitemap = BILLION_LAUGHS + b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url>' \
        b"<loc>http://a.org/&lol9;</loc></url></urlset>"
    started = time.monotonic()
    assert "entities" in parse_feed(feed).error
    with pytest.raises(SitemapError, match="entity"):
        parse_sitemap(sitemap)
    assert time.monotonic() - started < 1.0
    server.answer("/lol.xml", 200, feed, {"Content-Type": "application/rss+xml"})
    server.answer("/lol-sitemap.xml", 200, sitemap, {"Content-Type": "application/xml"})
    source = Source(id="t-lol", feeds=(server.url("/lol.xml"),), sitemaps=(server.url("/lol-sitemap.xml"),))

    async def go() -> None:
        stage = FetchStage(settings, [source], fast_policy())
        with caplog.at_level(logging.WARNING, logger="services.fetch.service"):
            assert await stage._listed(source) == []
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="error") == 2
    messages = {r.getMessage() for r in caplog.records}
    assert {"feed poll failed: the body is not a feed; backing off",
            "sitemap poll failed: the body is not a sitemap; backing off"} <= messages


def test_redirect_to_the_metadata_address_is_refused(server: Server) -> None:
    server.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
    c = client(server)
    with pytest.raises(FetchError, match=r"169\.254\.169\.254 is not a public address") as info:
        fetch(c, server.url("/to-metadata"))
    assert info.value.permanent and c.backend.connected == [("127.0.0.1", server.port)] * 2  # robots.txt, 1st hop


def test_redirect_to_loopback_not_on_the_allow_list_is_refused_before_any_connection(
        server: Server, other_server: Server) -> None:
    other_server.answer("/secret", 200, b"internal", {"Content-Type": "text/plain"})
    server.redirect("/to-loopback", other_server.url("/secret"))  # 127.0.0.1, another port
    server.redirect("/to-localhost", f"http://localhost:{other_server.port}/secret")  # a name, resolved
    server.redirect("/to-mapped", f"http://[::ffff:127.0.0.1]:{other_server.port}/secret")
    for path in ("/to-loopback", "/to-localhost", "/to-mapped"):
        c = client(server)
        with pytest.raises(FetchError, match="public address") as info:
            fetch(c, server.url(path))
        assert info.value.permanent and {port for _, port in c.backend.connected} == {server.port}, path
    assert other_server.paths() == []  # it saw no request at all, not even robots.txt
    assert [p for p in server.paths() if p != "/robots.txt"] == ["/to-loopback", "/to-localhost", "/to-mapped"]


def test_address_policy() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.169.254", "0.0.0.0", "::1",
                    "::ffff:127.0.0.1", "fe80::1", "fd00::1", "100.64.0.1", "224.0.0.1", "2002:7f00:1::1"):
        assert not is_public(address), address
    assert is_public("93.184.216.34") and is_public("2606:4700::1111")
    policy = AddressPolicy("127.0.0.1:8808, demo.test")

    async def go() -> None:
        assert await policy.pick("127.0.0.1", 8808) == "127.0.0.1"
        with pytest.raises(FetchError, match="non-public"):
            await policy.pick("127.0.0.1", 8809)
        with pytest.raises(FetchError, match="not a public address"):
            policy.check_literal("127.0.0.1", 8809, "http://127.0.0.1:8809/")
        assert policy.allowed_by_name("DEMO.test", 1234)
    asyncio.run(go())
    with pytest.raises(ValueError, match="bad port"):
        AddressPolicy("h:notaport")


def test_redirect_loop_and_redirect_limit(server: Server) -> None:
    server.redirect("/loop-a", "/loop-b")
    server.redirect("/loop-b", "/loop-a")
    with pytest.raises(FetchError, match="redirect loop"):
        fetch(client(server), server.url("/loop-a"))
    for n in range(10):
        server.redirect(f"/chain/{n}", f"/chain/{n + 1}")
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch(client(server), server.url("/chain/0"))
    assert len(server.hits("/chain/5")) == 1 and server.hits("/chain/6") == []


def test_content_type_is_checked(server: Server) -> None:
    server.answer("/image.jpg", 200, b"\xff\xd8\xff" + bytes(100), {"Content-Type": "image/jpeg"})
    with pytest.raises(FetchError, match="refused content type 'image/jpeg'") as info:
        fetch(client(server), server.url("/image.jpg"))
    assert info.value.permanent
    for kind in ("text/html; charset=utf-8", "application/rss+xml", "application/feed+json", "application/xml", ""):
        server.answer("/ok", 200, b"ok", {"Content-Type": kind} if kind else {})
        assert fetch(client(server), server.url("/ok")).body == b"ok", kind


# --- politeness ------------------------------------------------------------------------------------

def test_dot_segments_are_resolved_before_robots_txt_is_read(server: Server, settings: Settings) -> None:
    assert normalise_path("http://h/bad/../blocked/page.html") == "http://h/blocked/page.html"
    assert normalise_path("http://h/a/./b/../../c/") == "http://h/c/"
    server.answer("/robots.txt", 200, b"User-agent: *\nDisallow: /blocked/\n", {"Content-Type": "text/plain"})
    server.answer("/blocked/page.html", 200, b"<html>secret</html>", {"Content-Type": "text/html"})
    for url in (server.url("/bad/../blocked/page.html"), server.url("/./blocked/page.html"),
                server.url("/x/%2e%2e/blocked/page.html")):
        with pytest.raises(FetchError, match=r"disallowed by robots\.txt"):
            fetch(client(server), url)
    assert server.hits("/blocked/page.html") == []


def test_crawl_delay_spaces_requests(server: Server) -> None:
    server.answer("/robots.txt", 200, b"User-agent: *\nCrawl-delay: 1\n", {"Content-Type": "text/plain"})
    server.answer("/p.html", 200, b"ok", {"Content-Type": "text/html"})

    async def go() -> None:
        c = client(server)
        await asyncio.gather(*(c.get(server.url("/p.html")) for _ in range(3)))
        await c.aclose()
    asyncio.run(go())
    hits = server.hits("/p.html")
    assert len(hits) == 3 and all(b - a >= 0.99 for a, b in itertools.pairwise(hits)), hits


def test_robots_txt_is_cached_in_redis_for_every_replica(server: Server, settings: Settings) -> None:
    server.answer("/robots.txt", 200, b"User-agent: *\nDisallow: /no/\n", {"Content-Type": "text/plain"})
    server.answer("/yes.html", 200, b"ok", {"Content-Type": "text/html"})

    async def go() -> None:
        for _ in range(2):  # two replicas, one after the other
            r = redis_store.connect(settings)
            c = client(server, redis=r)
            await c.get(server.url("/yes.html"))
            with pytest.raises(FetchError, match="robots"):
                await c.get(server.url("/no/x.html"))
            await c.aclose()
            await r.aclose()
    asyncio.run(go())
    assert len(server.hits("/robots.txt")) == 1


def test_wrong_charset_and_invalid_xml(server: Server, settings: Settings) -> None:
    latin1 = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Élysée</title>'
              f'<item><title>Café à Erevan</title><link>{server.url("/cafe.html")}</link></item>'
              "</channel></rss>").encode("latin-1")  # declared UTF-8, sent as Latin-1
    server.answer("/latin1.xml", 200, latin1, {"Content-Type": "application/rss+xml; charset=utf-8"})
    server.answer("/invalid.xml", 200, b"<rss><channel><<<>>> \x00\x01 not xml", {"Content-Type": "text/xml"})
    server.answer("/invalid-sitemap.xml", 200, b"<urlset><url><loc>", {"Content-Type": "text/xml"})
    source = Source(id="t-charset", feeds=(server.url("/latin1.xml"), server.url("/invalid.xml")),
                    sitemaps=(server.url("/invalid-sitemap.xml"),))

    async def go() -> None:
        stage = FetchStage(settings, [source], fast_policy())
        items = await stage._listed(source)
        assert [i.url for i in items] == [server.url("/cafe.html")]
        assert items[0].title.startswith("Caf")  # decoded somehow, never a crash
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="error") == 2
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="ok") == 1


# --- sources ---------------------------------------------------------------------------------------

def test_feed_formats() -> None:
    rss091 = b'<?xml version="1.0"?><rss version="0.91"><channel><title>T</title><language>fr</language>' \
        b"<item><title>A</title><link>https://a.org/091</link></item></channel></rss>"
    rdf = b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" ' \
        b'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="x"><title>T</title></channel>' \
        b'<item rdf:about="https://a.org/10"><title>B</title><link>https://a.org/10</link></item></rdf:RDF>'
    atom = b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>' \
        b'<entry><title>C</title><link href="https://a.org/atom"/><updated>2026-11-01T10:00:00Z</updated>' \
        b"</entry></feed>"
    jsonfeed = b'{"version": "https://jsonfeed.org/version/1.1", "title": "T", "language": "ru-RU", "items": [' \
        b'{"id": "1", "url": "https://a.org/json", "title": "D", "date_published": "2026-11-01T10:00:00Z"},' \
        b'{"id": "2", "external_url": "https://b.org/ext"}, {"id": "3", "url": "javascript:alert(1)"}]}'
    assert [i.url for i in parse_feed(rss091).items] == ["https://a.org/091"]
    assert parse_feed(rss091).lang == "fr"
    assert [i.url for i in parse_feed(rdf).items] == ["https://a.org/10"]
    assert [i.url for i in parse_feed(atom).items] == ["https://a.org/atom"]
    json_items = parse_feed(jsonfeed).items
    assert [i.url for i in json_items] == ["https://a.org/json", "https://b.org/ext"]
    assert json_items[0].lang == "ru" and json_items[0].published.startswith("2026-11-01")
    assert parse_feed(b'{"version": 1}').error and parse_feed(b"{not json").error


def test_a_feed_listed_twice_is_polled_once_and_an_article_in_five_feeds_fetched_once(
        server: Server, settings: Settings) -> None:
    article = server.url("/story.html")
    server.answer("/story.html", 200, b"<html>story</html>", {"Content-Type": "text/html"})
    for n in range(5):
        server.answer(f"/f{n}.xml", 200, rss(f"{article}?utm_source=feed{n}#top"), {"Content-Type": "text/xml"})
    shared_feed = server.url("/f0.xml")
    sources = [
        Source(id="t-a", feeds=(shared_feed, shared_feed.replace("127.0.0.1", "127.0.0.1") + "#again"),
               poll_seconds=0.2),
        Source(id="t-b", feeds=(shared_feed.replace("http://", "HTTP://"), *(server.url(f"/f{n}.xml")
                                                                             for n in range(1, 5))),
               poll_seconds=0.2),
    ]
    kept = dedupe_sources(sources)
    assert kept[0].feeds == (shared_feed,) and kept[1].feeds == tuple(server.url(f"/f{n}.xml") for n in range(1, 5))

    async def go() -> None:
        stage = FetchStage(settings, sources, fast_policy(adapt_min=1.0, adapt_max=1.0))
        outlet = FakeOutlet()
        started = time.monotonic()
        await run_until(stage, outlet, lambda: time.monotonic() - started > 1.5, timeout=2.0, linger=0)
        assert len(outlet.sent) == 1
        await stage.redis.aclose()
    asyncio.run(go())
    assert len([p for p in server.paths() if p.startswith("/story.html")]) == 1
    polls = server.hits("/f0.xml")
    assert 4 <= len(polls) <= 9, polls  # one loop every 0.2 s, not two
    assert min(b - a for a, b in itertools.pairwise(polls)) >= 0.15


def test_polling_adapts_to_how_often_a_feed_changes(server: Server, settings: Settings) -> None:
    calls = {"n": 0}

    def changing(h: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        body = rss(server.url(f"/new/{calls['n']}.html"))
        h.send_response(200)
        h.send_header("Content-Type", "text/xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    server.routes["/changing.xml"] = changing
    server.answer("/still.xml", 200, rss(), {"Content-Type": "text/xml", "ETag": '"same"'})
    source = Source(id="t-adapt", feeds=(server.url("/changing.xml"), server.url("/still.xml")), poll_seconds=1.0)

    async def go() -> None:
        stage = FetchStage(settings, [source], fast_policy())
        intervals = {}
        for url in source.feeds:
            for _ in range(6):
                await stage.redis.delete(f"nw:fetch:lease:{article_id(url)}")
                _, intervals[url] = await stage._poll_doc(source, "feed", url)
        assert intervals[source.feeds[0]] == pytest.approx(0.25)  # changes at every poll: 1 s → ¼ s
        assert intervals[source.feeds[1]] == pytest.approx(4.0)  # never changes: 1 s → 4 s
        await stage.flush_writes()
        stored = await stage.redis.hget(doc_key(source.feeds[1]), "interval")
        assert stored is not None and float(stored) == pytest.approx(4.0)
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())


# --- scale out -------------------------------------------------------------------------------------

def test_two_replicas_share_the_sources_and_the_host_spacing(server: Server, settings: Settings) -> None:
    pages = [server.url(f"/p/{n}.html") for n in range(8)]
    for n in range(8):
        server.answer(f"/p/{n}.html", 200, b"<html>p</html>", {"Content-Type": "text/html"})
    server.answer("/feed.xml", 200, rss(*pages), {"Content-Type": "text/xml"})
    source = Source(id="t-replicas", feeds=(server.url("/feed.xml"),), poll_seconds=0.3)
    settings = replace(settings, host_delay_seconds=0.15, host_concurrency=4)

    async def go() -> list[FakeOutlet]:
        stages = [FetchStage(settings, [source], fast_policy(adapt_min=1.0, adapt_max=1.0)) for _ in range(2)]
        outlets = [FakeOutlet(), FakeOutlet()]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(s.run(o, stop)) for s, o in zip(stages, outlets, strict=True)]
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.gather(*tasks)
        for s in stages:
            await s.redis.aclose()
        return outlets
    outlets = asyncio.run(go())
    assert sum(len(o.sent) for o in outlets) == 8  # each page published once
    for n in range(8):
        assert len(server.hits(f"/p/{n}.html")) == 1
    polls = server.hits("/feed.xml")
    assert 5 <= len(polls) <= 12, polls  # one lease holder per 0.3 s, not two pollers
    starts = sorted(t for p, t in server.requests if p != "/robots.txt")
    # The host delay holds across the two replicas: requests leave at least 0.15 s apart. The server
    # sees them arrive, and a request held up on a busy machine arrives late (never early), so two
    # arrivals can be closer than 0.15 s; but any 0.6 s holds at most 6 of them (the slots of 0.85 s,
    # for up to 0.25 s of lateness), where two replicas spacing on their own would send up to 10.
    busiest = max(sum(1 for t in starts if a <= t <= a + 0.6) for a in starts)
    assert busiest <= 6, [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert (starts[-1] - starts[0]) / (len(starts) - 1) >= 0.14  # on average, the delay itself


def test_page_retry_after_429_then_published(server: Server, settings: Settings) -> None:
    replies = [(429, {"Retry-After": "1"}), (200, {"Content-Type": "text/html"})]

    def page(h: BaseHTTPRequestHandler) -> None:
        status, headers = replies.pop(0) if len(replies) > 1 else replies[0]
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"ok")
    server.routes["/busy.html"] = page
    source = Source(id="t-429b", pages=(server.url("/busy.html"),), poll_seconds=0.2)

    async def go() -> FakeOutlet:
        stage = FetchStage(settings, [source], fast_policy())
        outlet = FakeOutlet()
        await run_until(stage, outlet, lambda: bool(outlet.sent), timeout=4.0, linger=0.2)
        await stage.redis.aclose()
        return outlet
    outlet = asyncio.run(go())
    hits = server.hits("/busy.html")
    # after the 429, not before its Retry-After; then re-polls of the page (same body: nothing sent)
    assert len(hits) >= 2 and hits[1] - hits[0] >= 0.95 and len(outlet.sent) == 1


def test_fetch_item_answers_busy_while_another_fetcher_holds_the_url(server: Server, settings: Settings) -> None:
    url = server.url("/held.html")

    async def go() -> None:
        stage = FetchStage(settings, [], fast_policy())
        stage.outlet = FakeOutlet()
        await stage.redis.set(f"nw:fetch:claim:{article_id(url)}", "other", px=5000)
        assert await stage._fetch_item(Source(id="x", pages=(url,)), Item(url=url)) == "busy"
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    assert server.hits("/held.html") == []


def test_a_polled_page_is_asked_again_conditionally_and_a_change_is_a_new_version(
        server: Server, settings: Settings) -> None:
    state = {"version": 1, "conditional": 0, "not_modified": 0}

    def page(h: BaseHTTPRequestHandler) -> None:
        etag = f'"v{state["version"]}"'
        if h.headers.get("If-None-Match"):
            state["conditional"] += 1
        if h.headers.get("If-None-Match") == etag:
            state["not_modified"] += 1
            h.send_response(304)
            h.send_header("ETag", etag)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = f"<html><body><p>Live page, version {state['version']}.</p></body></html>".encode()
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("ETag", etag)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    server.routes["/live.html"] = page
    url = server.url("/live.html")
    source = Source(id="t-live", pages=(url,), poll_seconds=0.2)

    async def go() -> FakeOutlet:
        stage = FetchStage(settings, [source], fast_policy())
        outlet = FakeOutlet()
        started = time.monotonic()
        # about 1 s at version 1 (first fetch, then 304s), then version 2 (one new version, then 304s)
        def changed() -> bool:
            if time.monotonic() - started > 1.0:
                state["version"] = 2
            return time.monotonic() - started > 2.0
        await run_until(stage, outlet, changed, timeout=4.0, linger=0)
        await stage.redis.aclose()
        return outlet
    outlet = asyncio.run(go())
    pages = [cast(RawPage, emit.event) for _, emit in outlet.sent]
    assert all(isinstance(p, RawPage) for p in pages)
    ids = [p.id for p in pages]
    assert len(ids) == 2 and len(set(ids)) == 2, ids  # version 1, then version 2 under its own id
    assert ids[0] == article_id(url)
    assert state["conditional"] >= 4 and state["not_modified"] >= 3, state  # 304s between the versions
    assert b"version 2" in pages[1].body


# --- what is permanent (issue 21, cases 4 to 6) -----------------------------------------------------

def test_a_200_that_is_not_a_feed_is_backed_off_like_an_error(server: Server, settings: Settings,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    # a feed URL that answers its login page with 200: polled at every poll before (53 times in 100 s)
    login = b"<html><body><form action=/login><input name=user></form></body></html>"
    server.answer("/login.xml", 200, login, {"Content-Type": "text/html"})
    server.answer("/sitemap.xml", 200, login, {"Content-Type": "text/html"})
    url, sitemap = server.url("/login.xml"), server.url("/sitemap.xml")
    source = Source(id="t-login", feeds=(url,), sitemaps=(sitemap,))

    async def go() -> None:
        stage = FetchStage(settings, [source], replace(fast_policy(), feed_backoff=Backoff(initial=60.0, cap=3600.0)))
        with caplog.at_level(logging.WARNING, logger="services.fetch.service"):
            for _ in range(5):  # five polls in a row: the first asks, the others are backed off
                assert await stage._listed(source) == []
        assert len(server.hits("/login.xml")) == 1 and len(server.hits("/sitemap.xml")) == 1
        assert stage._docs[url].attempts == 1 and stage._docs[url].not_before > time.time() + 40
        # its backoff over, it answers the same: the backoff grows (a 200 does not reset it)
        stage._docs[url].not_before = 0.0
        assert await stage._listed(source) == []
        assert stage._docs[url].attempts == 2 and len(server.hits("/login.xml")) == 2
        # the feed is back: its backoff ends with the first poll that parses
        server.answer("/login.xml", 200, rss(server.url("/a.html")), {"Content-Type": "application/rss+xml"})
        stage._docs[url].not_before = 0.0
        assert [i.url for i in await stage._listed(source)] == [server.url("/a.html")]
        assert url not in stage._docs
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    # the feed: asked twice, then parsed; the sitemap: asked once, backed off at the six polls after
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="error", status_class="2xx") == 2 + 1
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="backoff") == 4 + 6
    assert sample("newswatch_fetch_polls_total", source=source.id, outcome="ok") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("feed poll failed: the body is not a feed; backing off") == 2


def _huge_head(h: BaseHTTPRequestHandler, count: int, size: int) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    for n in range(count):
        h.send_header(f"X-H{n}", "v" * size)
    h.send_header("Content-Length", "2")
    h.end_headers()
    h.wfile.write(b"ok")


def test_oversized_response_heads_are_final_at_once(server: Server, settings: Settings) -> None:
    server.routes["/many.html"] = lambda h: _huge_head(h, 10_000, 20)  # 10,000 headers (300 KB)
    server.routes["/long.html"] = lambda h: _huge_head(h, 1, 1_000_000)  # one header line of 1 MB

    def hang_up(h: BaseHTTPRequestHandler) -> None:  # closes the connection without an answer: an accident
        h.close_connection = True
    server.routes["/hang-up.html"] = hang_up
    source = Source(id="t-heads", pages=(server.url("/many.html"),))

    async def go() -> None:
        c = client(server)
        for path in ("/many.html", "/long.html"):
            with pytest.raises(FetchError, match="RemoteProtocolError") as info:
                await c.get(server.url(path))
            assert info.value.permanent, str(info.value)
        with pytest.raises(FetchError, match="RemoteProtocolError") as info:
            await c.get(server.url("/hang-up.html"))
        assert not info.value.permanent  # retried later, as before
        await c.aclose()
        # through fetch: given up at the first answer, not retried 8 times as transient
        stage = FetchStage(settings, [source], fast_policy())
        stage.outlet = FakeOutlet()
        for path in ("/many.html", "/long.html"):
            assert await stage._fetch_item(source, Item(url=server.url(path))) == "failed"
            state = await redis_store.url_state(stage.redis, article_id(server.url(path)))
            assert state.startswith("failed: ") and "Receive buffer too long" in state and len(state) <= 500
        assert await stage._fetch_item(source, Item(url=server.url("/hang-up.html"))) == "retry"
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    assert len(server.hits("/many.html")) == 2 and len(server.hits("/long.html")) == 2


def test_refused_links_are_counted_and_logged_once_and_cut(server: Server, settings: Settings,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    long_url = server.url("/x?" + "a" * 100_000)  # a 100 KB URL
    bad = ["javascript:alert(1)", "file:///etc/passwd", "ftp://files.example.org/a.txt",
           "data:text/html;base64,PHNjcmlwdD4=", "mailto:desk@example.org"]
    good = server.url("/good.html")
    links = [*bad, long_url, good]
    server.answer("/feed.xml", 200, rss(*links), {"Content-Type": "application/rss+xml"})
    atom = ('<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>'
            + "".join(f'<entry><title>t</title><link href="{u}"/></entry>' for u in links) + "</feed>").encode()
    server.answer("/atom.xml", 200, atom, {"Content-Type": "application/atom+xml"})
    sitemap = ('<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
               + "".join(f"<url><loc>{u}</loc></url>" for u in links) + "</urlset>").encode()
    server.answer("/sitemap.xml", 200, sitemap, {"Content-Type": "application/xml"})
    server.answer("/good.html", 200, b"<html>ok</html>", {"Content-Type": "text/html"})
    source = Source(id="t-refused", feeds=(server.url("/feed.xml"), server.url("/atom.xml")),
                    sitemaps=(server.url("/sitemap.xml"),))

    async def go() -> None:
        stage = FetchStage(settings, [source], fast_policy())
        stage.outlet = FakeOutlet()
        with caplog.at_level(logging.INFO):
            for _ in range(2):  # two polls: counted at each, logged at the first only
                await stage._fetch_items(source, await stage._listed(source), None)
        await stage.http.aclose()
        await stage.redis.aclose()
    asyncio.run(go())
    # three documents list the same links, twice each
    assert sample("newswatch_fetch_refused_total", source=source.id, reason="scheme") == 3 * 5 * 2
    assert sample("newswatch_fetch_refused_total", source=source.id, reason="too_long") == 3 * 1 * 2
    assert [p for p in server.paths() if p.startswith(("/x", "/good"))] == ["/good.html"]  # one fetch, the good one
    refusals = [r for r in caplog.records if r.getMessage().endswith("lists a link fetch refuses")]
    assert len(refusals) == 3 * 6  # once per (document, link)
    assert {getattr(r, "reason", "") for r in refusals} == {"scheme", "too_long"}
    # no log line anywhere is long: the 100 KB URL shows cut, with its length
    assert max(len(repr(r.__dict__)) for r in caplog.records) < 3000
    cut_ones = [r for r in refusals if getattr(r, "reason", "") == "too_long"]
    assert all(getattr(r, "chars", 0) == len(long_url) and "characters)" in getattr(r, "link", "")
               for r in cut_ones)
