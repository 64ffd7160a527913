"""The stage runtime's paths, on a real Redis and a scripted sender: classification, retries of
transient failures (sends included), unknown errors retried then dead-lettered, the dead-letter
cap, undeclared outputs, outputs over the message cap, once-keys and after-hooks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import errors as kafka_errors
from prometheus_client import REGISTRY

from shared import events, metrics, once, pipeline, redis_store
from shared.failures import Kind, PoisonInput, TransientError, classify
from shared.retry import Backoff, parse_retry_after
from shared.runtime import Emit, Headers, StageRunner, cpu
from shared.settings import Settings
from shared.topics import ALERTS, ARTICLES, DEAD_LETTER, LABELLED, LINKED, RAW_PAGES


@pytest.mark.parametrize(("exc", "kind"), [
    (redis.ConnectionError("refused"), Kind.TRANSIENT),
    (redis.TimeoutError("slow"), Kind.TRANSIENT),
    (redis.ReadOnlyError("You can't write against a read only replica."), Kind.TRANSIENT),
    (redis.BusyLoadingError("Redis is loading the dataset in memory"), Kind.TRANSIENT),
    (redis.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."), Kind.TRANSIENT),
    (redis.ResponseError("OOM command not allowed"), Kind.TRANSIENT),
    (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), Kind.UNKNOWN),
    (kafka_errors.KafkaConnectionError("broker gone"), Kind.TRANSIENT),
    (kafka_errors.KafkaTimeoutError(), Kind.TRANSIENT),
    (kafka_errors.NotLeaderForPartitionError(), Kind.TRANSIENT),
    (kafka_errors.UnknownTopicOrPartitionError(), Kind.TRANSIENT),
    (kafka_errors.MessageSizeTooLargeError(), Kind.POISON),
    (ConnectionResetError(), Kind.TRANSIENT),
    (TimeoutError(), Kind.TRANSIENT),
    (TransientError("not ready"), Kind.TRANSIENT),
    (PoisonInput("no text"), Kind.POISON),
    (events.SchemaError("not JSON"), Kind.POISON),
    (RecursionError(), Kind.POISON),
    (KeyError("bug"), Kind.UNKNOWN),
    (ZeroDivisionError(), Kind.UNKNOWN),
])
def test_failure_policy_table(exc: BaseException, kind: Kind) -> None:
    assert classify(exc) is kind


def test_backoff_is_capped_and_jittered() -> None:
    import random

    backoff = Backoff(initial=0.5, cap=4.0, factor=2.0, jitter=0.2)
    rng = random.Random(1)
    delays = [backoff.delay(n, rng) for n in range(1, 10)]
    assert 0.4 <= delays[0] <= 0.6 and 0.8 <= delays[1] <= 1.2
    assert all(d <= 4.0 * 1.2 for d in delays) and delays[-1] >= 4.0 * 0.8
    assert Backoff(initial=1, cap=8, jitter=0).delay(3) == 4.0


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


class FakeBroker:
    """A sender that fails on demand: ``failures`` holds exceptions raised by the next sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, Headers]] = []
        self.failures: list[BaseException] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((topic, key, value, tuple(headers)))

    def on(self, suffix: str) -> list[bytes]:
        return [v for t, _, v, _ in self.sent if t.endswith("." + suffix)]

    async def holds(self, topic: str, since: Mapping[int, int], mark: bytes) -> bool:
        """The finder of ``shared.once`` over what this broker has (one partition)."""
        return any(t == topic and (once.HEADER, mark) in h for t, _, _, h in self.sent[since.get(0, 0):])


class EchoStage:
    """articles → articles-labelled; behaviour scripted per test."""

    decl: ClassVar[pipeline.StageDecl] = pipeline.LANGDETECT

    def __init__(self) -> None:
        self.calls = 0
        self.raises: list[BaseException] = []
        self.outputs: list[Emit] | None = None
        self.after_calls = 0

    async def start(self) -> None:
        return None

    async def process(self, article: events.Article) -> Sequence[Emit]:
        self.calls += 1
        if self.raises:
            raise self.raises.pop(0)
        if self.outputs is not None:
            return self.outputs

        async def after() -> None:
            self.after_calls += 1

        labelled = events.LabelledArticle(id=article.id, article=article,
                                          language=events.Language(lang="fr", confidence=1.0, script="Latn"))
        return [Emit(LABELLED, article.id, labelled, after=after)]


