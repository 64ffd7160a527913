"""infra: Prometheus config and alert rules (promtool), the Grafana dashboards against the metrics the
code defines, and every labelled series created at zero for its known labels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from shared import metrics, pipeline
from tests.conftest import ROOT

PROMTOOL = shutil.which("promtool")
DASHBOARDS = sorted((ROOT / "infra/grafana/dashboards").glob("*.json"))
ALERTS = ROOT / "infra/prometheus/alerts.yml"


def dashboard_targets(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) of every query of a dashboard (rows excluded, panels inside rows included)."""
    board = json.loads(path.read_text("utf-8"))
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return [(panel, target) for panel in panels for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text("utf-8"))["groups"] for rule in group["rules"]]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (make test installs Debian's prometheus)")
def test_prometheus_config_and_rule_tests() -> None:
    assert PROMTOOL is not None
    for args in (["check", "config", "infra/prometheus/prometheus.yml"],
                 ["check", "rules", "infra/prometheus/alerts.yml"],
                 ["test", "rules", "infra/prometheus/alerts_test.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load((ROOT / "infra/prometheus/alerts_test.yml").read_text("utf-8"))["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == firing, names ^ firing
    assert names == silent, names ^ silent


def test_the_service_down_rule_names_every_stage_of_the_pipeline() -> None:
    [rule] = [r for r in alert_rules() if r["alert"] == "NewswatchServiceDown"]
    assert sorted(re.findall(r'absent\(newswatch_up\{stage="([^"]+)"\}\)', rule["expr"])) == sorted(
        pipeline.stage_names())


def test_dashboards_and_rules_use_metrics_the_code_defines() -> None:
    defined: set[str] = set()
    for metric in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
        defined.update(metric.name + suffix for suffix in suffixes.get(metric.type, [""]))
    assert len(DASHBOARDS) == 2
    queries = [target["expr"] for path in DASHBOARDS for _, target in dashboard_targets(path)]
    queries.append(ALERTS.read_text("utf-8"))
    used = {m for q in queries for m in re.findall(r"\bnewswatch_[a-z_]+", q)}
    assert used, "no newswatch metric is queried"
    assert used <= defined, used - defined
    # every metric the code defines is shown somewhere
    shown = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    exported = {m.name + ("_total" if m.type == "counter" else "") for m in REGISTRY.collect()
                if m.name.startswith("newswatch_")}
    assert exported <= shown, exported - shown


def test_dashboards_are_valid_and_their_variables_defined() -> None:
    for path in DASHBOARDS:
        board = json.loads(path.read_text("utf-8"))
        variables = {v["name"] for v in board["templating"]["list"]}
        assert variables, f"{path.name}: no variable"
        ids: list[int] = []
        for panel, target in dashboard_targets(path):
            ids.append(panel["id"])
            assert panel["datasource"]["uid"] == target["datasource"]["uid"] == "prometheus"
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var.startswith("__"), f"{path.name}: {panel['title']}: ${var}"
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"]), path.name
    uids = [json.loads(p.read_text("utf-8"))["uid"] for p in DASHBOARDS]
    assert sorted(uids) == ["newswatch-fetch", "newswatch-pipeline"]


def test_every_labelled_series_of_a_service_exists_at_zero_before_anything_happens() -> None:
    for service in pipeline.SERVICES:
        metrics.init_service(service)
    metrics.init_source("zero-source")
    metrics.init_rule("zero-rule", "warning")
    metrics.init_clean()
    metrics.init_webhooks()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in REGISTRY.collect() for s in m.samples}

    def exists(name: str, **labels: str) -> bool:
        return (name, tuple(sorted(labels.items()))) in samples

    for stage in (s for svc in pipeline.SERVICES for s in svc.stages):
        inp = stage.input_label
        assert exists("newswatch_messages_consumed_total", stage=stage.name, topic=inp)
        for kind in ("poison", "unknown"):
            assert exists("newswatch_messages_failed_total", stage=stage.name, topic=inp, kind=kind)
        assert exists("newswatch_messages_dead_lettered_total", stage=stage.name, topic=inp) == (
            stage.input is not None)
        for topic in stage.outputs:
            assert exists("newswatch_messages_produced_total", stage=stage.name, topic=topic.suffix)
        for dep in pipeline.DEPENDENCIES:
            assert exists("newswatch_dependency_errors_total", stage=stage.name, dependency=dep)
        assert exists("newswatch_processing_seconds_count", stage=stage.name)
        assert exists("newswatch_up", stage=stage.name)
    assert exists("newswatch_feed_to_alert_seconds_count", stage="alert")
    for outcome, classes in metrics.POLL_OUTCOMES.items():
        for cls in classes:
            assert samples[("newswatch_fetch_polls_total", tuple(sorted(
                {"source": "zero-source", "outcome": outcome, "status_class": cls}.items())))] == 0.0
    for state in ("new", "seen"):
        assert exists("newswatch_fetch_items_total", source="zero-source", state=state)
    assert exists("newswatch_fetch_pages_total", source="zero-source", outcome="retry")
    assert exists("newswatch_fetch_last_success_timestamp_seconds", source="zero-source")
    assert exists("newswatch_alerts_total", rule="zero-rule", severity="warning")
    assert exists("newswatch_alerts_suppressed_total", rule="zero-rule")
    for kind in ("new", "exact", "near"):
        assert exists("newswatch_clean_articles_total", kind=kind)
    for outcome in ("ok", "refused", "failed"):
        assert exists("newswatch_webhook_deliveries_total", outcome=outcome)


def test_status_classes() -> None:
    assert [metrics.status_class(s) for s in (None, 200, 204, 304, 404, 429, 503, 99, 600)] == [
        "none", "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "none", "none"]
