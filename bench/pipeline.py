"""End-to-end benchmark: articles per second through all five stages (fetch → clean → langdetect →
entities → alert), and feed-to-alert latency, on the embedded broker, with NER on.

- Pages: trafilatura's evaluation pages (``../shared/eval/extraction``, 990 real pages, mostly German
  and English) when present, else generated demo articles (``newswatch.demo.generated``).
- A local server (this process, raw asyncio HTTP/1.1 with keep-alive) publishes them as RSS feeds
  on ``--hosts`` loopback addresses (127.0.0.1, 127.0.0.2, …: distinct hosts for fetch's politeness),
  with an ETag and 304 Not Modified while a feed is unchanged (as news sites serve feeds), and serves
  the pages. Items appear in the feeds by a schedule:
  *full load*: every page at once; *half load*: one by one at half the full-load rate.
- Everything else is what ``newswatch run`` starts: tansu, redis-server (append-only), the five
  services as processes with their default settings (NER on for fr and ru), the demo rules plus a
  catch-all rule, so that every story makes an alert and its latency can be read.
- Articles/s: articles the alert stage consumed (its ``newswatch_messages_consumed_total``) over the
  time from the pages' appearance to the last one consumed. Latency: for every alert, the broker's
  timestamp of the alert minus its raw page's ``fetched_at`` (feed-to-alert, as the
  ``newswatch_feed_to_alert_seconds`` histogram measures it). CPU: user+system time of each process
  (``/proc``) over the same window, per article.
- Warm-up: a few pages go through first, so that model loading is not measured.

Each load runs on a fresh broker and Redis. Usage:
  python bench/pipeline.py [--pages N] [--hosts 16] [--half-rate R] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from html import escape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from newswatch import local
from newswatch.demo import generated
from newswatch.demo.server import render_article
from shared import events, pipeline
from shared.settings import Settings
from shared.topics import ALERTS, RAW_PAGES, create_topics

EVALSET = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "extraction" / \
    "trafilatura-evalset.tar.gz"
BASELINE_RATE = 35.0  # articles/s measured before issue 13 (the 1,171-page burst, four stages)
TARGET_RATE = 100.0
TARGET_P99_HALF = 2.0
WARMUP_PAGES = 12
console = Console()

# Every language the detector may give: the catch-all rule matches any labelled article.
_LANGS = ("af ar az be bg bn bs ca cs cy da de el en eo es et eu fa fi fr ga gl gu he hi hr hu hy id is it ja ka "
          "kk ko la lt lv mk mn mr ms nb nl nn pa pl pt ro ru sk sl so sq sr sv sw ta te th tl tr uk ur vi yo zh")
RULES = f"""\
rules:
  - id: karabakh
    name: Nagorno-Karabakh, in any language
    entities_any: [nw:place:nagorno-karabakh]
  - id: ceasefire-en
    name: Ceasefire news in English, no sport
    any: [ceasefire, cease-fire, truce]
    none: [football, match]
    languages: [en]
  - id: europe-leaders
    name: German, French and Russian leaders
    entities_any: [Q61053, Q3052772, Q7747]
  - id: every-story
    name: Every story (the benchmark reads its latency)
    query: "{" OR ".join("lang:" + code for code in _LANGS.split())}"