def _article(text: str = "Un texte.") -> events.Article:
    return events.Article(id="a1", url="http://example.org/a", source="s", fetched_at=1.0, title="T", text=text)


@pytest.fixture
def runtime_env(redis_port: int) -> Any:
    settings = dataclasses.replace(Settings.from_env({}), redis_url=f"redis://127.0.0.1:{redis_port}/5",
                                   topic_prefix=f"rt-{uuid.uuid4().hex[:6]}", retry_cap_seconds=0.05,
                                   dead_letter_payload_bytes=1000, max_message_bytes=200_000)
    redis.Redis.from_url(settings.redis_url).flushdb()
    return settings


def _run(settings: Settings, stage: EchoStage, value: bytes | None, broker: FakeBroker | None = None,
         offset: int = 7) -> tuple[str, FakeBroker]:
    broker = broker or FakeBroker()

    async def go() -> str:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            runner = StageRunner(stage, broker.send, client, settings)
            runner.backoff = Backoff(initial=0.001, cap=0.01)
            runner.outlet.backoff = runner.backoff
            return await asyncio.wait_for(
                runner.handle(ARTICLES.name(settings.topic_prefix), 2, offset, b"a1", value), timeout=20)
        finally:
            await client.aclose()

    return asyncio.run(go()), broker


def test_an_input_goes_through_and_its_after_hook_runs_once_acknowledged(runtime_env: Settings) -> None:
    stage = EchoStage()
    result, broker = _run(runtime_env, stage, events.encode(_article()))
    assert result == "ok" and len(broker.on("articles-labelled")) == 1 and stage.after_calls == 1


def test_a_failed_send_is_retried_until_the_broker_takes_it(runtime_env: Settings) -> None:
    stage = EchoStage()
    broker = FakeBroker()
    broker.failures = [kafka_errors.KafkaConnectionError("down"), kafka_errors.NotLeaderForPartitionError(),
                       kafka_errors.KafkaTimeoutError()]
    result, broker = _run(runtime_env, stage, events.encode(_article()), broker)
    assert result == "ok" and len(broker.on("articles-labelled")) == 1
    assert stage.calls == 4  # the input is processed again with each retry: stages are idempotent
    assert stage.after_calls == 1  # hooks run only after the acknowledged send
    assert broker.on("dead-letter") == []


def test_transient_errors_in_the_stage_are_retried_not_dead_lettered(runtime_env: Settings) -> None:
    stage = EchoStage()
    stage.raises = [redis.ConnectionError("refused"), redis.ReadOnlyError("READONLY"), redis.BusyLoadingError()]
    result, broker = _run(runtime_env, stage, events.encode(_article()))
    assert result == "ok" and stage.calls == 4 and broker.on("dead-letter") == []


def test_poison_is_dead_lettered_at_once_with_the_reason(runtime_env: Settings) -> None:
    stage = EchoStage()
    stage.raises = [PoisonInput("no article text")]
    result, broker = _run(runtime_env, stage, events.encode(_article()))
    assert result == "dead-lettered" and stage.calls == 1
    letter = events.decode(events.DeadLetter, broker.on("dead-letter")[0])
    assert letter.reason == "no article text" and letter.kind == "poison" and letter.stage == "langdetect"
    assert (letter.topic, letter.partition, letter.offset) == (ARTICLES.name(runtime_env.topic_prefix), 2, 7)
    assert broker.on("articles-labelled") == []


