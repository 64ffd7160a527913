"""The runner's re-arming of alerts lost with the in-memory broker, against a real Redis."""

from __future__ import annotations

import pytest
import redis

from newswatch.runner import rearm_lost_alerts
from shared import once, redis_store

pytestmark = pytest.mark.integration


def test_only_alerts_sent_and_never_shown_are_rearmed_and_their_pages_forgotten(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/9")  # a database of its own
    client.flushdb()
    # a: sent and shown (by an earlier run); b: sent, shown by this run; c: sent, never shown;
    # d: sent by an older version (value "1"), never shown, its claim names the article;
    # e: never shown, but its article is still in flight (not done): left to expire
    for alert_id, article in (("r1:a", "art-a"), ("r1:b", "art-b"), ("r2:c", "art-c"), ("r2:d", "1"),
                              ("r3:e", "art-e")):
        client.set(redis_store.alert_sent_key(alert_id), article)
    client.set(redis_store.alert_claim_key("r2:d"), "art-d")
    client.set(redis_store.alert_shown_key("r1:a"), "1")
    for article in ("art-a", "art-b", "art-c", "art-d"):
        client.set(redis_store.url_key(article), redis_store.URL_DONE)
    client.set(redis_store.url_key("art-e"), redis_store.URL_INFLIGHT)

    client.hset(once.offsets_key("nw.alerts"), "0", "41")  # noted in the lost broker's log

    rearmed = rearm_lost_alerts(client, shown={"r1:b"})

    assert sorted(rearmed) == ["r2:c", "r2:d", "r3:e"]
    assert client.exists(redis_store.alert_sent_key("r1:a"), redis_store.alert_sent_key("r1:b")) == 2
    assert client.exists(*(redis_store.alert_sent_key(a) for a in ("r2:c", "r2:d", "r3:e"))) == 0
    assert client.get(redis_store.url_key("art-a")) == b"done" and client.get(redis_store.url_key("art-b")) == b"done"
    assert client.exists(redis_store.url_key("art-c"), redis_store.url_key("art-d")) == 0
    assert client.get(redis_store.url_key("art-e")) == b"inflight"
    assert client.get(redis_store.alert_claim_key("r2:d")) == b"art-d"  # the same article claims it again
    assert client.exists(once.offsets_key("nw.alerts")) == 0
    assert rearm_lost_alerts(client, shown={"r1:b"}) == []  # nothing left to re-arm
