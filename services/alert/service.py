"""alert's wiring: articles-tagged → (stories, services/stories/) → articles-linked → alerts, and alerts →
webhooks. Logic in rules.py, deliver.py, spike.py and story_rules.py.

Redis keys (all expire after ``NEWSWATCH_DEDUP_TTL_DAYS``):
- ``nw:alert:fired:<rule>:<story>``: the article that claimed the (rule, story) alert (SET NX): every
  other copy of the story stays silent;
- ``nw:alert:sent:<rule>:<story>``: the alert is on the broker (the runtime's once-key, holding the
  article id): a redelivered input does not publish it again;
- ``nw:alert:delivered:<alert>:<url hash>``: a webhook delivery, ``pending:…`` then ``done``.
"""

from __future__ import annotations

import time
from typing import ClassVar

import httpx
import redis.asyncio as aioredis

from services.alert.deliver import deliver_once
from services.alert.rules import Match, Rule, RuleSet, load_rules, match_article
from services.alert.snippet import marked_snippet
from services.alert.spike import Spikes
from services.alert.story_rules import StoryRules
from services.stories.store import RedisStoryStore
from shared import events, metrics, pipeline, redis_store
from shared.runtime import Emit, cpu
from shared.settings import Settings
from shared.topics import ALERTS
from shared.watched import Watched


def make_alert(match: Match, tagged: events.TaggedArticle, now: float | None = None,
               story_ref: events.StoryRef | None = None) -> events.Alert:
    article = tagged.article
    story = story_ref.id if story_ref is not None else article.story_id or article.id
    now = time.time() if now is None else now
    return events.Alert(
        id=f"{match.rule.id}:{story}", rule_id=match.rule.id, rule_name=match.rule.name, story_id=story,
        article_id=article.id, url=article.canonical_url or article.url, title=article.title,
        source=article.source, lang=tagged.language.lang, published=article.published,
        created_at=now, matched_at=now, severity=match.rule.severity, matched_terms=match.terms,
        matched_entities=match.entities, snippet=marked_snippet(article.text, match.term_nodes),
        story_languages=list(story_ref.languages) if story_ref else [tagged.language.lang],
        story_sources=list(story_ref.sources) if story_ref else [article.source],
        story_articles=story_ref.article_count if story_ref else 1,
    )


def tagged_of(linked: events.LinkedArticle) -> events.TaggedArticle:
    """What the rules read of a linked article (its story is the alert's business, not the rules')."""
    return events.TaggedArticle(id=linked.id, article=linked.article, language=linked.language,
                                entities=linked.entities)


def load_rule_set(path: str) -> RuleSet:
    """The rules of ``path``, compiled; their alert series are created at zero."""
    rules = RuleSet(load_rules(path))
    for rule in rules.rules:
        metrics.init_rule(rule.id, rule.severity)
    return rules


def watched_rules(path: str) -> Watched[RuleSet]:
    return Watched("rules", [path], lambda: load_rule_set(path))


