"""The dashboards and the alert rules against a real Prometheus (Debian's) scraping `newswatch run`:
every panel's queries return series on a healthy pipeline (zeros count: every labelled counter is
created at zero), every rule evaluates without error and reads series that exist, and none fires.

The report (every panel with the series it returned) is printed, and appended as JSON lines to
$NEWSWATCH_DASHBOARD_REPORT when set.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from newswatch import local
from newswatch.demo.content import EXPECTED_ALERTS, SITES
from shared import pipeline
from tests.conftest import ROOT
from tests.unit.test_infra import ALERTS, DASHBOARDS, alert_rules
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_SECONDS = 1
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 × scrape interval)
RATE_INTERVAL = f"{4 * SCRAPE_SECONDS}s"
SELECTOR = re.compile(r"(?<![\w:])(newswatch_[a-z_]+|up)(\{[^}]*\})?(?![\w(])")


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        """``targets``: service name → host:port, labelled ``service`` as the compose scrape config does."""
        self.port = local.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s",
                       "scrape_timeout": f"{SCRAPE_SECONDS}s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "newswatch", "static_configs": [
                {"targets": [target], "labels": {"service": name}} for name, target in targets.items()]}],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), "utf-8")
        self.proc = local.spawn([PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                workdir / "prometheus.log")
        self.client = httpx.Client(base_url=self.url, timeout=10)
        local.wait_port(self.port, "prometheus", proc=self.proc)

    def api(self, path: str, **params: Any) -> Any:
        response = self.client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def instant(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def close(self) -> None:
        self.client.close()
        local.stop([self.proc])


def _wait(what: str, timeout: float, check: Any, step: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, AssertionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def _substitute(expr: str, variables: dict[str, str], range_s: int) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", f"{range_s}s")
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def _describe(series: dict[str, Any]) -> str:
    """The series' labels (but job and instance), its last value and, over a range, its highest."""
    labels = {k: v for k, v in series["metric"].items() if k not in ("job", "instance")}
    values = [float(v) for _, v in series["values"]] if "values" in series else [float(series["value"][1])]
    finite = [v for v in values if not math.isnan(v)]
    shown = f"last {finite[-1]:.4g}" if finite else "NaN"
    if len(finite) > 1:
        shown += f", max {max(finite):.4g}"
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{{{inner}}} {shown}"


def _has_data(series: list[dict[str, Any]]) -> bool:
    for one in series:
        values = one.get("values") or [one["value"]]
        if any(not math.isnan(float(v)) for _, v in values):
            return True
    return False


