"""Webhook delivery of alerts: POST the alert as JSON, retry with backoff, and claim each
(alert, URL) delivery in Redis so that it is POSTed once.

Delivery runs as its own stage on the alerts topic. Per (alert, URL), a Redis key goes
``pending:<token>`` (claimed with SET NX, expiring after the longest time a delivery can take)
→ ``done``. A second consumer of the same alert (a redelivery, a replica after a rebalance)
finds the claim: ``done`` is skipped, ``pending`` is waited for. A claim whose holder died
expires and is taken again. So a receiver gets one POST per alert, except when a process dies
after the receiver answered and before ``done`` was written: then the POST is repeated once,
with the same ``x-newswatch-alert-id`` header, which receivers can use to drop the repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid

import httpx
import redis.asyncio as aioredis

from shared import events, metrics
from shared.failures import PoisonInput, TransientError
from shared.redis_store import as_str, delete_if_holds
from shared.retry import Backoff, parse_retry_after

log = logging.getLogger(__name__)

BACKOFF = Backoff(initial=0.5, cap=10.0)


class WebhookError(PoisonInput):
    """Every attempt failed, or the receiver refused the alert: the alert is dead-lettered."""


def slack_body(alert: events.Alert) -> dict[str, object]:
    """A Slack-compatible message (incoming webhooks; Mattermost and Rocket.Chat take it too)."""
    icon = {"critical": ":rotating_light:", "warning": ":warning:"}.get(alert.severity, ":newspaper:")
    if alert.kind == "spike":
        head = f"{icon} *{alert.rule_name}*: {alert.article_count} articles from {len(alert.sources)} sources"
        detail = "\n".join(f"• {t}" for t in alert.top_titles)
    else:
        head = f"{icon} *{alert.rule_name}*: <{alert.url}|{alert.title or alert.url}>"
        detail = alert.snippet
    matched = ", ".join(alert.matched_entities + alert.matched_terms)
    text = f"{head}\n{detail}" + (f"\nmatched: {matched}" if matched else "")
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}},
                                     {"type": "context", "elements": [{"type": "mrkdwn", "text":
                                      f"{alert.severity} · {alert.source} · {alert.lang} · {alert.id}"}]}]}


def body_of(alert: events.Alert, fmt: str) -> bytes:
    return json.dumps(slack_body(alert), ensure_ascii=False).encode() if fmt == "slack" else events.encode(alert)


async def post_alert(client: httpx.AsyncClient, url: str, alert: events.Alert, attempts: int,
                     fmt: str = "json") -> None:
    """POST the alert; retry on network errors and 5xx/429 with backoff; raise WebhookError at the end.

    Counted once per delivery in ``newswatch_webhook_deliveries_total{outcome}`` (ok, refused, failed)
    and once per POST in ``newswatch_webhook_attempts_total{status_class}``."""
    body = body_of(alert, fmt)
    last = ""
    outcome = "failed"
    for attempt in range(1, attempts + 1):
        wait: float | None = None
        try:
            response = await client.post(url, content=body, headers={"content-type": "application/json",
                                                                      "x-newswatch-alert-id": alert.id})
        except httpx.HTTPError as exc:
            metrics.WEBHOOK_ATTEMPTS.labels(metrics.status_class(None)).inc()
            last = f"{type(exc).__name__}: {exc}"
        else:
            metrics.WEBHOOK_ATTEMPTS.labels(metrics.status_class(response.status_code)).inc()
            if response.status_code < 300:
                metrics.WEBHOOK_DELIVERIES.labels("ok").inc()
                return
            last = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code not in {408, 429}:
                outcome = "refused"  # the receiver refuses this alert: retrying will not help
                break
            wait = parse_retry_after(response.headers.get("retry-after"))
        if attempt < attempts:
            delay = BACKOFF.delay(attempt) if wait is None else min(wait, 60.0)
            await asyncio.sleep(delay)
    metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
    raise WebhookError(f"webhook {url} failed after {attempts} attempt(s): {last}")


def delivered_key(alert_id: str, url: str) -> str:
    return f"nw:alert:delivered:{alert_id}:{hashlib.sha1(url.encode()).hexdigest()[:16]}"


async def deliver_once(redis: aioredis.Redis, client: httpx.AsyncClient, url: str, alert: events.Alert,
                       attempts: int, claim_seconds: float, done_ttl: int, fmt: str = "json") -> bool:
    """POST the alert to ``url`` unless it was delivered already; False when skipped as done."""
    key = delivered_key(alert.id, url)
    token = f"pending:{uuid.uuid4().hex}"
    if not await redis.set(key, token, nx=True, ex=max(1, int(claim_seconds))):
        state = await redis.get(key)
        if state is not None and as_str(state) == "done":
            return False
        # Another consumer is delivering it right now (or died doing so: its claim expires).
        raise TransientError(f"delivery of {alert.id} to {url} is claimed by another consumer")
    try:
        await post_alert(client, url, alert, attempts, fmt)
    except BaseException:
        await delete_if_holds(redis, key, token)
        raise
    await redis.set(key, "done", ex=done_ttl)
    return True
