"""Webhook delivery of alerts: POST the alert as JSON, retry, and remember what was delivered.

Delivery runs as its own agent on the alerts topic, so it is at-least-once like every other
hop: a delivery that keeps failing goes to the dead-letter topic with the reason, and a Redis
key per (alert, URL) keeps a redelivered alert from being POSTed twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import httpx

from shared import events, metrics

log = logging.getLogger(__name__)


class WebhookError(RuntimeError):
    pass


async def post_alert(client: httpx.AsyncClient, url: str, alert: events.Alert, attempts: int) -> None:
    """POST the alert; retry on network errors and 5xx/429 with backoff; raise WebhookError at the end."""
    body = events.encode(alert)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            response = await client.post(url, content=body, headers={"content-type": "application/json",
                                                                      "x-newswatch-alert-id": alert.id})
            if response.status_code < 300:
                metrics.WEBHOOK_DELIVERIES.labels("ok").inc()
                return
            last = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the receiver refuses this alert: retrying will not help
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        metrics.WEBHOOK_DELIVERIES.labels("retry").inc()
        if attempt < attempts:
            await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 10.0))
    metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
    raise WebhookError(f"webhook {url} failed after {attempts} attempt(s): {last}")


def delivered_key(alert_id: str, url: str) -> str:
    return f"nw:alert:delivered:{alert_id}:{hashlib.sha1(url.encode()).hexdigest()[:16]}"
