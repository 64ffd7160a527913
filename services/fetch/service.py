"""fetch's wiring: poll sources → raw-pages. A plain asyncio producer (it has no input topic).

Per source, a loop polls its feeds, sitemaps and pages; every article URL not seen before is
fetched and published, and only once the broker has acknowledged the page is its URL marked
seen in Redis, so a crash re-fetches rather than loses (downstream stages are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from services.fetch.feeds import Item, Source, SourcesError, article_id, load_sources, parse_feed, parse_sitemap
from services.fetch.politeness import FetchError, PoliteClient
from shared import events, metrics, redis_store
from shared.settings import Settings
from shared.topics import RAW_PAGES

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # transient page failures before a URL is given up


class Fetcher:
    def __init__(self, settings: Settings, sources: list[Source]) -> None:
        self.settings = settings
        self.sources = sources
        self.topic = RAW_PAGES.name(settings.topic_prefix)
        self.url_ttl = settings.url_ttl_days * 86400
        self.redis: aioredis.Redis = redis_store.connect(settings.redis_url)
        self.http = PoliteClient(settings.user_agent, settings.http_timeout, settings.max_page_bytes,
                                 settings.host_delay_seconds, settings.allow_private_hosts)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, acks="all", client_id=f"{settings.topic_prefix}-fetch",
            max_request_size=8 * 1024 * 1024, linger_ms=5, request_timeout_ms=30000,
        )

    async def start(self) -> None:
        await self.redis.ping()
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()
        await self.http.aclose()
        await self.redis.aclose()

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
        seen_key = f"nw:fetch:url:{aid}"
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
        await self.producer.send_and_wait(self.topic, events.encode(page), key=aid.encode())
        # Only now that the broker holds the page is the URL known: a crash before re-fetches it.
        await self.redis.set(seen_key, "1", ex=self.url_ttl)
        metrics.MESSAGES_OUT.labels("fetch", RAW_PAGES.suffix).inc()
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
            except redis_store.TRANSIENT_ERRORS as exc:
                metrics.RETRIES.labels("fetch").inc()
                log.warning("Redis unavailable during poll", extra={"source": source.id, "error": repr(exc)})
            except Exception:  # one broken source must not stop the others
                log.exception("poll failed", extra={"source": source.id})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


async def run(settings: Settings) -> None:
    sources = load_sources(settings.sources)
    port = metrics.serve_metrics("fetch", settings.metrics_port, settings.metrics_host)
    fetcher = Fetcher(settings, sources)
    delay = 0.5
    while True:
        try:
            await fetcher.start()
            break
        except Exception as exc:  # broker or Redis still starting
            log.warning("fetch start failed, retrying", extra={"error": repr(exc), "delay": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    log.info("service started", extra={"stage": "fetch", "metrics_port": port, "sources": len(sources)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.gather(*(fetcher.run_source(s, stop) for s in sources))
    finally:
        await fetcher.stop()
        log.info("service stopped", extra={"stage": "fetch"})


def main() -> None:
    from shared.logs import setup_logging

    settings = Settings.from_env()
    setup_logging("fetch", settings.log_level, settings.log_format)
    asyncio.run(run(settings))
