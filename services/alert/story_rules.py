"""Story rules: "a story matching the query reaches N languages and M sources within W minutes" (a story
breaking across languages, as Europe Media Monitor's breaking-news alerts).

The window is read from the story's articles in the story index (``nw:story:m:<story>``, written by
the stories stage before the article reached this stage), so it survives restarts. The alert's id is
``<rule>:story:<story>``; the first article whose story crosses claims it (``nw:alert:fired:…``, SET
NX) and publishes it once (its once-key): one alert per (rule, story), whatever is redelivered or
restarted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from services.alert.rules import Match, StoryRule
from services.stories.store import Member, StoryStore
from shared import events, metrics, redis_store
from shared.runtime import Emit
from shared.topics import ALERTS


@dataclass(frozen=True)
class Window:
    articles: int
    languages: list[str]
    sources: list[str]


def window_of(members: list[Member]) -> Window:
    languages = sorted({m.lang for m in members if m.lang and m.lang != "und"})
    sources = sorted({m.source for m in members if m.source})
    return Window(len({m.article_id for m in members}), languages, sources)


def crossed(rule: StoryRule, window: Window) -> bool:
    return (window.articles >= rule.min_articles and len(window.languages) >= rule.min_languages
            and len(window.sources) >= rule.min_sources)


class StoryRules:
    def __init__(self, store: StoryStore, redis: aioredis.Redis) -> None:
        self.store = store
        self.redis = redis

    async def observe(self, matches: list[Match], linked: events.LinkedArticle, ttl: int) -> list[Emit]:
        out: list[Emit] = []
        article = linked.article
        now = article.fetched_at or time.time()
        for match in matches:
            rule, story_rule = match.rule, match.rule.story
            if story_rule is None:
                continue
            window = window_of(await self.store.members(linked.story.id, now - story_rule.window_minutes * 60))
            if not crossed(story_rule, window):
                continue
            alert_id = f"{rule.id}:story:{linked.story.id}"
            holder = await self.redis.set(redis_store.alert_claim_key(alert_id), linked.id, nx=True, ex=ttl, get=True)
            if holder is not None and redis_store.as_str(holder) != linked.id:
                metrics.ALERTS_SUPPRESSED.labels(rule.id).inc()
                continue
            alert = events.Alert(
                id=alert_id, rule_id=rule.id, rule_name=rule.name, story_id=linked.story.id, article_id=article.id,
                url=article.canonical_url or article.url, title=article.title, source=article.source,
                lang=linked.language.lang, published=article.published, created_at=time.time(), matched_at=now,
                severity=rule.severity, matched_terms=match.terms, matched_entities=match.entities, kind="story",
                article_count=window.articles, sources=window.sources,
                snippet=f"{window.articles} articles in {len(window.languages)} languages "
                        f"({', '.join(window.languages)}) from {len(window.sources)} sources in "
                        f"{story_rule.window_minutes:g} minutes",
                story_languages=list(linked.story.languages), story_sources=list(linked.story.sources),
                story_articles=linked.story.article_count,
            )
            out.append(Emit(ALERTS, rule.id, alert, once_key=redis_store.alert_sent_key(alert.id),
                            once_value=linked.id))
        return out