def test_a_dead_lettered_page_in_flight_is_given_up_not_left_in_flight(runtime_env: Settings) -> None:
    # its URL was fetch's in flight: left so, fetch took it again at every expiry of the mark, and the
    # local runner's drain waited for it
    sync = redis.Redis.from_url(runtime_env.redis_url)
    sync.set(redis_store.url_key("a1"), redis_store.inflight_value("pub1"))
    sync.hset(redis_store.inflight_key("pub1"), "a1", "{}")
    sync.sadd(redis_store.PUBLISHERS_KEY, "pub1")
    assert redis_store.pages_in_flight(sync) == {"pub1": 1}
    stage = EchoStage()
    stage.raises = [PoisonInput("no article text")]
    result, _ = _run(runtime_env, stage, events.encode(_article()))
    assert result == "dead-lettered"
    assert sync.get(redis_store.url_key("a1")) == b"failed: dead-lettered by langdetect: no article text"
    assert redis_store.pages_in_flight(sync) == {} and sync.hlen(redis_store.inflight_key("pub1")) == 0
    # a URL done already stays done (a replayed page dead-lettered later)
    sync.set(redis_store.url_key("a1"), redis_store.URL_DONE)
    stage.raises = [PoisonInput("no article text")]
    _run(runtime_env, stage, events.encode(_article()))
    assert sync.get(redis_store.url_key("a1")) == b"done"
    sync.close()


def test_an_unknown_error_is_retried_then_dead_lettered_with_where_it_failed(runtime_env: Settings) -> None:
    stage = EchoStage()
    stage.raises = [KeyError("x")] * 5
    result, broker = _run(runtime_env, stage, events.encode(_article()))
    assert result == "dead-lettered" and stage.calls == runtime_env.unknown_error_attempts
    letter = events.decode(events.DeadLetter, broker.on("dead-letter")[0])
    assert letter.kind == "unknown" and letter.error == "KeyError" and letter.attempts == 3
    assert "test_runtime.py" in letter.where and "in process" in letter.where


def test_an_unknown_error_that_passes_is_not_dead_lettered(runtime_env: Settings) -> None:
    stage = EchoStage()
    stage.raises = [KeyError("flaky")]
    result, broker = _run(runtime_env, stage, events.encode(_article()))
    assert result == "ok" and broker.on("dead-letter") == []


def test_dead_letters_are_capped_and_keep_size_hash_and_offset(runtime_env: Settings) -> None:
    import hashlib

    big = b"\x00\xff" * 100_000  # 200 kB of binary: neither JSON nor text
    result, broker = _run(runtime_env, EchoStage(), big)
    assert result == "dead-lettered"
    raw = broker.on("dead-letter")[0]
    letter = events.decode(events.DeadLetter, raw)
    assert letter.payload == big[:1000] and letter.truncated and letter.payload_bytes == len(big)
    assert letter.payload_sha256 == hashlib.sha256(big).hexdigest()
    assert len(raw) < 4000


def test_an_input_over_the_message_cap_is_dead_lettered_without_decoding(runtime_env: Settings) -> None:
    stage = EchoStage()
    result, broker = _run(runtime_env, stage, events.encode(_article("mot " * 60_000)))
    assert result == "dead-lettered" and stage.calls == 0
    assert "over the 200000-byte message limit" in events.decode(events.DeadLetter, broker.on("dead-letter")[0]).reason


def test_an_output_over_the_message_cap_is_poison_not_lost(runtime_env: Settings) -> None:
    stage = EchoStage()
    huge = _article("mot " * 40_000)  # the input fits, the labelled output (article + language) does not
    stage.outputs = [Emit(LABELLED, "a1", events.LabelledArticle(
        id="a1", article=events.Article(**{**{f: getattr(huge, f) for f in huge.__struct_fields__},
                                           "text": "mot " * 60_000}),
        language=events.Language(lang="fr", confidence=1.0, script="Latn")))]
    result, broker = _run(runtime_env, stage, events.encode(_article()))
    assert result == "dead-lettered" and broker.on("articles-labelled") == []
    assert "output to articles-labelled" in events.decode(events.DeadLetter, broker.on("dead-letter")[0]).reason


