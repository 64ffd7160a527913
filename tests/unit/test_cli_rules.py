"""`newswatch rules check`, `rules test --jsonl` (the services' steps, NER and linker included) and the
filters of `alerts tail`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from newswatch.cli import alert_filter, app, parse_since
from shared import events

runner = CliRunner()


def test_rules_check(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["rules", "check", "config/rules.yaml"])
    assert ok.exit_code == 0 and "6 rules ok" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {id: a, query: '(x OR y'}\n")
    result = runner.invoke(app, ["rules", "check", str(bad)])
    assert result.exit_code == 2 and "rule a: query column 8: expected a closing )" in result.output


def test_rules_test_jsonl_runs_what_the_services_run() -> None:
    lines = [{"id": "fr", "text": "Poutine a reçu Pachinian au Kremlin pour parler du Haut-Karabakh, a indiqué "
                                  "mardi la présidence russe dans un communiqué."},
             {"id": "none", "text": "Rien à signaler ici, pas même une ville."}]
    result = runner.invoke(app, ["rules", "test", "config/rules.yaml", "--jsonl"],
                           input="".join(json.dumps(x) + "\n" for x in lines))
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert [o["id"] for o in out] == ["fr", "none"]
    assert {m["rule"] for m in out[0]["matches"]} == {"karabakh", "putin-pashinyan"}
    assert out[1]["matches"] == []


def test_alerts_tail_filters() -> None:
    def alert(rule: str, severity: str, at: float) -> events.Alert:
        return events.Alert(id=rule, rule_id=rule, rule_name=rule, story_id="s", article_id="a", url="", title="",
                            source="", lang="", published="", created_at=at, severity=severity)
    keep = alert_filter(["a", "b"], "warning", 100.0)
    assert keep(alert("a", "critical", 150)) and keep(alert("b", "warning", 100))
    assert not keep(alert("a", "info", 150)) and not keep(alert("c", "critical", 150))
    assert not keep(alert("a", "critical", 99))
    assert parse_since("15m", 1000.0) == 100.0 and parse_since("1970-01-01T00:01:00+00:00", 0) == 60.0
    with pytest.raises(typer.BadParameter):
        parse_since("yesterday", 0)