"""


# --- pages ------------------------------------------------------------------------------------------


def load_pages(limit: int | None) -> tuple[list[bytes], str]:
    """The measured pages, and where they come from."""
    if EVALSET.exists():
        index = None
        files: dict[str, bytes] = {}
        with tarfile.open(EVALSET) as tar:  # read in archive order: a gzip stream cannot seek back cheaply
            for member in tar:
                data = tar.extractfile(member) if member.isfile() else None
                if data is None:
                    continue
                if member.name.endswith("evaldata.json"):
                    index = json.loads(data.read())
                else:
                    files[member.name.rsplit("/", 1)[-1]] = data.read()
        assert index is not None, "evaldata.json missing from the evaluation set"
        pages = [files[item["file"]] for item in index.values() if item["file"] in files]
        source = f"trafilatura's evaluation pages ({len(pages)}, ../shared/eval)"
    else:
        articles = generated.generate(limit or 990, copy_every=0)
        pages = [render_article(a, "http://127.0.0.1", time.time()).encode("utf-8") for a in articles]
        source = f"generated demo articles ({len(pages)}; ../shared/eval is absent)"
    return (pages[:limit] if limit else pages), source


def warmup_pages() -> list[bytes]:
    articles = generated.generate(WARMUP_PAGES, copy_every=0, seed=7)
    return [render_article(a, "http://127.0.0.1", time.time()).encode("utf-8") for a in articles]


# --- the news server ----------------------------------------------------------------------------------


@dataclass
class Item:
    host: int
    path: str
    body: bytes
    visible_at: float = float("inf")


@dataclass
class NewsServer:
    """RSS feeds (one per host) and pages; an item is listed once ``visible_at`` has passed."""

    port: int
    hosts: int
    items: list[Item] = field(default_factory=list)
    pages: dict[tuple[int, str], bytes] = field(default_factory=dict)
    requests: int = 0

    def add(self, bodies: list[bytes], tag: str) -> list[Item]:
        added = []
        for n, body in enumerate(bodies):
            item = Item(host=n % self.hosts + 1, path=f"/{tag}/{n}.html", body=body)
            self.items.append(item)
            self.pages[(item.host, item.path)] = body
            added.append(item)
        return added

    def feed(self, host: int) -> tuple[str, bytes]:
        """(ETag, body) of a host's feed: the ETag changes whenever an item appears."""
        now = time.time()
        live = [i for i in self.items if i.host == host and i.visible_at <= now]
        etag = f'"{host}-{len(live)}-{live[-1].path if live else ""}"'
        date = formatdate(now, usegmt=True)
        entries = "".join(
            f"<item><title>Page {escape(i.path)}</title><link>http://127.0.0.{host}:{self.port}{i.path}</link>"
            f"<guid>http://127.0.0.{host}:{self.port}{i.path}</guid><pubDate>{date}</pubDate></item>"
            for i in live[-400:])
        return etag, (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>host {host}</title>'
                      f"<link>http://127.0.0.{host}:{self.port}/</link>{entries}</channel></rss>").encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host = int(writer.get_extra_info("sockname")[0].rsplit(".", 1)[1])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode().split("?")[0]
                self.requests += 1
                extra = ""
                if path == "/feed.xml":
                    # as news sites do: an ETag, and 304 Not Modified while the feed is unchanged
                    etag, feed = self.feed(host)
                    if _header(head, b"if-none-match") == etag:
                        status, kind, body = "304 Not Modified", "application/rss+xml; charset=utf-8", b""
                    else:
                        status, kind, body = "200 OK", "application/rss+xml; charset=utf-8", feed
                    extra = f"etag: {etag}\r\n"
                elif (host, path) in self.pages:
                    status, kind, body = "200 OK", "text/html", self.pages[(host, path)]
                else:
                    status, kind, body = "404 Not Found", "text/plain", b"not found"
                writer.write(f"HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n"
                             f"{extra}\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def start(self) -> asyncio.base_events.Server:
        return await asyncio.start_server(self.handle, [f"127.0.0.{h}" for h in range(1, self.hosts + 1)],
                                          self.port, reuse_address=True)

    def sources_yaml(self, poll_seconds: float) -> str:
        lines = ["sources:"]
        for h in range(1, self.hosts + 1):
            lines += [f"  - id: host{h}", f"    feeds: [http://127.0.0.{h}:{self.port}/feed.xml]",
                      f"    poll_seconds: {poll_seconds}"]
        return "\n".join(lines) + "\n"


def _header(head: bytes, name: bytes) -> str:
    """A request header's value ("" when absent); ``name`` in lower case."""
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


# --- measuring ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads (children are not used)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One service's samples: (name, sorted labels) → value; empty while it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def progress(ports: dict[str, int]) -> tuple[int, int, int]:
    """(pages fetched, articles the alert stage consumed, inputs dead-lettered by any stage)."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for port in ports.values():  # replicas of a service export the same series: they add up
        for key, value in scrape(port).items():
            samples[key] = samples.get(key, 0.0) + value

    def total(name: str, **labels: str) -> int:
        return int(sum(v for (n, ls), v in samples.items()
                       if n == name and all((k, val) in ls for k, val in labels.items())))

    fetched = total("newswatch_messages_produced_total", stage=pipeline.FETCH.name)
    alerted = total("newswatch_messages_consumed_total", stage=pipeline.ALERT.name)
    dead = total("newswatch_messages_dead_lettered_total")
    return fetched, alerted, dead


def handling(ports: dict[str, int]) -> dict[str, tuple[float, float]]:
    """(seconds, inputs) of ``newswatch_processing_seconds`` by stage: input consumed → outputs acknowledged."""
    out: dict[str, list[float]] = {}
    for port in ports.values():
        for (name, labels), value in scrape(port).items():
            if name in ("newswatch_processing_seconds_sum", "newswatch_processing_seconds_count"):
                slot = out.setdefault(dict(labels)["stage"], [0.0, 0.0])
                slot[name.endswith("_count")] += value
    return {stage: (v[0], v[1]) for stage, v in out.items()}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def read_latencies(settings: Settings, since: float) -> tuple[list[float], float]:
    """Feed-to-alert seconds of every alert made after ``since`` (alert timestamp − its page's fetched_at),
    and the timestamp of the last alert."""
    from aiokafka import AIOKafkaConsumer

    async def read_all(topic: str) -> list[tuple[int, bytes]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
        await consumer.start()
        out: list[tuple[int, bytes]] = []
        try:
            idle = 0
            while idle < 3:
                batches = await consumer.getmany(timeout_ms=500)
                if not batches:
                    idle += 1
                for records in batches.values():
                    out.extend((r.timestamp, r.value or b"") for r in records)
        finally:
            await consumer.stop()
        return out

    fetched: dict[str, float] = {}
    for _, value in await read_all(RAW_PAGES.name(settings.topic_prefix)):
        page = events.decode(events.RawPage, value)
        fetched.setdefault(page.id, page.fetched_at)
    latencies = []
    last = 0.0
    for stamp, value in await read_all(ALERTS.name(settings.topic_prefix)):
        alert = events.decode(events.Alert, value)
        if alert.rule_id == "every-story" and alert.article_id in fetched and fetched[alert.article_id] >= since:
            latencies.append(stamp / 1000 - fetched[alert.article_id])
            last = max(last, stamp / 1000)
    return latencies, last


@dataclass
class LoadResult:
    name: str
    articles: int
    seconds: float
    latencies: list[float]
    cpu_ms: dict[str, float]  # per article, by process
    handling_ms: dict[str, float] = field(default_factory=dict)  # mean input-to-acknowledged time, by stage

    @property
    def rate(self) -> float:
        return self.articles / self.seconds if self.seconds else 0.0


async def run_load(name: str, pages: list[bytes], rate: float | None, hosts: int, workdir: Path,
                   timeout: float, replicas: dict[str, int] | None = None) -> LoadResult:
    """One load on a fresh broker, Redis and services: ``rate`` None = every page at once. ``replicas``:
    processes per service (default 1), sharing the service's consumer group and so its partitions."""
    counts = {decl.name: (replicas or {}).get(decl.name, 1) for decl in pipeline.SERVICES}
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    broker_port, redis_port, site_port = local.free_port(), local.free_port(), local.free_port()
    metrics_base = local.free_port_block(sum(counts.values()))
    server = NewsServer(site_port, hosts)
    warm = server.add(warmup_pages(), "warm")
    measured = server.add(pages, "page")
    listener = await server.start()
    procs: dict[str, object] = {}
    children = []
    try:
        broker = local.start_broker(broker_port, logs / "broker.log")
        redis = local.start_redis(redis_port, workdir / "redis", logs / "redis.log")
        children += [broker, redis]
        (workdir / "sources.yaml").write_text(server.sources_yaml(2.0), "utf-8")
        (workdir / "rules.yaml").write_text(RULES, "utf-8")
        env = dict(os.environ)
        env.update({
            "NEWSWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
            "NEWSWATCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "NEWSWATCH_SOURCES": str(workdir / "sources.yaml"),
            "NEWSWATCH_RULES": str(workdir / "rules.yaml"),
            "NEWSWATCH_METRICS_HOST": "127.0.0.1",
            "NEWSWATCH_ALLOW_HOSTS": ",".join(f"127.0.0.{h}:{site_port}" for h in range(1, hosts + 1)),
            "NEWSWATCH_HOST_DELAY_SECONDS": "0.05",
            "NEWSWATCH_LOG_LEVEL": os.environ.get("NEWSWATCH_LOG_LEVEL", "WARNING"),
        })
        settings = Settings.from_env(env)
        create_topics(settings)
        ports: dict[str, int] = {}
        for decl in pipeline.SERVICES:
            for replica in range(counts[decl.name]):
                key = decl.name if replica == 0 else f"{decl.name}#{replica + 1}"
                ports[key] = metrics_base + len(ports)
                proc = local.start_service(decl.name, {**env, "NEWSWATCH_METRICS_PORT": str(ports[key])},
                                           logs / f"{key}.log")
                procs[key] = proc
                children.append(proc)

        async def wait_consumed(count: int, what: str, deadline: float) -> float:
            """Until ``count`` pages are fetched and each has reached the alert stage or a dead letter."""
            shown = 0.0
            while time.monotonic() < deadline:
                fetched, alerted, dead = progress(ports)
                if fetched >= count and alerted + dead >= fetched:
                    return time.time()
                if time.monotonic() - shown >= 5:
                    console.print(f"  [dim]{name} {what}: {fetched}/{count} fetched, {alerted} through the alert "
                                  f"stage, {dead} dead-lettered[/dim]")
                    shown = time.monotonic()
                for cname, child in procs.items():
                    if child.poll() is not None:  # type: ignore[attr-defined]
                        raise RuntimeError(f"{cname} exited; see {logs / (cname + '.log')}")
                await asyncio.sleep(1.0)  # reading five /metrics pages costs CPU the pipeline needs
            flow = {k[0].removeprefix("newswatch_messages_") + str(dict(k[1])): v for port in ports.values()
                    for k, v in scrape(port).items() if k[0].startswith("newswatch_messages_") and v}
            raise TimeoutError(f"{name} {what}: {count} pages; at the deadline: {flow}")

        # warm-up: models load on the first input of each stage
        for item in warm:
            item.visible_at = time.time()
        await wait_consumed(len(warm), "warm-up", time.monotonic() + 240)
        await asyncio.sleep(2.0)
        pids = {n: p.pid for n, p in procs.items()}  # type: ignore[attr-defined]
        pids.update(broker=broker.pid, redis=redis.pid)
        cpu_before = {n: cpu_seconds(pid) for n, pid in pids.items()}
        handling_before = handling(ports)
        started = time.time()
        if rate is None:
            for item in measured:
                item.visible_at = started
        else:
            for n, item in enumerate(measured):
                item.visible_at = started + n / rate
        finished = await wait_consumed(len(warm) + len(measured), "measured", time.monotonic() + timeout)
        cpu_after = {n: cpu_seconds(pid) for n, pid in pids.items()}
        _, alerted, dead = progress(ports)
        consumed = alerted - len(warm)
        if dead:
            console.print(f"  {dead} page(s) dead-lettered (not articles); see the dead-letter topic")
        latencies, last_alert = await read_latencies(settings, started - 0.5)
        # the last alert's broker timestamp is a closer end than the progress polling's (once a second)
        if started < last_alert < finished:
            finished = last_alert
        cpu_ms: dict[str, float] = {}
        for proc_name in pids:  # replicas of a service add up
            service = proc_name.split("#")[0]
            cpu_ms[service] = cpu_ms.get(service, 0.0) + \
                (cpu_after[proc_name] - cpu_before[proc_name]) * 1000 / max(1, consumed)
        handling_after = handling(ports)
        handling_ms = {stage: (after[0] - handling_before.get(stage, (0, 0))[0]) * 1000
                       / max(1, after[1] - handling_before.get(stage, (0, 0))[1])
                       for stage, after in handling_after.items()}
        return LoadResult(name, consumed, finished - started, latencies, cpu_ms, handling_ms)
    finally:
        local.stop(list(reversed(children)), grace=5.0)
        listener.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=None, help="pages per load (default: all 990, or 990 generated)")
    parser.add_argument("--hosts", type=int, default=16, help="news hosts (loopback addresses)")
    parser.add_argument("--half-rate", type=float, default=None,
                        help="articles/s offered at half load (default: half the full-load rate)")
    parser.add_argument("--only", choices=("full", "half"), default=None)
    parser.add_argument("--replicas", default="", metavar="SERVICE=N,…",
                        help="processes of a service sharing its partitions, e.g. clean=2")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and Redis data in this folder")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    pages, source = load_pages(args.pages)
    replicas = {name: int(n) for name, n in (item.split("=") for item in args.replicas.split(",") if item)}
    unknown = set(replicas) - set(pipeline.SERVICE_NAMES)
    if unknown:
        parser.error(f"--replicas: no service {', '.join(sorted(unknown))}")
    console.print(f"[bold]pipeline benchmark[/bold]: {source}, {args.hosts} hosts, all five stages, NER on "
                  f"({Settings.from_env({}).ner_languages or 'off'})")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="newswatch-bench-"))
    results: list[LoadResult] = []
    try:
        full = None
        if args.only in (None, "full"):
            console.print(f"full load: {len(pages)} pages appear at once …")
            full = asyncio.run(run_load("full", pages, None, args.hosts, workdir / "full", args.timeout, replicas))
            results.append(full)
        if args.only in (None, "half"):
            rate = args.half_rate or (full.rate / 2 if full else TARGET_RATE / 2)
            console.print(f"half load: {len(pages)} pages appear at {rate:.1f}/s …")
            results.append(asyncio.run(run_load("half", pages, rate, args.hosts, workdir / "half",
                                                 args.timeout + len(pages) / rate, replicas)))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    show(results, replicas)
    return 0


