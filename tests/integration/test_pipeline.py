"""The whole pipeline on the real tansu broker and a real Redis, services as processes.

Checks outcomes: what reached the tagged and alert topics, what Redis holds, what the
dead-letter topic received for malformed input, and that the services kept going.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from newswatch import local
from newswatch.demo.content import ARTICLES, EXPECTED_ALERTS, story_key
from newswatch.demo.server import serve_in_thread, sources_yaml
from services.fetch.feeds import article_id
from shared import events
from shared.pipeline import SERVICE_NAMES
from shared.settings import Settings
from shared.topics import ALERTS, DEAD_LETTER, LABELLED, LINKED, RAW_PAGES, STORIES, TAGGED, create_topics
from shared.topics import ARTICLES as ARTICLES_TOPIC
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

def read_topic(bootstrap: str, topic: str, done: Callable[[list[bytes]], bool], timeout: float) -> list[bytes]:
    """Every value on the topic from its start, polling until ``done(values)`` or the timeout."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=500)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
            if done(values):
                break
    finally:
        consumer.close()
    return values


@pytest.fixture(scope="module")
def pipeline(broker_port: int, redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    workdir: Path = tmp_path_factory.mktemp("pipeline")
    sites_port = local.free_port()
    server, _ = serve_in_thread("127.0.0.1", sites_port, pace=0.15)
    sources = workdir / "sources.yaml"
    sources.write_text(sources_yaml(f"http://127.0.0.1:{sites_port}", 1.0))
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "NEWSWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
        "NEWSWATCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/1",
        "NEWSWATCH_TOPIC_PREFIX": prefix,
        "NEWSWATCH_SOURCES": str(sources),
        "NEWSWATCH_RULES": str(ROOT / "config/rules.yaml"),
        "NEWSWATCH_ALLOW_HOSTS": f"127.0.0.1:{sites_port}",
        "NEWSWATCH_HOST_DELAY_SECONDS": "0.05",
        "NEWSWATCH_POLL_SECONDS": "1",
        "NEWSWATCH_METRICS_HOST": "127.0.0.1",
        "TMPDIR": str(workdir),  # the services' scratch folders go with the test's
    }
    settings = Settings.from_env(env)
    redis.Redis.from_url(settings.redis_url).flushdb()
    create_topics(settings)
    procs: list[subprocess.Popen[bytes]] = []
    for name in SERVICE_NAMES:
        procs.append(local.start_service(name, {**env, "NEWSWATCH_METRICS_PORT": str(local.free_port())},
                                         workdir / f"{name}.log"))
    try:
        yield settings
        for proc, name in zip(procs, SERVICE_NAMES, strict=True):
            assert proc.poll() is None, f"{name} died: {(workdir / f'{name}.log').read_text()[-3000:]}"
    finally:
        local.stop(procs)
        server.shutdown()


def _decode_all(kind: type[events.E], values: list[bytes]) -> list[events.E]:
    return [events.decode(kind, v) for v in values]


def test_every_demo_article_is_tagged_with_its_language_and_entities(pipeline: Settings) -> None:
    topic = TAGGED.name(pipeline.topic_prefix)
    slugs = {a.slug: a for a in ARTICLES}

    def done(values: list[bytes]) -> bool:
        return len({events.decode(events.TaggedArticle, v).article.url for v in values}) >= len(ARTICLES)

    tagged = _decode_all(events.TaggedArticle, read_topic(pipeline.kafka_bootstrap, topic, done, 150))
    by_slug = {t.article.url.rsplit("/", 1)[1].removesuffix(".html"): t for t in tagged}
    assert set(by_slug) == set(slugs), f"missing: {set(slugs) - set(by_slug)}"
    for item in tagged:
        assert item.id == article_id(item.article.url)
    for slug, item in by_slug.items():
        expected = slugs[slug]
        assert item.language.lang == expected.lang, slug
        # Canonical entities (the table's, and NER mentions linked to it) are exactly the expected
        # ones; NER's unlinked finds (fr and ru articles) are typed and carry an ner: id.
        assert {e.id for e in item.entities if e.source != "ner-unlinked"} == set(expected.entities), slug
        assert all(e.id.startswith("ner:") for e in item.entities if e.source == "ner-unlinked"), slug
        assert item.article.title == expected.title
    copies = [by_slug[a.slug] for a in ARTICLES if a.story == "wire-putin-pashinyan"]
    assert len({c.article.story_id for c in copies}) == 1
    assert sum(1 for c in copies if c.article.duplicate_of) == 1


