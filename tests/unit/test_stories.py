"""Story linking: the signals, the decisions on hard cases (one call reported in Arabic and French; a
visit on another day by the same leaders; the same call a month later), copies and redeliveries, the
index in Redis (two replicas racing on one new story make one story; a restart keeps the stories),
and story rules (once per crossing, across a restart)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.alert.rules import RuleError, parse_rules
from services.alert.service import AlertStage, watched_rules
from services.alert.story_rules import StoryRules
from services.entities.kb import load_table
from services.entities.match import Matcher
from services.entities.service import tag
from services.stories import link
from services.stories.encoder import Encoder, title_and_lead
from services.stories.stage import Linker
from services.stories.store import MemoryStoryStore, RedisStoryStore, pack, unpack
from shared import events, redis_store
from shared.settings import Settings

SETTINGS = Settings.from_env({})
ENCODER = Encoder(SETTINGS.story_embed_chars)
MATCHER = Matcher(load_table([]))
DAY = 86400.0

CALL_AR = ("بوتين وباشينيان يبحثان تطورات الوضع في قره باغ",
           "بحث الرئيس الروسي فلاديمير بوتين في اتصال هاتفي مع رئيس الوزراء الأرميني نيكول باشينيان تطورات "
           "الأوضاع في إقليم قره باغ، وفق ما أعلنه الكرملين يوم الخميس. وذكرت وكالة تاس الروسية أن الجانبين "
           "ناقشا تنفيذ البيانات الثلاثية الموقعة بعد حرب عام 2020.")
CALL_FR = ("Poutine et Pachinian évoquent la situation au Haut-Karabakh",
           "MOSCOU, 14 mars (TASS) — Le président russe Vladimir Poutine s'est entretenu par téléphone avec le "
           "Premier ministre arménien Nikol Pachinian, a annoncé jeudi le service de presse du Kremlin. Les deux "
           "dirigeants ont passé en revue la situation au Haut-Karabakh.")
VISIT_FR = ("Poutine reçoit Pachinian au Kremlin",
            "Le président russe Vladimir Poutine a reçu lundi au Kremlin le Premier ministre arménien Nikol "
            "Pachinian pour des entretiens consacrés au Haut-Karabakh, lors d'une visite officielle à Moscou.")
FESTIVAL_FR = ("Festival de jazz : une édition record sur les bords du Rhône",
               "Le festival de jazz de Vienne a accueilli cette année plus de deux cent mille spectateurs, un "
               "record depuis sa création, selon les organisateurs.")


def tagged(article_id: str, lang: str, title: str, text: str, at: float = 1_000_000.0, source: str = "s1",
           story: str = "") -> events.TaggedArticle:
    script = {"ar": "Arab", "ru": "Cyrl"}.get(lang, "Latn")
    article = events.Article(id=article_id, url=f"http://x/{article_id}", source=source, fetched_at=at,
                             title=title, text=text, story_id=story)
    return events.TaggedArticle(id=article_id, article=article,
                                language=events.Language(lang=lang, confidence=1.0, script=script),
                                entities=tag(MATCHER, title, text))


def assign(linker: Linker, item: events.TaggedArticle) -> events.LinkedArticle:
    return asyncio.run(linker.assign(item, linker.embed(item)))[0]


def memory_linker() -> Linker:
    return Linker(MemoryStoryStore(SETTINGS), ENCODER, SETTINGS)


def test_weekdays_numbers_and_names_in_several_languages() -> None:
    assert link.days_of("a annoncé jeudi") == link.days_of("said on Thursday") == frozenset({3})
    assert link.days_of("وفق ما أعلنه الكرملين يوم الخميس") == frozenset({3})
    assert link.days_of("в четверг и в пятницу") == frozenset({3, 4})
    assert link.days_of("no day here") == frozenset()
    assert link.numbers_of("2,000 people, 2.000 Menschen, 14 mars, 7") == frozenset({"2000", "14"})
    # a capital that opens a sentence says nothing; a weekday is read by days_of, not as a name
    assert link.names_of("The talks began. Later Pashinyan met Putin on Monday") == frozenset(
        {"pashinyan", "putin"})
    assert title_and_lead("Title", "one two three four five six", 15) == "Title. one two"


def test_one_call_in_arabic_and_french_is_one_story_and_a_visit_on_another_day_is_not() -> None:
    linker = memory_linker()
    first = assign(linker, tagged("ar1", "ar", *CALL_AR))
    second = assign(linker, tagged("fr1", "fr", *CALL_FR, at=1_000_000.0 + 3600))
    assert first.story.outcome == "new" and first.story.id == "ar1"
    assert (second.story.id, second.story.outcome) == ("ar1", "linked")
    assert second.story.languages == ["ar", "fr"] and second.story.article_count == 2
    assert second.article.story_id == "ar1"  # within linked_article/1, the article's story is the linked one
    visit = assign(linker, tagged("fr2", "fr", *VISIT_FR, at=1_000_000.0 + 7200))
    assert visit.story.outcome == "new", "a visit on Monday is not Thursday's phone call"
    festival = assign(linker, tagged("fr3", "fr", *FESTIVAL_FR, at=1_000_000.0 + 7300))
    assert festival.story.outcome == "new"


def test_the_same_call_a_month_later_is_another_story() -> None:
    linker = memory_linker()
    assign(linker, tagged("m1", "fr", *CALL_FR))
    later = assign(linker, tagged("m2", "fr", *CALL_FR, at=1_000_000.0 + 30 * DAY))
    assert later.story.outcome == "new" and later.story.id == "m2"


def test_a_copy_joins_its_original_and_a_redelivery_changes_nothing() -> None:
    linker = memory_linker()
    assign(linker, tagged("o1", "fr", *CALL_FR))
    copy = assign(linker, tagged("c1", "fr", "Autre titre", "Un texte sans rapport apparent.", story="o1"))
    assert (copy.story.id, copy.story.outcome, copy.story.article_count) == ("o1", "copy", 2)
    again = assign(linker, tagged("c1", "fr", "Autre titre", "Un texte sans rapport apparent.", story="o1"))
    assert (again.story.id, again.story.outcome, again.story.article_count) == ("o1", "repeat", 2)


def test_a_story_round_trips_through_its_stored_form() -> None:
    features = link.features_of(tagged("r1", "fr", *CALL_FR), ENCODER.article(*CALL_FR))
    story = link.new_story("r1", features)
    back = unpack("r1", pack(story))
    assert (back.names, back.days, back.scripts, back.entities) == (story.names, story.days, story.scripts,
                                                                     story.entities)
    assert float(back.centroid @ story.centroid) > 0.999  # float16 in Redis


@pytest.fixture
def redis_url(redis_port: int) -> Iterator[str]:
    url = f"redis://127.0.0.1:{redis_port}/9"
    redis.Redis.from_url(url).flushdb()
    yield url


def test_two_replicas_racing_on_one_new_story_make_one_story(redis_url: str) -> None:
    settings = Settings.from_env({"NEWSWATCH_REDIS_URL": redis_url})
    ar, fr = tagged("race-ar", "ar", *CALL_AR), tagged("race-fr", "fr", *CALL_FR)
    vectors = {ar.id: ENCODER.article(*CALL_AR), fr.id: ENCODER.article(*CALL_FR)}

    async def race() -> list[events.LinkedArticle]:
        clients = [redis_store.connect(settings) for _ in range(2)]
        linkers = [Linker(RedisStoryStore(c, settings), ENCODER, settings) for c in clients]
        out = await asyncio.gather(linkers[0].assign(ar, vectors[ar.id]), linkers[1].assign(fr, vectors[fr.id]))
        for client in clients:
            await client.aclose()
        return [linked for linked, _ in out]

    first, second = asyncio.run(race())
    assert first.story.id == second.story.id
    assert {first.story.outcome, second.story.outcome} == {"new", "linked"}
    assert redis.Redis.from_url(redis_url).exists("nw:story:lock") == 0  # the lock is given back

    async def after_restart() -> events.LinkedArticle:  # a new process: a new client, the same Redis
        client = redis_store.connect(settings)
        linker = Linker(RedisStoryStore(client, settings), ENCODER, settings)
        copy = tagged("race-fr2", "fr", CALL_FR[0], CALL_FR[1] + " (AFP)", at=1_000_000.0 + 60)
        linked, story = await linker.assign(copy, ENCODER.article(copy.article.title, copy.article.text))
        assert story.article_count == 3 and sorted(story.languages) == ["ar", "fr"]
        await client.aclose()
        return linked

    assert asyncio.run(after_restart()).story.id == first.story.id


def test_story_rules_parse_and_refuse_what_cannot_fire(tmp_path: Path) -> None:
    [rule] = parse_rules({"rules": [{"id": "breaking", "story": {"min_languages": 3, "min_sources": 5,
                                                                 "window_minutes": 60}}]})
    assert rule.story is not None and (rule.story.min_languages, rule.story.min_sources) == (3, 5)
    with pytest.raises(RuleError, match="above 1"):
        parse_rules({"rules": [{"id": "every", "story": {"window_minutes": 60}}]})
    with pytest.raises(RuleError, match="not both"):
        parse_rules({"rules": [{"id": "x", "query": "a", "story": {"window_minutes": 5, "min_sources": 2},
                                "spike": {"window_minutes": 5, "min_articles": 2}}]})


def test_a_story_rule_fires_once_per_crossing_across_a_restart(tmp_path: Path, redis_url: str) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {id: breaking, query: 'entity:nw:person:nikol-pashinyan', "
                     "story: {window_minutes: 60, min_languages: 2, min_sources: 2}}\n")
    settings = Settings.from_env({"NEWSWATCH_REDIS_URL": redis_url})
    now = time.time()
    articles = [tagged("b1", "ar", *CALL_AR, at=now, source="mashriq"),
                tagged("b2", "fr", *CALL_FR, at=now + 10, source="courrier"),
                tagged("b3", "fr", CALL_FR[0], CALL_FR[1] + " (AFP)", at=now + 20, source="depeches")]

    async def run(items: list[events.TaggedArticle]) -> list[str]:
        """One process's life: link, then alert, as the alert service's two stages do."""
        client = redis_store.connect(settings)
        linker = Linker(RedisStoryStore(client, settings), ENCODER, settings)
        stage = AlertStage(settings, watched_rules(str(rules)))
        stage.redis = stage.spikes.redis = client
        stage.story_rules = StoryRules(RedisStoryStore(client, settings), client)
        fired = []
        for item in items:
            linked, _ = await linker.assign(item, linker.embed(item))
            for emit in await stage.process(linked):
                if emit.once_key and not await client.set(emit.once_key, "1", nx=True):
                    continue  # the runtime's once-key: published already
                if isinstance(emit.event, events.Alert) and emit.event.kind == "story":
                    fired.append(emit.event.id)
        await client.aclose()
        return fired

    assert asyncio.run(run(articles[:1])) == []  # one language, one source: not yet
    assert asyncio.run(run(articles[1:2])) == ["breaking:story:b1"]  # two of each: the crossing
    assert asyncio.run(run(articles[2:])) == []  # a restarted service: still the same crossing


def test_articles_waiting_together_are_encoded_in_one_pass_with_the_same_vectors() -> None:
    from services.stories.stage import EmbedBatcher

    linker = memory_linker()
    batcher = EmbedBatcher(linker)
    items = [tagged(f"e{n}", "fr", f"{CALL_FR[0]} {n}", CALL_FR[1]) for n in range(5)]
    passes: list[int] = []
    embed_many = batcher._embed_many

    def counted(batch: list[events.TaggedArticle]) -> object:
        passes.append(len(batch))
        return embed_many(batch)

    batcher._embed_many = counted  # type: ignore[method-assign,assignment]

    async def go() -> list[object]:
        return list(await asyncio.gather(*(batcher.embed(item) for item in items)))

    vectors = asyncio.run(go())
    assert sum(passes) == 5 and len(passes) < 5  # the first alone, the rest together
    for item, vector in zip(items, vectors, strict=True):
        assert float(vector @ linker.embed(item)) > 0.999


def test_stories_jsonl_links_in_order_as_the_stage_does() -> None:
    import json

    from typer.testing import CliRunner

    from newswatch.cli import app

    lines = [{"id": "ar", "title": CALL_AR[0], "text": CALL_AR[1], "source": "mashriq",
              "published": "2026-03-14T09:30:00+00:00"},
             {"id": "fr", "title": CALL_FR[0], "text": CALL_FR[1], "source": "courrier",
              "published": "2026-03-14T12:00:00+00:00"},
             {"id": "visit", "title": VISIT_FR[0], "text": VISIT_FR[1], "published": "2026-03-14T13:00:00Z"},
             {"id": "bad", "title": "no text"},
             {"id": "late", "title": CALL_FR[0], "text": CALL_FR[1], "published": "2026-04-20T12:00:00Z"}]
    result = CliRunner().invoke(app, ["stories", "--jsonl"], input="".join(json.dumps(x) + "\n" for x in lines))
    out = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert [o["id"] for o in out] == ["ar", "fr", "visit", "bad", "late"]
    assert out[0]["story_id"] == out[1]["story_id"] == "ar" and out[1]["outcome"] == "linked"
    assert sorted(out[1]["story_languages"]) == ["ar", "fr"] and out[0]["lang"] == "ar"
    assert out[2]["story_id"] == "visit" and "error" in out[3]
    assert out[4]["story_id"] == "late"  # the same words five weeks later: past the window, another story
    assert result.exit_code == 1  # a line failed: said on its line and by the exit code


def test_the_alert_display_follows_its_story_into_a_new_language() -> None:
    from newswatch.runner import StoryFollower, format_alert

    alert = events.Alert(id="k:ar1", rule_id="k", rule_name="K", story_id="ar1", article_id="ar1", url="u",
                         title="t", source="mashriq", lang="ar", published="", created_at=0.0,
                         story_languages=["ar"], story_sources=["mashriq"], story_articles=1)
    assert "story: 1 article in ar from 1 source" in str(format_alert(alert))
    follower = StoryFollower()
    assert follower.alert(alert) is None
    grown = events.Story(id="ar1", first_seen=0.0, last_seen=1.0, article_count=2, languages=["ar", "fr"],
                         sources=["mashriq", "courrier"], titles={"ar": "a", "fr": "f"})
    line = follower.story(grown)
    assert line is not None and "ar, fr" in str(line) and "now also in fr" in str(line)
    assert follower.story(grown) is None  # nothing new: no line
    assert follower.story(events.Story(id="other", first_seen=0.0, last_seen=1.0, article_count=5,
                                       languages=["en"], sources=["s"], titles={})) is None  # never alerted
