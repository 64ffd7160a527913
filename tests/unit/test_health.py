"""Liveness: the verdict (input waiting without progress, a dead stage, a blocked loop), /healthz beside
/metrics, and `newswatch health` on both answers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import cast

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


def test_a_dependency_failing_for_long_is_degraded_naming_it_and_not_a_failure() -> None:
    # issue 21, case 7: every /healthz said OK while Redis was frozen for 30 s
    clock = Clock()
    live = Liveness("fetch", 120.0, clock, dependency_seconds=30.0, forget_seconds=60.0)
    live.add("fetch", consuming=False)
    live.running("fetch")
    live.dependency_failed("fetch", "redis")
    live.dependency_failed("fetch", "other")  # the network, a feed down: a source's own business
    for _ in range(3):
        clock.now += 10
        live.beat()
        live.dependency_failed("fetch", "redis")
    verdict = live.check()  # 30 s: not longer than the period yet
    assert verdict.ok and verdict.body["status"] == "ok" and verdict.body["degraded"] == []
    assert verdict.body["failing"] == {"redis": {"fetch": {"seconds": 30.0, "failures": 4}}}
    clock.now += 5
    live.beat()
    verdict = live.check()
    assert verdict.ok and verdict.problems == [] and verdict.body["status"] == "degraded"
    assert verdict.body["degraded"] == [
        "stage fetch: redis failing for 35 s (4 attempts failed, none succeeded; waited out and retried)"]
    live.dependency_ok("fetch", "broker")  # another dependency's success ends nothing
    assert live.check().body["status"] == "degraded"
    live.dependency_ok("fetch", "redis")
    verdict = live.check()
    assert verdict.body["status"] == "ok" and verdict.body["degraded"] == [] and "failing" not in verdict.body


def test_a_streak_is_forgotten_when_nothing_fails_any_more() -> None:
    clock = Clock()
    live = Liveness("clean", 120.0, clock, dependency_seconds=30.0, forget_seconds=60.0)
    live.add("clean", consuming=True)
    live.dependency_failed("clean", "broker")
    clock.now += 40
    live.dependency_failed("clean", "broker")
    live.beat()
    assert live.check().body["status"] == "degraded"
    clock.now += 61  # no attempt failed since (nothing tried it): the streak is over
    live.beat()
    assert live.check().body["status"] == "ok"
    live.dependency_failed("clean", "broker")  # a new streak starts from now
    assert live.check().body["failing"] == {"broker": {"clean": {"seconds": 0.0, "failures": 1}}}


def test_a_stall_while_its_dependency_fails_is_degraded_and_a_finished_input_ends_it() -> None:
    live, clock = _live(stall=60)
    live.observe("clean", [("t", 0, 3, 0)])
    for _ in range(7):
        clock.now += 10
        live.dependency_failed("clean", "redis")
    live.beat()
    verdict = live.check()
    assert verdict.ok and verdict.body["status"] == "degraded", verdict.body
    degraded = cast(list[str], verdict.body["degraded"])
    assert any("redis failing for 60 s" in d for d in degraded)
    assert any("has 3 inputs waiting and has finished none for 70 s, while redis fails" in d for d in degraded)
    live.handled("clean", "t", 0, 0)  # Redis is back: an input went through
    live.observe("clean", [("t", 0, 3, 0)])
    assert live.check().body["status"] == "ok"
    # the same stall without a failing dependency is a failure
    clock.now += 61
    live.beat()
    verdict = live.check()
    assert not verdict.ok and verdict.body["status"] == "failing"