def test_expected_alerts_and_only_those_once_per_story(pipeline: Settings) -> None:
    topic = ALERTS.name(pipeline.topic_prefix)
    values = read_topic(pipeline.kafka_bootstrap, topic, lambda v: len(v) >= len(EXPECTED_ALERTS), 150)
    # Give a wrong extra alert (a second copy, a rule that must stay silent) time to show up.
    time.sleep(6)
    values = read_topic(pipeline.kafka_bootstrap, topic, lambda v: False, 3)
    alerts = _decode_all(events.Alert, values)
    slug_story = {a.slug: story_key(a) for a in ARTICLES}
    got = [(a.rule_id, slug_story[a.url.rsplit("/", 1)[1].removesuffix(".html")]) for a in alerts]
    assert sorted(set(got)) == sorted(EXPECTED_ALERTS)
    assert len(got) == len(set(got)), "an alert fired twice"
    client = redis.Redis.from_url(pipeline.redis_url)
    assert len(list(client.scan_iter("nw:alert:fired:*"))) == len(EXPECTED_ALERTS)
    wire = [a for a in alerts if slug_story[a.url.rsplit("/", 1)[1].removesuffix(".html")] == "wire-putin-pashinyan"]
    assert {a.rule_id for a in wire} == {"karabakh", "putin-pashinyan"}


def test_one_call_in_arabic_and_french_is_one_story_alerted_once_per_rule(pipeline: Settings) -> None:
    """The Kremlin's account of the Putin–Pashinyan call, published in Arabic (mashriq) and twice in French:
    one story, so karabakh and putin-pashinyan alert once each (2 alerts, not 4), and the story the alert
    follows names both languages."""
    from newswatch.runner import StoryFollower

    slug_story = {a.slug: story_key(a) for a in ARTICLES}
    wire_slugs = {a.slug for a in ARTICLES if story_key(a) == "wire-putin-pashinyan"}
    assert len(wire_slugs) == 3 and {a.lang for a in ARTICLES if a.slug in wire_slugs} == {"ar", "fr"}

    def slug(url: str) -> str:
        return url.rsplit("/", 1)[1].removesuffix(".html")

    def all_wire(values: list[bytes]) -> bool:
        return wire_slugs <= {slug(events.decode(events.LinkedArticle, v).article.url) for v in values}

    linked = _decode_all(events.LinkedArticle,
                         read_topic(pipeline.kafka_bootstrap, LINKED.name(pipeline.topic_prefix), all_wire, 150))
    wire = [item for item in linked if slug(item.article.url) in wire_slugs]
    story_ids = {item.story.id for item in wire}
    assert len(story_ids) == 1, [(slug(i.article.url), i.story) for i in wire]
    [story_id] = story_ids
    others = {item.story.id for item in linked if slug(item.article.url) not in wire_slugs}
    assert story_id not in others  # no other demo article (other calls, talks, visits) joined the story
    assert len(others) == len(ARTICLES) - len(wire_slugs)  # and every other article is a story of its own

    values = read_topic(pipeline.kafka_bootstrap, ALERTS.name(pipeline.topic_prefix),
                        lambda v: len(v) >= len(EXPECTED_ALERTS), 150)
    time.sleep(3)
    alerts = _decode_all(events.Alert, read_topic(pipeline.kafka_bootstrap, ALERTS.name(pipeline.topic_prefix),
                                                  lambda v: False, 3))
    on_wire = [a for a in alerts if slug_story[slug(a.url)] == "wire-putin-pashinyan"]
    assert sorted(a.rule_id for a in on_wire) == ["karabakh", "putin-pashinyan"]
    assert {a.story_id for a in on_wire} == {story_id} and all(a.story_articles >= 1 for a in on_wire)

    stories = _decode_all(events.Story, read_topic(pipeline.kafka_bootstrap, STORIES.name(pipeline.topic_prefix),
                                                   lambda v: False, 3))
    final = [s for s in stories if s.id == story_id][-1]
    assert sorted(final.languages) == ["ar", "fr"] and final.article_count == 3
    assert set(final.titles) == {"ar", "fr"}
    # What `make run` and `alerts tail` show: the alert, then the story it follows growing into French.
    follower = StoryFollower()
    shown = [follower.alert(a) for a in on_wire] + [follower.story(s) for s in stories if s.id == story_id]
    lines = [str(line) for line in shown if line is not None]
    assert any("ar, fr" in line or "fr, ar" in line for line in lines), lines
    assert len(values) == len(EXPECTED_ALERTS)


