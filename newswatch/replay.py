"""``newswatch replay``: send a source's raw pages (they keep their bytes) through clean and the
stages after it again, e.g. after a change to the extractor, the entity table or the rules.

The pages fetched between ``since`` and ``until`` are read from the ``raw-pages`` topic (from its
start: it keeps 7 days) and produced onto it again, same key, with ``replay`` set; clean
re-extracts them (it always does, known article or not) and the rest follows. Replayed copies are
never replayed again. Nothing is alerted twice: an alert is claimed once per (rule, story) in
Redis and published once (its once-key), whatever goes through the pipeline again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from shared import events, kafka_clients
from shared.settings import Settings
from shared.topics import RAW_PAGES


def parse_when(value: str | None, default: float) -> float:
    """Epoch seconds from epoch seconds or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None or not value.strip():
        return default
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is neither epoch seconds nor an ISO 8601 date/time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass
class ReplayResult:
    read: int = 0  # raw pages read from the topic
    replayed: int = 0  # produced again
    skipped_undecodable: int = 0


def replay(settings: Settings, source: str | None, since: float, until: float, *, idle_seconds: float = 3.0,
           timeout: float = 600.0, progress: Callable[[ReplayResult], None] | None = None) -> ReplayResult:
    """Produce again every raw page of ``source`` (all sources if None) fetched in [since, until)."""
    topic = RAW_PAGES.name(settings.topic_prefix)
    consumer = KafkaConsumer(**kafka_clients.client_config(settings), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=500,
                             fetch_max_bytes=settings.max_message_bytes * 2,
                             max_partition_fetch_bytes=settings.max_message_bytes)
    producer = KafkaProducer(**kafka_clients.client_config(settings), acks="all",
                             max_request_size=settings.max_message_bytes)
    result = ReplayResult()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            raise RuntimeError(f"topic {topic} not found (is the broker up, and the prefix right?)")
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        last_data = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_data < idle_seconds:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                last_data = time.monotonic()
                for record in records:
                    result.read += 1
                    try:
                        page = events.decode(events.RawPage, record.value)
                    except Exception:
                        result.skipped_undecodable += 1
                        continue
                    if page.replay or (source is not None and page.source != source):
                        continue
                    if not since <= page.fetched_at < until:
                        continue
                    copy = msgspec.structs.replace(page, replay=True)
                    producer.send(topic, key=record.key, value=events.encode(copy))
                    result.replayed += 1
            if progress is not None:
                progress(result)
        producer.flush(timeout=60)
    finally:
        consumer.close()
        producer.close()
    return result
