"""The alert service alone on the real broker and Redis: tagged articles are published to its input
topic, alerts read from its output topic, webhooks POSTed to a local receiver.

A republished story alerts once; a spike rule fires once when crossed, and after a restart of the
service only when crossed again; a receiver failing twice then answering gets one delivery; a
broken rules edit keeps the previous rules.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer

from newswatch import local
from shared import events
from shared.settings import Settings
from shared.topics import ALERTS, TAGGED, create_topics
from tests.integration.test_pipeline import read_topic
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


RULES = """rules:
  - id: once
    query: "cessez-le-feu Karabakh"
    webhooks: [{url: %s, format: slack}]
  - id: quake
    query: séisme
    spike: {window_minutes: 10, min_articles: 3, min_sources: 2}
"""


@dataclass
class Alerting:
    settings: Settings
    env: dict[str, str]
    rules: Path
    workdir: Path
    receiver: Receiver
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        self.procs.append(local.start_service("alert", {**self.env, "NEWSWATCH_METRICS_PORT": str(local.free_port())},
                                              self.workdir / f"alert-{len(self.procs)}.log"))

    def restart(self) -> None:
        local.stop(self.procs[-1:])
        self.start()

    def publish(self, *articles: events.TaggedArticle) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
        for tagged in articles:
            producer.send(TAGGED.name(self.settings.topic_prefix), key=tagged.id.encode(), value=events.encode(tagged))
        producer.flush()
        producer.close()

    def alerts(self, count: int, timeout: float = 60.0, settle: float = 4.0) -> list[events.Alert]:
        topic = ALERTS.name(self.settings.topic_prefix)
        read_topic(self.settings.kafka_bootstrap, topic, lambda v: len(v) >= count, timeout)
        time.sleep(settle)  # time for a wrong extra alert to show up
        return [events.decode(events.Alert, v)
                for v in read_topic(self.settings.kafka_bootstrap, topic, lambda v: False, 2)]


def tagged(n: str, text: str, story: str = "", source: str = "s1", at: float | None = None) -> events.TaggedArticle:
    art = events.Article(id=n, url=f"http://example.org/{n}", source=source, fetched_at=at or time.time(),
                         title=f"Titre {n}", text=text, story_id=story or n)
    return events.TaggedArticle(id=n, article=art, language=events.Language(lang="fr", confidence=1.0,
                                                                            script="Latn"))


@pytest.fixture(scope="module")
def alerting(broker_port: int, redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alerting]:
    workdir = tmp_path_factory.mktemp("alerting")
    receiver = Receiver([500, 500])
    rules = workdir / "rules.yaml"
    rules.write_text(RULES % receiver.url)
    env = {
        **os.environ,
        "NEWSWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
        "NEWSWATCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/3",
        "NEWSWATCH_TOPIC_PREFIX": f"al-{uuid.uuid4().hex[:8]}",
        "NEWSWATCH_RULES": str(rules),
        "NEWSWATCH_METRICS_HOST": "127.0.0.1",
        "TMPDIR": str(workdir),
    }
    settings = Settings.from_env(env)
    redis.Redis.from_url(settings.redis_url).flushdb()
    create_topics(settings)
    run = Alerting(settings, env, rules, workdir, receiver)
    run.start()
    try:
        yield run
    finally:
        local.stop(run.procs)
        receiver.close()


def test_a_republished_story_alerts_once_and_its_webhook_is_delivered_once(alerting: Alerting) -> None:
    text = "Un cessez-le-feu au Karabakh a été signé mardi."
    alerting.publish(tagged("a1", text, story="story-1"), tagged("a2", text + " (AFP)", story="story-1"),
                     tagged("a1", text, story="story-1"))
    once = [a for a in alerting.alerts(1) if a.rule_id == "once"]
    assert [a.id for a in once] == ["once:story-1"]
    assert "«cessez-le-feu» au «Karabakh»" in once[0].snippet
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(p.status == 200 for p in alerting.receiver.posts):
        time.sleep(0.2)
    time.sleep(2)
    # the receiver failed twice (500, 500), then answered: one delivery
    assert [(p.alert_id, p.status) for p in alerting.receiver.posts] == [
        ("once:story-1", 500), ("once:story-1", 500), ("once:story-1", 200)]


def test_a_spike_fires_once_per_crossing_across_a_restart(alerting: Alerting) -> None:
    now = time.time()
    alerting.publish(tagged("q1", "Un séisme.", source="s1", at=now), tagged("q2", "Un séisme.", source="s1", at=now),
                     tagged("q3", "Un séisme.", source="s2", at=now), tagged("q4", "Un séisme.", source="s3", at=now))
    spikes = [a for a in alerting.alerts(2) if a.kind == "spike"]
    # partitions may reorder the four articles: the third to arrive crosses, the fourth finds it above
    assert [(a.rule_id, a.article_count) for a in spikes] == [("quake", 3)] and len(spikes[0].sources) >= 2
    alerting.restart()
    alerting.publish(tagged("q5", "Un séisme.", source="s2", at=now + 1))  # still above: no alert
    assert len([a for a in alerting.alerts(2, settle=8) if a.kind == "spike"]) == 1
    later = now + 3600  # an hour later the window is below the threshold, then crossed again
    alerting.publish(tagged("q6", "Un séisme.", source="s1", at=later), tagged("q7", "Un séisme.", source="s2",
                                                                               at=later + 1),
                     tagged("q8", "Un séisme.", source="s3", at=later + 2))
    spikes = [a for a in alerting.alerts(3) if a.kind == "spike"]
    assert [a.article_count for a in spikes] == [3, 3]
    assert spikes[0].article_id.startswith("q") and spikes[1].article_id in {"q6", "q7", "q8"}


def test_a_broken_rules_edit_keeps_the_previous_rules(alerting: Alerting) -> None:
    alerting.rules.write_text("rules:\n  - {id: once, query: 'cessez-le-feu AND'}\n")
    time.sleep(5)  # the file is looked at every 2 s
    before = len(alerting.alerts(0, timeout=1, settle=0))
    alerting.publish(tagged("b1", "Un nouveau cessez-le-feu au Karabakh a été annoncé jeudi.", story="story-2"))
    got = [a.id for a in alerting.alerts(before + 1)]
    assert "once:story-2" in got
    log = "".join(p.read_text() for p in alerting.workdir.glob("alert-*.log"))
    assert "rules reload failed" in log and "query column" in log
