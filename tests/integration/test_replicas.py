"""Two clean replicas in one consumer group, fed 50 concurrent copies of one wire story (each on its
own site, with its own junk): one story id for all 50, and one alert per matching rule."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer

from newswatch import local
from shared import events
from shared.settings import Settings
from shared.topics import ALERTS, ARTICLES, RAW_PAGES, create_topics
from tests.conftest import ROOT
from tests.integration.test_pipeline import read_topic

pytestmark = pytest.mark.integration

_WIRE = (
    "EREVAN, 3 avril (AFP) — Les ministres des Affaires étrangères d'Arménie et d'Azerbaïdjan se sont "
    "retrouvés jeudi pour une nouvelle session de négociations sur le Haut-Karabakh et le tracé de la frontière.",
    "Selon un communiqué publié à l'issue de la rencontre, les deux délégations ont évoqué la délimitation "
    "des frontières, le retour des personnes déplacées et la réouverture des voies de communication.",
    "Les discussions, qualifiées de constructives par les deux parties, doivent reprendre dans un mois, "
    "ont indiqué des diplomates présents sur place, sans préciser le lieu de la prochaine session.",
    "Plusieurs organisations humanitaires ont salué la reprise du dialogue tout en appelant à des mesures "
    "concrètes pour les familles qui attendent toujours de pouvoir rentrer chez elles.",
)


def _copy(n: int) -> bytes:
    """The wire story as site number ``n`` republishes it: its own menu, share line and footer."""
    paragraphs = "".join(f"<p>{p}</p>" for p in _WIRE)
    return (f"<html><head><title>Karabakh : reprise des négociations | Site {n}</title></head><body>"
            f"<nav><a href='/'>Accueil {n}</a> <a href='/monde'>Monde</a> <a href='/sport'>Sport</a></nav>"
            f"<article><h1>Karabakh : les négociations reprennent</h1>{paragraphs}"
            f"<p class='share'>Partager sur Facebook · X · WhatsApp (site {n})</p></article>"
            f"<footer>© 2026 Site {n}. Tous droits réservés. Mentions légales.</footer></body></html>").encode()


def _consumed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('newswatch_messages_consumed_total{stage="clean",'))


def test_two_clean_replicas_give_one_story_and_one_alert(broker_port: int, redis_port: int,
                                                         tmp_path: Path) -> None:
    prefix = f"rep-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "NEWSWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
        "NEWSWATCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/3",
        "NEWSWATCH_TOPIC_PREFIX": prefix,
        "NEWSWATCH_RULES": str(ROOT / "config/rules.yaml"),
        "NEWSWATCH_NER_LANGUAGES": "",
        "NEWSWATCH_METRICS_HOST": "127.0.0.1",
        "TMPDIR": str(tmp_path),
    }
    settings = Settings.from_env(env)
    redis.Redis.from_url(settings.redis_url).flushdb()
    create_topics(settings)
    procs: list[subprocess.Popen[bytes]] = []
    names = ["clean", "clean", "langdetect", "entities", "alert"]
    ports = [local.free_port() for _ in names]
    for n, name in enumerate(names):
        procs.append(local.start_service(name, {**env, "NEWSWATCH_METRICS_PORT": str(ports[n])},
                                         tmp_path / f"{name}-{n}.log"))
    try:
        # Both replicas must own partitions before the burst: wait for the group to settle.
        time.sleep(20)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        now = time.time()
        for n in range(50):
            url = f"http://site{n}.example.org/monde/karabakh-negociations.html"
            page = events.RawPage(id=f"copy-{n:02d}", url=url, final_url=url, source=f"site{n}", fetched_at=now,
                                  http_status=200, content_type="text/html; charset=utf-8", body=_copy(n))
            producer.send(RAW_PAGES.name(prefix), key=page.id.encode(), value=events.encode(page))
        producer.flush()
        producer.close()

        articles = [events.decode(events.Article, v) for v in read_topic(
            settings.kafka_bootstrap, ARTICLES.name(prefix),
            lambda vs: len({events.decode(events.Article, v).id for v in vs}) >= 50, 150)]
        by_id = {a.id: a for a in articles}
        assert len(by_id) == 50
        stories = Counter(a.story_id for a in by_id.values())
        assert len(stories) == 1, stories
        assert sum(1 for a in by_id.values() if not a.duplicate_of) == 1  # one original, 49 copies

        alerts = read_topic(settings.kafka_bootstrap, ALERTS.name(prefix), lambda v: len(v) >= 1, 120)
        time.sleep(8)  # room for a wrong second alert to show up
        alerts = read_topic(settings.kafka_bootstrap, ALERTS.name(prefix), lambda v: False, 3)
        fired = Counter(events.decode(events.Alert, v).rule_id for v in alerts)
        print(f"replicas drill: 50 copies in, {len(by_id)} articles out ({len(articles)} records), "
              f"{len(stories)} story id(s), alerts {dict(fired)}, consumed per replica "
              f"{[_consumed(ports[n]) for n in (0, 1)]}")
        assert fired == Counter({"karabakh": 1}), fired
        # Both replicas took part (else the drill proves nothing about replicas).
        consumed = [_consumed(ports[n]) for n in (0, 1)]
        assert all(c > 0 for c in consumed) and sum(consumed) >= 50, consumed
        for proc, name in zip(procs, names, strict=True):
            assert proc.poll() is None, f"{name} died"
    finally:
        local.stop(procs)
