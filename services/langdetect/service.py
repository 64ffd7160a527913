"""langdetect's wiring: articles → articles-labelled. The logic is in detect.py."""

from __future__ import annotations

from typing import ClassVar

from services.langdetect.detect import detect_document
from shared import events, pipeline
from shared.runtime import Emit, cpu
from shared.settings import Settings
from shared.topics import LABELLED


def label(article: events.Article) -> events.LabelledArticle:
    found = detect_document(article.text, article.title)
    language = events.Language(
        lang=found.lang, confidence=found.confidence, script=found.script, title_lang=found.title_lang,
        segments=[events.LanguageSegment(start=s.start, end=s.end, lang=s.lang, confidence=s.confidence)
                  for s in found.segments],
    )
    return events.LabelledArticle(id=article.id, article=article, language=language)


class LangdetectStage:
    decl: ClassVar[pipeline.StageDecl] = pipeline.LANGDETECT

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self) -> None:
        # Load both models before the first message, off the event loop (lingua takes seconds).
        await cpu(detect_document, "Warm-up text to load the language models.", "Titre")

    async def process(self, article: events.Article) -> list[Emit]:
        return [Emit(LABELLED, article.id, await cpu(label, article))]


def main() -> None:
    from shared.logs import setup_logging
    from shared.runtime import run_service

    settings = Settings.from_env()
    setup_logging("langdetect", settings.log_level, settings.log_format)
    run_service("langdetect", [LangdetectStage(settings)], settings)
