"""clean's wiring: raw-pages → articles. The logic is in extract.py, textdump.py and dedup.py."""

from __future__ import annotations

from typing import ClassVar

from services.clean.dedup import StoryIndex
from services.clean.extract import ExtractionError, extract_page
from shared import events, metrics, pipeline, redis_store
from shared.failures import PoisonInput
from shared.runtime import Emit, cpu
from shared.settings import Settings
from shared.topics import ARTICLES


def build_article(page: events.RawPage) -> events.Article:
    """The article of a raw page, before story assignment. Raises PoisonInput if there is none."""
    if page.http_status >= 400:
        raise PoisonInput(f"HTTP status {page.http_status} is not a page")
    try:
        extracted = extract_page(page.body, page.content_type, page.final_url or page.url)
    except ExtractionError as exc:
        raise PoisonInput(str(exc)) from exc
    return events.Article(
        id=page.id, url=page.final_url or page.url, source=page.source, fetched_at=page.fetched_at,
        title=extracted.title or page.feed_title, text=extracted.text,
        canonical_url=extracted.canonical_url or page.final_url or page.url,
        published=extracted.published or page.feed_published, updated=extracted.updated,
        authors=extracted.authors,
        site_name=extracted.site_name, description=extracted.description, image=extracted.image,
        encoding=extracted.encoding, lang_hint=page.lang_hint,
    )


class CleanStage:
    decl: ClassVar[pipeline.StageDecl] = pipeline.CLEAN

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index: StoryIndex | None = None

    async def start(self) -> None:
        client = redis_store.connect(self.settings.redis_url)
        await client.ping()
        self.index = StoryIndex(client, self.settings.near_dup_threshold,
                                self.settings.dedup_ttl_days * 86400)

    async def process(self, page: events.RawPage) -> list[Emit]:
        assert self.index is not None
        article = await cpu(build_article, page)
        story = await self.index.assign(article.id, article.text)
        article.content_hash = story.content_hash
        article.story_id = story.story_id
        article.duplicate_of = story.duplicate_of
        article.similarity = story.similarity
        metrics.DUPLICATES.labels(story.kind).inc()
        return [Emit(ARTICLES, article.id, article)]


def main() -> None:
    from shared.logs import setup_logging
    from shared.runtime import run_service

    settings = Settings.from_env()
    setup_logging("clean", settings.log_level, settings.log_format)
    run_service("clean", [CleanStage(settings)], settings)
