"""The liveness check on the real thing: a clean and a fetch service on the embedded broker, against a
Redis that wants a password. `newswatch health` is ok while they work; with Redis frozen under them
(SIGSTOP) both are "degraded" naming redis once it has failed for NEWSWATCH_DEPENDENCY_SECONDS, and
clean's input waiting past NEWSWATCH_STALL_SECONDS is put down to it: never a failure, which would
have an orchestrator restart processes that cannot help; ok again once Redis is back (SIGCONT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from newswatch import local
from shared import events
from shared.settings import Settings
from shared.topics import RAW_PAGES, create_topics
from tests.conftest import ROOT
from tests.integration.harness import wait_for
from tests.integration.test_replicas import _copy

pytestmark = pytest.mark.integration

STALL_SECONDS = 20  # longer than the Redis client's timeout (10 s), after which a failure is first seen
DEPENDENCY_SECONDS = 3


def _produce(settings: Settings, first: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for n in range(first, first + count):
        url = f"http://site{n}.example.org/monde/karabakh-{n}.html"
        page = events.RawPage(id=f"health-{n}", url=url, final_url=url, source=f"site{n}", fetched_at=time.time(),
                              http_status=200, content_type="text/html; charset=utf-8", body=_copy(n))
        producer.send(RAW_PAGES.name(settings.topic_prefix), key=page.id.encode(), value=events.encode(page))
    producer.flush()
    producer.close()


def _feed_server() -> tuple[ThreadingHTTPServer, str]:
    """A local site with an empty feed: fetch polls it (and asks Redis) every second, and publishes
    nothing that clean would count."""
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>'

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/feed.xml"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


def test_health_is_degraded_naming_a_frozen_redis_and_never_fails_for_it(broker_port: int, tmp_path: Path) -> None:
    # issue 21, case 7: during a frozen Redis every /healthz said OK (fetch: no input to wait on), or,
    # for a consumer with input waiting, it failed: a restart, which cannot bring Redis back
    redis_port, metrics_port, fetch_port = local.free_port(), local.free_port(), local.free_port()
    redis_proc = local.spawn([local.redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--requirepass", "health pass"], tmp_path / "redis.log")
    local.wait_port(redis_port, "redis-server", proc=redis_proc)
    site, host = _feed_server()
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - id: health-site\n    feeds: [http://{host}/feed.xml]\n    poll_seconds: 1\n")
    env = {**os.environ,
           "NEWSWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
           "NEWSWATCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "NEWSWATCH_REDIS_PASSWORD": "health pass",
           "NEWSWATCH_TOPIC_PREFIX": f"health-{uuid.uuid4().hex[:8]}",
           "NEWSWATCH_METRICS_HOST": "127.0.0.1",
           "NEWSWATCH_METRICS_PORT": str(metrics_port),
           "NEWSWATCH_STALL_SECONDS": str(STALL_SECONDS),
           "NEWSWATCH_DEPENDENCY_SECONDS": str(DEPENDENCY_SECONDS),
           "NEWSWATCH_SOURCES": str(sources),
           "NEWSWATCH_ALLOW_HOSTS": host,
           "NEWSWATCH_HOST_DELAY_SECONDS": "0",
           "TMPDIR": str(tmp_path)}
    settings = Settings.from_env(env)
    create_topics(settings)
    service = local.start_service("clean", env, tmp_path / "clean.log")
    fetch = local.start_service("fetch", {**env, "NEWSWATCH_METRICS_PORT": str(fetch_port)}, tmp_path / "fetch.log")
    seen: list[tuple[str, int, dict[str, Any]]] = []

    def health(name: str = "clean") -> tuple[int, dict[str, Any]]:
        port = metrics_port if name == "clean" else fetch_port
        result = subprocess.run([sys.executable, "-m", "newswatch.cli", "health", name, "--port", str(port)], env=env,
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        seen.append((name, result.returncode, json.loads(result.stdout)))
        return seen[-1][1], seen[-1][2]

    def clean_stage() -> dict[str, Any]:
        last = [body for name, _, body in seen if name == "clean"][-1]
        return dict(last.get("stages", {}).get("clean", {}))

    def degraded_by_redis(name: str) -> bool:
        code, body = health(name)
        return code == 0 and body["status"] == "degraded" and any(
            f"stage {name}: redis failing for" in line for line in body["degraded"])

    try:
        wait_for(lambda: health()[0] == 0 and clean_stage().get("state") == "running", 90, "clean up and live")
        wait_for(lambda: health("fetch")[1].get("stages", {}).get("fetch", {}).get("state") == "running", 90,
                 "fetch up")
        _produce(settings, 0, 3)
        wait_for(lambda: health()[0] == 0 and clean_stage().get("handled") == 3 and clean_stage()["waiting"] == 0,
                 60, "3 pages handled, nothing waiting")
        code, body = health("fetch")
        assert code == 0 and body["status"] == "ok", body

        os.kill(redis_proc.pid, signal.SIGSTOP)  # Redis hangs: clean's next input cannot be finished
        frozen_at = time.monotonic()
        during = len(seen)
        _produce(settings, 3, 2)
        wait_for(lambda: degraded_by_redis("clean"), 90, "clean to be degraded by redis", step=1.0)
        degraded_after = time.monotonic() - frozen_at
        wait_for(lambda: degraded_by_redis("fetch"), 90, "fetch to be degraded by redis", step=1.0)
        # the stall of clean's waiting input is put down to Redis, not failed (its stall period is over)
        wait_for(lambda: health()[0] == 0 and any("inputs waiting" in line and "while redis fails" in line
                                                  for line in seen[-1][2]["degraded"]), 60,
                 "the stall explained by redis", step=1.0)
        assert all(code == 0 and body["ok"] for _, code, body in seen[during:]), \
            [body for _, code, body in seen[during:] if code]
        assert degraded_after >= DEPENDENCY_SECONDS, degraded_after
        assert service.poll() is None and fetch.poll() is None  # both run, and their metrics still answer
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["status"] == "degraded"

        os.kill(redis_proc.pid, signal.SIGCONT)
        wait_for(lambda: health()[0] == 0 and seen[-1][2]["status"] == "ok" and clean_stage().get("handled") == 5
                 and clean_stage()["waiting"] == 0, 90, "clean to catch up and be ok again", step=1.0)
        wait_for(lambda: health("fetch")[1]["status"] == "ok", 60, "fetch to be ok again", step=1.0)
        print(f"health drill: degraded (redis) {degraded_after:.1f} s after Redis froze (period "
              f"{DEPENDENCY_SECONDS} s, Redis client timeout 10 s); {len(seen)} checks, none failed")
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)
        site.shutdown()
        local.stop([service, fetch, redis_proc])