class AlertStage:
    """Matches rules; publishes one alert per (rule, story) however many copies of the story arrive."""

    decl: ClassVar[pipeline.StageDecl] = pipeline.ALERT

    def __init__(self, settings: Settings, rules: Watched[RuleSet]) -> None:
        self.settings = settings
        self.rules = rules
        self.redis: aioredis.Redis = redis_store.connect(settings)
        self.spikes = Spikes(self.redis)
        self.story_rules = StoryRules(RedisStoryStore(self.redis, settings), self.redis)

    async def start(self) -> None:
        await self.redis.ping()

    async def _cooldown_free(self, rule: Rule, alert: events.Alert, fired: str, article_id: str) -> bool:
        """Whether the rule may alert for this story now: it takes the rule's cooldown key
        (``nw:alert:cooldown:<rule>``, holding the story, for ``cooldown_minutes``). In another
        story's cooldown, the (rule, story) claim is given back: the story is not alerted."""
        key = f"nw:alert:cooldown:{rule.id}"
        held = await self.redis.set(key, alert.story_id, nx=True, ex=max(1, int(rule.cooldown_minutes * 60)),
                                    get=True)
        if held is None or redis_store.as_str(held) == alert.story_id:
            return True
        await redis_store.delete_if_holds(self.redis, fired, article_id)
        return False

    async def process(self, linked: events.LinkedArticle) -> list[Emit]:
        await self.rules.refresh()
        out: list[Emit] = []
        ttl = self.settings.dedup_ttl_days * 86400
        tagged = tagged_of(linked)
        matches = await cpu(match_article, self.rules.value, tagged)
        for match in matches:
            if match.rule.spike is not None or match.rule.story is not None:
                continue
            alert = make_alert(match, tagged, story_ref=linked.story)
            # The first article of the story to match claims the (rule, story); only that article's
            # input publishes, and only once (the once-key), however often it is redelivered.
            fired = redis_store.alert_claim_key(alert.id)
            holder = await self.redis.set(fired, tagged.id, nx=True, ex=ttl, get=True)
            if holder is not None and redis_store.as_str(holder) != tagged.id:
                metrics.ALERTS_SUPPRESSED.labels(alert.rule_id).inc()
                continue
            if match.rule.cooldown_minutes > 0 and not await self._cooldown_free(match.rule, alert, fired, tagged.id):
                metrics.ALERTS_SUPPRESSED.labels(alert.rule_id).inc()
                continue
            # counted in newswatch_alerts_total by the runtime, once the broker has it
            out.append(Emit(ALERTS, alert.rule_id, alert,
                            once_key=redis_store.alert_sent_key(alert.id), once_value=tagged.id))
        out.extend(await self.spikes.observe([m for m in matches if m.rule.spike is not None], tagged))
        out.extend(await self.story_rules.observe([m for m in matches if m.rule.story is not None], linked, ttl))

        async def done() -> None:
            # The last stage has the article and its alerts are on the broker: fetch never fetches the URL again.
            await redis_store.mark_url_done(self.redis, tagged.id, self.settings.url_ttl_days * 86400)

        if out:
            out[-1].after = done
        else:
            await done()
        return out


class WebhookStage:
    """POSTs each alert to its rule's webhooks, once per (alert, URL)."""

    decl: ClassVar[pipeline.StageDecl] = pipeline.WEBHOOKS

    def __init__(self, settings: Settings, rules: Watched[RuleSet]) -> None:
        self.settings = settings
        self.rules = rules
        self.redis: aioredis.Redis = redis_store.connect(settings)
        self.client: httpx.AsyncClient | None = None
        metrics.init_webhooks()

    async def start(self) -> None:
        await self.redis.ping()
        self.client = httpx.AsyncClient(timeout=self.settings.webhook_timeout, follow_redirects=False)

    async def process(self, alert: events.Alert) -> list[Emit]:
        assert self.client is not None
        await self.rules.refresh()
        rule = self.rules.value.by_id.get(alert.rule_id)
        # the longest a delivery can take: every attempt timing out, plus the waits between them
        claim = self.settings.webhook_retries * (self.settings.webhook_timeout + 10.0) + 30.0
        for hook in rule.webhooks if rule else ():
            await deliver_once(self.redis, self.client, hook.url, alert, self.settings.webhook_retries, claim,
                               self.settings.dedup_ttl_days * 86400, hook.format)
        return []


def main() -> None:
    from shared.logs import setup_logging
    from shared.runtime import run_service

    settings = Settings.from_env()
    setup_logging("alert", settings.log_level, settings.log_format)
    from services.stories.stage import StoriesStage

    rules = watched_rules(settings.rules)
    run_service("alert", [StoriesStage(settings), AlertStage(settings, rules), WebhookStage(settings, rules)],
                settings)
