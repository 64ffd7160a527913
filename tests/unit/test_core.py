"""shared core: settings, events, topics, CLI (the compose file: test_deploy.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared import events
from shared.pipeline import SERVICES
from shared.settings import ENV_VARS, Settings
from shared.topics import ALL_TOPICS
from tests.conftest import ROOT


def test_settings_defaults_and_errors() -> None:
    s = Settings.from_env({})
    assert s.partitions == 4 and s.allow_hosts == "" and s.bootstrap_servers == ["127.0.0.1:19092"]
    assert Settings.from_env({"NEWSWATCH_ALLOW_HOSTS": "127.0.0.1:8808"}).allow_hosts == "127.0.0.1:8808"
    with pytest.raises(ValueError, match="NEWSWATCH_PARTITIONS='four'"):
        Settings.from_env({"NEWSWATCH_PARTITIONS": "four"})


def test_events_round_trip_and_versions() -> None:
    page = events.RawPage(id="a", url="u", final_url="u", source="s", fetched_at=1.0, http_status=200,
                          content_type="text/html", body="é".encode())
    wire = events.encode(page)
    assert json.loads(wire)["schema"] == "raw_page/1"
    assert events.decode(events.RawPage, wire) == page
    with pytest.raises(events.SchemaError, match="not a valid raw_page/1"):
        events.decode(events.RawPage, wire.replace(b"raw_page/1", b"raw_page/2"))
    with pytest.raises(events.SchemaError, match="not JSON"):
        events.decode(events.Article, b"{oops")
    with pytest.raises(events.SchemaError, match="empty"):
        events.decode(events.Article, None)


def test_every_topic_has_its_own_schema() -> None:
    assert len({t.schema for t in ALL_TOPICS}) == len(ALL_TOPICS)


def test_readme_documents_every_setting_and_topic() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    for var in ENV_VARS:
        assert var.name in readme, var.name
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    for topic in ALL_TOPICS:
        assert topic.suffix in rows, topic.suffix
        assert str(topic.schema.__struct_config__.tag) in rows[topic.suffix], topic.suffix
    for decl in SERVICES:  # each stage's topics as the README's topic table says
        for stage in decl.stages:
            for out in stage.outputs:
                assert decl.name in rows[out.suffix].split("|")[2], (decl.name, out.suffix)
            if stage.input is not None:
                assert decl.name in rows[stage.input.suffix].split("|")[3], (decl.name, stage.input.suffix)


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "newswatch.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_jsonl_keeps_ids_and_order() -> None:
    lines = [{"id": "b", "text": "Vladimir Poutine a reçu Nikol Pachinian au Kremlin mardi soir pour parler "
                                 "du Haut-Karabakh et de la frontière."},
             {"id": "a", "html": "<html><body><article><h1>Titre</h1><p>" + "Bakou et Erevan discutent. " * 20
                                 + "</p></article></body></html>"},
             {"id": "c", "nothing": 1}]
    result = _cli("entities", "--jsonl", stdin="\n".join(json.dumps(x) for x in lines) + "\n")
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in out] == ["b", "a", "c"]
    assert {e["id"] for e in out[0]["entities"]} == {"Q7747", "nw:person:nikol-pashinyan", "nw:org:kremlin",
                                                     "nw:place:nagorno-karabakh"}
    assert {e["id"] for e in out[1]["entities"]} == {"Q9248", "Q1953"}
    assert "error" in out[2] and result.returncode == 1


def test_cli_jsonl_reports_a_bad_line_and_goes_on() -> None:
    # A line nested 100 000 deep (RecursionError in the JSON decoder), an integer too long to
    # convert (ValueError) and a line that is not UTF-8 each get an error; the batch goes on.
    good = {"id": "a", "text": "Vladimir Poutine a reçu Nikol Pachinian au Kremlin mardi soir."}
    stdin = ("[" * 100_000 + "\n" + json.dumps(good) + "\n" + '{"id": "n", "text": ' + "1" * 5000 + "}\n"
             ).encode() + b'{"id": "latin", "text": "n\xe9gociations"}\n' + json.dumps({**good, "id": "b"}).encode()
    result = subprocess.run([sys.executable, "-m", "newswatch.cli", "entities", "--jsonl"], input=stdin,
                            capture_output=True, cwd=ROOT, timeout=120)
    out = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [o["id"] for o in out] == [None, "a", None, None, "b"], result.stderr.decode()[-2000:]
    assert out[0]["error"].startswith("line 1: ") and "nested too deeply" in out[0]["error"]
    assert out[2]["error"].startswith("line 3: ") and out[3]["error"].startswith("line 4: ")
    assert "Q7747" in {e["id"] for e in out[1]["entities"]} and "Q7747" in {e["id"] for e in out[4]["entities"]}
    assert result.returncode == 1


def test_cli_langdetect_and_rules_test(tmp_path: Path) -> None:
    page = tmp_path / "a.txt"
    page.write_text("Путин и Пашинян обсудили ситуацию в Нагорном Карабахе и на границе Армении.\n" * 3)
    out = json.loads(_cli("langdetect", str(page)).stdout)
    assert out["lang"] == "ru" and out["script"] == "Cyrl"
    result = json.loads(_cli("rules", "test", "config/rules.yaml", str(page)).stdout)
    assert {m["rule"] for m in result["matches"]} == {"karabakh", "putin-pashinyan"}


def test_watched_file_checks_at_most_every_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import os

    from shared import watched

    clock = [100.0]
    monkeypatch.setattr(watched.time, "monotonic", lambda: clock[0])
    path = tmp_path / "v.txt"
    path.write_text("1")
    value = watched.Watched("value", [str(path)], lambda: int(path.read_text()), check_seconds=2.0)
    path.write_text("22")
    os.utime(path, (5, 5))
    clock[0] = 101.9
    assert not asyncio.run(value.refresh()) and value.value == 1  # not due yet
    clock[0] = 102.0
    assert asyncio.run(value.refresh()) and value.value == 22
    clock[0] = 104.5
    assert not asyncio.run(value.refresh())  # due, but unchanged
