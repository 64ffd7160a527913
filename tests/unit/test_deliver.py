"""Webhook delivery against a real local receiver and a real Redis: claimed once across concurrent
consumers, retried on 5xx/429 with Retry-After, refused on 4xx, released when it fails, skipped
once done."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.alert import deliver
from services.alert.deliver import WebhookError, deliver_once, delivered_key
from shared import events, metrics
from shared.failures import Kind, TransientError, classify
from shared.retry import Backoff
from tests.webhook_receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def redis_url(redis_port: int) -> str:
    url = f"redis://127.0.0.1:{redis_port}/6"
    redis.Redis.from_url(url).flushdb()
    return url


ALERT = events.Alert(id="karabakh:story-1", rule_id="karabakh", rule_name="K", story_id="story-1", article_id="a",
                     url="http://example.org/a", title="T", source="s", lang="fr", published="", created_at=1.0)


def _deliver(redis_url: str, url: str, consumers: int = 1, attempts: int = 3) -> list[object]:
    async def go() -> list[object]:
        clients = [aioredis.Redis.from_url(redis_url) for _ in range(consumers)]
        async with httpx.AsyncClient(timeout=5) as http:
            results = await asyncio.gather(*(deliver_once(c, http, url, ALERT, attempts, 30, 3600) for c in clients),
                                           return_exceptions=True)
        for c in clients:
            await c.aclose()
        return list(results)

    return asyncio.run(go())


def test_concurrent_consumers_post_once(receiver: Receiver, redis_url: str) -> None:
    receiver.delay = 0.3  # the first POST is still under way when the others look
    results = _deliver(redis_url, receiver.url, consumers=5)
    assert len(receiver.posts) == 1 and receiver.posts[0].alert_id == ALERT.id
    assert results.count(True) == 1
    others = [r for r in results if r is not True]
    assert all(isinstance(r, TransientError) and classify(r) is Kind.TRANSIENT for r in others)  # retried later
    assert _deliver(redis_url, receiver.url) == [False]  # done: a redelivery skips it
    assert len(receiver.posts) == 1


def test_a_receiver_failing_twice_then_answering_gets_one_delivery(receiver: Receiver, redis_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliver, "BACKOFF", Backoff(initial=0.05, cap=0.1))
    receiver.script = [500, 429]
    assert _deliver(redis_url, receiver.url) == [True]
    assert len(receiver.posts) == 3
    assert receiver.posts[2].at - receiver.posts[1].at >= 0.9  # Retry-After: 1 honoured
    assert redis.Redis.from_url(redis_url).get(delivered_key(ALERT.id, receiver.url)) == b"done"


def test_a_refused_alert_is_dead_lettered_and_its_claim_released(receiver: Receiver, redis_url: str) -> None:
    receiver.script = [400]
    [result] = _deliver(redis_url, receiver.url)
    assert isinstance(result, WebhookError) and classify(result) is Kind.POISON and "HTTP 400" in str(result)
    assert len(receiver.posts) == 1  # 4xx: not retried
    assert redis.Redis.from_url(redis_url).get(delivered_key(ALERT.id, receiver.url)) is None
    assert _deliver(redis_url, receiver.url) == [True]  # a replay of the dead letter delivers it


def _counts() -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name == "newswatch_webhook_deliveries_total":
                out[s.labels["outcome"]] = s.value
            elif s.name == "newswatch_webhook_attempts_total":
                out["attempt " + s.labels["status_class"]] = s.value
    return out


def _delta(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in _counts().items() if v - before.get(k, 0.0)}


def test_each_delivery_is_counted_once_by_outcome_and_each_post_by_status_class(
        receiver: Receiver, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliver, "BACKOFF", Backoff(initial=0.01, cap=0.02))
    metrics.init_webhooks()
    assert {"ok", "refused", "failed", "attempt none", "attempt 5xx"} <= set(_counts())  # at zero from the start
    receiver.script = [500, 503, 500]  # every attempt fails: one failed delivery, not retries + a failure
    before = _counts()
    [result] = _deliver(redis_url, receiver.url, attempts=3)
    assert isinstance(result, WebhookError)
    assert _delta(before) == {"failed": 1, "attempt 5xx": 3}
    receiver.script = [500]  # one retry, then delivered
    before = _counts()
    assert _deliver(redis_url, receiver.url) == [True]
    assert _delta(before) == {"ok": 1, "attempt 5xx": 1, "attempt 2xx": 1}
    receiver.script = [404]
    before = _counts()
    redis.Redis.from_url(redis_url).flushdb()
    [result] = _deliver(redis_url, receiver.url)
    assert isinstance(result, WebhookError) and _delta(before) == {"refused": 1, "attempt 4xx": 1}