def test_an_output_to_an_undeclared_topic_is_refused(runtime_env: Settings) -> None:
    stage = EchoStage()
    page = events.RawPage(id="a1", url="u", final_url="u", source="s", fetched_at=1.0, http_status=200,
                          content_type="text/html", body=b"<p>x</p>")
    stage.outputs = [Emit(RAW_PAGES, "a1", page)]
    result, broker = _run(runtime_env, stage, events.encode(_article()))
    assert result == "dead-lettered" and broker.on("raw-pages") == []
    assert "does not declare" in events.decode(events.DeadLetter, broker.on("dead-letter")[0]).reason


def test_a_once_key_publishes_once_across_redeliveries(runtime_env: Settings) -> None:
    stage = EchoStage()
    labelled = events.LabelledArticle(id="a1", article=_article(),
                                      language=events.Language(lang="fr", confidence=1.0, script="Latn"))
    stage.outputs = [Emit(LABELLED, "a1", labelled, once_key="nw:test:once:a1")]
    broker = FakeBroker()
    broker.failures = [kafka_errors.KafkaConnectionError("down")]  # not sent: not marked, sent at the retry
    for offset in (7, 7, 8):  # the same input delivered three times
        assert _run(runtime_env, stage, events.encode(_article()), broker, offset)[0] == "ok"
    assert len(broker.on("articles-labelled")) == 1
    assert redis.Redis.from_url(runtime_env.redis_url).ttl("nw:test:once:a1") > 0


def test_a_failed_dead_letter_send_is_retried(runtime_env: Settings) -> None:
    broker = FakeBroker()
    broker.failures = [kafka_errors.KafkaConnectionError("down"), ConnectionResetError()]
    result, broker = _run(runtime_env, EchoStage(), b"not json", broker)
    assert result == "dead-lettered" and len(broker.on("dead-letter")) == 1


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_stage_s_series_exist_at_zero_and_each_input_counts_once(runtime_env: Settings) -> None:
    metrics.init_stage(pipeline.LANGDETECT)
    stage, inp, out = "langdetect", "articles", "articles-labelled"
    for name, labels in [("newswatch_messages_consumed_total", {"topic": inp}),
                         ("newswatch_messages_produced_total", {"topic": out}),
                         ("newswatch_messages_failed_total", {"topic": inp, "kind": "poison"}),
                         ("newswatch_messages_failed_total", {"topic": inp, "kind": "unknown"}),
                         ("newswatch_messages_dead_lettered_total", {"topic": inp}),
                         ("newswatch_dependency_errors_total", {"dependency": "broker"}),
                         ("newswatch_dependency_errors_total", {"dependency": "redis"}),
                         ("newswatch_processing_seconds_count", {}), ("newswatch_up", {})]:
        assert value(name, stage=stage, **labels) is not None, (name, labels)  # exported before any input
    counted = {"consumed": ("newswatch_messages_consumed_total", {"topic": inp}),
               "produced": ("newswatch_messages_produced_total", {"topic": out}),
               "processed": ("newswatch_processing_seconds_count", {}),
               "aged": ("newswatch_article_age_seconds_count", {}),
               "redis errors": ("newswatch_dependency_errors_total", {"dependency": "redis"}),
               "broker errors": ("newswatch_dependency_errors_total", {"dependency": "broker"}),
               "other errors": ("newswatch_dependency_errors_total", {"dependency": "other"})}

    def read() -> dict[str, float]:
        return {k: value(name, stage=stage, **lb) or 0.0 for k, (name, lb) in counted.items()}

    before = read()
    echo = EchoStage()
    echo.raises = [redis.ConnectionError("refused")]
    broker = FakeBroker()
    broker.failures = [kafka_errors.KafkaConnectionError("down")]
    assert _run(runtime_env, echo, events.encode(_article()), broker)[0] == "ok"
    after = read()
    # one input, processed three times (a Redis error, a broker error, then through): counted in once
    assert {k: after[k] - before[k] for k in before} == {
        "consumed": 1, "produced": 1, "processed": 1, "aged": 1, "redis errors": 1, "broker errors": 1,
        "other errors": 0}


