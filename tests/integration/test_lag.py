"""Consumer lag per partition on the real embedded broker: high watermark (from fetch responses) minus
the group's committed offset, read again and again by one probe, and exported as gauges."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from shared import metrics, pipeline
from shared.settings import Settings
from shared.topics import ARTICLES, RAW_PAGES, LagProbe, consumer_lag, create_topics

pytestmark = pytest.mark.integration


def _produce(settings: Settings, topic: str, per_partition: dict[int, int]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    for partition, count in per_partition.items():
        for n in range(count):
            producer.send(topic, value=b"x" * 2000, key=f"k{n}".encode(), partition=partition)
    producer.flush()
    producer.close()


def _commit(settings: Settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        consumer.close()


def test_lag_per_partition_is_read_again_by_one_probe_and_exported(broker_port: int) -> None:
    settings = dataclasses.replace(Settings.from_env({}), kafka_bootstrap=f"127.0.0.1:{broker_port}",
                                   topic_prefix=f"lag-{uuid.uuid4().hex[:6]}", partitions=3)
    create_topics(settings)
    pages, articles = RAW_PAGES.name(settings.topic_prefix), ARTICLES.name(settings.topic_prefix)
    group = pipeline.service("clean").group_id(settings.topic_prefix)
    _produce(settings, pages, {0: 5, 1: 2})
    _commit(settings, group, pages, {0: 3})  # partition 1 never committed: all of it waits

    probe = LagProbe(settings)
    try:
        assert probe.read(group, [pages]) == {(pages, 0): 2, (pages, 1): 2, (pages, 2): 0}
        # more arrives, some is consumed: the same probe (its clients kept) sees both
        _produce(settings, pages, {1: 4, 2: 1})
        _commit(settings, group, pages, {0: 5, 1: 1})
        assert probe.read(group, [pages]) == {(pages, 0): 0, (pages, 1): 5, (pages, 2): 1}
        assert probe.read(group, [pages]) == {(pages, 0): 0, (pages, 1): 5, (pages, 2): 1}  # nothing new
    finally:
        probe.close()
    assert consumer_lag(settings, group, [pages, articles]) == {pages: 6, articles: 0}

    # the exporter of the clean service sets one gauge per partition, labelled by stage and topic suffix
    exporter_probe = LagProbe(settings)
    exporter = metrics.LagExporter(pipeline.service("clean"), settings.topic_prefix, 60.0,
                                   lambda topics: exporter_probe.read(group, topics))
    try:
        assert exporter.once()
    finally:
        exporter_probe.close()  # an open client would go on reconnecting to the broker after the tests
    got = {p: REGISTRY.get_sample_value("newswatch_consumer_lag_messages",
                                        {"stage": "clean", "topic": "raw-pages", "partition": str(p)})
           for p in range(3)}
    assert got == {0: 0.0, 1: 5.0, 2: 1.0}
    # a broker that does not answer: the last values stay, a broker error is counted
    errors = REGISTRY.get_sample_value("newswatch_dependency_errors_total", {"stage": "clean", "dependency": "broker"})

    def unanswered(topics: list[str]) -> dict[tuple[str, int], int]:
        raise RuntimeError(f"no high watermark for {topics[0]}[0]")

    down = metrics.LagExporter(pipeline.service("clean"), settings.topic_prefix, 60.0, unanswered)
    assert not down.once()
    assert REGISTRY.get_sample_value("newswatch_dependency_errors_total",
                                     {"stage": "clean", "dependency": "broker"}) == (errors or 0.0) + 1
    assert REGISTRY.get_sample_value("newswatch_consumer_lag_messages",
                                     {"stage": "clean", "topic": "raw-pages", "partition": "1"}) == 5.0
