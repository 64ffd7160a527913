"""fetch benchmark: feed polls per second sustained by one fetch process on one core, against a
local simulated server answering 5,000 feeds on 500 host names, with the minimum spacing per host
measured by the server.

- The server (one process, a raw asyncio HTTP/1.1 server on 127.0.0.1, keep-alive) answers
  ``http://h<N>.test:<port>/feed/<M>.xml``: an RSS feed of 5 items whose ETag changes every
  ``--change-seconds`` (staggered per feed), else 304 to a conditional GET; ``/robots.txt`` is a news
  site's (``NEWS_ROBOTS``: wildcards, ``$``, Allow inside Disallow, other crawlers' groups), so every
  poll's URL goes through the robots.txt matcher (``--robots none``: 404, nothing to match).
  It records, per Host, the gap between two requests' arrivals (its own clock).
- The fetcher is the real ``FetchStage`` (leases, adaptive-interval bookkeeping, conditional GET,
  robots.txt, the Redis host reservation, PinnedBackend), pinned to one core, with the ``h<N>.test``
  names resolved to 127.0.0.1 by the pinned resolver and allowed through NEWSWATCH_ALLOW_HOSTS. Items
  are marked known beforehand, so the polls are what is measured (every item still checked in Redis).
- Polls per second = feed requests answered by the server during the measured window / its length.

Usage: python bench/fetch.py [--seconds 20] [--warmup 45] [--hosts 500] [--feeds 5000] [--host-delay 0.5]
       [--poll 8] [--change-seconds 600] [--robots news|none]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from newswatch import local
from services.fetch.feeds import Source, article_id
from services.fetch.politeness import PoliteClient
from services.fetch.service import FetchPolicy, FetchStage
from shared import redis_store
from shared.runtime import Emit, run_loop
from shared.settings import Settings

TARGET_POLLS = 500.0
ITEMS_PER_FEED = 5

# What a news site's robots.txt looks like (print views, search, tracking parameters, AI crawlers).
NEWS_ROBOTS = b"""\
User-agent: *
Disallow: /*?print=
Disallow: /*&print=
Disallow: /*?utm_
Disallow: /*.php$
Disallow: /search
Disallow: /recherche/
Disallow: /account/
Disallow: /api/
Allow: /api/public/
Disallow: /tmp
Allow: /tmp/keep$
Disallow: /*/comments$
Disallow: /embed/*
Crawl-delay: 0.1

User-agent: GPTBot
Disallow: /

User-agent: CCBot
Disallow: /

Sitemap: https://www.example.org/sitemap-news.xml
"""


# --- the simulated server (its own process) ------------------------------------------------------

def item_url(port: int, host: int, feed: int, n: int) -> str:
    return f"http://h{host}.test:{port}/a/{feed}/{n}.html"


def feed_body(port: int, host: int, feed: int, version: int) -> bytes:
    items = "".join(f"<item><title>Article {feed}-{n}</title><link>{item_url(port, host, feed, n)}</link>"
                    f"<pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>" for n in range(ITEMS_PER_FEED))
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {feed} v{version}'
            f"</title><language>en</language>{items}</channel></rss>").encode()


class SimServer(asyncio.Protocol):
    stats: ClassVar[dict[str, Any]] = {"feeds": 0, "not_modified": 0, "other": 0, "last": {}, "min_gap": {}, "gaps": 0}
    port = 0
    change_seconds = 60.0
    robots: bytes | None = None
    start_of_window = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.answer(head)

    def answer(self, head: bytes) -> None:
        now = time.monotonic()
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        host = headers.get("host", "")
        stats = self.stats
        last = stats["last"].get(host)
        if last is not None and now >= self.start_of_window:
            gap = now - last
            if gap < stats["min_gap"].get(host, 1e9):
                stats["min_gap"][host] = gap
            stats["gaps"] += 1
        stats["last"][host] = now
        if path.startswith("/feed/"):
            feed = int(path[6:].split(".")[0])
            hostnum = int(host.split(".")[0][1:])
            version = int((time.time() + feed * 0.37) // self.change_seconds)
            etag = f'"{feed}-{version}"'
            if now >= self.start_of_window:
                stats["feeds"] += 1
            if headers.get("if-none-match") == etag:
                stats["not_modified"] += 1
                self.transport.write(f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nContent-Length: 0\r\n\r\n".encode())
                return
            body = feed_body(self.port, hostnum, feed, version)
            self.transport.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nETag: {etag}\r\n"
                                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return
        if path == "/robots.txt" and self.robots is not None:
            stats["other"] += 1
            self.transport.write(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(self.robots)}"
                                 "\r\n\r\n".encode() + self.robots)
            return
        if path == "/__stats":
            body = json.dumps({k: v for k, v in stats.items() if k != "last"}).encode()
        elif path == "/__window":
            SimServer.start_of_window = now
            stats["feeds"] = stats["not_modified"] = stats["gaps"] = 0
            stats["min_gap"] = {}
            body = b"ok"
        else:
            stats["other"] += 1
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        self.transport.write(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
                             .encode() + body)


def serve(port: int, change_seconds: float, cpu: int | None, robots: bytes | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    SimServer.robots = robots
    SimServer.port = port
    SimServer.change_seconds = change_seconds
    SimServer.start_of_window = float("inf")

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(SimServer, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()
    asyncio.run(main())


# --- the fetcher ---------------------------------------------------------------------------------

class NullOutlet:
    async def deliver_retrying(self, outputs: Sequence[Emit], stop: asyncio.Event | None = None) -> bool:
        for out in outputs:
            if out.after is not None:
                await out.after()
        return True


async def plain_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: h0.test\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    body = await reader.readexactly(length)
    writer.close()
    return body


async def run_fetcher(args: argparse.Namespace, port: int, redis_url: str) -> dict[str, Any]:
    hosts = args.hosts
    per_host = args.feeds // hosts
    allow = ",".join(f"h{h}.test:{port}" for h in range(hosts))
    settings = Settings.from_env({
        "NEWSWATCH_REDIS_URL": redis_url, "NEWSWATCH_ALLOW_HOSTS": allow,
        "NEWSWATCH_HOST_DELAY_SECONDS": str(args.host_delay), "NEWSWATCH_POLL_SECONDS": str(args.poll),
        "NEWSWATCH_HOST_CONCURRENCY": "2", "NEWSWATCH_HTTP_TIMEOUT": "10", "NEWSWATCH_HTTP_DEADLINE": "20",
        "NEWSWATCH_LOG_LEVEL": "WARNING"})
    sources = [Source(id=f"s{h}-{k}", feeds=(f"http://h{h}.test:{port}/feed/{h * per_host + k}.xml",))
               for h in range(hosts) for k in range(per_host)]
    # Adaptation off: every feed is polled at the configured interval, so the load is the configured one.
    policy = FetchPolicy(start_jitter=args.poll, adapt_min=1.0, adapt_max=1.0)
    stage = FetchStage(settings, sources, policy)

    async def resolve(host: str, port_: int) -> list[str]:
        return ["127.0.0.1"]
    await stage.http.aclose()
    stage.http = PoliteClient(settings.user_agent, settings.http_timeout, settings.max_page_bytes,
                              settings.host_delay_seconds, settings.allow_hosts, deadline=settings.http_deadline,
                              host_concurrency=settings.host_concurrency, redis=stage.redis, resolver=resolve,
                              max_connections=2000)
    # Every item is known already: the polls are measured, not page fetches.
    pipe = stage.redis.pipeline(transaction=False)
    for h in range(hosts):
        for k in range(per_host):
            for n in range(ITEMS_PER_FEED):
                pipe.set(redis_store.url_key(article_id(item_url(port, h, h * per_host + k, n))), "done", ex=3600)
    await pipe.execute()

    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(NullOutlet(), stop))
    await asyncio.sleep(args.warmup)
    await plain_get(port, "/__window")
    profile = cProfile.Profile() if os.environ.get("NW_BENCH_PROFILE") else None
    if profile is not None:
        profile.enable()
    cpu0 = time.process_time()
    started = time.monotonic()
    await asyncio.sleep(args.seconds)
    elapsed = time.monotonic() - started
    cpu_used = time.process_time() - cpu0
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["NW_BENCH_PROFILE"])
    stats = json.loads(await plain_get(port, "/__stats"))
    stop.set()
    task.cancel()  # no need to drain the 5,000 loops gracefully
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await stage.redis.aclose()
    return {"elapsed": elapsed, "cpu": cpu_used, **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=45.0,
                        help="seconds before the window (first polls spread, first GETs all 200)")
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--feeds", type=int, default=5000)
    parser.add_argument("--host-delay", type=float, default=0.5, help="minimum seconds between two requests to a host")
    parser.add_argument("--poll", type=float, default=8.0,
                        help="poll interval of every feed (8 s: 625 polls/s offered, above the 500 to sustain)")
    parser.add_argument("--change-seconds", type=float, default=600.0, help="a feed changes this often")
    parser.add_argument("--robots", choices=("news", "none"), default="news",
                        help="robots.txt of every host: a news site's (NEWS_ROBOTS) or none (404)")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    fetch_cpu, server_cpu = cores[0], (cores[1] if len(cores) > 1 else None)
    port = local.free_port()
    robots = NEWS_ROBOTS if args.robots == "news" else None
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port, args.change_seconds, server_cpu,
                                                                              robots), daemon=True)
    server.start()
    redis_port = local.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        # In memory: with append-only persistence, a disk busy with other work stalled Redis for
        # up to a second at a time (fsync), which measured the disk, not fetch.
        redis_proc = local.start_redis(redis_port, Path(tmp), Path(tmp) / "redis.log", durable=False)
        if server_cpu is not None:  # Redis and the server on the other core: the fetcher has one to itself
            os.sched_setaffinity(redis_proc.pid, {server_cpu})
        try:
            for _ in range(100):
                if local.port_open(port) and local.port_open(redis_port):
                    break
                time.sleep(0.05)
            os.sched_setaffinity(0, {fetch_cpu})
            # the loop the fetch service runs on (shared.runtime.run_loop: uvloop)
            result = run_loop(run_fetcher(args, port, f"redis://127.0.0.1:{redis_port}/0"))
        finally:
            local.stop([redis_proc])
            server.terminate()
            server.join(5)

    polls = result["feeds"] / result["elapsed"]
    min_gaps = result["min_gap"]
    min_gap = min(min_gaps.values()) if min_gaps else float("nan")
    demand = args.feeds / args.poll
    capacity = args.hosts / args.host_delay
    table = Table(title=f"fetch: {args.feeds} feeds on {args.hosts} hosts, one fetch process on one core "
                        f"({args.seconds:.0f} s window)")
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_column("target", justify="right")
    table.add_row("feed polls / s sustained", f"{polls:.0f}", f"≥ {TARGET_POLLS:.0f}")
    table.add_row("  of which 304 Not Modified", f"{result['not_modified'] / result['elapsed']:.0f}", "")
    table.add_row("offered load (feeds / poll interval)", f"{demand:.0f}", "")
    table.add_row("host capacity (hosts / host delay)", f"{capacity:.0f}", "")
    table.add_row("fetch CPU, share of one core", f"{result['cpu'] / result['elapsed']:.0%}", "≤ 100%")
    table.add_row("min spacing per host, measured by the server", f"{min_gap:.3f} s", f"≥ {args.host_delay:.3f} s")
    table.add_row("hosts / request gaps measured", f"{len(min_gaps)} / {result['gaps']}", "")
    Console().print(table)
    ok = polls >= TARGET_POLLS and min_gap >= args.host_delay
    print("PASS" if ok else "BELOW TARGET")


if __name__ == "__main__":
    main()
