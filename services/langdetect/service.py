"""langdetect's wiring: articles → articles-labelled. The logic is in detect.py."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from services.langdetect.detect import detect_document
from shared import events
from shared.app import Emit
from shared.settings import Settings
from shared.topics import ARTICLES, LABELLED, TopicSpec


def label(article: events.Article) -> events.LabelledArticle:
    found = detect_document(article.text, article.title)
    language = events.Language(
        lang=found.lang, confidence=found.confidence, script=found.script, title_lang=found.title_lang,
        segments=[events.LanguageSegment(start=s.start, end=s.end, lang=s.lang, confidence=s.confidence)
                  for s in found.segments],
    )
    return events.LabelledArticle(id=article.id, article=article, language=language)


class LangdetectStage:
    name: ClassVar[str] = "langdetect"
    input: ClassVar[TopicSpec] = ARTICLES

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self) -> None:
        # Load both models before the first message, off the event loop (lingua takes seconds).
        await asyncio.to_thread(detect_document, "Warm-up text to load the language models.", "Titre")

    async def process(self, article: events.Article) -> list[Emit]:
        return [Emit(LABELLED, article.id, label(article))]


def main() -> None:
    from shared.app import run_stage
    from shared.logs import setup_logging

    settings = Settings.from_env()
    setup_logging("langdetect", settings.log_level, settings.log_format)
    run_stage(LangdetectStage(settings), settings)