def test_poison_messages_are_dead_lettered_and_services_keep_going(pipeline: Settings) -> None:
    # Run after the demo articles went through: wait for them first.
    read_topic(pipeline.kafka_bootstrap, ALERTS.name(pipeline.topic_prefix),
               lambda v: len(v) >= len(EXPECTED_ALERTS), 150)
    producer = KafkaProducer(bootstrap_servers=pipeline.kafka_bootstrap, acks="all")
    poison = {
        RAW_PAGES: b"this is not JSON",
        ARTICLES_TOPIC: b'{"schema": "article/9", "id": "x"}',
        LABELLED: b'{"schema": "labelled_article/1", "id": "y"}',
        TAGGED: b"[1, 2, 3]",
        LINKED: b'{"schema": "linked_article/1", "id": "z"}',
        ALERTS: b'{"schema": "alert/2"}',
    }
    for spec, payload in poison.items():
        producer.send(spec.name(pipeline.topic_prefix), key=f"poison-{spec.suffix}".encode(), value=payload)
    # A good article after the poison: it must still go all the way through.
    good = events.Article(id="after-poison", url="http://example.org/after", source="test",
                          fetched_at=time.time(), title="Lavrov à Erevan",
                          text="Sergueï Lavrov est arrivé à Erevan pour parler du Haut-Karabakh avec les "
                               "autorités arméniennes, a indiqué mardi le ministère russe.")
    producer.send(ARTICLES_TOPIC.name(pipeline.topic_prefix), key=b"after-poison", value=events.encode(good))
    producer.flush()
    producer.close()

    letters = _decode_all(events.DeadLetter, read_topic(
        pipeline.kafka_bootstrap, DEAD_LETTER.name(pipeline.topic_prefix), lambda v: len(v) >= len(poison), 90))
    by_key = {d.id: d for d in letters}
    for spec, payload in poison.items():
        letter = by_key[f"poison-{spec.suffix}"]
        assert letter.topic == spec.name(pipeline.topic_prefix)
        assert letter.payload == payload and letter.reason and letter.error == "PoisonInput"
    assert by_key["poison-raw-pages"].stage == "clean" and "not JSON" in by_key["poison-raw-pages"].reason
    assert "article/1" in by_key["poison-articles"].reason
    assert by_key["poison-articles-tagged"].stage == "stories"  # linking comes first in the alert service
    assert by_key["poison-articles-linked"].stage == "alert"

    def has_good(values: list[bytes]) -> bool:
        return any(b"after-poison" in v for v in values)
    tagged = read_topic(pipeline.kafka_bootstrap, TAGGED.name(pipeline.topic_prefix), has_good, 60)
    item = next(events.decode(events.TaggedArticle, v) for v in tagged if b"after-poison" in v)
    assert item.language.lang == "fr"
    assert {e.id for e in item.entities} == {"nw:person:sergey-lavrov", "Q1953", "nw:place:nagorno-karabakh"}


def test_replay_sends_raw_pages_through_again_and_alerts_nothing_twice(pipeline: Settings) -> None:
    from newswatch.replay import replay

    alerts_topic, tagged_topic = ALERTS.name(pipeline.topic_prefix), TAGGED.name(pipeline.topic_prefix)
    read_topic(pipeline.kafka_bootstrap, alerts_topic, lambda v: len(v) >= len(EXPECTED_ALERTS), 150)
    raw = _decode_all(events.RawPage, [v for v in read_topic(
        pipeline.kafka_bootstrap, RAW_PAGES.name(pipeline.topic_prefix), lambda v: False, 3) if b"raw_page/1" in v])
    wire_source = next(a.site for a in ARTICLES if a.story == "wire-putin-pashinyan")
    originals = [p for p in raw if p.source == wire_source and not p.replay]
    assert originals
    tagged_before = read_topic(pipeline.kafka_bootstrap, tagged_topic, lambda v: False, 3)
    alerts_before = read_topic(pipeline.kafka_bootstrap, alerts_topic, lambda v: False, 3)
    client = redis.Redis.from_url(pipeline.redis_url)
    fired_before = set(client.scan_iter("nw:alert:fired:*"))

    result = replay(pipeline, wire_source, 0.0, time.time() + 1, idle_seconds=2.0)
    assert result.replayed == len(originals)

    # Clean re-extracts every replayed page: each reaches the tagged topic again ...
    want = len(tagged_before) + result.replayed
    tagged = read_topic(pipeline.kafka_bootstrap, tagged_topic, lambda v: len(v) >= want, 120)
    assert len(tagged) >= want
    # ... and no alert is published a second time.
    time.sleep(4)
    alerts_after = read_topic(pipeline.kafka_bootstrap, alerts_topic, lambda v: False, 3)
    assert len(alerts_after) == len(alerts_before)
    assert set(client.scan_iter("nw:alert:fired:*")) == fired_before
    # A second replay does not replay the replayed copies.
    assert replay(pipeline, wire_source, 0.0, time.time() + 1, idle_seconds=2.0).replayed == len(originals)
