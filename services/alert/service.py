"""alert's wiring: articles-tagged → alerts, and alerts → webhooks. Logic in rules.py, deliver.py."""

from __future__ import annotations

import time
from typing import ClassVar

import httpx
import redis.asyncio as aioredis

from services.alert.deliver import delivered_key, post_alert
from services.alert.rules import Match, RuleSource, match_article
from shared import events, metrics, redis_store
from shared.app import Emit
from shared.settings import Settings
from shared.throttle import Every
from shared.topics import ALERTS, TAGGED, TopicSpec


def make_alert(match: Match, tagged: events.TaggedArticle) -> events.Alert:
    article = tagged.article
    story = article.story_id or article.id
    return events.Alert(
        id=f"{match.rule.id}:{story}", rule_id=match.rule.id, rule_name=match.rule.name, story_id=story,
        article_id=article.id, url=article.canonical_url or article.url, title=article.title,
        source=article.source, lang=tagged.language.lang, published=article.published,
        created_at=time.time(), matched_terms=match.terms, matched_entities=match.entities,
        snippet=article.text[:280],
    )


class _Reloading:
    """Shared by both agents: the rules file, checked for changes every few seconds."""

    def __init__(self, path: str) -> None:
        self.source = RuleSource(path)
        self._check = Every()

    def current(self) -> RuleSource:
        if self._check.due():
            self.source.reload()
        return self.source


class AlertStage:
    """Matches rules; publishes one alert per (rule, story) however many copies of the story arrive."""

    name: ClassVar[str] = "alert"
    input: ClassVar[TopicSpec] = TAGGED

    def __init__(self, settings: Settings, rules: _Reloading) -> None:
        self.settings = settings
        self.rules = rules
        self.redis: aioredis.Redis | None = None

    async def start(self) -> None:
        self.redis = redis_store.connect(self.settings.redis_url)
        await self.redis.ping()

    async def process(self, tagged: events.TaggedArticle) -> list[Emit]:
        assert self.redis is not None
        out: list[Emit] = []
        ttl = self.settings.dedup_ttl_days * 86400
        for match in match_article(self.rules.current().rules, tagged):
            alert = make_alert(match, tagged)
            # The first article of the story to match claims the key; its redelivery (same
            # article id) publishes again under the same alert id, every other copy is silent.
            holder = await self.redis.set(f"nw:alert:fired:{alert.rule_id}:{alert.story_id}",
                                          tagged.id, nx=True, ex=ttl, get=True)
            if holder is None or redis_store.as_str(holder) == tagged.id:
                out.append(Emit(ALERTS, alert.rule_id, alert))
                metrics.ALERTS_FIRED.labels(alert.rule_id).inc()
            else:
                metrics.ALERTS_SUPPRESSED.labels(alert.rule_id).inc()
        return out


class WebhookStage:
    """POSTs each alert to its rule's webhooks."""

    name: ClassVar[str] = "alert-webhooks"
    input: ClassVar[TopicSpec] = ALERTS

    def __init__(self, settings: Settings, rules: _Reloading) -> None:
        self.settings = settings
        self.rules = rules
        self.redis: aioredis.Redis | None = None
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.redis = redis_store.connect(self.settings.redis_url)
        await self.redis.ping()
        self.client = httpx.AsyncClient(timeout=self.settings.webhook_timeout, follow_redirects=False)

    async def process(self, alert: events.Alert) -> list[Emit]:
        assert self.redis is not None and self.client is not None
        rule = self.rules.current().by_id(alert.rule_id)
        for url in rule.webhooks if rule else ():
            key = delivered_key(alert.id, url)
            if await self.redis.exists(key):
                continue
            await post_alert(self.client, url, alert, self.settings.webhook_retries)
            await self.redis.set(key, "1", ex=self.settings.dedup_ttl_days * 86400)
        return []


def main() -> None:
    from shared.app import run_stages
    from shared.logs import setup_logging

    settings = Settings.from_env()
    setup_logging("alert", settings.log_level, settings.log_format)
    rules = _Reloading(settings.rules)
    run_stages("alert", [AlertStage(settings, rules), WebhookStage(settings, rules)], settings)
