"""Harness of the fault drills: the pipeline's services as real processes on a real tansu broker and
a real redis-server, a collector that records every record of the topics as it arrives (with the
time it arrived), a TCP proxy that can cut the services off the broker, and the drill's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition

from newswatch import local
from newswatch.demo.content import DemoArticle, story_key
from newswatch.demo.generated import DRILL_RULES_YAML, expected_alerts
from newswatch.demo.server import serve_in_thread, sources_yaml
from shared import events
from shared.pipeline import SERVICE_NAMES
from shared.settings import Settings
from shared.topics import ALERTS, ARTICLES, DEAD_LETTER, LABELLED, RAW_PAGES, TAGGED, TopicSpec, create_topics

OUTPUT_OF: dict[str, TopicSpec] = {"fetch": RAW_PAGES, "clean": ARTICLES, "langdetect": LABELLED,
                                   "entities": TAGGED, "alert": ALERTS}


@dataclass
class Record:
    at: float  # time.time() when the producer made it (the record's CreateTime timestamp)
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Collector(threading.Thread):
    """Reads the given topics from their start, in a thread, until ``close()``; keeps every record."""

    def __init__(self, bootstrap: str, prefix: str, topics: Sequence[TopicSpec]) -> None:
        super().__init__(name="drill-collector", daemon=True)
        self.bootstrap = bootstrap
        self.names = {spec.name(prefix): spec.suffix for spec in topics}
        self.records: dict[str, list[Record]] = {spec.suffix: [] for spec in topics}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                     auto_offset_reset="earliest", max_partition_fetch_bytes=1 << 20,
                                     fetch_max_bytes=64 << 20, fetch_max_wait_ms=100)
            partitions = [TopicPartition(name, p) for name in self.names
                          for p in sorted(consumer.partitions_for_topic(name) or [])]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            self.ready.set()
            try:
                while not self.stopped.is_set():
                    for tp, batch in consumer.poll(timeout_ms=200).items():
                        with self.lock:
                            target = self.records[self.names[tp.topic]]
                            target.extend(Record(r.timestamp / 1000, r.partition, r.offset, r.key, r.value)
                                          for r in batch)
            finally:
                consumer.close()
        except BaseException as exc:  # reported by the test through ``check()``
            self.error = exc
            self.ready.set()

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the collector failed: {self.error!r}") from self.error

    def get(self, spec: TopicSpec) -> list[Record]:
        self.check()
        with self.lock:
            return list(self.records[spec.suffix])

    def first_after(self, spec: TopicSpec, moment: float) -> float | None:
        """Seconds from ``moment`` (time.time()) to the first record of the topic produced after it."""
        times = [r.at for r in self.get(spec) if r.at > moment]
        return min(times) - moment if times else None

    def close(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> float:
    """Poll until ``condition()``; returns the seconds it took; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


def slug_of(url: str) -> str:
    return url.rsplit("/", 1)[1].removesuffix(".html")


