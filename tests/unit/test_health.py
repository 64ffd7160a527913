"""Liveness: the verdict (input waiting without progress, a dead stage, a blocked loop), /healthz beside
/metrics, and `newswatch health` on both answers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from newswatch import local
from shared import pipeline
from shared.health import Liveness
from shared.metrics import serve_metrics
from tests.conftest import ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _live(stall: float = 60.0) -> tuple[Liveness, Clock]:
    clock = Clock()
    live = Liveness("clean", stall, clock)
    live.add("clean", consuming=True)
    live.running("clean")
    return live, clock


def test_idle_with_nothing_waiting_is_live_however_long() -> None:
    live, clock = _live()
    live.observe("clean", [("t", 0, 5, 5), ("t", 1, 0, None)])
    clock.now += 3600
    live.beat()
    verdict = live.check()
    assert verdict.ok and verdict.problems == []
    assert verdict.body["stages"] == {"clean": {"state": "running", "handled": 0, "waiting": 0,
                                                "seconds_since_handled": None}}


def test_input_waiting_without_progress_fails_after_the_stall_period() -> None:
    live, clock = _live(stall=60)
    live.handled("clean", "t", 0, 9)
    clock.now += 500  # a long idle time: the stall period counts from when input began to wait
    live.beat()
    live.observe("clean", [("t", 0, 13, 7), ("t", 1, None, None)])  # 13 - max(10, 7) = 3 waiting; p1 unknown
    clock.now += 59
    live.beat()
    assert live.check().ok
    clock.now += 2
    live.beat()
    verdict = live.check()
    assert not verdict.ok
    assert verdict.problems == ["stage clean has 3 inputs waiting and has finished none for 61 s (running)"]
    live.handled("clean", "t", 0, 10)  # progress: live again, with the rest still waiting
    live.observe("clean", [("t", 0, 13, 7)])
    verdict = live.check()
    assert verdict.ok, verdict.problems
    assert verdict.body["stages"]["clean"]["waiting"] == 2  # type: ignore[index]


def test_steady_progress_with_a_backlog_is_live() -> None:
    live, clock = _live(stall=10)
    for offset in range(100):
        clock.now += 5
        live.handled("clean", "t", 0, offset)
        live.observe("clean", [("t", 0, 1000, 0)])
        live.beat()
        assert live.check().ok


def test_a_stage_stuck_while_starting_fails_once_input_waits_that_long() -> None:
    clock = Clock()
    live = Liveness("langdetect", 30, clock)
    live.add("langdetect", consuming=True)
    live.observe("langdetect", [("t", 0, 4, None)])
    clock.now += 31
    live.beat()
    assert live.check().problems == ["stage langdetect has 4 inputs waiting and has finished none for 31 s "
                                     "(starting)"]


def test_a_dead_stage_fails_and_cancellation_is_not_a_death() -> None:
    live, _ = _live()
    live.add("alert-webhooks", consuming=True)

    async def cancelled() -> None:
        with live.watching("alert-webhooks"):
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())
    assert live.check().ok
    with pytest.raises(KeyError), live.watching("clean"):
        raise KeyError("bug")
    verdict = live.check()
    assert verdict.problems == ["stage clean died: KeyError: 'bug'"]
    assert verdict.body["stages"]["clean"]["error"] == "KeyError: 'bug'"  # type: ignore[index]


def test_a_blocked_event_loop_fails() -> None:
    live, clock = _live(stall=20)
    clock.now += 21  # no beat: the loop is blocked (the HTTP thread still answers)
    assert live.check().problems == ["the event loop has not beaten for 21 s (blocked, or the service never got "
                                     "started: broker unreachable?)"]
    live.beat()
    assert live.check().ok


def test_source_stages_count_no_waiting_input() -> None:
    clock = Clock()
    live = Liveness("fetch", 10, clock)
    live.add("fetch", consuming=False)
    live.observe("fetch", [("t", 0, 50, 0)])  # never happens for a source; even so it is not a stall
    clock.now += 100
    live.beat()
    verdict = live.check()
    assert verdict.ok and verdict.body["stages"] == {"fetch": {"state": "starting"}}


@pytest.fixture(scope="module")
def served() -> tuple[Liveness, Clock, int]:
    """One server for the module (prometheus-client's registry, hence UP, is per process)."""
    clock = Clock()
    live = Liveness("clean", 60, clock)
    live.add("clean", consuming=True)
    port = local.free_port()
    serve_metrics(pipeline.service("clean"), port, "127.0.0.1", live)
    return live, clock, port


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _health_cli(*args: str) -> tuple[int, dict[str, object]]:
    result = subprocess.run([sys.executable, "-m", "newswatch.cli", "health", *args], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    return result.returncode, json.loads(result.stdout)


def test_healthz_beside_metrics_and_the_health_command(served: tuple[Liveness, Clock, int]) -> None:
    live, clock, port = served
    live.beat()
    status, body = _get(port, "/metrics")
    # the stage's series exist from the start (at 0 until the stage itself runs)
    assert status == 200 and b'newswatch_up{stage="clean"} 0.0' in body
    status, body = _get(port, "/healthz")
    assert status == 200 and json.loads(body)["ok"] is True
    assert _health_cli("clean", "--port", str(port))[0] == 0

    live.observe("clean", [("t", 0, 3, 0)])
    clock.now += 61
    live.beat()
    status, body = _get(port, "/healthz")
    assert status == 503
    assert json.loads(body)["problems"] == ["stage clean has 3 inputs waiting and has finished none for 61 s "
                                            "(starting)"]
    code, out = _health_cli("clean", "--port", str(port))
    assert code == 1 and out["problems"] == json.loads(body)["problems"]
    code, out = _health_cli("alert", "--port", str(port))  # the port of another service
    assert code == 1 and out["problems"] == [f"port {port} is clean's, not alert's"]
    code, out = _health_cli("clean", "--port", str(local.free_port()))  # nothing listens
    assert code == 1 and "does not answer" in out["problems"][0]  # type: ignore[index]


def test_local_listening_ports_are_free_and_outside_the_ephemeral_range() -> None:
    # a port in the ephemeral range can be taken by any outgoing connection before its listener binds it
    import socket

    low, high = local._ephemeral_range()
    ports = [local.free_port() for _ in range(20)]
    base = local.free_port_block(5)
    for port in [*ports, *range(base, base + 5)]:
        assert not low <= port <= high, port
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free
