"""infra: Prometheus config and alert rules (promtool), Grafana dashboard queries real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers the metrics)
from tests.conftest import ROOT

PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (make test installs Debian's prometheus)")
def test_prometheus_config_and_rule_tests() -> None:
    assert PROMTOOL is not None
    for args in (["check", "config", "infra/prometheus/prometheus.yml"],
                 ["test", "rules", "infra/prometheus/alerts_test.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_rules_use_metrics_the_code_defines() -> None:
    defined: set[str] = set()
    for metric in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
        defined.update(metric.name + suffix for suffix in suffixes.get(metric.type, [""]))
    queries = [t["expr"] for p in json.loads((ROOT / "infra/grafana/dashboards/newswatch.json").read_text())
               ["panels"] for t in p["targets"]]
    queries.append((ROOT / "infra/prometheus/alerts.yml").read_text())
    used = {m for q in queries for m in re.findall(r"\bnewswatch_[a-z_]+", q)}
    assert used, "no newswatch metric is queried"
    assert used <= defined, used - defined
