"""Once-keys across the crash window, on the real broker and a real Redis: an output the broker took
from a sender that died before marking it is found on the topic and not sent again; one it never
took is sent once; offsets noted before the broker lost its log do not hide a record; the producer
of once-keyed outputs does not write a record again when its connection drops with the answer lost."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from shared import events, kafka_clients, once, pipeline
from shared.failures import Kind, classify
from shared.runtime import Emit, Headers, Outlet
from shared.settings import Settings
from shared.topics import ALERTS, create_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(broker_port: int, redis_port: int) -> Iterator[Settings]:
    base = Settings.from_env({})
    chosen = dataclasses.replace(base, kafka_bootstrap=f"127.0.0.1:{broker_port}",
                                 redis_url=f"redis://127.0.0.1:{redis_port}/8",
                                 topic_prefix=f"once-{uuid.uuid4().hex[:6]}", partitions=2)
    redis.Redis.from_url(chosen.redis_url).flushdb()
    create_topics(chosen)
    yield chosen


def _alert(n: int) -> Emit:
    alert = events.Alert(id=f"r1:story-{n}", rule_id="r1", rule_name="r1", story_id=f"story-{n}",
                         article_id=f"art-{n}", url=f"http://example.org/{n}", title=f"Story {n}", source="s",
                         lang="en", published="", created_at=1.0)
    return Emit(ALERTS, "r1", alert, once_key=f"nw:test:sent:r1:story-{n}", once_value=f"art-{n}")


class Process:
    """One alert-stage process: a real producer and an outlet under its own instance id."""

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.instance = instance

    async def __aenter__(self) -> Process:
        self.producer = AIOKafkaProducer(**kafka_clients.client_config(self.settings), acks="all")
        await self.producer.start()
        self.redis = aioredis.Redis.from_url(self.settings.redis_url)
        self.outlet = Outlet(pipeline.ALERT, self.send, self.redis, self.settings)
        self.outlet.ledger.instance = self.instance
        return self

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Awaitable[Any]:
        return await self.producer.send(topic, value, key=key, headers=list(headers) or None)

    async def die(self) -> None:
        """kill -9, as far as others can tell: no mark written, the heartbeat gone."""
        await self.outlet.ledger.close()
        await self.redis.delete(once.instance_key(self.instance))
        await self.producer.stop()
        await self.redis.aclose()

    async def __aexit__(self, *_: object) -> None:
        await self.outlet.ledger.close()
        await self.producer.stop()
        await self.redis.aclose()


def _alerts_on_topic(settings: Settings) -> list[str]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_clients.client_config(settings), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    name = ALERTS.name(settings.topic_prefix)
    consumer.assign([TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or [])])
    ids = [events.decode(events.Alert, r.value).id for r in consumer]
    consumer.close()
    return sorted(ids)


def test_an_alert_the_broker_took_from_a_killed_sender_is_not_sent_again(settings: Settings) -> None:
    async def go() -> None:
        async with Process(settings, "before") as before:
            await before.outlet.deliver([_alert(n) for n in range(3)])  # marked: offsets noted
        killed = Process(settings, "killed")
        await killed.__aenter__()
        sent = await killed.outlet.dispatch([_alert(3), _alert(4)])
        for _, ack in sent:
            assert ack is not None
            await ack  # the broker has both ...
        await killed.die()  # ... and the process dies before marking them
        async with Process(settings, "restarted") as restarted:
            assert await restarted.outlet.dispatch([_alert(3)]) == []  # found on the topic
            await restarted.outlet.deliver([_alert(4), _alert(5)])  # 4 found, 5 new
            assert await restarted.redis.get("nw:test:sent:r1:story-3") == b"art-3"
            assert await restarted.redis.exists(once.pending_key("nw:test:sent:r1:story-4")) == 0

    asyncio.run(go())
    assert _alerts_on_topic(settings) == [f"r1:story-{n}" for n in range(6)]


def test_an_alert_a_killed_sender_never_got_to_the_broker_is_sent_once(settings: Settings) -> None:
    async def go() -> None:
        async with Process(settings, "before") as before:
            await before.outlet.deliver([_alert(0)])
        killed = Process(settings, "killed")
        await killed.__aenter__()
        assert await killed.outlet.ledger.take("nw:test:sent:r1:story-1", "art-1", ALERTS.name(settings.topic_prefix))
        await killed.die()  # the pending entry is written, the record never left the process
        async with Process(settings, "restarted") as restarted:
            await restarted.outlet.deliver([_alert(1)])
            await restarted.outlet.deliver([_alert(1)])  # a further redelivery: marked now
            assert await restarted.redis.get("nw:test:sent:r1:story-1") == b"art-1"

    asyncio.run(go())
    assert _alerts_on_topic(settings) == ["r1:story-0", "r1:story-1"]


def test_offsets_noted_before_a_broker_lost_its_log_do_not_hide_a_record(settings: Settings) -> None:
    """Offsets past the end (the broker started again empty) are read from the start instead."""
    topic = ALERTS.name(settings.topic_prefix)

    async def go() -> tuple[bool, bool, bool]:
        async with Process(settings, "p") as process:
            await process.outlet.deliver([_alert(0)])
        far = {0: 10_000, 1: 10_000}
        return (await once.topic_holds(settings, topic, far, b"nw:test:sent:r1:story-0"),
                await once.topic_holds(settings, topic, {}, b"nw:test:sent:r1:story-0"),
                await once.topic_holds(settings, topic, {}, b"nw:test:sent:r1:story-9"))

    assert asyncio.run(go()) == (True, True, False)


def test_the_once_producer_does_not_write_a_record_again_when_the_answer_is_lost(tmp_path: Path) -> None:
    """The broker writes the record, its answer is lost and the connection drops: aiokafka would send
    the batch again (two records, no idempotent producer on the embedded broker); the runtime's
    OnceSender fails the send instead, and the once protocol then finds the record on the topic."""
    from kafka import KafkaConsumer, TopicPartition

    from newswatch import local
    from shared.runtime import OnceSender
    from tests.integration.harness import Proxy

    broker_port, proxy_port = local.free_port(), local.free_port()
    broker = local.start_broker(broker_port, tmp_path / "broker.log", advertised_port=proxy_port)
    proxy = Proxy(proxy_port, broker_port)
    try:
        settings = dataclasses.replace(Settings.from_env({}), kafka_bootstrap=f"127.0.0.1:{proxy_port}",
                                       topic_prefix="lost", partitions=1)
        create_topics(settings)
        topic = ALERTS.name(settings.topic_prefix)

        async def go() -> BaseException | None:
            sender = OnceSender(settings, "once-test")
            try:
                await (await sender.send(topic, b"k", b"first", ()))
                proxy.swallowing = True  # the next request reaches the broker; its answer does not come back
                acked = await sender.send(topic, b"k", b"second", ((once.HEADER, b"nw:test:lost"),))
                await asyncio.sleep(1.0)
                proxy.cut()
                proxy.swallowing = False
                try:
                    await asyncio.wait_for(acked, 20)
                except Exception as exc:
                    failure: BaseException | None = exc
                else:
                    failure = None
                proxy.restore()
                await asyncio.sleep(3.0)  # a producer that sends again on its own would do it now
                return failure
            finally:
                await asyncio.to_thread(sender.close)

        failure = asyncio.run(go())
        assert failure is not None and classify(failure) is Kind.TRANSIENT, failure
        consumer = KafkaConsumer(**kafka_clients.client_config(settings), group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000)
        consumer.assign([TopicPartition(topic, 0)])
        values = [r.value for r in consumer]
        consumer.close()
        assert values == [b"first", b"second"]  # written once, though its answer was lost
        assert asyncio.run(once.topic_holds(settings, topic, {}, b"nw:test:lost"))  # what the protocol then finds
    finally:
        proxy.close()
        local.stop([broker])
