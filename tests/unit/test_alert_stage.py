"""The alert stage on a real Redis: alert fields and the marked snippet, the cooldown, spike rules
(one alert per crossing, state surviving a restart), and the Slack body."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis

from services.alert import query as q
from services.alert.deliver import body_of
from services.alert.service import AlertStage, watched_rules
from services.alert.snippet import marked_snippet
from services.alert.story_rules import StoryRules
from services.stories.store import RedisStoryStore
from shared import events, redis_store
from shared.settings import Settings


@pytest.fixture
def redis_url(redis_port: int) -> str:
    url = f"redis://127.0.0.1:{redis_port}/7"
    redis.Redis.from_url(url).flushdb()
    return url


def article(n: int, text: str, source: str = "s1", story: str = "", at: float = 1000.0) -> events.TaggedArticle:
    art = events.Article(id=f"a{n}", url=f"http://x/{n}", source=source, fetched_at=at, title=f"Titre {n}",
                         text=text, story_id=story or f"a{n}", published="2026-11-24T05:00:00+00:00")
    return events.TaggedArticle(id=art.id, article=art, language=events.Language(lang="fr", confidence=1.0,
                                                                                 script="Latn"))


def linked_of(tagged: events.TaggedArticle) -> events.LinkedArticle:
    """The article as the stories stage hands it on: in the story clean gave it (its own, or its copy's)."""
    story = events.StoryRef(id=tagged.article.story_id or tagged.id, outcome="new", languages=["fr"],
                            sources=[tagged.article.source])
    return events.LinkedArticle(id=tagged.id, article=tagged.article, language=tagged.language,
                                entities=tagged.entities, story=story)


def stage(tmp_path: Path, redis_url: str, rules: str) -> AlertStage:
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    settings = Settings.from_env({"NEWSWATCH_REDIS_URL": redis_url})
    return AlertStage(settings, watched_rules(str(path)))


def alerts(s: AlertStage, tagged: events.TaggedArticle) -> list[events.Alert]:
    async def go() -> list[events.Alert]:
        s.redis = s.spikes.redis = redis_store.connect(s.settings)  # a client for this event loop
        s.story_rules = StoryRules(RedisStoryStore(s.redis, s.settings), s.redis)
        out = await s.process(linked_of(tagged))
        for emit in out:  # what the runtime does after the broker's acknowledgement
            if emit.once_key:
                await s.redis.set(emit.once_key, "1")
        await s.redis.aclose()
        return [e.event for e in out if isinstance(e.event, events.Alert)]
    return asyncio.run(go())


def test_snippet_marks_the_matched_terms() -> None:
    text = "Hier, à Stepanakert. Un CESSEZ-LE-FEU a été signé au Haut-Karabakh après des négociations."
    terms = [q.make_term("cessez-le-feu"), q.make_term("négoci*"), q.make_term("karabakh")]
    assert marked_snippet(text, terms) == ("Hier, à Stepanakert. Un «CESSEZ-LE-FEU» a été signé au "
                                           "Haut-«Karabakh» après des «négociations».")
    assert marked_snippet("x " * 300 + "la trêve", [q.make_term("trêve")], 60).endswith("la «trêve»")
    assert marked_snippet("  Un texte sans terme. ", []) == "Un texte sans terme."  # a rule of languages only
    assert marked_snippet("Un texte.", [q.make_term("trêve")]) == "Un texte."  # no term in the text


def test_alert_fields_and_cooldown(tmp_path: Path, redis_url: str) -> None:
    s = stage(tmp_path, redis_url, "rules:\n  - {id: k, query: 'karabakh NEAR/3 cessez-le-feu', severity: critical,"
                                   " cooldown_minutes: 10}\n")
    [a] = alerts(s, article(1, "Un cessez-le-feu au Karabakh."))
    assert (a.id, a.severity, a.matched_terms, a.published, a.kind) == (
        "k:a1", "critical", ["karabakh", "cessez-le-feu"], "2026-11-24T05:00:00+00:00", "match")
    assert a.snippet == "Un «cessez-le-feu» au «Karabakh»." and a.matched_at > 0
    assert alerts(s, article(2, "Karabakh : cessez-le-feu.")) == []  # another story, in the cooldown
    assert [x.id for x in alerts(s, article(1, "Un cessez-le-feu au Karabakh."))] == ["k:a1"]  # redelivery
    redis.Redis.from_url(redis_url).delete("nw:alert:cooldown:k")  # the cooldown is over
    assert [x.id for x in alerts(s, article(2, "Karabakh : cessez-le-feu."))] == ["k:a2"]


def test_spike_fires_once_per_crossing_and_survives_a_restart(tmp_path: Path, redis_url: str) -> None:
    rules = "rules:\n  - {id: sp, query: séisme, spike: {window_minutes: 10, min_articles: 3, min_sources: 2}}\n"
    s = stage(tmp_path, redis_url, rules)
    assert alerts(s, article(1, "Un séisme.", "s1", at=1000)) == []
    assert alerts(s, article(2, "Un séisme.", "s1", at=1010)) == []
    [a] = alerts(s, article(3, "Un séisme.", "s2", at=1020))
    assert (a.kind, a.article_count, a.sources, a.top_titles[0]) == ("spike", 3, ["s1", "s2"], "Titre 3")
    assert alerts(s, article(4, "Un séisme.", "s3", at=1030)) == []  # still above: no second alert
    s = stage(tmp_path, redis_url, rules)  # a restart: the window and the crossing are in Redis
    assert alerts(s, article(5, "Un séisme.", "s3", at=1040)) == []
    assert alerts(s, article(6, "Un séisme.", "s1", at=5000)) == []  # later: below again
    assert alerts(s, article(7, "Un séisme.", "s2", at=5010)) == []
    assert [x.article_count for x in alerts(s, article(8, "Un séisme.", "s2", at=5020))] == [3]  # crossed again


def test_slack_body() -> None:
    alert = events.Alert(id="k:1", rule_id="k", rule_name="Karabakh", story_id="1", article_id="1",
                         url="http://x/1", title="Titre", source="s", lang="fr", published="", created_at=1.0,
                         severity="warning", snippet="un «cessez-le-feu»", matched_terms=["cessez-le-feu"])
    body = json.loads(body_of(alert, "slack"))
    assert body["text"].startswith(":warning: *Karabakh*: <http://x/1|Titre>\nun «cessez-le-feu»")
    assert json.loads(body_of(alert, "json"))["schema"] == "alert/3"


def test_ratio_spike_against_the_rolling_baseline(tmp_path: Path, redis_url: str) -> None:
    rules = "rules:\n  - {id: r, query: séisme, spike: {window_minutes: 10, ratio: 3, baseline_hours: 1}}\n"
    s = stage(tmp_path, redis_url, rules)
    t = 10_000.0
    for n in range(5):  # the baseline: 5 articles in the 50 minutes before the window
        assert alerts(s, article(n, "Un séisme.", f"s{n}", at=t - 3000 + n * 500)) == []
    # threshold: 3 x 5 articles x (10 min / 50 min) = 3 articles in the window
    assert alerts(s, article(10, "Un séisme.", "s1", at=t)) == []
    assert alerts(s, article(11, "Un séisme.", "s2", at=t + 10)) == []
    [a] = alerts(s, article(12, "Un séisme.", "s3", at=t + 20))
    assert a.article_count == 3


def test_spike_and_webhook_keys_are_validated() -> None:
    from services.alert.rules import RuleError, parse_rules
    cases: list[tuple[dict[str, object], str]] = [({"query": "x", "spike": {"window_minutes": 10}}, "min_articles"),
                          ({"query": "x", "spike": {"window_minutes": 10, "ratio": 0.5, "baseline_hours": 1}},
                           "ratio > 1"),
                          ({"query": "x", "severity": "urgent"}, "info, warning, critical"),
                          ({"query": "x", "webhooks": [{"url": "http://h", "format": "teams"}]}, "json, slack"),
                          ({"query": "x", "cooldown_minutes": -1}, "cooldown_minutes")]
    for rule, message in cases:
        with pytest.raises(RuleError, match=message):
            parse_rules({"rules": [{"id": "v", **rule}]})
