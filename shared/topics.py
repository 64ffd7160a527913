"""Topic names, keys, partitions and retention, and the admin step that creates them.

Topics are created explicitly before any service starts: faust does not create its source
topics with the wanted partition count, and broker auto-creation picks its own defaults.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared import events, kafka_clients
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
TAGGED = TopicSpec("articles-tagged", events.TaggedArticle, "entities", "alert (stories), users", "article id",
                   30 * DAY_MS)
LINKED = TopicSpec("articles-linked", events.LinkedArticle, "alert (stories)", "alert, users", "article id",
                   30 * DAY_MS)
STORIES = TopicSpec("stories", events.Story, "alert (stories)", "users (newswatch stories top)", "story id",
                    30 * DAY_MS)
ALERTS = TopicSpec("alerts", events.Alert, "alert", "users (newswatch alerts tail)", "rule id", 90 * DAY_MS)
DEAD_LETTER = TopicSpec("dead-letter", events.DeadLetter, "every stage", "operators", "input key",
                        30 * DAY_MS)

ALL_TOPICS: tuple[TopicSpec, ...] = (RAW_PAGES, ARTICLES, LABELLED, TAGGED, LINKED, STORIES, ALERTS, DEAD_LETTER)


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every topic that does not exist yet; return the names created. Idempotent."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**kafka_clients.client_config(settings), client_id="newswatch-admin",
                                     request_timeout_ms=10000)
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
        log.info("topics ready", extra={"topics_created": created, "prefix": settings.topic_prefix})
        return created
    finally:
        admin.close()


class LagProbe:
    """Reads consumer groups' lag per partition: high watermark minus committed offset. The high
    watermark is read from fetch responses, not from ListOffsets (which tansu answers wrongly), so
    the same code is right on Apache Kafka and on tansu. Keeps its two clients (an admin client
    for the committed offsets, a consumer without group for the high watermarks) between reads;
    blocking: run it off the event loop. Not thread-safe: one probe per thread."""

    def __init__(self, settings: Settings, client_id: str = "newswatch-lag") -> None:
        self.settings = settings
        self.client_id = client_id
        self._admin: KafkaAdminClient | None = None
        self._consumer: Any = None
        # where each partition's last read ended: the next fetch starts there, so that it carries the
        # high watermark and at most the records written since (not the whole backlog again)
        self._seen: dict[tuple[str, int], int] = {}

    def _clients(self) -> tuple[KafkaAdminClient, Any]:
        from kafka import KafkaConsumer

        if self._admin is None:
            self._admin = KafkaAdminClient(**kafka_clients.client_config(self.settings),
                                           client_id=self.client_id, request_timeout_ms=10000)
        if self._consumer is None:
            self._consumer = KafkaConsumer(**kafka_clients.client_config(self.settings), group_id=None,
                                           client_id=self.client_id, enable_auto_commit=False,
                                           auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                           max_partition_fetch_bytes=1024, request_timeout_ms=10000)
        return self._admin, self._consumer

    def read(self, group_id: str, topics: list[str], timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
        """The group's lag on each (topic, partition) of ``topics`` (a partition it never committed
        counts from offset 0). Raises RuntimeError when some high watermark could not be read in
        time, and the client's error when the broker is away (the clients are then made again)."""
        from kafka import TopicPartition

        try:
            admin, consumer = self._clients()
            offsets = admin.list_group_offsets(group_id).get(group_id, {})
            committed = {(tp.topic, tp.partition): max(0, meta.offset) for tp, meta in offsets.items()}
            tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
            consumer.unsubscribe()  # a fresh assignment forgets the last read's high watermarks
            consumer.assign(tps)
            for tp in tps:
                key = (tp.topic, tp.partition)
                consumer.seek(tp, max(committed.get(key, 0), self._seen.get(key, 0)))
            deadline = time.monotonic() + timeout_s
            while any(consumer.highwater(tp) is None for tp in tps):
                if time.monotonic() > deadline:
                    missing = [f"{tp.topic}[{tp.partition}]" for tp in tps if consumer.highwater(tp) is None]
                    raise RuntimeError(f"no high watermark for {', '.join(missing)}")
                consumer.poll(timeout_ms=100, max_records=1, update_offsets=False)
        except Exception:
            self.close()
            raise
        lag: dict[tuple[str, int], int] = {}
        for tp in tps:
            key = (tp.topic, tp.partition)
            high = consumer.highwater(tp) or 0
            self._seen[key] = high
            lag[key] = max(0, high - committed.get(key, 0))
        return lag

    def close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # closing a client whose broker is gone
                    log.debug("lag probe client close failed", extra={"error": repr(exc)})
        self._admin = self._consumer = None
        self._seen.clear()


def consumer_lag(settings: Settings, group_id: str, topics: list[str], timeout_s: float = 5.0) -> dict[str, int]:
    """Messages each topic still holds for a consumer group, summed over its partitions (``LagProbe``).
    Raises RuntimeError when some partition's high watermark could not be read in time."""
    probe = LagProbe(settings)
    try:
        lag: dict[str, int] = dict.fromkeys(topics, 0)
        for (topic, _), value in probe.read(group_id, topics, timeout_s).items():
            lag[topic] += value
        return lag
    finally:
        probe.close()