def test_failures_count_by_kind_and_dead_letters_by_topic(runtime_env: Settings) -> None:
    labels = {"stage": "langdetect", "topic": "articles"}
    poison = value("newswatch_messages_failed_total", kind="poison", **labels) or 0.0
    unknown = value("newswatch_messages_failed_total", kind="unknown", **labels) or 0.0
    letters = value("newswatch_messages_dead_lettered_total", **labels) or 0.0
    assert _run(runtime_env, EchoStage(), b"not json")[0] == "dead-lettered"
    stage = EchoStage()
    stage.raises = [KeyError("x")] * 5
    assert _run(runtime_env, stage, events.encode(_article()))[0] == "dead-lettered"
    assert value("newswatch_messages_failed_total", kind="poison", **labels) == poison + 1
    assert value("newswatch_messages_failed_total", kind="unknown", **labels) == unknown + 1
    assert value("newswatch_messages_dead_lettered_total", **labels) == letters + 2


class AlertingStage:
    """articles-tagged → alerts: one alert per input, as the alert stage publishes it."""

    decl: ClassVar[pipeline.StageDecl] = pipeline.ALERT

    async def start(self) -> None:
        return None

    async def process(self, tagged: events.LinkedArticle) -> Sequence[Emit]:
        alert = events.Alert(id=f"r1:{tagged.id}", rule_id="r1", rule_name="R", story_id=tagged.id,
                             article_id=tagged.id, url="u", title="t", source="s", lang="fr", published="",
                             created_at=0.0, severity="critical")
        return [Emit(ALERTS, "r1", alert, once_key=f"nw:test:alert:{tagged.id}")]


def test_an_alert_counts_by_rule_and_severity_and_its_feed_to_alert_latency_once(runtime_env: Settings) -> None:
    import time

    metrics.init_stage(pipeline.ALERT)
    metrics.init_rule("r1", "critical")
    assert value("newswatch_alerts_total", rule="r1", severity="critical") is not None
    alerts = value("newswatch_alerts_total", rule="r1", severity="critical") or 0.0
    seen = value("newswatch_feed_to_alert_seconds_count", stage="alert") or 0.0
    total = value("newswatch_feed_to_alert_seconds_sum", stage="alert") or 0.0
    skipped = value("newswatch_messages_once_skipped_total", stage="alert", topic="alerts") or 0.0
    fetched = time.time() - 42.0  # the page was fetched 42 s ago
    tagged = events.LinkedArticle(id="t1", article=_article(), language=events.Language(
        lang="fr", confidence=1.0, script="Latn"), story=events.StoryRef(id="t1", outcome="new"))
    tagged.article.fetched_at = fetched
    broker = FakeBroker()

    async def go() -> None:
        client = aioredis.Redis.from_url(runtime_env.redis_url)
        runner = StageRunner(AlertingStage(), broker.send, client, runtime_env)
        for _ in range(2):  # the same input redelivered: the alert is not published, nor counted, again
            await runner.handle(LINKED.name(runtime_env.topic_prefix), 0, 3, b"t1", events.encode(tagged))
        await client.aclose()

    asyncio.run(go())
    assert len(broker.on("alerts")) == 1
    assert value("newswatch_alerts_total", rule="r1", severity="critical") == alerts + 1
    assert value("newswatch_feed_to_alert_seconds_count", stage="alert") == seen + 1
    assert 42.0 <= (value("newswatch_feed_to_alert_seconds_sum", stage="alert") or 0.0) - total < 60.0
    assert value("newswatch_messages_once_skipped_total", stage="alert", topic="alerts") == skipped + 1


class AckingBroker(FakeBroker):
    """A sender whose acknowledgements come later, when the test settles them (or fails them)."""

    def __init__(self) -> None:
        super().__init__()
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes,  # type: ignore[override]
                   headers: Headers = ()) -> asyncio.Future[None]:
        await super().send(topic, key, value, headers)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


