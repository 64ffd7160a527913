"""Spike rules: "at least N articles from M distinct sources matching the query within W minutes",
or "X times the rolling baseline rate", counted in Redis so that the windows survive a restart.

Per rule, a sorted set ``nw:spike:<rule>:seen`` holds the matching articles (member: article id,
source and title; score: the article's fetch time); ``nw:spike:<rule>:above`` marks a crossing:
it is set (SET NX, holding the article that crossed) when the window reaches the threshold and
deleted when a later matching article finds the window below it again. So a spike alerts once per
crossing, and again only after falling below and crossing again, restarts included; the article
that crossed owns the alert (id ``<rule>:spike:<article>``, published once by its once-key).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from services.alert.rules import Match, Spike
from shared import events, redis_store
from shared.runtime import Emit
from shared.topics import ALERTS


@dataclass
class Window:
    count: int
    sources: list[str]
    titles: list[str]
    threshold: float


def crossed(spike: Spike, window: Window) -> bool:
    return window.count >= window.threshold and len(window.sources) >= spike.min_sources


class Spikes:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def window(self, rule_id: str, spike: Spike, now: float) -> Window:
        seen = f"nw:spike:{rule_id}:seen"
        width = spike.window_minutes * 60
        keep = max(width, spike.baseline_hours * 3600)
        await self.redis.zremrangebyscore(seen, "-inf", now - keep - 1)
        await self.redis.expire(seen, int(keep) + 3600)
        members = [json.loads(redis_store.as_str(m)) for m in await self.redis.zrangebyscore(seen, now - width, "+inf")]
        sources = sorted({m["source"] for m in members})
        titles = [m["title"] for m in reversed(members)][:5]
        threshold = float(spike.min_articles)
        if spike.ratio:
            base_width = spike.baseline_hours * 3600 - width
            before = await self.redis.zcount(seen, now - spike.baseline_hours * 3600, f"({now - width}")
            threshold = max(threshold, spike.ratio * before * width / base_width)
        return Window(len(members), sources, titles, threshold)

    async def observe(self, matches: list[Match], tagged: events.TaggedArticle) -> list[Emit]:
        article = tagged.article
        now = article.fetched_at or time.time()
        out: list[Emit] = []
        for match in matches:
            rule, spike = match.rule, match.rule.spike
            if spike is None:
                continue
            member = json.dumps({"id": article.id, "source": article.source, "title": article.title[:200]},
                                sort_keys=True)
            await self.redis.zadd(f"nw:spike:{rule.id}:seen", {member: now})
            window = await self.window(rule.id, spike, now)
            above = f"nw:spike:{rule.id}:above"
            if not crossed(spike, window):
                await self.redis.delete(above)
                continue
            holder = await self.redis.set(above, article.id, nx=True, get=True)
            if holder is not None and redis_store.as_str(holder) != article.id:
                continue  # still above since an earlier crossing
            alert = events.Alert(
                id=f"{rule.id}:spike:{article.id}", rule_id=rule.id, rule_name=rule.name,
                story_id=article.story_id or article.id, article_id=article.id,
                url=article.canonical_url or article.url, title=article.title, source=article.source,
                lang=tagged.language.lang, published=article.published, created_at=time.time(), matched_at=now,
                severity=rule.severity, matched_terms=match.terms, matched_entities=match.entities, kind="spike",
                article_count=window.count, sources=window.sources, top_titles=window.titles,
                snippet=f"{window.count} articles from {len(window.sources)} sources in "
                        f"{spike.window_minutes:g} minutes",
            )
            out.append(Emit(ALERTS, rule.id, alert, once_key=redis_store.alert_sent_key(alert.id),
                            once_value=article.id))
        return out