@dataclass
class Figures:
    """What a drill counts: printed as one line, and appended as JSON to $NEWSWATCH_DRILL_REPORT."""

    drill: str
    articles_in: int = 0
    articles_tagged: int = 0  # distinct articles on articles-tagged
    tagged_records: int = 0  # records on articles-tagged (redeliveries included)
    alerts_expected: int = 0
    alerts_seen: int = 0  # distinct (rule, story)
    alert_records: int = 0
    duplicates: int = 0  # alert records - distinct (rule, story)
    dead_letters: int = 0
    resume_seconds: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def report(self) -> None:
        resume = "-" if self.resume_seconds is None else f"{self.resume_seconds:.1f}"
        print(f"\nDRILL {self.drill}: in={self.articles_in} tagged={self.articles_tagged} "
              f"(records {self.tagged_records}) alerts expected={self.alerts_expected} seen={self.alerts_seen} "
              f"records={self.alert_records} duplicates={self.duplicates} dead_letters={self.dead_letters} "
              f"resume_s={resume} {json.dumps(self.notes, default=str)}", flush=True)
        path = os.environ.get("NEWSWATCH_DRILL_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(self.__dict__, default=str) + "\n")


class RedisServer:
    """A redis-server of the drill's own, append-only, that can be killed and restarted on its port and dir."""

    def __init__(self, workdir: Path) -> None:
        self.port = local.free_port()
        self.dir = workdir / "redis"
        self.log = workdir / "redis.log"
        self.proc = local.start_redis(self.port, self.dir, self.log)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        self.proc = local.start_redis(self.port, self.dir, self.log)
        # AOF loading: wait until the server answers commands, not only the port
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), 20, "redis to load its append-only file")

    def stop(self) -> None:
        local.stop([self.proc])


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Pipeline:
    """The services as processes, configured for a drill: fresh topic prefix, the drill's Redis."""

    def __init__(self, workdir: Path, bootstrap: str, redis_url: str, *, services: Sequence[str] = SERVICE_NAMES,
                 sources: str = "", extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.prefix = f"drill-{uuid.uuid4().hex[:8]}"
        rules = workdir / "rules.yaml"
        rules.write_text(DRILL_RULES_YAML)
        sources_path = workdir / "sources.yaml"
        sources_path.write_text(sources or "sources: []\n")
        self.env = {
            **os.environ,
            "NEWSWATCH_KAFKA_BOOTSTRAP": bootstrap,
            "NEWSWATCH_REDIS_URL": redis_url,
            "NEWSWATCH_TOPIC_PREFIX": self.prefix,
            "NEWSWATCH_SOURCES": str(sources_path),
            "NEWSWATCH_RULES": str(rules),
            # the local demo sites the sources list, and no other local address
            "NEWSWATCH_ALLOW_HOSTS": ",".join(sorted(set(re.findall(r"https?://([^/\s]+)", sources or "")))),
            "NEWSWATCH_HOST_DELAY_SECONDS": "0.05",
            # the demo sites answer at once: a page claim left by a killed fetch expires after 10 + 30 s
            "NEWSWATCH_HTTP_DEADLINE": "10",
            "NEWSWATCH_POLL_SECONDS": "1",
            "NEWSWATCH_METRICS_HOST": "127.0.0.1",
            "TMPDIR": str(workdir),
            **(extra_env or {}),
        }
        self.settings = Settings.from_env(self.env)
        self.services = list(services)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = dict.fromkeys(self.services, 0)

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def create_topics(self, bootstrap: str) -> None:
        create_topics(Settings.from_env({**self.env, "NEWSWATCH_KAFKA_BOOTSTRAP": bootstrap}))

    def start(self, name: str) -> None:
        self.starts[name] += 1
        self.procs[name] = local.start_service(
            name, {**self.env, "NEWSWATCH_METRICS_PORT": str(local.free_port())}, self.log_path(name))

    def start_all(self) -> None:
        for name in self.services:
            self.start(name)

    def started_stages(self, name: str) -> int:
        """How many "stage started" lines the service's current run logged."""
        text = self.log_path(name).read_text(errors="replace") if self.log_path(name).exists() else ""
        runs = text.split('"msg": "service starting"')
        return runs[-1].count('"msg": "stage started"') if len(runs) > 1 else 0

    def wait_started(self, names: Sequence[str] | None = None, timeout: float = 90) -> float:
        wanted = {"alert": 2}
        names = list(names or self.services)

        def ready() -> bool:
            for name in names:
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            return all(self.started_stages(n) >= wanted.get(n, 1) for n in names)
        return wait_for(ready, timeout, f"{', '.join(names)} to start")

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def tails(self) -> str:
        return "\n".join(f"===== {name} (alive={self.alive().get(name)}) =====\n{self.tail(name)}"
                         for name in self.services)

    def stop(self) -> None:
        local.stop(list(self.procs.values()))


@contextlib.contextmanager
def dump_logs_on_failure(pipeline: Pipeline, *extra: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(pipeline.tails())
        for path in extra:
            if path.exists():
                print(f"===== {path.name} =====\n{path.read_text(errors='replace')[-3000:]}")
        raise


@contextlib.contextmanager
def demo_sites(articles: Sequence[DemoArticle], pace: float = 1.0) -> Iterator[tuple[str, str]]:
    """Serve the articles; yields (base URL, sources YAML listing every demo site)."""
    port = local.free_port()
    server, _ = serve_in_thread("127.0.0.1", port, pace=pace, articles=articles)
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, sources_yaml(base, 1.0)
    finally:
        server.shutdown()


def count_flow(figures: Figures, collector: Collector, articles: Sequence[DemoArticle]) -> None:
    """Fill the figures from what the collector saw: tagged articles, alerts, dead letters."""
    tagged = [events.decode(events.TaggedArticle, r.value) for r in collector.get(TAGGED)]
    figures.articles_in = len(articles)
    figures.tagged_records = len(tagged)
    figures.articles_tagged = len({slug_of(t.article.url) for t in tagged})
    expected = expected_alerts(tuple(articles))
    stories = {a.slug: story_key(a) for a in articles}
    alerts = [events.decode(events.Alert, r.value) for r in collector.get(ALERTS)]
    by_story = [(a.rule_id, stories.get(slug_of(a.url), "?" + a.url)) for a in alerts]
    figures.alerts_expected = len(expected)
    figures.alert_records = len(alerts)
    figures.alerts_seen = len(set(by_story))
    # duplicates counted both ways: by the story the article belongs to, and by the story id the alert carries
    figures.duplicates = max(len(by_story) - len(set(by_story)),
                             len(alerts) - len({(a.rule_id, a.story_id) for a in alerts}))
    figures.dead_letters = len(collector.get(DEAD_LETTER))


def check_flow(figures: Figures, collector: Collector, articles: Sequence[DemoArticle]) -> None:
    """Nothing lost, nothing repeated: every article tagged, every expected alert exactly once, no other."""
    tagged_slugs = {slug_of(events.decode(events.TaggedArticle, r.value).article.url) for r in collector.get(TAGGED)}
    missing = sorted({a.slug for a in articles} - tagged_slugs)
    assert not missing, f"articles never tagged: {missing}"
    stories = {a.slug: story_key(a) for a in articles}
    alerts = [events.decode(events.Alert, r.value) for r in collector.get(ALERTS)]
    got = [(a.rule_id, stories.get(slug_of(a.url), "?" + a.url)) for a in alerts]
    expected = expected_alerts(tuple(articles))
    assert set(got) == expected, (f"missing alerts: {sorted(expected - set(got))}; "
                                  f"unexpected: {sorted(set(got) - expected)}")
    repeated = sorted({x for x in got if got.count(x) > 1})
    assert not repeated, f"alerts published more than once: {repeated}"
    ids = [(a.rule_id, a.story_id) for a in alerts]
    assert len(ids) == len(set(ids)), f"alerts repeated by (rule, story id): {sorted(ids)}"
    assert figures.dead_letters == 0, [events.decode(events.DeadLetter, r.value).reason
                                       for r in collector.get(DEAD_LETTER)]


def flow_complete(collector: Collector, articles: Sequence[DemoArticle]) -> Callable[[], bool]:
    slugs = {a.slug for a in articles}
    stories = {a.slug: story_key(a) for a in articles}
    expected = expected_alerts(tuple(articles))

    def done() -> bool:
        tagged = {slug_of(events.decode(events.TaggedArticle, r.value).article.url) for r in collector.get(TAGGED)}
        seen = {(a.rule_id, stories.get(slug_of(a.url), "")) for a in
                (events.decode(events.Alert, r.value) for r in collector.get(ALERTS))}
        return slugs <= tagged and expected <= seen
    return done


class Proxy:
    """A TCP proxy on 127.0.0.1 in a thread of its own: ``cut()`` drops every open connection and
    stops listening (new connections are refused), ``restore()`` listens again. While ``swallowing``
    is set, what the broker answers is dropped (requests still reach it): a response lost on the way."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.port = listen_port
        self.target = target_port
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.swallowing = False
        self.thread = threading.Thread(target=self.loop.run_forever, name="drill-proxy", daemon=True)
        self.thread.start()
        self._call(self._listen())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool = False) -> None:
            try:
                while data := await src.read(1 << 16):
                    if answers and self.swallowing:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer, answers=True))
        self.writers.difference_update((writer, up_writer))

    async def _cut(self) -> int:
        assert self.server is not None
        self.server.close()
        dropped = len(self.writers) // 2
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        return dropped

    def cut(self) -> int:
        """Drop every connection, refuse new ones; returns how many connections were dropped."""
        return int(self._call(self._cut()))

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
