"""The stage runtime: every service runs its stages here, and this module owns, once, everything
around a stage's domain work.

A consuming stage is an object with ``process(event) -> outputs``; a source stage (fetch's
poller) has ``run(outlet, stop)`` and hands its outputs to the outlet. For both, the runtime:

- decodes the input schema, and refuses an input over ``NEWSWATCH_MAX_MESSAGE_BYTES``;
- applies the failure policy of ``shared.failures``: transient errors (Redis, broker, network)
  are retried with capped backoff, *sends included*, for as long as they last; poison inputs go
  to the dead-letter topic with the reason; unknown exceptions are retried
  ``NEWSWATCH_UNKNOWN_ERROR_ATTEMPTS`` times, then dead-lettered with the frame they came from;
- checks that a stage only produces to the topics the pipeline declares for it, and that no
  output is over the message cap (a poison input then, never a lost one);
- sends the outputs and waits for the broker's acknowledgement of each before the input is
  acknowledged: faust commits an offset only once its message is acked (streams run with manual
  acks, so an input interrupted by a crash, a cancel or a shutdown is never committed);
- publishes an output that carries a ``once_key`` at most once per key, also across a crash
  between the broker's acknowledgement and the Redis mark (``shared.once``: a pending entry, a
  header on the record, and a look at the topic when the sender of a pending entry died), through a
  producer that never sends a record again on its own (``OnceSender``);
- caps dead letters: the payload is cut to ``NEWSWATCH_DEAD_LETTER_PAYLOAD_BYTES``, with its size,
  SHA-256 and the input's topic/partition/offset kept, so the whole input can be re-read;
- runs CPU-heavy work off the event loop (``cpu()``), so heartbeats, commits and a service's
  other stages keep running while a page is extracted or a model runs.
- counts, once, what every stage does (``shared.metrics``): inputs consumed, outputs acknowledged,
  failures by kind, dead letters, transient failures by dependency, processing time, article age,
  alerts by rule and severity and their feed-to-alert latency (when the broker acknowledges them);
  ``newswatch_up`` is 1 only while a stage runs, and a consuming service exports its consumer lag
  per partition from a thread of its own (``LagExporter``, every ``NEWSWATCH_LAG_SECONDS``).

Delivery is at-least-once; stages are idempotent (article and story ids in Redis), so a
redelivered input changes nothing downstream.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar, Protocol, TypeVar, cast

import faust
import redis.asyncio as aioredis
import uvloop

from shared import events, health, kafka_clients, metrics, once, pipeline, redis_store
from shared.failures import Kind, PoisonInput, classify, where
from shared.health import Liveness
from shared.logs import logging_config
from shared.pipeline import ServiceDecl, StageDecl
from shared.retry import Backoff
from shared.settings import Settings
from shared.topics import DEAD_LETTER, LagProbe, TopicSpec

log = logging.getLogger(__name__)

__all__ = ["Emit", "Outlet", "PoisonInput", "SourceStage", "Stage", "StageRunner", "cpu", "run_service"]

T = TypeVar("T")

# One worker thread per process for CPU-heavy work: the event loop keeps its thread (heartbeats,
# commits, other agents), and a stage's work stays in order. lxml, fastText, lingua and spaCy
# release the GIL for much of their work, so the loop is not starved meanwhile.
_CPU_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="newswatch-cpu")


async def cpu(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on the CPU worker thread and wait for it without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(_CPU_POOL, partial(fn, *args, **kwargs))


class Emit:
    """One output: an event for a topic, under a key.

    ``once_key``: a Redis key; the output is published only if the key is not set, and the key is
    set (to ``once_value``: what made it, e.g. the article id) once the broker has acknowledged it
    (an alert per rule and story). ``after``: a coroutine run once every output of the input is
    acknowledged (e.g. mark a URL done)."""

    __slots__ = ("after", "event", "key", "once_key", "once_value", "topic")

    def __init__(self, topic: TopicSpec, key: str, event: events.Event, *, once_key: str = "",
                 once_value: str = "1", after: Callable[[], Awaitable[None]] | None = None) -> None:
        self.topic = topic
        self.key = key
        self.event = event
        self.once_key = once_key
        self.once_value = once_value
        self.after = after


class Stage(Protocol):
    """A consuming stage. It may set ``ahead`` (a class attribute, default 1): how many inputs it processes
    at once (``Ahead``), for a stage whose work gains from seeing several together."""

    decl: ClassVar[StageDecl]

    async def start(self) -> None: ...

    async def process(self, event: Any) -> Sequence[Emit]: ...


class SourceStage(Protocol):
    decl: ClassVar[StageDecl]

    async def start(self) -> None: ...

    async def run(self, outlet: Outlet, stop: asyncio.Event) -> None: ...


Headers = Sequence[tuple[str, bytes]]
# (topic name, key, value, headers) → queues the message; returns None once the broker has acknowledged
# it, or an awaitable that resolves on the acknowledgement, to the record's metadata (partition, offset),
# so that a stage can go on while the broker answers.
Sender = Callable[[str, bytes | None, bytes, Headers], Awaitable[Awaitable[Any] | None]]
# What an input's sends wait on: (output, its acknowledgement or None when already acknowledged).
Sent = list[tuple[Emit, Awaitable[Any] | None]]


class Outlet:
    """Sends one stage's outputs: declared topics only, size-capped, once-keys honoured, acknowledged."""

    def __init__(self, decl: StageDecl, send: Sender, redis: aioredis.Redis, settings: Settings,
                 finder: once.Finder | None = None, once_send: Sender | None = None) -> None:
        self.decl = decl
        self.send = send
        self.once_send = once_send or send  # outputs with a once-key (see OnceSender)
        self.redis = redis
        self.settings = settings
        self.prefix = settings.topic_prefix
        self._allowed = {t.suffix for t in decl.outputs}
        self._once_in_flight: set[str] = set()
        self.ledger = once.OnceLedger(redis, finder or partial(once.topic_holds, settings),
                                      settings.dedup_ttl_days * 86400)
        self.backoff = Backoff(initial=0.2, cap=settings.retry_cap_seconds)

    def encode(self, out: Emit) -> bytes:
        if out.topic.suffix not in self._allowed:
            raise RuntimeError(f"stage {self.decl.name} produced to {out.topic.suffix!r}, which the pipeline "
                               f"does not declare for it (declared: {sorted(self._allowed) or 'none'})")
        value = events.encode(out.event)
        if len(value) > self.settings.max_message_bytes:
            raise PoisonInput(f"output to {out.topic.suffix} is {len(value)} bytes, over the "
                              f"{self.settings.max_message_bytes}-byte message limit")
        return value

    async def deliver(self, outputs: Sequence[Emit], fetched_at: float | None = None) -> None:
        """Send every output and wait for every acknowledgement; raises what the send raised.

        ``fetched_at``: when the page of the input's article was fetched (an output that does not
        carry it, an alert, is as old as its input)."""
        await self.confirm(outputs, await self.dispatch(outputs), fetched_at)

    async def dispatch(self, outputs: Sequence[Emit]) -> Sent:
        """Queue every output with the producer without waiting for the broker (``confirm`` waits).

        An output whose once-key is set, or is held by an output still waiting for its
        acknowledgement, is skipped: two copies of one story in flight at once alert once. One whose
        earlier send is unconfirmed is sent only if the topic does not hold it (``shared.once``)."""
        encoded = [(out, self.encode(out)) for out in outputs]  # all checked before anything is sent
        sent: Sent = []
        try:
            for out, value in encoded:
                topic = out.topic.name(self.prefix)
                headers: Headers = ()
                if out.once_key:
                    if out.once_key in self._once_in_flight or not await self._take(out, topic):
                        metrics.ONCE_SKIPPED.labels(self.decl.name, out.topic.suffix).inc()
                        continue
                    headers = ((once.HEADER, out.once_key.encode("utf-8")),)
                sent.append((out, None))  # held before the send: a send that raises still releases it
                try:
                    send = self.once_send if out.once_key else self.send
                    sent[-1] = (out, await send(topic, out.key.encode("utf-8"), value, headers))
                except Exception:
                    if out.once_key:  # refused by the producer, never on its way: the entry is given back
                        await self.ledger.release(out.once_key)
                    raise
        except BaseException:
            self._release(sent)
            raise
        return sent

    async def _take(self, out: Emit, topic: str) -> bool:
        self._once_in_flight.add(out.once_key)  # before the first await: a second copy in flight is skipped
        try:
            taken = await self.ledger.take(out.once_key, out.once_value, topic)
        except BaseException:
            self._once_in_flight.discard(out.once_key)
            raise
        if not taken:
            self._once_in_flight.discard(out.once_key)
        return taken

    def _release(self, sent: Sent) -> None:
        for out, _ in sent:
            if out.once_key:
                self._once_in_flight.discard(out.once_key)

    async def confirm(self, outputs: Sequence[Emit], sent: Sent, fetched_at: float | None = None) -> None:
        """Wait for the acknowledgement of every output ``dispatch`` sent, then write the once-keys,
        count the outputs and run the ``after`` hooks. Raises what an acknowledgement raised."""
        try:
            records = [await ack if ack is not None else None for _, ack in sent]
            for (out, _), record in zip(sent, records, strict=True):
                if out.once_key:
                    await self.ledger.mark(out.once_key, out.once_value, record)
        finally:
            self._release(sent)
        for out, _ in sent:
            metrics.MESSAGES_PRODUCED.labels(self.decl.name, out.topic.suffix).inc()
            since = _fetched_at(out.event) or fetched_at
            age = max(0.0, time.time() - since) if since else None
            if age is not None:
                metrics.ARTICLE_AGE_SECONDS.labels(self.decl.name).observe(age)
            if isinstance(out.event, events.Alert):
                metrics.ALERTS_FIRED.labels(out.event.rule_id, out.event.severity).inc()
                if age is not None:
                    metrics.FEED_TO_ALERT_SECONDS.labels(self.decl.name).observe(age)
        for out in outputs:
            if out.after is not None:
                await out.after()

    async def deliver_retrying(self, outputs: Sequence[Emit], stop: asyncio.Event | None = None) -> bool:
        """For source stages: retry transient failures until delivered (True) or ``stop`` (False).
        Raises PoisonInput (and unknown errors) to the caller, which has no input to dead-letter."""
        attempt = 0
        while True:
            try:
                await self.deliver(outputs)
                health.dependency_ok(self.decl.name)  # the broker took them (and Redis, their hooks)
                return True
            except Exception as exc:
                if classify(exc) is not Kind.TRANSIENT:
                    raise
                attempt += 1
                metrics.dependency_error(self.decl.name, exc)
                log.warning("send failed, retrying", extra={"stage": self.decl.name, "error": repr(exc),
                                                            "attempt": attempt})
                if not await self.backoff.sleep(attempt, stop):
                    return False


