"""The faust app factory and the stage runner every consuming service uses.

A stage is a plain object with a ``process(event) -> outputs`` coroutine; this module owns
everything around it, once: decoding the input schema, metrics, retrying transient failures
(Redis or broker down: the partition waits, nothing is dropped), sending poison inputs to the
dead-letter topic with the reason, and producing outputs before the offset is committed.

Delivery is at-least-once. faust acknowledges an event only when the agent asks for the next
one, i.e. after ``process`` returned and its outputs were handed to the producer, and its
consumer flushes the producer before every offset commit (``Consumer._commit_offsets``), so an
offset is never committed for an input whose outputs are not on the broker. Downstream stages
are idempotent (article-id and story-id keys in Redis), so redelivery after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import faust

from shared import events, metrics
from shared.logs import logging_config
from shared.redis_store import TRANSIENT_ERRORS
from shared.settings import Settings
from shared.topics import DEAD_LETTER, TopicSpec

log = logging.getLogger(__name__)


class PoisonInput(ValueError):
    """An input that can never be processed (bad schema, unusable content): dead-letter it."""


class Emit:
    """One output: an event for a topic, under a key."""

    __slots__ = ("event", "key", "topic")

    def __init__(self, topic: TopicSpec, key: str, event: events.Event) -> None:
        self.topic = topic
        self.key = key
        self.event = event


class Stage(Protocol):
    name: ClassVar[str]
    input: ClassVar[TopicSpec]

    async def start(self) -> None: ...

    async def process(self, event: Any) -> Sequence[Emit]: ...


def make_app(service: str, settings: Settings, **overrides: Any) -> faust.App:
    """A faust app configured for both Apache Kafka and the embedded tansu broker."""
    conf: dict[str, Any] = {
        "broker": [f"kafka://{server}" for server in settings.bootstrap_servers],
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
        "producer_acks": -1,
        "stream_publish_on_commit": False,
        "stream_wait_empty": False,
        "processing_guarantee": "at_least_once",
        "store": "memory://",
        # faust makes a data folder even with nothing to keep (memory store, no tables): not in the working tree
        # (faust makes only the last folder of the path: it must sit in an existing one)
        "datadir": os.path.join(tempfile.gettempdir(), f"faust-{settings.topic_prefix}-{service}"),
    }
    conf.update(overrides)
    return faust.App(f"{settings.topic_prefix}-{service}", **conf)


def article_fetched_at(event: events.Event) -> float | None:
    if isinstance(event, events.RawPage | events.Article):
        return event.fetched_at
    if isinstance(event, events.LabelledArticle | events.TaggedArticle):
        return event.article.fetched_at
    return None


class StageRunner:
    """Runs one stage inside a faust agent."""

    def __init__(self, stage: Stage, app: faust.App, settings: Settings) -> None:
        self.stage = stage
        self.app = app
        self.settings = settings
        self.source = app.topic(stage.input.name(settings.topic_prefix))
        self.dead_letter = app.topic(DEAD_LETTER.name(settings.topic_prefix))
        self._topics: dict[str, faust.types.TopicT] = {}
        self._started = False
        app.agent(self.source, name=f"{stage.name}-agent")(self._agent)

    def _topic(self, spec: TopicSpec) -> faust.types.TopicT:
        name = spec.name(self.settings.topic_prefix)
        if name not in self._topics:
            self._topics[name] = self.app.topic(name)
        return self._topics[name]

    async def _agent(self, stream: faust.StreamT) -> None:
        await self._ensure_started()
        async for event in stream.events():
            await self.handle(event.message.topic, event.message.partition, event.message.offset,
                              event.key, event.value)

    async def _ensure_started(self) -> None:
        if self._started:
            return
        delay = 0.5
        while True:
            try:
                await self.stage.start()
                break
            except TRANSIENT_ERRORS as exc:
                log.warning("stage start failed, retrying", extra={"error": repr(exc), "delay": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._started = True
        log.info("stage started", extra={"stage": self.stage.name})

    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes | None) -> None:
        stage = self.stage.name
        metrics.MESSAGES_IN.labels(stage).inc()
        started = time.perf_counter()
        delay = 0.2
        while True:
            try:
                try:
                    event = events.decode(self.stage.input.schema, value)
                except events.SchemaError as exc:
                    raise PoisonInput(str(exc)) from exc
                outputs = await self.stage.process(event)
                break
            except TRANSIENT_ERRORS as exc:
                # Redis or the broker is away: wait and retry the same input; never drop it.
                metrics.RETRIES.labels(stage).inc()
                log.warning("transient failure, retrying", extra={"error": repr(exc), "delay": delay,
                                                                   "topic": topic, "offset": offset})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # every other failure is this input's fault: dead-letter it
                metrics.MESSAGES_FAILED.labels(stage, type(exc).__name__).inc()
                await self._dead_letter(topic, partition, offset, key, value, exc)
                return
        for out in outputs:
            await self._topic(out.topic).send(key=out.key.encode(), value=events.encode(out.event))
            metrics.MESSAGES_OUT.labels(stage, out.topic.suffix).inc()
            fetched_at = article_fetched_at(out.event)
            if fetched_at:
                metrics.ARTICLE_AGE_SECONDS.labels(stage).observe(max(0.0, time.time() - fetched_at))
        metrics.PROCESSING_SECONDS.labels(stage).observe(time.perf_counter() - started)

    async def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None,
                           value: bytes | None, exc: Exception) -> None:
        reason = str(exc) or repr(exc)
        log.error("input dead-lettered", extra={"topic": topic, "partition": partition, "offset": offset,
                                                "error": type(exc).__name__, "reason": reason[:500]},
                  exc_info=not isinstance(exc, PoisonInput))
        letter = events.DeadLetter(
            id=(key or b"").decode("utf-8", "replace"), stage=self.stage.name, topic=topic,
            partition=partition, offset=offset, error=type(exc).__name__, reason=reason[:2000],
            payload=value or b"",
        )
        await self.dead_letter.send(key=key, value=events.encode(letter))
        metrics.DEAD_LETTERED.labels(self.stage.name).inc()


def run_stages(service: str, stages: Sequence[Stage], settings: Settings) -> None:
    """Entry point of a consuming service: metrics server, one agent per stage, one faust worker.

    Blocks until the worker is stopped (SIGINT/SIGTERM stop it cleanly, committing what is done).
    """
    app = make_app(service, settings)
    for stage in stages:
        StageRunner(stage, app, settings)
    port = metrics.serve_metrics(service, settings.metrics_port, settings.metrics_host)
    log.info("service starting", extra={"service": service, "metrics_port": port,
                                        "inputs": [s.input.name(settings.topic_prefix) for s in stages]})
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                          logging_config=logging_config(service, settings.log_level, settings.log_format))
    worker.execute_from_commandline()


def run_stage(stage: Stage, settings: Settings) -> None:
    run_stages(stage.name, [stage], settings)
