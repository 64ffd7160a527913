"""entities' wiring: articles-labelled → articles-tagged. The logic is in kb.py and match.py."""

from __future__ import annotations

from typing import ClassVar

from services.entities.kb import TableSource
from services.entities.match import Matcher
from shared import events
from shared.app import Emit
from shared.settings import Settings
from shared.throttle import Every
from shared.topics import LABELLED, TAGGED, TopicSpec


def tag(matcher: Matcher, title: str, text: str) -> list[events.EntityHit]:
    """Entities of an article, in order of first mention (title first), each with its mentions."""
    found: dict[str, events.EntityHit] = {}
    for field, content in (("title", title), ("text", text)):
        for hit in matcher.find(content):
            entry = found.get(hit.entity.id)
            if entry is None:
                entry = found[hit.entity.id] = events.EntityHit(
                    id=hit.entity.id, name=hit.entity.name, type=hit.entity.type)
            entry.mentions.append(events.Mention(start=hit.start, end=hit.end, text=hit.text, field=field))
    return list(found.values())


class EntitiesStage:
    name: ClassVar[str] = "entities"
    input: ClassVar[TopicSpec] = LABELLED

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = TableSource([settings.entity_table, settings.watchlist])
        self.matcher = Matcher(self.table.entities)
        self._reload_check = Every()

    async def start(self) -> None:
        return None

    def _maybe_reload(self) -> None:
        if self._reload_check.due() and self.table.reload():
            self.matcher = Matcher(self.table.entities)

    async def process(self, labelled: events.LabelledArticle) -> list[Emit]:
        self._maybe_reload()
        article = labelled.article
        tagged = events.TaggedArticle(id=labelled.id, article=article, language=labelled.language,
                                      entities=tag(self.matcher, article.title, article.text))
        return [Emit(TAGGED, article.id, tagged)]


def main() -> None:
    from shared.app import run_stage
    from shared.logs import setup_logging

    settings = Settings.from_env()
    setup_logging("entities", settings.log_level, settings.log_format)
    run_stage(EntitiesStage(settings), settings)
