"""alert rules: parsing and matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.alert import query as q
from services.alert.rules import RuleError, Webhook, load_rules, match_article, parse_rules
from services.alert.service import watched_rules
from shared import events


def tagged(text: str, lang: str = "fr", entity_ids: tuple[str, ...] = (), title: str = "Titre",
           source: str = "site") -> events.TaggedArticle:
    article = events.Article(id="a1", url="http://x/a", source=source, fetched_at=0.0, title=title, text=text)
    return events.TaggedArticle(id="a1", article=article, language=events.Language(lang=lang, confidence=1.0,
                                                                                      script="Latn"),
                                entities=[events.EntityHit(id=i, name=i, type="place") for i in entity_ids])


def rules(*raw: dict) -> list:
    return parse_rules({"rules": list(raw)})


def test_terms_phrases_prefixes_and_none() -> None:
    r = rules({"id": "r", "any": ["cessez-le-feu", "trêve"], "all": ["Haut Karabakh"], "none": ["football"]},
              {"id": "p", "any": ["négoci*"]})
    text = "Un cessez-le-feu au HAUT-KARABAKH, après des négociations."
    assert [(m.rule.id, m.terms) for m in match_article(r, tagged(text))] == [
        ("r", ["Haut Karabakh", "cessez-le-feu"]), ("p", ["négoci*"])]
    assert match_article(r[:1], tagged(text + " Match de football.")) == []
    assert match_article(r[:1], tagged("Le Karabakh, un cessez-le-feu")) == []  # phrase needs both words


def test_entities_languages_sources() -> None:
    r = rules({"id": "e", "entities_all": ["Q7747", "Q399"], "languages": ["ar", "fr"], "sources": ["s1"]})
    assert match_article(r, tagged("x", "fr", ("Q7747", "Q399"), source="s1"))[0].entities == ["Q399", "Q7747"]
    assert match_article(r, tagged("x", "en", ("Q7747", "Q399"), source="s1")) == []
    assert match_article(r, tagged("x", "fr", ("Q7747",), source="s1")) == []
    assert match_article(r, tagged("x", "fr", ("Q7747", "Q399"), source="s2")) == []
    none = rules({"id": "n", "entities_any": ["Q7747"], "entities_none": ["Q159"]})
    assert match_article(none, tagged("x", entity_ids=("Q7747", "Q159"))) == []


@pytest.mark.parametrize(("doc", "message"), [
    ({"rules": [{"name": "no id", "any": ["x"]}]}, "has no id"),
    ({"rules": [{"id": "a"}]}, "needs at least one"),
    ({"rules": [{"id": "a", "any": ["x"], "langs": ["fr"]}]}, "unknown keys"),
    ({"rules": [{"id": "a", "any": ["x"]}, {"id": "a", "any": ["y"]}]}, "used twice"),
    ({"rules": [{"id": "a", "any": [" * "]}]}, "has no words"),
    ({"nope": 1}, "expected a mapping"),
    ({"rules": [{"id": "a", "any": [["x"]]}]},
     r"rules: Expected `int \| float \| str`, got `array` - at `\$\.rules\[0\]\.any\[0\]`"),
    ({"rules": [{"id": "a", "any": ["x"]}, "b"]}, r"Expected `object`, got `str` - at `\$\.rules\[1\]`"),
    ({"rules": [{"id": "a", "entities_any": 7}]}, r"got `int` - at `\$\.rules\[0\]\.entities_any`"),
])
def test_bad_rules_say_what_is_wrong(doc: dict, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rules(doc)


def test_short_forms_are_accepted() -> None:
    (rule,) = rules({"id": 2024, "any": "ceasefire", "all": [2024], "languages": "en", "webhook": "https://h/x",
                     "webhooks": None, "none": ""})
    assert (rule.id, rule.name) == ("2024", "2024")
    assert rule.query == q.And((q.Or((q.Lang("en"),)), q.make_term("2024"), q.Or((q.make_term("ceasefire"),))))
    assert rule.webhooks == (Webhook("https://h/x"),)


def test_demo_rules_file_loads() -> None:
    assert {r.id for r in load_rules("config/rules.yaml")} >= {"karabakh", "putin-pashinyan"}


def test_rules_reload_keeps_old_rules_on_error(tmp_path: Path) -> None:
    import asyncio
    import os
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - {id: a, any: [x]}\n")
    source = watched_rules(str(path))
    path.write_text("rules:\n  - {id: b, any: [y]}\n")
    os.utime(path, (1, 1))
    assert asyncio.run(source.refresh(force=True)) and source.value.rules[0].id == "b"
    path.write_text("rules: [{id: c}]\n")
    os.utime(path, (2, 2))
    assert not asyncio.run(source.refresh(force=True)) and source.value.rules[0].id == "b"
    assert "rule c: needs at least one" in source.error
    # A file saved in Latin-1 is refused at reload, with the line, and the old rules stay.
    path.write_bytes("rules:\n  - {id: d, any: [négociations]}\n".encode("latin-1"))
    os.utime(path, (3, 3))
    assert not asyncio.run(source.refresh(force=True)) and source.value.rules[0].id == "b"
    assert "line 2" in source.error and "not UTF-8" in source.error


def test_weighted_lists_with_a_threshold_and_a_query() -> None:
    r = rules({"id": "w", "weights": {"pachinian": 2, "erevan": 1, "arménie": 1, "football": -3}, "threshold": 3},
              {"id": "wq", "weights": {"pachinian": 2, "erevan": 1}, "threshold": 3, "query": "lang:fr"})
    text = "Nikol Pachinian est rentré à Erevan."
    assert [(m.rule.id, m.terms) for m in match_article(r, tagged(text))] == [
        ("w", ["pachinian", "erevan"]), ("wq", ["pachinian", "erevan"])]
    assert [m.rule.id for m in match_article(r, tagged(text, lang="en"))] == ["w"]
    assert [m.rule.id for m in match_article(r, tagged("Pachinian, Erevan, football"))] == ["wq"]  # w: 2+1-3 < 3
    assert match_article(r, tagged("Pachinian Pachinian Pachinian")) == []  # distinct terms count once
    with pytest.raises(RuleError, match="weights need a threshold"):
        rules({"id": "x", "weights": {"a": 1}})


def test_query_and_list_keys_combine() -> None:
    r = rules({"id": "c", "query": '"cessez-le-feu" OR trêve', "languages": ["fr"], "entities_any": ["Q1"]})
    assert match_article(r, tagged("Une trêve.", entity_ids=("Q1",)))[0].entities == ["Q1"]
    assert match_article(r, tagged("Une trêve.")) == []
