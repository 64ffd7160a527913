"""Topic names, keys, partitions and retention, and the admin step that creates them.

Topics are created explicitly before any service starts: faust does not create its source
topics with the wanted partition count, and broker auto-creation picks its own defaults.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared import events
from shared.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    schema: type[events.Event]
    producer: str
    consumers: str
    key: str
    retention_ms: int

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"


RAW_PAGES = TopicSpec("raw-pages", events.RawPage, "fetch", "clean", "article id", 7 * DAY_MS)
ARTICLES = TopicSpec("articles", events.Article, "clean", "langdetect", "article id", 7 * DAY_MS)
LABELLED = TopicSpec("articles-labelled", events.LabelledArticle, "langdetect", "entities", "article id",
                     7 * DAY_MS)
TAGGED = TopicSpec("articles-tagged", events.TaggedArticle, "entities", "alert, users", "article id",
                   30 * DAY_MS)
ALERTS = TopicSpec("alerts", events.Alert, "alert", "users (newswatch alerts tail)", "rule id", 90 * DAY_MS)
DEAD_LETTER = TopicSpec("dead-letter", events.DeadLetter, "every stage", "operators", "input key",
                        30 * DAY_MS)

ALL_TOPICS: tuple[TopicSpec, ...] = (RAW_PAGES, ARTICLES, LABELLED, TAGGED, ALERTS, DEAD_LETTER)


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every topic that does not exist yet; return the names created. Idempotent."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                     client_id="newswatch-admin", request_timeout_ms=10000)
            break
        except KafkaError as exc:  # broker still starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka at {settings.kafka_bootstrap} is not reachable: {exc}") from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=spec.name(settings.topic_prefix),
                num_partitions=settings.partitions,
                replication_factor=settings.replication,
                topic_configs={"retention.ms": str(spec.retention_ms)},
            )
            for spec in ALL_TOPICS
            if spec.name(settings.topic_prefix) not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:  # a replica of this step won the race
                pass
        log.info("topics ready", extra={"created": created, "prefix": settings.topic_prefix})
        return created
    finally:
        admin.close()
