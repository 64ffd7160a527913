"""fetch's wiring: poll sources → raw-pages, as a source stage of the runtime (no input topic).

Per source, a loop polls its feeds, sitemaps and pages; every article URL that is neither in
flight nor done (``shared.redis_store``: ``nw:url:<id>``) is fetched and published. Once the
broker has acknowledged the page, its URL is in flight for ``NEWSWATCH_INFLIGHT_TTL_SECONDS``;
entities marks it done when the tagged article is on the broker. A page lost on the way is
fetched again once the in-flight mark expires, while its feed lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import ClassVar

import redis.asyncio as aioredis

from services.fetch.feeds import Item, Source, SourcesError, article_id, load_sources, parse_feed, parse_sitemap
from services.fetch.politeness import FetchError, PoliteClient
from shared import events, metrics, pipeline, redis_store
from shared.failures import Kind, classify
from shared.runtime import Emit, Outlet
from shared.settings import Settings
from shared.topics import RAW_PAGES

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # transient page failures before a URL is given up


class FetchStage:
    decl: ClassVar[pipeline.StageDecl] = pipeline.FETCH

    def __init__(self, settings: Settings, sources: list[Source]) -> None:
        self.settings = settings
        self.sources = sources
        self.url_ttl = settings.url_ttl_days * 86400
        self.redis: aioredis.Redis = redis_store.connect(settings.redis_url)
        self.http = PoliteClient(settings.user_agent, settings.http_timeout, settings.max_page_bytes,
                                 settings.host_delay_seconds, settings.allow_private_hosts)
        self.outlet: Outlet | None = None

    async def start(self) -> None:
        await self.redis.ping()

    async def run(self, outlet: Outlet, stop: asyncio.Event) -> None:
        self.outlet = outlet
        try:
            await asyncio.gather(*(self.run_source(s, stop) for s in self.sources))
        finally:
            await self.http.aclose()

    async def _listed(self, source: Source) -> list[Item]:
        """Every item the source's feeds, sitemaps and pages list now."""
        items: list[Item] = []
        for feed_url in source.feeds:
            headers = {}
            cache_key = f"nw:fetch:feed:{article_id(feed_url)}"
            cached = await self.redis.hgetall(cache_key)
            if cached.get(b"etag"):
                headers["if-none-match"] = redis_store.as_str(cached[b"etag"])
            if cached.get(b"last_modified"):
                headers["if-modified-since"] = redis_store.as_str(cached[b"last_modified"])
            try:
                response = await self.http.get(feed_url, headers)
            except FetchError as exc:
                metrics.FEED_POLLS.labels(source.id, "error").inc()
                log.warning("feed poll failed", extra={"source": source.id, "feed": feed_url, "error": str(exc)})
                continue
            if response.status == 304:
                metrics.FEED_POLLS.labels(source.id, "unchanged").inc()
                continue
            if response.status >= 400:
                metrics.FEED_POLLS.labels(source.id, "error").inc()
                log.warning("feed poll failed", extra={"source": source.id, "feed": feed_url,
                                                       "status": response.status})
                continue
            metrics.FEED_POLLS.labels(source.id, "ok").inc()
            metrics.FETCHED_BYTES.labels(source.id).inc(len(response.body))
            await self.redis.hset(cache_key, mapping={"etag": response.etag,
                                                      "last_modified": response.last_modified})
            await self.redis.expire(cache_key, self.url_ttl)
            items.extend(parse_feed(response.body, response.url).items)
        for sitemap_url in source.sitemaps:
            try:
                response = await self.http.get(sitemap_url)
                found, _nested = parse_sitemap(response.body)
                items.extend(found)
                metrics.FEED_POLLS.labels(source.id, "ok").inc()
            except (FetchError, SourcesError) as exc:
                metrics.FEED_POLLS.labels(source.id, "error").inc()
                log.warning("sitemap poll failed", extra={"source": source.id, "sitemap": sitemap_url,
                                                          "error": str(exc)})
        items.extend(Item(url=page) for page in source.pages)
        return items

    async def _fetch_item(self, source: Source, item: Item) -> None:
        aid = article_id(item.url)
        seen_key = redis_store.url_key(aid)
        if await self.redis.exists(seen_key):
            return
        try:
            response = await self.http.get(item.url)
        except FetchError as exc:
            attempts = await self.redis.incr(f"nw:fetch:attempts:{aid}")
            await self.redis.expire(f"nw:fetch:attempts:{aid}", self.url_ttl)
            if exc.permanent or attempts >= MAX_ATTEMPTS:
                await self.redis.set(seen_key, "failed", ex=self.url_ttl)
            log.warning("page fetch failed", extra={"source": source.id, "url": item.url, "error": str(exc),
                                                    "attempt": attempts})
            return
        metrics.FETCHED_BYTES.labels(source.id).inc(len(response.body))
        if response.status >= 400:
            log.warning("page fetch refused", extra={"source": source.id, "url": item.url,
                                                     "status": response.status})
            if response.status < 500:
                await self.redis.set(seen_key, f"http {response.status}", ex=self.url_ttl)
            return
        page = events.RawPage(
            id=aid, url=item.url, final_url=response.url, source=source.id, fetched_at=time.time(),
            http_status=response.status, content_type=response.content_type, body=response.body,
            feed_title=item.title, feed_published=item.published, lang_hint=item.lang or source.lang,
        )
        started = time.perf_counter()

        async def in_flight() -> None:
            # Only now that the broker holds the page is the URL in flight: a crash before re-fetches it.
            await redis_store.mark_url(self.redis, aid, redis_store.URL_INFLIGHT, self.settings.inflight_ttl_seconds)

        assert self.outlet is not None
        await self.outlet.deliver_retrying([Emit(RAW_PAGES, aid, page, after=in_flight)])
        metrics.PROCESSING_SECONDS.labels("fetch").observe(time.perf_counter() - started)
        log.info("page published", extra={"source": source.id, "url": item.url, "id": aid})

    async def poll(self, source: Source) -> int:
        """One poll of one source; returns how many items it listed."""
        items = await self._listed(source)
        metrics.MESSAGES_IN.labels("fetch").inc(len(items))
        for item in items:
            await self._fetch_item(source, item)
        return len(items)

    async def run_source(self, source: Source, stop: asyncio.Event) -> None:
        interval = source.poll_seconds or self.settings.poll_seconds
        # Spread the first polls so that many sources do not all start at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=random.uniform(0, min(interval, 2.0)))
        while not stop.is_set():
            try:
                await self.poll(source)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one broken source must not stop the others
                if classify(exc) is Kind.TRANSIENT:
                    metrics.RETRIES.labels("fetch").inc()
                    log.warning("poll interrupted, retried at the next poll",
                                extra={"source": source.id, "error": repr(exc)})
                else:
                    log.exception("poll failed", extra={"source": source.id})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


def main() -> None:
    from shared.logs import setup_logging
    from shared.runtime import run_service

    settings = Settings.from_env()
    setup_logging("fetch", settings.log_level, settings.log_format)
    run_service("fetch", [FetchStage(settings, load_sources(settings.sources))], settings)
