"""The liveness check on the real thing: a clean service on the embedded broker, against a Redis that
wants a password. `newswatch health clean` passes while it consumes, fails once input has waited
NEWSWATCH_STALL_SECONDS without being finished (Redis frozen under it: the process and its /metrics
still answer, which is all the old health check asked), and passes again once it catches up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
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

STALL_SECONDS = 6


def _produce(settings: Settings, first: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for n in range(first, first + count):
        url = f"http://site{n}.example.org/monde/karabakh-{n}.html"
        page = events.RawPage(id=f"health-{n}", url=url, final_url=url, source=f"site{n}", fetched_at=time.time(),
                              http_status=200, content_type="text/html; charset=utf-8", body=_copy(n))
        producer.send(RAW_PAGES.name(settings.topic_prefix), key=page.id.encode(), value=events.encode(page))
    producer.flush()
    producer.close()


def test_health_fails_while_the_consumer_is_stuck_and_recovers(broker_port: int, tmp_path: Path) -> None:
    redis_port, metrics_port = local.free_port(), local.free_port()
    redis_proc = local.spawn([local.redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--requirepass", "health pass"], tmp_path / "redis.log")
    local.wait_port(redis_port, "redis-server", proc=redis_proc)
    env = {**os.environ,
           "NEWSWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
           "NEWSWATCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "NEWSWATCH_REDIS_PASSWORD": "health pass",
           "NEWSWATCH_TOPIC_PREFIX": f"health-{uuid.uuid4().hex[:8]}",
           "NEWSWATCH_METRICS_HOST": "127.0.0.1",
           "NEWSWATCH_METRICS_PORT": str(metrics_port),
           "NEWSWATCH_STALL_SECONDS": str(STALL_SECONDS),
           "TMPDIR": str(tmp_path)}
    settings = Settings.from_env(env)
    create_topics(settings)
    service = local.start_service("clean", env, tmp_path / "clean.log")
    seen: list[tuple[int, dict[str, Any]]] = []

    def health() -> tuple[int, dict[str, Any]]:
        result = subprocess.run([sys.executable, "-m", "newswatch.cli", "health", "clean"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        seen.append((result.returncode, json.loads(result.stdout)))
        return seen[-1]

    def clean_stage() -> dict[str, Any]:
        return seen[-1][1].get("stages", {}).get("clean", {})

    try:
        wait_for(lambda: health()[0] == 0 and clean_stage().get("state") == "running", 90, "clean up and live")
        _produce(settings, 0, 3)
        wait_for(lambda: health()[0] == 0 and clean_stage().get("handled") == 3 and clean_stage()["waiting"] == 0,
                 60, "3 pages handled, nothing waiting")

        os.kill(redis_proc.pid, signal.SIGSTOP)  # Redis hangs: clean's next input cannot be finished
        frozen_at = time.monotonic()
        _produce(settings, 3, 2)
        wait_for(lambda: health()[0] == 1, 60, "the health check to fail", step=1.0)
        failed_after = time.monotonic() - frozen_at
        problems = seen[-1][1]["problems"]
        assert len(problems) == 1 and "stage clean has 2 inputs waiting and has finished none for" in problems[0], \
            problems
        assert failed_after >= STALL_SECONDS, failed_after
        assert service.poll() is None  # the process runs, and its metrics still answer
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert response.status == 200

        os.kill(redis_proc.pid, signal.SIGCONT)
        wait_for(lambda: health()[0] == 0 and clean_stage().get("handled") == 5 and clean_stage()["waiting"] == 0,
                 90, "clean to catch up and be live again", step=1.0)
        print(f"health drill: failed {failed_after:.1f} s after Redis froze (stall period {STALL_SECONDS} s); "
              f"{len(seen)} checks; last: {seen[-1][1]}")
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)
        local.stop([service, redis_proc])