def test_every_panel_and_rule_returns_series_on_a_running_pipeline(tmp_path: Path) -> None:
    base = local.free_port_block(len(pipeline.SERVICES))
    targets = {service.name: f"127.0.0.1:{base + n}" for n, service in enumerate(pipeline.SERVICES)}
    alerts_file = tmp_path / "alerts.jsonl"
    # the demo's rules, one of them with a webhook (whose receiver answers 503 once) and a severity
    receiver = Receiver(script=[503])
    rules = yaml.safe_load((ROOT / "config/rules.yaml").read_text("utf-8"))
    [karabakh] = [r for r in rules["rules"] if r["id"] == "karabakh"]
    karabakh.update(webhooks=[receiver.url], severity="warning")
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules, allow_unicode=True), "utf-8")
    # Prometheus first: its first scrape of each service sees the counters at zero, before the first events
    prom = Prometheus(tmp_path / "prometheus", targets)
    started = time.time()
    run_log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "newswatch.cli", "run", "--run-dir", str(tmp_path / "run"), "--broker-port", "0",
         "--redis-port", "0", "--sites-port", "0", "--metrics-base-port", str(base), "--pace", "0.2",
         "--poll-seconds", "1", "--duration", "300", "--alerts-jsonl", str(alerts_file),
         "--rules", str(rules_path)],
        cwd=ROOT, stdout=run_log, stderr=subprocess.STDOUT, preexec_fn=local.die_with_parent,
        env={**os.environ, "NEWSWATCH_LAG_SECONDS": "1", "COLUMNS": "200"})
    report: list[dict[str, Any]] = []
    try:
        def alerts() -> int:
            return len(alerts_file.read_bytes().splitlines()) if alerts_file.exists() else 0

        _wait(f"{len(EXPECTED_ALERTS)} alerts from the pipeline", 180,
              lambda: alerts() >= len(EXPECTED_ALERTS) or run.poll() is not None)
        assert run.poll() is None, (tmp_path / "run.log").read_text("utf-8", "replace")[-3000:]
        # Prometheus has the pipeline's final state: every target up, every alert counted, lag read
        karabakh_alerts = sum(1 for line in alerts_file.read_bytes().splitlines() if b'"rule_id":"karabakh"' in line)
        _wait("Prometheus to scrape every service, its alerts, webhooks and lag", 60, lambda: (
            len(prom.instant('up{job="newswatch"} == 1')) == len(targets)
            and float(prom.instant("sum(newswatch_alerts_total)")[0]["value"][1]) >= len(EXPECTED_ALERTS)
            and float(prom.instant('sum(newswatch_webhook_deliveries_total{outcome="ok"})')[0]["value"][1])
            >= karabakh_alerts
            and prom.instant("count(newswatch_consumer_lag_messages)")
            and not prom.instant("newswatch_up == 0")))
        time.sleep(4 * SCRAPE_SECONDS)  # a few more scrapes and rule evaluations
        end = time.time()
        range_s = max(60, int(end - started) + 1)

        # the variables: their values are the pipeline's stages and the demo's sources
        stages = prom.api("label/stage/values", **{"match[]": "newswatch_up"})
        sources = prom.api("label/source/values", **{"match[]": "newswatch_fetch_polls_total"})
        assert sorted(stages) == sorted(pipeline.stage_names())
        assert sorted(sources) == sorted(site.id for site in SITES)
        variables = {"stage": ".*", "source": ".*"}  # "All"

        empty: list[str] = []
        for path in DASHBOARDS:
            board = json.loads(path.read_text("utf-8"))
            names = {v["name"] for v in board["templating"]["list"]}
            panels = [p for row in board["panels"] for p in (row.get("panels", []) if row["type"] == "row"
                                                              else [row])]
            for panel in panels:
                returned: list[str] = []
                for target in panel["targets"]:
                    expr = _substitute(target["expr"], {k: v for k, v in variables.items() if k in names}, range_s)
                    if target.get("instant"):
                        series = prom.instant(expr)
                    else:
                        series = prom.api("query_range", query=expr, start=started, end=end, step=1)["result"]
                    if not _has_data(series):
                        empty.append(f"{board['title']} / {panel['title']} / {target['refId']}: {expr}")
                    returned.extend(f"{target['refId']} {_describe(s)}" for s in series)
                report.append({"dashboard": board["title"], "panel": panel["title"], "series": returned})

        # every rule: evaluates, reads series that exist, does not fire on this healthy pipeline
        rules_state = {r["name"]: r for g in prom.api("rules", type="alert")["groups"] for r in g["rules"]}
        blind: list[str] = []
        for rule in alert_rules():
            name = rule["alert"]
            assert rules_state[name]["health"] == "ok", (name, rules_state[name].get("lastError"))
            result = prom.instant(rule["expr"])
            for metric, matchers in SELECTOR.findall(rule["expr"]):
                if not prom.instant(f"count({metric}{matchers})"):
                    blind.append(f"{name}: {metric}{matchers}")
            report.append({"rule": name, "state": rules_state[name]["state"],
                           "expr_series": [_describe(s) for s in result]})
        firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]

        lines = []
        for entry in report:
            if "panel" in entry:
                lines.append(f"[{entry['dashboard']}] {entry['panel']}: {len(entry['series'])} series")
                lines.extend(f"    {s}" for s in entry["series"])
            else:
                lines.append(f"[rule] {entry['rule']}: {entry['state']}, expression returns "
                             f"{len(entry['expr_series'])} series {entry['expr_series']}")
        print("\n" + "\n".join(lines))
        out = os.environ.get("NEWSWATCH_DASHBOARD_REPORT")
        if out:
            with open(out, "a", encoding="utf-8") as fh:
                for entry in report:
                    fh.write(json.dumps(entry) + "\n")
        assert not empty, "panels without data on a healthy pipeline:\n" + "\n".join(empty)
        assert not blind, "rules reading series that do not exist:\n" + "\n".join(blind)
        assert not firing, f"alerts firing on a healthy pipeline: {firing}"
        print(f"dashboard test: {len(report)} panels and rules checked, {time.time() - started:.0f} s")
    finally:
        prom.close()
        receiver.close()
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            try:
                run.wait(timeout=90)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait()
        run_log.close()