def test_pipelined_inputs_wait_for_their_own_acknowledgement(runtime_env: Settings) -> None:
    """begin() processes and queues; finish() returns only once that input's outputs are acknowledged,
    and the after hook (fetch: mark the URL done) runs only then."""
    stage, broker = EchoStage(), AckingBroker()
    topic = ARTICLES.name(runtime_env.topic_prefix)

    async def go() -> None:
        client = aioredis.Redis.from_url(runtime_env.redis_url)
        runner = StageRunner(stage, broker.send, client, runtime_env)
        first = await runner.begin(topic, 0, 1, b"a1", events.encode(_article()))
        second = await runner.begin(topic, 0, 2, b"a1", events.encode(_article("Deux.")))
        assert len(broker.sent) == 2 and stage.after_calls == 0  # both sent, neither acknowledged
        finishing = asyncio.create_task(runner.finish(first))
        await asyncio.sleep(0.05)
        assert not finishing.done()  # still waiting for the broker
        broker.acks[0].set_result(None)
        assert await asyncio.wait_for(finishing, 5) == "ok" and stage.after_calls == 1
        broker.acks[1].set_result(None)
        assert await runner.finish(second) == "ok" and stage.after_calls == 2
        await client.aclose()

    asyncio.run(go())


def test_a_failed_acknowledgement_sends_the_input_again(runtime_env: Settings) -> None:
    stage, broker = EchoStage(), AckingBroker()
    topic = ARTICLES.name(runtime_env.topic_prefix)

    async def go() -> None:
        client = aioredis.Redis.from_url(runtime_env.redis_url)
        runner = StageRunner(stage, broker.send, client, runtime_env)
        runner.backoff = Backoff(initial=0.001, cap=0.01)
        handling = await runner.begin(topic, 0, 1, b"a1", events.encode(_article()))
        broker.acks[0].set_exception(kafka_errors.KafkaConnectionError("connection dropped"))

        async def acknowledge_the_resend() -> None:
            while len(broker.acks) < 2:
                await asyncio.sleep(0.01)
            broker.acks[1].set_result(None)

        helper = asyncio.create_task(acknowledge_the_resend())
        assert await asyncio.wait_for(runner.finish(handling), 10) == "ok"
        await helper
        await client.aclose()

    asyncio.run(go())
    assert len(broker.on("articles-labelled")) == 2 and stage.calls == 2 and stage.after_calls == 1


def test_two_alerts_of_one_story_in_flight_at_once_publish_once(runtime_env: Settings) -> None:
    stage, broker = EchoStage(), AckingBroker()
    labelled = events.LabelledArticle(id="a1", article=_article(),
                                      language=events.Language(lang="fr", confidence=1.0, script="Latn"))
    stage.outputs = [Emit(LABELLED, "a1", labelled, once_key="nw:test:once:inflight")]
    topic = ARTICLES.name(runtime_env.topic_prefix)

    async def go() -> None:
        client = aioredis.Redis.from_url(runtime_env.redis_url)
        runner = StageRunner(stage, broker.send, client, runtime_env)
        first = await runner.begin(topic, 0, 1, b"a1", events.encode(_article()))
        second = await runner.begin(topic, 0, 2, b"a2", events.encode(_article()))  # first not acknowledged yet
        broker.acks[0].set_result(None)
        assert await runner.finish(first) == "ok" and await runner.finish(second) == "ok"
        await client.aclose()

    asyncio.run(go())
    assert len(broker.on("articles-labelled")) == 1



def _labelled_once(key: str) -> Emit:
    labelled = events.LabelledArticle(id="a1", article=_article(),
                                      language=events.Language(lang="fr", confidence=1.0, script="Latn"))
    return Emit(LABELLED, "a1", labelled, once_key=key, once_value="a1")


@contextlib.asynccontextmanager
async def _runner(stage: EchoStage, broker: FakeBroker, settings: Settings,
                  instance: str) -> AsyncIterator[tuple[StageRunner, aioredis.Redis]]:
    """A runner under its own instance id, whose topic lookups read ``broker``; and its Redis client."""
    client = aioredis.Redis.from_url(settings.redis_url)
    runner = StageRunner(stage, broker.send, client, settings, finder=broker.holds)
    runner.backoff = runner.outlet.backoff = Backoff(initial=0.001, cap=0.01)
    runner.outlet.ledger.instance = instance
    try:
        yield runner, client
    finally:
        await runner.outlet.ledger.close()
        await client.aclose()


