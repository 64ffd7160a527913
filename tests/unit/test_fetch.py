"""fetch: sources, feeds, sitemaps, URL ids, politeness and safety against a local server."""

from __future__ import annotations

import asyncio
import time

import pytest

from newswatch.demo.content import ARTICLES, SITES
from newswatch.demo.server import feed_path, serve_in_thread
from newswatch.local import free_port
from services.fetch.feeds import SourcesError, article_id, parse_feed, parse_sitemap, parse_sources
from services.fetch.politeness import FetchError, HostGate, PoliteClient, check_url_safe


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


def test_sitemap_with_news_extension() -> None:
    body = b"""<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
      xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"><url><loc>https://a.org/1</loc>
      <news:news><news:publication><news:language>fr</news:language></news:publication>
      <news:publication_date>2026-11-01T10:00:00Z</news:publication_date><news:title>Titre</news:title>
      </news:news></url></urlset>"""
    items, nested = parse_sitemap(body)
    assert nested == [] and items[0].url == "https://a.org/1" and items[0].title == "Titre"
    assert items[0].lang == "fr" and items[0].published.startswith("2026-11-01")
    with pytest.raises(SourcesError):
        parse_sitemap(b"<urlset")


@pytest.fixture(scope="module")
def sites() -> str:  # type: ignore[misc]
    port = free_port()
    server, _ = serve_in_thread("127.0.0.1", port, pace=0)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_demo_feeds_list_their_articles(sites: str) -> None:
    async def go() -> None:
        client = PoliteClient("test", 5, 1_000_000, 0.0, allow_private=True)
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
        small = PoliteClient("test", 5, 500, 0.0, allow_private=True)
        with pytest.raises(FetchError, match="limit"):
            await small.get(sites + "/courrier-caucase/feed.xml")
        with pytest.raises(FetchError, match="robots"):
            await small.get(sites + "/private/page.html")
        await small.aclose()
        with pytest.raises(FetchError, match="non-public"):
            await check_url_safe(sites + "/courrier-caucase/feed.xml", allow_private=False)
        with pytest.raises(FetchError, match="scheme"):
            await check_url_safe("file:///etc/passwd", allow_private=True)
    asyncio.run(go())


def test_host_gate_spaces_requests() -> None:
    async def go() -> float:
        gate = HostGate(0.2)
        started = time.monotonic()
        for _ in range(3):
            lock = await gate.wait("h")
            gate.done("h", lock)
        return time.monotonic() - started
    assert asyncio.run(go()) >= 0.4