async def until_started(what: str, start: Callable[[], Awaitable[Any]], backoff: Backoff,
                        stop: asyncio.Event | None = None, stage: str = "") -> bool:
    """Call ``start`` until it returns, waiting out transient failures (a broker or Redis still
    starting; counted against ``stage``'s dependencies when given); other errors are raised. False
    if ``stop`` was set first."""
    attempt = 0
    while stop is None or not stop.is_set():
        try:
            await start()
            return True
        except Exception as exc:
            if classify(exc) is not Kind.TRANSIENT:
                raise
            attempt += 1
            if stage:
                metrics.dependency_error(stage, exc)
            log.warning(f"{what} failed, retrying", extra={"error": repr(exc)[:500], "attempt": attempt})
            await backoff.sleep(attempt, stop)
    return False


def _fetched_at(event: events.Event | None) -> float | None:
    if isinstance(event, events.RawPage | events.Article):
        return event.fetched_at
    if isinstance(event, events.LabelledArticle | events.TaggedArticle | events.LinkedArticle):
        return event.article.fetched_at
    return None


def dead_letter_for(stage: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                    exc: BaseException, kind: Kind, attempts: int, cap: int) -> events.DeadLetter:
    """The dead letter of an input: its head (at most ``cap`` bytes), size and hash, and why."""
    payload = value or b""
    reason = str(exc) or repr(exc)
    return events.DeadLetter(
        id=(key or b"").decode("utf-8", "replace")[:1000], stage=stage, topic=topic, partition=partition,
        offset=offset, error=type(exc).__name__, kind=kind.value, reason=reason[:2000], where=where(exc),
        attempts=attempts, payload=payload[:cap], payload_bytes=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(), truncated=len(payload) > cap,
    )


