"""Fault drills on the running pipeline: real tansu broker, real redis-server, the five services as
processes, all on 127.0.0.1 free ports. Each drill counts what came out and asserts exactly:
every article on articles-tagged, every expected (rule, story) alert on alerts exactly once.

Figures (articles in/out, alerts expected/seen, duplicates, dead letters, seconds until the
service resumed) are printed (``-s``) and appended as JSON lines to ``$NEWSWATCH_DRILL_REPORT``.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer

from newswatch import local
from newswatch.demo.content import SITES
from newswatch.demo.generated import generate
from newswatch.demo.server import article_path, render_article, serve_in_thread, sources_yaml
from services.fetch.feeds import article_id
from shared import events
from shared.pipeline import SERVICE_NAMES
from shared.topics import ALERTS, ARTICLES, DEAD_LETTER, LABELLED, RAW_PAGES, TAGGED
from tests.integration.harness import (
    OUTPUT_OF,
    Collector,
    Figures,
    Pipeline,
    Proxy,
    RedisServer,
    check_flow,
    count_flow,
    dump_logs_on_failure,
    flow_complete,
    wait_for,
)

pytestmark = pytest.mark.integration

ARTICLE_COUNT = 36
SPACING = 0.6  # seconds between two articles: ~22 s of publication
FLOW_TIMEOUT = 150
SETTLE = 6.0  # seconds to wait after the last expected output, for a late duplicate to show


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


class Flow:
    """Generated articles served by the demo sites once the services are up, the whole pipeline
    running against them, and a collector on every topic."""

    def __init__(self, workdir: Path, bootstrap: str, redis_url: str, collector_bootstrap: str | None = None,
                 ner: bool = False) -> None:
        self.articles = generate(ARTICLE_COUNT, spacing=SPACING)
        self.sites_port = local.free_port()
        base = f"http://127.0.0.1:{self.sites_port}"
        # The generated articles are English: NER (fr, ru) never runs on them; its models are loaded
        # only where the drill restarts entities, so that its resume time includes them.
        extra = {} if ner else {"NEWSWATCH_NER_LANGUAGES": ""}
        self.pipeline = Pipeline(workdir, bootstrap, redis_url, sources=sources_yaml(base, 1.0), extra_env=extra)
        self.pipeline.create_topics(collector_bootstrap or bootstrap)
        self.collector = Collector(collector_bootstrap or bootstrap, self.pipeline.prefix,
                                   (RAW_PAGES, ARTICLES, LABELLED, TAGGED, ALERTS, DEAD_LETTER))
        self.collector.start()
        self.collector.ready.wait(20)
        self.collector.check()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> float:
        """Start the services, then the sites once every stage started; returns the start-up seconds."""
        self.pipeline.start_all()
        seconds = self.pipeline.wait_started()
        self.server, _ = serve_in_thread("127.0.0.1", self.sites_port, pace=1.0, articles=self.articles)
        return seconds

    def wait_outputs(self, spec: object, count: int, timeout: float = 90) -> None:
        wait_for(lambda: len(self.collector.get(spec)) >= count, timeout,  # type: ignore[arg-type]
                 f"{count} records on {getattr(spec, 'suffix', spec)}")

    def finish(self, figures: Figures) -> None:
        """Wait for every expected output, then a while for late duplicates, and count (the figures are
        printed here when the wait times out; otherwise the caller prints them, then calls ``check``)."""
        try:
            wait_for(flow_complete(self.collector, self.articles), FLOW_TIMEOUT, "every article and alert")
            time.sleep(SETTLE)
        except AssertionError:
            count_flow(figures, self.collector, self.articles)
            figures.report()
            raise
        count_flow(figures, self.collector, self.articles)
        figures.notes["alive"] = self.pipeline.alive()

    def check(self, figures: Figures) -> None:
        """Nothing lost, nothing repeated, no service down."""
        dead = [name for name, up in self.pipeline.alive().items() if not up]
        assert not dead, f"services died: {dead}"
        check_flow(figures, self.collector, self.articles)

    def close(self) -> None:
        self.pipeline.stop()
        self.collector.close()
        if self.server is not None:
            self.server.shutdown()


@pytest.mark.parametrize("victim", SERVICE_NAMES)
def test_kill9_a_service_while_articles_flow(victim: str, broker_port: int, redis_server: RedisServer,
                                             tmp_path: Path) -> None:
    flow = Flow(tmp_path, f"127.0.0.1:{broker_port}", redis_server.url, ner=victim == "entities")
    figures = Figures(f"kill -9 {victim}")
    output = OUTPUT_OF[victim]
    try:
        with dump_logs_on_failure(flow.pipeline):
            figures.notes["startup_s"] = round(flow.start(), 1)
            # mid-stream: a third of the victim's outputs are out, most articles still to come
            flow.wait_outputs(output, 5 if victim == "alert" else 12)
            before = len(flow.collector.get(output))
            flow.pipeline.kill9(victim)
            time.sleep(2.0)
            restarted = time.time()
            flow.pipeline.start(victim)
            figures.notes.update(outputs_before_kill=before)
            flow.finish(figures)
            resumed = flow.collector.first_after(output, restarted)
            figures.resume_seconds = resumed
            figures.notes.update(output_records=len(flow.collector.get(output)))
            figures.report()
            flow.check(figures)
            assert resumed is not None, f"{victim} produced nothing after its restart"
    finally:
        flow.close()


def test_redis_kill9_and_restart_mid_stream(broker_port: int, redis_server: RedisServer, tmp_path: Path) -> None:
    flow = Flow(tmp_path, f"127.0.0.1:{broker_port}", redis_server.url)
    figures = Figures("kill -9 redis")
    try:
        with dump_logs_on_failure(flow.pipeline, redis_server.log):
            figures.notes["startup_s"] = round(flow.start(), 1)
            flow.wait_outputs(TAGGED, 12)
            redis_server.kill9()
            time.sleep(3.0)
            redis_server.restart()
            restarted = time.time()
            flow.finish(figures)
            figures.resume_seconds = flow.collector.first_after(TAGGED, restarted)
            figures.notes["resume_by_topic"] = {
                spec.suffix: None if (s := flow.collector.first_after(spec, restarted)) is None else round(s, 1)
                for spec in (RAW_PAGES, ARTICLES, LABELLED, TAGGED, ALERTS)}
            # what Redis holds once it is over (writes of the last second before the kill may be gone)
            client = redis.Redis(port=redis_server.port)
            figures.notes["alert_sent_keys"] = len(list(client.scan_iter("nw:alert:sent:*")))
            figures.notes["alert_fired_keys"] = len(list(client.scan_iter("nw:alert:fired:*")))
            figures.notes["url_done"] = sum(1 for k in client.scan_iter("nw:url:*") if client.get(k) == b"done")
            figures.report()
            flow.check(figures)
            assert figures.resume_seconds is not None
    finally:
        flow.close()


def test_broker_unreachable_for_15_seconds(tmp_path: Path) -> None:
    broker_port, proxy_port = local.free_port(), local.free_port()
    broker = local.start_broker(broker_port, tmp_path / "broker.log", advertised_port=proxy_port)
    proxy = Proxy(proxy_port, broker_port)
    redis_server = RedisServer(tmp_path)
    figures = Figures("broker unreachable 15 s")
    # every client, the collector's too, reaches tansu through the proxy (tansu advertises it): the
    # records' producer timestamps, not their arrival, date the outputs
    flow = Flow(tmp_path, f"127.0.0.1:{proxy_port}", redis_server.url)
    try:
        with dump_logs_on_failure(flow.pipeline, tmp_path / "broker.log"):
            figures.notes["startup_s"] = round(flow.start(), 1)
            flow.wait_outputs(TAGGED, 10)
            assert proxy.connections >= len(SERVICE_NAMES), "the services do not go through the proxy"
            figures.notes["connections_dropped"] = proxy.cut()
            assert figures.notes["connections_dropped"] >= len(SERVICE_NAMES)
            cut_at = time.time()
            time.sleep(15.0)
            proxy.restore()
            restored = time.time()
            figures.notes["outage_s"] = round(restored - cut_at, 1)
            flow.finish(figures)
            figures.resume_seconds = flow.collector.first_after(TAGGED, restored)
            figures.notes["resume_by_topic"] = {
                spec.suffix: None if (s := flow.collector.first_after(spec, restored)) is None else round(s, 1)
                for spec in (RAW_PAGES, ARTICLES, LABELLED, TAGGED, ALERTS)}
            figures.report()
            flow.check(figures)
            assert figures.resume_seconds is not None
    finally:
        flow.close()
        proxy.close()
        redis_server.stop()
        local.stop([broker])


def _raw_page(aid: str, url: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> bytes:
    return events.encode(events.RawPage(id=aid, url=url, final_url=url, source="drill", fetched_at=time.time(),
                                        http_status=200, content_type=content_type, body=body))


def _prose_page(megabytes: int) -> bytes:
    """An HTML page of ``megabytes`` MB of real prose paragraphs (generated articles' text)."""
    paragraphs = [p for a in generate(60, copy_every=0, seed=7) for p in a.paragraphs]
    out, size, i = [b"<html><head><title>A very long report</title></head><body><article><h1>Report</h1>"], 0, 0
    while size < megabytes << 20:
        chunk = f"<p>{paragraphs[i % len(paragraphs)]}</p>\n".encode()
        out.append(chunk)
        size += len(chunk)
        i += 1
    out.append(b"</article></body></html>")
    return b"".join(out)


# 3 MB of nested <div>s and not one word: refused by clean's element cap right after the parse
DIVS_3MB = b"<html><body>" + b"<div><div></div></div>" * (3 * 2**20 // 22) + b"</body></html>"


def test_oversized_and_hostile_inputs(broker_port: int, redis_server: RedisServer, tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{broker_port}"
    pipeline = Pipeline(tmp_path, bootstrap, redis_server.url, services=("clean", "langdetect", "entities", "alert"))
    pipeline.create_topics(bootstrap)
    collector = Collector(bootstrap, pipeline.prefix, (ARTICLES, TAGGED, DEAD_LETTER))
    collector.start()
    collector.ready.wait(20)
    settings = pipeline.settings
    cap = settings.dead_letter_payload_bytes
    figures = Figures("oversized and hostile inputs")
    rng = random.Random(5)
    inputs: dict[str, bytes] = {
        # 3 MB of <div>s and no prose: nothing to extract
        "unextractable-3mb": _raw_page("unextractable-3mb", "http://drill.test/divs", DIVS_3MB),
        # 2 MB of random bytes said to be HTML
        "binary-2mb": _raw_page("binary-2mb", "http://drill.test/binary", rng.randbytes(2 * 2**20)),
        # 20 MB of raw bytes: not JSON, and over the 8 MiB input cap
        "raw-20mb": rng.randbytes(20 * 2**20),
        # 10 MB of real prose: as a raw_page event (base64) it is over the cap, processed or dead-lettered
        "prose-10mb": _raw_page("prose-10mb", "http://drill.test/prose", _prose_page(10)),
    }
    normal = generate(1, seed=11)[0]
    base = "http://127.0.0.1:1"
    normal_url = base + article_path(normal)
    normal_id = article_id(normal_url)
    site = next(s for s in SITES if s.id == normal.site)
    normal_value = _raw_page(normal_id, normal_url, render_article(normal, base, time.time()).encode(site.charset),
                             f"text/html; charset={site.charset}")
    try:
        with dump_logs_on_failure(pipeline):
            pipeline.start_all()
            pipeline.wait_started()
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=32 << 20,
                                     request_timeout_ms=60000)
            where: dict[str, tuple[int, int]] = {}
            for key, value in inputs.items():
                meta = producer.send(RAW_PAGES.name(pipeline.prefix), key=key.encode(), value=value).get(timeout=60)
                where[key] = (meta.partition, meta.offset)
            sent = time.time()
            meta = producer.send(RAW_PAGES.name(pipeline.prefix), key=normal_id.encode(), value=normal_value).get(60)
            producer.close()
            figures.notes["accepted_by_tansu_mb"] = {k: round(len(v) / 2**20, 1) for k, v in inputs.items()}

            def letters() -> dict[str, events.DeadLetter]:
                found = (events.decode(events.DeadLetter, r.value) for r in collector.get(DEAD_LETTER))
                return {d.id: d for d in found}

            def prose_accounted() -> bool:
                return "prose-10mb" in letters() or any(r.key == b"prose-10mb" for r in collector.get(ARTICLES))

            def normal_tagged() -> bool:
                return any(r.key == normal_id.encode() for r in collector.get(TAGGED))

            wait_for(lambda: {"unextractable-3mb", "binary-2mb", "raw-20mb"} <= set(letters()) and prose_accounted()
                     and normal_tagged(), 180, "the dead letters, the 10 MB page and the normal article")
            time.sleep(2)
            got = letters()
            topic = RAW_PAGES.name(pipeline.prefix)
            for key in ("unextractable-3mb", "binary-2mb", "raw-20mb", "prose-10mb"):
                if key == "prose-10mb" and key not in got:
                    continue  # processed: it reached articles
                letter = got[key]
                value = inputs[key]
                assert letter.stage == "clean" and letter.topic == topic, letter
                assert (letter.partition, letter.offset) == where[key], (key, letter.partition, letter.offset)
                assert letter.payload_bytes == len(value), (key, letter.payload_bytes, len(value))
                assert letter.truncated is True and len(letter.payload) <= cap, (key, len(letter.payload))
                assert letter.payload == value[:cap]
                assert letter.payload_sha256 == hashlib.sha256(value).hexdigest()
                assert letter.reason, key
                figures.notes[key] = f"{letter.kind}/{letter.error}: {letter.reason[:90]}"
            tagged_at = min(r.at for r in collector.get(TAGGED) if r.key == normal_id.encode())
            figures.articles_in = 1 + len(inputs)
            figures.articles_tagged = len({r.key for r in collector.get(TAGGED)})
            figures.dead_letters = len(collector.get(DEAD_LETTER))
            figures.resume_seconds = tagged_at - sent
            figures.notes["prose-10mb outcome"] = "dead-lettered" if "prose-10mb" in got else "articles"
            figures.notes["normal_offset"] = meta.offset
            figures.report()
            assert figures.articles_tagged == 1 + (0 if "prose-10mb" in got else 1)
            assert all(pipeline.alive().values()), pipeline.alive()
    finally:
        pipeline.stop()
        collector.close()


def test_start_broker_advertises_the_given_port(tmp_path: Path) -> None:
    """The broker drill leans on it: clients are sent to the advertised port (the proxy), not the listener's."""
    from kafka import KafkaAdminClient

    broker_port, proxy_port = local.free_port(), local.free_port()
    proc: subprocess.Popen[bytes] = local.start_broker(broker_port, tmp_path / "b.log", advertised_port=proxy_port)
    proxy = Proxy(proxy_port, broker_port)
    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{broker_port}", request_timeout_ms=5000)
        try:
            ports = {b["port"] for b in admin.describe_cluster()["brokers"]}
        finally:
            admin.close()
        assert ports == {proxy_port}
        assert proxy.connections >= 1  # the admin client went on through the proxy
    finally:
        proxy.close()
        local.stop([proc])