def test_a_sender_killed_after_the_broker_took_its_output_does_not_make_it_twice(runtime_env: Settings) -> None:
    """The crash window of a once-key: acknowledged by the broker, never marked in Redis. The next
    delivery of the input finds the dead sender's pending entry, finds the record on the topic, marks
    the key and sends nothing."""
    stage, broker = EchoStage(), AckingBroker()
    stage.outputs = [_labelled_once("nw:test:once:killed")]
    topic = ARTICLES.name(runtime_env.topic_prefix)

    async def go() -> None:
        async with _runner(stage, broker, runtime_env, "killed") as (first, client):
            await first.begin(topic, 0, 1, b"a1", events.encode(_article()))  # sent; it dies before the mark
            assert await client.exists(once.pending_key("nw:test:once:killed")) == 1
        async with _runner(stage, broker, runtime_env, "restarted") as (second, client):
            await client.delete(once.instance_key("killed"))  # the dead one's heartbeat ran out
            assert await second.handle(topic, 0, 1, b"a1", events.encode(_article())) == "ok"
            assert await client.get("nw:test:once:killed") == b"a1"
            assert await client.exists(once.pending_key("nw:test:once:killed")) == 0

    asyncio.run(go())
    assert len(broker.on("articles-labelled")) == 1
    assert broker.sent[0][3] == ((once.HEADER, b"nw:test:once:killed"),)


def test_a_sender_killed_before_the_broker_took_its_output_makes_it_once(runtime_env: Settings) -> None:
    stage, broker = EchoStage(), FakeBroker()
    stage.outputs = [_labelled_once("nw:test:once:lost")]
    entry = json.dumps({"by": "killed", "since": {}, "value": "a1"})
    redis.Redis.from_url(runtime_env.redis_url).set(once.pending_key("nw:test:once:lost"), entry)

    async def go() -> str:
        async with _runner(stage, broker, runtime_env, "restarted") as (runner, _):
            return await runner.handle(ARTICLES.name(runtime_env.topic_prefix), 0, 1, b"a1",
                                       events.encode(_article()))

    assert asyncio.run(go()) == "ok"
    assert len(broker.on("articles-labelled")) == 1
    assert redis.Redis.from_url(runtime_env.redis_url).get("nw:test:once:lost") == b"a1"


def test_a_send_pending_with_a_running_sender_waits_for_it(runtime_env: Settings) -> None:
    """Another replica still has the output on its way (a rebalance handed the input over): this one
    neither sends nor skips before that send is settled."""
    stage, broker = EchoStage(), FakeBroker()
    out = _labelled_once("nw:test:once:busy")
    sync = redis.Redis.from_url(runtime_env.redis_url)
    sync.set(once.pending_key("nw:test:once:busy"), json.dumps({"by": "other", "since": {}, "value": "a1"}))
    sync.set(once.instance_key("other"), "1", ex=30)

    async def go() -> None:
        async with _runner(stage, broker, runtime_env, "this") as (runner, _):
            with pytest.raises(TransientError, match="being published by other"):
                await runner.outlet.dispatch([out])
            sync.set("nw:test:once:busy", "a1")  # the other one got its acknowledgement
            assert await runner.outlet.dispatch([out]) == []

    asyncio.run(go())
    assert broker.sent == []
    sync.delete(once.instance_key("other"))


def test_a_failed_acknowledgement_is_settled_by_the_topic_not_by_a_second_send(runtime_env: Settings) -> None:
    """The broker may have written an output whose acknowledgement failed: the retry looks first."""
    stage, broker = EchoStage(), AckingBroker()
    stage.outputs = [_labelled_once("nw:test:once:timeout")]
    topic = ARTICLES.name(runtime_env.topic_prefix)

    async def go() -> str:
        async with _runner(stage, broker, runtime_env, "this") as (runner, _):
            handling = await runner.begin(topic, 0, 1, b"a1", events.encode(_article()))
            broker.acks[0].set_exception(kafka_errors.RequestTimedOutError())
            return await runner.finish(handling)

    assert asyncio.run(go()) == "ok"
    assert len(broker.on("articles-labelled")) == 1 and stage.calls == 2
    assert redis.Redis.from_url(runtime_env.redis_url).get("nw:test:once:timeout") == b"a1"