class Handling:
    """One input between ``StageRunner.begin`` and ``StageRunner.finish``."""

    __slots__ = ("error", "fetched_at", "key", "offset", "outputs", "partition", "result", "sent", "started",
                 "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = topic, partition, offset, key, value
        self.started = time.perf_counter()
        self.outputs: Sequence[Emit] = ()
        self.sent: Sent = []
        self.fetched_at: float | None = None
        self.result: str | None = None  # "ok" or "dead-lettered" once settled
        self.error: Exception | None = None  # what ``prepare`` met, for ``dispatch`` to hand to the policy


class Ahead:
    """Inputs processed ahead: up to ``count`` at once go through ``StageRunner.prepare`` (the stage's work:
    a stage that batches, like the stories stage's encoder, sees them together), and each is then
    dispatched, in input order, one at a time (``StageRunner.dispatch``: its outputs, or the failure policy
    for it alone), and handed to ``ready`` in that order. So outputs leave in input order, and an input is
    committed only once its own outputs are acknowledged, as without it."""

    def __init__(self, runner: StageRunner, count: int,
                 ready: Callable[[tuple[Any, Handling]], Awaitable[None]]) -> None:
        self.runner = runner
        self.ready = ready
        self.queue: asyncio.Queue[tuple[Any, Handling, asyncio.Task[None]]] = asyncio.Queue(maxsize=count)
        self.task = asyncio.create_task(self._dispatch(), name=f"{runner.name}-ahead")

    async def put(self, event: Any, topic: str, partition: int, offset: int, key: bytes | None,
                  value: bytes | None) -> None:
        if self.task.done():  # it only ends by raising: let the caller see it
            self.task.result()
        handling = self.runner.open(topic, partition, offset, key, value)
        await self.queue.put((event, handling, asyncio.create_task(self.runner.prepare(handling))))

    async def _dispatch(self) -> None:
        while True:
            event, handling, prepared = await self.queue.get()
            await prepared
            await self.runner.dispatch(handling)
            await self.ready((event, handling))

    def close(self) -> None:
        self.task.cancel()
        while not self.queue.empty():
            self.queue.get_nowait()[2].cancel()


class StageRunner:
    """Runs one consuming stage: ``handle`` one input to the end (outputs acknowledged, or dead-lettered).

    ``handle`` returns only when the input may be acknowledged; it raises only CancelledError."""

    def __init__(self, stage: Stage, send: Sender, redis: aioredis.Redis, settings: Settings,
                 finder: once.Finder | None = None, once_send: Sender | None = None) -> None:
        if stage.decl.input is None:
            raise TypeError(f"stage {stage.decl.name} has no input topic: run it as a source stage")
        self.stage = stage
        self.name = stage.decl.name
        self.input: TopicSpec = stage.decl.input
        self.settings = settings
        self.outlet = Outlet(stage.decl, send, redis, settings, finder, once_send)
        self.send = send
        self.backoff = Backoff(initial=0.2, cap=settings.retry_cap_seconds)
        self._started = False

    async def ensure_started(self) -> None:
        """Load models and connect before the first input; transient failures are waited out."""
        if not self._started:
            await until_started(f"stage {self.name} start", self.stage.start, self.backoff, stage=self.name)
            self._started = True
            log.info("stage started", extra={"stage": self.name})

    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> str:
        """Process one input: returns "ok" or "dead-lettered"."""
        return await self.finish(await self.begin(topic, partition, offset, key, value))

    async def begin(self, topic: str, partition: int, offset: int, key: bytes | None,
                    value: bytes | None) -> Handling:
        """Process one input and queue its outputs, without waiting for the broker's acknowledgements
        (``finish`` waits): the next input is processed meanwhile. A failure here is handled at once
        by the failure policy."""
        handling = self.open(topic, partition, offset, key, value)
        await self.prepare(handling)
        await self.dispatch(handling)
        return handling

    # ``begin`` in two steps, for a stage whose inputs are processed ahead (``Stage.ahead``): ``prepare``
    # (the stage's work) runs for several inputs at once, ``dispatch`` (their outputs, or the failure
    # policy) runs one input at a time, in input order.
    def open(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> Handling:
        metrics.MESSAGES_CONSUMED.labels(self.name, self.input.suffix).inc()
        return Handling(topic, partition, offset, key, value)

    async def prepare(self, handling: Handling) -> None:
        try:
            handling.outputs, handling.fetched_at = await self._process(handling.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            handling.error = exc

    async def dispatch(self, handling: Handling) -> None:
        exc = handling.error
        if exc is None:
            try:
                handling.sent = await self.outlet.dispatch(handling.outputs)
                return
            except asyncio.CancelledError:
                raise
            except Exception as failure:
                exc = failure
        handling.result = await self._attempts(handling, exc)

    async def finish(self, handling: Handling) -> str:
        """Wait until the input's outputs are acknowledged (or it is dead-lettered): returns "ok" or
        "dead-lettered". A failed acknowledgement sends the input through the failure policy again."""
        if handling.result is None:
            try:
                await self.outlet.confirm(handling.outputs, handling.sent, handling.fetched_at)
                handling.result = "ok"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                handling.result = await self._attempts(handling, exc)
        if handling.result == "ok":
            metrics.PROCESSING_SECONDS.labels(self.name).observe(time.perf_counter() - handling.started)
        return handling.result

    async def _process(self, value: bytes | None) -> tuple[Sequence[Emit], float | None]:
        if value is not None and len(value) > self.settings.max_message_bytes:
            raise PoisonInput(f"input is {len(value)} bytes, over the "
                              f"{self.settings.max_message_bytes}-byte message limit")
        try:
            event = events.decode(self.input.schema, value)
        except events.SchemaError as exc:
            raise PoisonInput(str(exc)) from exc
        return await self.stage.process(event), _fetched_at(event)

    async def _attempts(self, handling: Handling, exc: Exception | None) -> str:
        """The failure policy, from a first failure ``exc``: process and deliver the input again, one at
        a time, until its outputs are acknowledged ("ok") or it is dead-lettered."""
        topic, partition, offset = handling.topic, handling.partition, handling.offset
        transient = unknown = 0
        while True:
            if exc is None:
                try:
                    outputs, fetched_at = await self._process(handling.value)
                    await self.outlet.deliver(outputs, fetched_at)
                    return "ok"
                except asyncio.CancelledError:
                    raise
                except Exception as failure:
                    exc = failure
            kind = classify(exc)
            if kind is Kind.TRANSIENT:
                # Redis or the broker is away: wait and retry the same input; never drop it.
                transient += 1
                metrics.dependency_error(self.name, exc)
                log.warning("transient failure, retrying", extra={
                    "stage": self.name, "error": repr(exc)[:500], "attempt": transient, "topic": topic,
                    "partition": partition, "offset": offset})
                await self.backoff.sleep(transient)
                exc = None
                continue
            if kind is Kind.UNKNOWN and unknown + 1 < self.settings.unknown_error_attempts:
                unknown += 1
                log.warning("unexpected failure, retrying", exc_info=exc, extra={
                    "stage": self.name, "attempt": unknown, "topic": topic, "offset": offset})
                await self.backoff.sleep(unknown)
                exc = None
                continue
            metrics.MESSAGES_FAILED.labels(self.name, self.input.suffix, kind.value).inc()
            await self._dead_letter(topic, partition, offset, handling.key, handling.value, exc, kind, unknown + 1)
            return "dead-lettered"

    async def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                           exc: Exception, kind: Kind, attempts: int) -> None:
        letter = dead_letter_for(self.name, topic, partition, offset, key, value, exc, kind, attempts,
                                 self.settings.dead_letter_payload_bytes)
        log.error("input dead-lettered", extra={
            "stage": self.name, "topic": topic, "partition": partition, "offset": offset, "error": letter.error,
            "kind": letter.kind, "reason": letter.reason[:500], "where": letter.where,
            "bytes": letter.payload_bytes}, exc_info=kind is Kind.UNKNOWN)
        body = events.encode(letter)
        attempt = 0
        while True:  # the dead letter is this input's only output: it is sent before the input is acked
            try:
                ack = await self.send(DEAD_LETTER.name(self.settings.topic_prefix), key[:1000] if key else key, body,
                                      ())
                if ack is not None:
                    await ack
                break
            except asyncio.CancelledError:
                raise
            except Exception as send_exc:
                attempt += 1
                metrics.dependency_error(self.name, send_exc)
                log.warning("dead-letter send failed, retrying", extra={"stage": self.name,
                                                                        "error": repr(send_exc)[:500]})
                await self.backoff.sleep(attempt)
        metrics.DEAD_LETTERED.labels(self.name, self.input.suffix).inc()
        if key and self.input.key == "article id":
            await self._give_up_url(key.decode("utf-8", "replace"), letter.reason)

    async def _give_up_url(self, article: str, reason: str) -> None:
        """The page of a dead-lettered article will not come through: its URL is given up, not left in
        flight (where fetch took it again at every expiry, and the local runner's drain waited on it)."""
        attempt = 0
        while True:
            try:
                await redis_store.give_up_url(self.outlet.redis, article, f"dead-lettered by {self.name}: {reason}",
                                              self.settings.url_ttl_days * 86400)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if classify(exc) is not Kind.TRANSIENT:
                    log.warning("dead-lettered page not marked given up", extra={"stage": self.name,
                                                                                "error": repr(exc)[:500]})
                    return
                attempt += 1
                metrics.dependency_error(self.name, exc)
                await self.backoff.sleep(attempt)


class OnceSender:
    """The producer of outputs with a once-key: one that never writes a record again on its own.

    aiokafka (faust's producer) sends a batch again when its connection drops in the middle of the
    request; without an idempotent producer (the embedded broker has none) the broker may then hold
    the record twice, and a drill that cut every connection for 15 s found one alert twice. With
    kafka-python and ``retries=0`` such a send fails instead, the runtime's failure policy retries
    the input, and the once protocol (``shared.once``) looks at the topic before any second send.
    kafka-python blocks: the producer is made and handed records on a thread; its acknowledgement
    resolves an asyncio future."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self._producer: Any = None

    def _make(self) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(**kafka_clients.client_config(self.settings), client_id=self.client_id, acks="all",
                             retries=0, enable_idempotence=False, max_in_flight_requests_per_connection=1,
                             request_timeout_ms=30000, max_block_ms=10000,
                             max_request_size=self.settings.max_message_bytes + 65536)

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Awaitable[Any]:
        if self._producer is None:
            self._producer = await asyncio.to_thread(self._make)
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, exc: BaseException | None) -> None:
            if acked.done():
                return
            if exc is not None:
                acked.set_exception(exc)
            else:
                acked.set_result(result)

        future = await asyncio.to_thread(self._producer.send, topic, value=value, key=key,
                                         headers=[(name, data) for name, data in headers])
        future.add_callback(lambda metadata: loop.call_soon_threadsafe(settle, metadata, None))
        future.add_errback(lambda exc: loop.call_soon_threadsafe(settle, None, exc))
        return acked

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


# --- faust wiring -----------------------------------------------------------------------------------


def _fetch_wait(ms: int) -> None:
    """Make faust's consumers wait at most ``ms`` for data on a fetch (faust 0.15 hard-codes 1,500 ms).

    A broker answers a fetch as soon as data arrives, or when the wait is over. Apache Kafka does the
    former; tansu (the embedded broker) always waits the whole time, so every hop of the pipeline took
    0.7 s on average and up to 1.5 s (measured: 715-1,466 ms a hop at 1,500, 15-66 ms at 100). The
    price of a short wait is an idle consumer asking more often: ``NEWSWATCH_FETCH_WAIT_MS`` sets it."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(thread, "_newswatch_create", None) or thread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by aiokafka when the consumer starts its fetcher
        return consumer

    thread._newswatch_create = create  # type: ignore[attr-defined]
    thread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def make_app(service: ServiceDecl, settings: Settings, **overrides: Any) -> faust.App:
    """A faust app configured for both Apache Kafka and the embedded tansu broker."""
    conf: dict[str, Any] = {
        **kafka_clients.faust_config(settings),  # brokers, security protocol, SASL, TLS
        "key_serializer": "raw",
        "value_serializer": "raw",
        "web_enabled": False,  # /metrics is served by prometheus-client on its own port
        "topic_allow_declare": False,  # topics are created by the admin step (shared.topics)
        "topic_disable_leader": True,  # no leader topic: we use no faust Tables
        # tansu makes a join wait about half the session timeout: keep both short.
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 2.0,
        "broker_commit_interval": 1.0,
        "broker_commit_every": 100,
        "consumer_auto_offset_reset": "earliest",
        # A raw page may be several MB: fetch and produce up to the message cap.
        "consumer_max_fetch_size": settings.max_message_bytes + 65536,
        "producer_max_request_size": settings.max_message_bytes + 65536,
        "producer_acks": -1,
        "stream_publish_on_commit": False,
        "stream_wait_empty": False,
        "processing_guarantee": "at_least_once",
        "store": "memory://",
        # faust makes a data folder even with nothing to keep (memory store, no tables): not in the working tree
        # (faust makes only the last folder of the path: it must sit in an existing one)
        "datadir": os.path.join(tempfile.gettempdir(), f"faust-{settings.topic_prefix}-{service.name}-{os.getpid()}"),
    }
    conf.update(overrides)
    _fetch_wait(settings.fetch_wait_ms)
    # one folder per process (replicas on one host must not share it), removed when the process ends
    atexit.register(shutil.rmtree, conf["datadir"], ignore_errors=True)
    return faust.App(service.group_id(settings.topic_prefix), **conf)


def beat_seconds(settings: Settings) -> float:
    """How often the event loop reports to the liveness check (a few beats per stall period)."""
    return min(5.0, settings.stall_seconds / 4)


def new_liveness(decl: ServiceDecl, settings: Settings) -> Liveness:
    # A dependency's streak of failures is forgotten once nothing has failed for longer than the
    # longest wait between two retries (twice it, and the degraded period).
    liveness = Liveness(decl.name, settings.stall_seconds, dependency_seconds=settings.dependency_seconds,
                        forget_seconds=max(2 * settings.retry_cap_seconds, 2 * settings.dependency_seconds))
    for stage in decl.stages:
        liveness.add(stage.name, consuming=stage.input is not None)
    return liveness


class _Service:
    """One service process: a faust app with one agent per consuming stage and one task per source stage."""

    def __init__(self, decl: ServiceDecl, stages: Sequence[Stage | SourceStage], settings: Settings,
                 liveness: Liveness | None = None) -> None:
        self.decl = decl
        self.settings = settings
        self.liveness = liveness or new_liveness(decl, settings)
        self.app = make_app(decl, settings)
        self.redis = redis_store.connect(settings)
        self.once_sender = OnceSender(settings, f"{decl.group_id(settings.topic_prefix)}-once")
        self._topics: dict[str, faust.types.TopicT] = {}
        inputs: dict[str, str] = {}  # consuming stage → its input topic
        for stage in stages:
            if stage.decl.input is None:
                self._add_source(stage)  # type: ignore[arg-type]
            else:
                self._add_consumer(stage)  # type: ignore[arg-type]
                inputs[stage.decl.name] = stage.decl.input.name(settings.topic_prefix)

        async def watch() -> None:  # on the event loop: a beat, and what each stage has waiting
            self.liveness.beat()
            for name, topic in inputs.items():
                self.liveness.observe(name, self.partitions(topic))

        self.app.timer(beat_seconds(settings), name="liveness")(watch)

    def partitions(self, topic: str) -> list[tuple[str, int, int | None, int | None]]:
        """(topic, partition, high watermark, committed offset) of each partition of ``topic`` this process
        owns; the high watermark is the one the last fetch response carried (None before the first)."""
        try:
            consumer = self.app.consumer
            assigned = consumer.assignment()
        except Exception:  # the consumer is not started yet
            return []
        # faust's record of the group's committed offsets (set when a partition is assigned, then at each commit)
        committed: Any = getattr(consumer, "_committed_offset", {})
        found = []
        for tp in assigned:
            if tp.topic == topic:
                try:
                    high = consumer.highwater(tp)
                except Exception:
                    high = None
                found.append((tp.topic, tp.partition, high, committed.get(tp)))
        return found

    def _topic(self, name: str) -> faust.types.TopicT:
        if name not in self._topics:
            self._topics[name] = self.app.topic(name)
        return self._topics[name]

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Awaitable[Any]:
        """Queue a message with the producer; the returned future resolves on the broker's acknowledgement."""
        return cast(Awaitable[Any], await self._topic(topic).send(key=key, value=value,
                                                                    headers=list(headers) or None))

    def _add_consumer(self, stage: Stage) -> None:
        runner = StageRunner(stage, self.send, self.redis, self.settings, once_send=self.once_sender.send)
        source = self._topic(runner.input.name(self.settings.topic_prefix))

        liveness, name, in_flight = self.liveness, stage.decl.name, self.settings.in_flight
        ahead_count = max(1, int(getattr(stage, "ahead", 1)))

        async def agent(stream: faust.StreamT) -> None:
            with liveness.watching(name):
                await runner.ensure_started()
                liveness.running(name)
                metrics.UP.labels(stage.decl.name).set(1)
                # Inputs are pipelined: the next is processed while the broker acknowledges the outputs
                # of the previous ones (at most NEWSWATCH_IN_FLIGHT waiting). Each input is acked, in
                # order, only once its outputs are acknowledged: an interrupted input is never committed.
                manual = cast(Any, stream).noack()
                waiting: asyncio.Queue[tuple[Any, Handling]] = asyncio.Queue(maxsize=in_flight)

                async def settle() -> None:
                    while True:
                        event, handling = await waiting.get()
                        await runner.finish(handling)
                        await manual.ack(event)
                        liveness.handled(name, handling.topic, handling.partition, handling.offset)

                settler = asyncio.create_task(settle(), name=f"{name}-settle")
                ahead = Ahead(runner, ahead_count, waiting.put) if ahead_count > 1 else None
                try:
                    async for event in manual.events():
                        message = event.message
                        if ahead is not None:
                            await ahead.put(event, message.topic, message.partition, message.offset, event.key,
                                            event.value)
                        else:
                            handling = await runner.begin(message.topic, message.partition, message.offset,
                                                          event.key, event.value)
                            await waiting.put((event, handling))
                        if settler.done():  # it only ends by raising: let the worker see it
                            settler.result()
                finally:
                    if ahead is not None:
                        ahead.close()
                    settler.cancel()
                    metrics.UP.labels(stage.decl.name).set(0)

        self.app.agent(source, name=f"{stage.decl.name}-agent")(agent)

    def _add_source(self, stage: SourceStage) -> None:
        outlet = Outlet(stage.decl, self.send, self.redis, self.settings, once_send=self.once_sender.send)
        stop = asyncio.Event()

        liveness = self.liveness

        async def task() -> None:
            with liveness.watching(stage.decl.name):
                await until_started(f"stage {stage.decl.name} start", stage.start,
                                    Backoff(initial=0.5, cap=self.settings.retry_cap_seconds), stage=stage.decl.name)
                log.info("stage started", extra={"stage": stage.decl.name})
                liveness.running(stage.decl.name)
                metrics.UP.labels(stage.decl.name).set(1)
                try:
                    await stage.run(outlet, stop)
                finally:
                    metrics.UP.labels(stage.decl.name).set(0)
                    stop.set()

        self.app.task(task)  # cancelled by the worker at shutdown


async def _run_sources(decl: ServiceDecl, stages: Sequence[SourceStage], settings: Settings,
                       liveness: Liveness | None = None) -> None:
    """A service made only of source stages (fetch): a plain producer, no consumer group to join."""
    from aiokafka import AIOKafkaProducer

    live = liveness or new_liveness(decl, settings)

    producer = AIOKafkaProducer(**kafka_clients.client_config(settings), acks="all", linger_ms=5,
                                client_id=decl.group_id(settings.topic_prefix), request_timeout_ms=30000,
                                max_request_size=settings.max_message_bytes + 65536)
    backoff = Backoff(initial=0.5, cap=settings.retry_cap_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def beats() -> None:  # the event loop turns (also while the broker is awaited)
        while True:
            live.beat()
            await asyncio.sleep(beat_seconds(settings))

    beating = asyncio.create_task(beats(), name="liveness")
    await until_started("producer start", producer.start, backoff, stop,
                        stage=stages[0].decl.name if stages else "")
    redis = redis_store.connect(settings)

    async def send(topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Awaitable[Any]:
        return cast(Awaitable[Any], await producer.send(topic, value, key=key, headers=list(headers) or None))

    async def one(stage: SourceStage) -> None:
        with live.watching(stage.decl.name):
            if not await until_started(f"stage {stage.decl.name} start", stage.start, backoff, stop,
                                       stage=stage.decl.name):
                return
            log.info("stage started", extra={"stage": stage.decl.name})
            live.running(stage.decl.name)
            metrics.UP.labels(stage.decl.name).set(1)
            try:
                await stage.run(Outlet(stage.decl, send, redis, settings), stop)
            finally:
                metrics.UP.labels(stage.decl.name).set(0)

    tasks = [asyncio.create_task(one(stage), name=stage.decl.name) for stage in stages]
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopping and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        beating.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await redis.aclose()
        log.info("service stopped", extra={"service": decl.name})


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop's event loop (libuv): a source stage is thousands of concurrent
    polls, each a few socket operations, timers and task switches, which uvloop does in C; on the
    fetch benchmark (5,000 feeds) it sustained 595 polls/s on one core against 463–490 with the
    default loop. faust services keep faust's own loop."""
    return uvloop.run(main)


def run_service(name: str, stages: Sequence[Stage | SourceStage], settings: Settings) -> None:
    """Entry point of a service: metrics server, its declared stages, then one faust worker (a service
    with consuming stages) or a plain producer loop (a service of source stages only).

    Blocks until stopped (SIGINT/SIGTERM stop it cleanly, committing what is done)."""
    decl = pipeline.service(name)
    given = sorted(s.decl.name for s in stages)
    if given != sorted(s.name for s in decl.stages):
        raise RuntimeError(f"service {name} declares stages {[s.name for s in decl.stages]} but was given {given}")
    liveness = new_liveness(decl, settings)
    health.install(liveness)  # dependency failures and successes are told to it where they happen
    port = metrics.serve_metrics(decl, settings.metrics_port, settings.metrics_host, liveness)
    log.info("service starting", extra={"service": name, "metrics_port": port, "stages": [s.name for s in decl.stages],
                                        "inputs": [t.name(settings.topic_prefix) for t in decl.inputs]})
    if not decl.inputs:
        run_loop(_run_sources(decl, cast(Sequence[SourceStage], stages), settings, liveness))
        return
    service = _Service(decl, stages, settings, liveness)
    # consumer lag of the service's group, read in a thread of its own every NEWSWATCH_LAG_SECONDS
    probe = LagProbe(settings, client_id=f"{decl.group_id(settings.topic_prefix)}-lag")
    group = decl.group_id(settings.topic_prefix)
    metrics.LagExporter(decl, settings.topic_prefix, settings.lag_seconds,
                        lambda topics: probe.read(group, topics)).start()
    worker = faust.Worker(service.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                          logging_config=logging_config(name, settings.log_level, settings.log_format))
    worker.execute_from_commandline()
