"""Fault drills on `newswatch run` itself (the real runner, broker, Redis, demo sites and services):
a restart on the same run folder alerts nothing twice; a broker killed with SIGKILL is restarted
by the runner and every article still listed in the feeds is processed, no alert twice; a runner
killed with SIGKILL leaves no child behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from newswatch import local
from newswatch.demo.content import ARTICLES, EXPECTED_ALERTS, story_key
from newswatch.demo.server import article_path
from services.fetch.feeds import article_id
from shared import events, pipeline, redis_store
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


class Run:
    """`newswatch run` as a subprocess, its output collected line by line."""

    def __init__(self, run_dir: Path, sites_port: int, *args: str, env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.sites_port = sites_port
        self.redis_port = local.free_port()
        self.alerts_file = run_dir / f"alerts-{time.monotonic_ns()}.jsonl"
        cmd = [sys.executable, "-m", "newswatch.cli", "run", "--run-dir", str(run_dir), "--broker-port",
               str(local.free_port()), "--redis-port", str(self.redis_port), "--sites-port", str(sites_port),
               "--metrics-base-port", str(local.free_port_block(len(pipeline.SERVICES))), "--pace", "0.2",
               "--poll-seconds", "1",
               "--alerts-jsonl", str(self.alerts_file), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "COLUMNS": "200", **(env or {})},
                                     preexec_fn=local.die_with_parent)  # gone with the test run
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def wait_for(self, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(what in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{what!r} not seen in {timeout:.0f} s; output:\n" + "\n".join(self.lines[-60:]))

    def alerts(self) -> list[events.Alert]:
        if not self.alerts_file.exists():
            return []
        return [events.decode(events.Alert, line) for line in self.alerts_file.read_bytes().splitlines() if line]

    def wait_alerts(self, count: int, timeout: float) -> list[events.Alert]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.alerts()) < count and self.proc.poll() is None:
            time.sleep(0.5)
        return self.alerts()

    def pids(self) -> dict[str, int]:
        return {k: int(v) for k, v in json.loads((self.run_dir / "processes.json").read_text()).items()}

    def summary(self) -> dict[str, object]:
        line = next(line for line in reversed(self.lines) if line.startswith('{"alerts"'))
        return dict(json.loads(line))

    def finish(self, timeout: float = 240) -> None:
        """Wait for the run to end by itself, with exit code 0 (interrupted if it did not)."""
        try:
            assert self.proc.wait(timeout=timeout) == 0, "\n".join(self.lines[-60:])
        finally:
            if self.proc.poll() is None:
                self.interrupt()
        self.reader.join(timeout=5)

    def interrupt(self, timeout: float = 120) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code


def _alert_keys(alerts: list[events.Alert]) -> list[tuple[str, str]]:
    slug_story = {a.slug: story_key(a) for a in ARTICLES}
    return [(a.rule_id, slug_story[a.url.rsplit("/", 1)[1].removesuffix(".html")]) for a in alerts]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_a_restarted_run_on_the_same_folder_alerts_nothing_twice(tmp_path: Path) -> None:
    sites_port = local.free_port()  # the same demo URLs both times
    first = Run(tmp_path, sites_port, "--until-alerts", str(len(EXPECTED_ALERTS)))
    first.finish()
    keys = _alert_keys(first.alerts())
    assert sorted(keys) == sorted(EXPECTED_ALERTS) and len(keys) == len(set(keys))
    assert any("drained" in line for line in first.lines), "\n".join(first.lines[-30:])

    second = Run(tmp_path, sites_port, "--duration", "40")
    second.finish()
    print(f"restart drill: first run {len(keys)} alerts, second run {second.summary()['alerts']} alerts")
    assert second.summary()["alerts"] == 0 and second.alerts() == []
    # the second run did see the feeds (it polled them), it just had nothing new to do
    fetch_log = (tmp_path / "logs" / "fetch.log").read_text()
    assert fetch_log.count('"stage started"') >= 2

    # Two alerts the broker had acknowledged but the user never saw (the in-memory broker died with
    # them): a run on an empty broker re-arms exactly those, and they arrive once.
    lost = sorted(a.id for a in first.alerts())[:2]
    port = local.free_port()
    store = local.start_redis(port, tmp_path / "redis", tmp_path / "logs" / "redis-edit.log")  # the run's data
    try:
        client = redis.Redis(port=port)
        assert client.delete(*(redis_store.alert_shown_key(alert_id) for alert_id in lost)) == 2
        client.close()
    finally:
        local.stop([store])
    third = Run(tmp_path, sites_port, "--until-alerts", "2", "--drain-seconds", "20")
    third.finish()
    print(f"restart drill: {len(lost)} alerts never shown, {len(third.alerts())} shown by the next run")
    assert any("2 alerts the broker held but had not been shown are re-armed" in line for line in third.lines)
    assert sorted(a.id for a in third.alerts()) == lost


def test_a_broker_killed_mid_stream_is_restarted_and_nothing_is_lost_or_repeated(tmp_path: Path) -> None:
    # pace 1: the demo articles appear over ~40 s, so the kill falls while they flow
    run = Run(tmp_path, local.free_port(), "--pace", "1.0", env={"NEWSWATCH_INFLIGHT_TTL_SECONDS": "8"})
    try:
        first = run.wait_alerts(1, timeout=180)
        assert first, "no alert before the kill:\n" + "\n".join(run.lines[-60:])
        killed_at = time.monotonic()
        os.kill(run.pids()["broker"], signal.SIGKILL)
        run.wait_for("broker restarted", timeout=90)
        print(f"broker drill: broker, topics and services back {time.monotonic() - killed_at:.1f} s after the kill")
        alerts = run.wait_alerts(len(EXPECTED_ALERTS), timeout=240)
        time.sleep(8)  # room for a wrong extra alert to show up
        alerts = run.alerts()
        keys = _alert_keys(alerts)
        duplicates = len(keys) - len(set(keys))
        rearmed = [line for line in run.lines if "had not been shown are re-armed" in line]
        print(f"broker drill: {len(first)} alerts before the kill, {len(keys)} alerts in all, "
              f"{duplicates} duplicates, all expected after {time.monotonic() - killed_at:.1f} s from the kill; "
              f"re-armed: {rearmed[0].split(']', 1)[1].split(' alerts')[0].strip() if rearmed else 0}")
        assert duplicates == 0, Counter(keys).most_common(3)
        assert sorted(set(keys)) == sorted(EXPECTED_ALERTS)
        # every demo article (all still listed in the feeds) goes all the way: its URL becomes done
        # (the ones lost with the broker once their in-flight mark expired and fetch took them again)
        client = redis.Redis(port=run.redis_port)
        base = f"http://127.0.0.1:{run.sites_port}"
        deadline = time.monotonic() + 180
        while True:
            states = {a.slug: client.get(f"nw:url:{article_id(base + article_path(a))}") for a in ARTICLES}
            if all(v == b"done" for v in states.values()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        print(f"broker drill: {sum(v == b'done' for v in states.values())} of {len(ARTICLES)} articles done "
              f"{time.monotonic() - killed_at:.1f} s after the kill")
        assert all(v == b"done" for v in states.values()), {k: v for k, v in states.items() if v != b"done"}
        keys = _alert_keys(run.alerts())
        assert len(keys) == len(set(keys)), Counter(keys).most_common(3)  # still no alert twice
    finally:
        if run.proc.poll() is None:
            run.interrupt()


def test_a_runner_killed_with_sigkill_leaves_no_child_behind(tmp_path: Path) -> None:
    run = Run(tmp_path, local.free_port())
    try:
        run.wait_for("services:", timeout=120)
        pids = run.pids()
        assert set(pids) >= {"broker", "redis", "fetch", "clean", "langdetect", "entities", "alert"}
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for k, p in pids.items() if k != "runner"):
            time.sleep(0.2)
        assert not [k for k, p in pids.items() if k != "runner" and _alive(p)]
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def test_a_runner_killed_with_a_page_in_flight_alerts_it_once_within_a_minute_of_the_next_run(
        tmp_path: Path) -> None:
    # issue 21, case 2. The page of an article with an alert due is published and marked in flight,
    # then the runner is killed with SIGKILL (its in-memory broker, with the page, dies with it).
    # The next run on the same folder must take the page over from the dead fetch process (its
    # heartbeat expired) and alert it once, without waiting for the in-flight mark's 10 minutes.
    sites_port = local.free_port()
    stories = Counter(story_key(a) for a in ARTICLES)
    due = {story for _, story in EXPECTED_ALERTS}
    # an early article (the demo sites start their timeline again with each run: the next run finds it
    # there at once) that is a story of its own with an alert due, but not the very first one (clean is
    # held from its start: the page must reach the broker after that)
    target = min((a for a in ARTICLES if stories[story_key(a)] == 1 and story_key(a) in due and a.delay > 0),
                 key=lambda a: a.delay)
    url = f"http://127.0.0.1:{sites_port}{article_path(target)}"
    first = Run(tmp_path, sites_port)
    try:
        deadline = time.monotonic() + 120
        while "clean" not in (first.pids() if (tmp_path / "processes.json").exists() else {}):
            assert time.monotonic() < deadline and first.proc.poll() is None, "\n".join(first.lines[-40:])
            time.sleep(0.05)
        # clean held from its start: every page fetch publishes stays in flight, none is done
        clean = first.pids()["clean"]
        os.kill(clean, signal.SIGSTOP)
        client = redis.Redis(port=first.redis_port)
        deadline = time.monotonic() + 180
        while not redis_store.as_str(client.get(f"nw:url:{article_id(url)}") or b"").startswith("inflight:"):
            assert time.monotonic() < deadline, "the page never went in flight:\n" + "\n".join(first.lines[-40:])
            time.sleep(0.1)
        in_flight = redis_store.pages_in_flight(client)
        client.close()
        pids = first.pids()
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        os.kill(clean, signal.SIGKILL)  # stopped, it cannot act on the SIGTERM its parent's death sent
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for k, p in pids.items() if k != "runner"):
            time.sleep(0.2)
        # (that children die with the runner is the drill above's; a service still shutting down on a
        # busy machine, its broker gone, is not to share the next run's folder)
        for name, pid in pids.items():
            if name != "runner" and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    shown_first = _alert_keys(first.alerts())
    assert story_key(target) not in {story for _, story in shown_first} and sum(in_flight.values()) >= 1, in_flight

    left = len(EXPECTED_ALERTS) - len(set(shown_first))
    second = Run(tmp_path, sites_port, "--until-alerts", str(left), "--drain-seconds", "30")
    try:
        second.wait_for("services:", timeout=120)
        started = time.monotonic()
        deadline = started + 240
        while not any(a.url == url for a in second.alerts()):
            assert time.monotonic() < deadline and second.proc.poll() is None, "\n".join(second.lines[-60:])
            time.sleep(0.2)
        took = time.monotonic() - started
        second.finish()
    finally:
        if second.proc.poll() is None:
            second.interrupt()
    fetch_log = (tmp_path / "logs" / "fetch.log").read_text()
    print(f"killed-runner drill: {sum(in_flight.values())} pages in flight at the kill; the next run alerted the "
          f"stuck article {took:.1f} s after its services started")
    assert "pages in flight of a fetch process that is gone" in fetch_log
    keys = shown_first + _alert_keys(second.alerts())
    assert sorted(set(keys)) == sorted(EXPECTED_ALERTS) and len(keys) == len(set(keys)), Counter(keys).most_common(3)
    assert sorted(a.rule_id for a in second.alerts() if a.url == url) == sorted(
        rule for rule, story in EXPECTED_ALERTS if story == story_key(target))  # each of its alerts once
    assert took < 60, took
    assert any("drained" in line for line in second.lines), "\n".join(second.lines[-30:])


def test_a_run_on_real_sources_obeys_their_robots_txt_by_rfc_9309(tmp_path: Path) -> None:
    # issue 21, case 1, through `newswatch run --sources`: a site whose robots.txt uses wildcards, $
    # and Allow inside a Disallow; fetch asks exactly the pages RFC 9309 allows
    from tests.unit.test_robots import ISSUE_CASE

    requests: list[str] = []
    page = (b"<html><head><title>Karabakh: talks resume</title></head><body><article><h1>Karabakh: talks resume"
            b"</h1><p>Armenia and Azerbaijan resumed talks on Nagorno-Karabakh in Moscow on Tuesday, the foreign "
            b"ministry said, after a month without contact between the two delegations.</p></article></body>"
            b"</html>")

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            host = self.headers["Host"]
            if self.path == "/robots.txt":
                body, kind = ISSUE_CASE.encode(), "text/plain"
            elif self.path == "/feed.xml":
                items = "".join(f"<item><title>{p}</title><link>http://{host}{p}</link></item>" for p in LISTED)
                body = (f'<?xml version="1.0"?><rss version="2.0"><channel><title>S</title>{items}</channel>'
                        "</rss>").encode()
                kind = "application/rss+xml"
            else:
                body, kind = page, "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=site.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    host = f"127.0.0.1:{site.server_address[1]}"
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - id: rfc-site\n    feeds: [http://{host}/feed.xml]\n    poll_seconds: 1\n")
    try:
        run = Run(tmp_path, local.free_port(), "--sources", str(sources), "--rules", str(ROOT / "config/rules.yaml"),
                  "--duration", "45", "--drain-seconds", "30",
                  env={"NEWSWATCH_ALLOW_HOSTS": host, "NEWSWATCH_HOST_DELAY_SECONDS": "0.05"})
        run.finish()
    finally:
        site.shutdown()
    asked = {p for p in requests if p not in ("/robots.txt", "/feed.xml")}
    fetch_log = (tmp_path / "logs" / "fetch.log").read_text()
    print(f"robots run: pages asked {sorted(asked)}")
    assert asked == {"/news/public/open.html", "/tmp/keep"}, asked
    refused = {json.loads(line)["url"].split(host, 1)[1] for line in fetch_log.splitlines()
               if '"page given up"' in line and "disallowed by robots.txt" in line}
    assert refused == {"/story.html?print=1", "/index.php", "/news/x.html"}, refused
    assert requests.count("/robots.txt") == 1  # read once, kept for the hour


LISTED = ["/story.html?print=1", "/index.php", "/news/public/open.html", "/tmp/keep", "/news/x.html"]