def show(results: list[LoadResult], replicas: dict[str, int]) -> None:
    extra = "".join(f", {name} ×{n}" for name, n in replicas.items() if n > 1)
    table = Table(title=f"End to end: fetch → clean → langdetect → entities → alert (embedded broker, NER on{extra})")
    table.add_column("load")
    table.add_column("articles", justify="right")
    table.add_column("articles/s", justify="right")
    table.add_column("× before (35/s)", justify="right")
    for q in ("p50", "p95", "p99"):
        table.add_column(f"{q} feed→alert s", justify="right")
    for r in results:
        lat = r.latencies
        table.add_row(r.name, str(r.articles), f"{r.rate:.1f}", f"{r.rate / BASELINE_RATE:.2f}×",
                      *(f"{percentile(lat, q):.2f}" for q in (50, 95, 99)))
    console.print(table)
    cpu = Table(title="CPU ms per article, by process")
    cpu.add_column("load")
    names = list(results[0].cpu_ms) if results else []
    for n in names:
        cpu.add_column(n, justify="right")
    cpu.add_column("total", justify="right")
    for r in results:
        cpu.add_row(r.name, *(f"{r.cpu_ms[n]:.1f}" for n in names), f"{sum(r.cpu_ms.values()):.1f}")
    console.print(cpu)
    stages = [s.name for svc in pipeline.SERVICES for s in svc.stages]
    held = Table(title="ms per input from consumed to outputs acknowledged (mean), by stage")
    held.add_column("load")
    for n in stages:
        held.add_column(n, justify="right")
    for r in results:
        held.add_row(r.name, *(f"{r.handling_ms.get(n, float('nan')):.1f}" for n in stages))
    console.print(held)
    console.print("Before (issue 13, 1,171 pages, four stages): 35 articles/s, p50 17 s in the burst; CPU ms per "
                  "article clean 20, langdetect 17, entities 9, alert 2, broker 3.")
    for r in results:
        if r.name == "full":
            verdict = "meets" if r.rate >= TARGET_RATE else "misses"
            console.print(f"full load: {r.rate:.1f} articles/s {verdict} the target of {TARGET_RATE:.0f}")
        if r.name == "half":
            p99 = percentile(r.latencies, 99)
            verdict = "meets" if p99 <= TARGET_P99_HALF else "misses"
            console.print(f"half load: p99 {p99:.2f} s {verdict} the target of {TARGET_P99_HALF:.0f} s "
                          f"({len(r.latencies)} alerts)")
    half = [r for r in results if r.name == "half" and r.latencies]
    if half:
        console.print(f"[dim]median latency at half load {statistics.median(half[0].latencies):.2f} s")


if __name__ == "__main__":
    raise SystemExit(main())