def test_cpu_work_runs_off_the_event_loop() -> None:
    import threading
    import time

    async def go() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        def slow() -> str:
            time.sleep(0.3)
            return threading.current_thread().name

        name = await cpu(slow)
        task.cancel()
        return name, ticks

    name, ticks = asyncio.run(go())
    assert name.startswith("newswatch-cpu") and ticks >= 10  # the loop kept running meanwhile


def test_the_pipeline_declaration_is_consistent() -> None:
    pipeline.check()
    assert [s.name for s in pipeline.SERVICES] == ["fetch", "clean", "langdetect", "entities", "alert"]
    for svc in pipeline.SERVICES:
        for stage in svc.stages:
            assert DEAD_LETTER not in stage.outputs  # the runtime's, not a stage's


def test_faust_consumers_wait_for_data_as_long_as_the_setting_says(runtime_env: Settings) -> None:
    """faust hard-codes a 1,500 ms fetch wait, which tansu always waits out: every hop took up to 1.5 s."""
    from shared.runtime import make_app

    settings = dataclasses.replace(runtime_env, fetch_wait_ms=123)

    async def go() -> int:
        app = make_app(pipeline.service("clean"), settings)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(go()) == 123


class SlowStage:
    """articles → articles-labelled, each article taking the time its text names; records how many ran at once."""

    decl: ClassVar[pipeline.StageDecl] = pipeline.LANGDETECT
    ahead: ClassVar[int] = 4

    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def start(self) -> None:
        return None

    async def process(self, article: events.Article) -> Sequence[Emit]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(float(article.text))
        finally:
            self.running -= 1
        labelled = events.LabelledArticle(id=article.id, article=article,
                                          language=events.Language(lang="fr", confidence=1.0, script="Latn"))
        return [Emit(LABELLED, article.id, labelled)]


def test_inputs_processed_ahead_leave_in_input_order_and_a_poison_one_alone(runtime_env: Settings) -> None:
    from shared.runtime import Ahead

    delays = ["0.05", "0.01", "poison", "0.03", "0.0", "0.02"]
    broker = FakeBroker()
    stage = SlowStage()

    async def go() -> list[tuple[int, str | None]]:
        client = aioredis.Redis.from_url(runtime_env.redis_url)
        runner = StageRunner(stage, broker.send, client, runtime_env)
        ready: list[tuple[int, str | None]] = []

        async def hand(item: tuple[Any, Any]) -> None:
            event, handling = item
            ready.append((event, await runner.finish(handling)))

        ahead = Ahead(runner, SlowStage.ahead, hand)
        for n, delay in enumerate(delays):
            article = events.Article(id=f"a{n}", url="http://example.org/a", source="s", fetched_at=1.0, title="T",
                                     text=delay)
            value = b"not json" if delay == "poison" else events.encode(article)
            await ahead.put(n, ARTICLES.name(runtime_env.topic_prefix), 0, n, f"a{n}".encode(), value)
        for _ in range(2000):
            if len(ready) == len(delays):
                break
            await asyncio.sleep(0.005)
        ahead.close()
        await client.aclose()
        return ready

    ready = asyncio.run(go())
    assert [n for n, _ in ready] == list(range(len(delays)))  # handed on in input order
    assert [r for _, r in ready] == ["ok", "ok", "dead-lettered", "ok", "ok", "ok"]
    labelled = [events.decode(events.LabelledArticle, v).id for v in broker.on("articles-labelled")]
    assert labelled == ["a0", "a1", "a3", "a4", "a5"]  # outputs in input order, though a1 was done first
    assert len(broker.on("dead-letter")) == 1
    assert stage.most > 1  # several were processed at once
