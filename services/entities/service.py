"""entities' wiring: articles-labelled → articles-tagged. The logic is in kb.py and match.py."""

from __future__ import annotations

from typing import ClassVar

from services.entities.kb import TableSource
from services.entities.match import Matcher
from services.entities.ner import TYPES, Linker, Recogniser, Recognisers
from services.entities.normalise import fold_name
from shared import events
from shared.app import Emit
from shared.settings import Settings
from shared.throttle import Every
from shared.topics import LABELLED, TAGGED, TopicSpec


def tag(matcher: Matcher, title: str, text: str, recogniser: Recogniser | None = None,
        linker: Linker | None = None) -> list[events.EntityHit]:
    """Entities of an article, in order of first mention (title first), each with its mentions.

    The table's matches come first; NER mentions (when a recogniser is given) add what the
    table does not cover, linked to the table where the linker can, typed and unlinked otherwise.
    """
    found: dict[str, events.EntityHit] = {}

    def add(entity_id: str, name: str, kind: str, source: str, mention: events.Mention) -> None:
        entry = found.get(entity_id)
        if entry is None:
            entry = found[entity_id] = events.EntityHit(id=entity_id, name=name, type=kind, source=source)
        entry.mentions.append(mention)

    for field, content in (("title", title), ("text", text)):
        taken: list[tuple[int, int]] = []
        for hit in matcher.find(content):
            add(hit.entity.id, hit.entity.name, hit.entity.type, "table",
                events.Mention(start=hit.start, end=hit.end, text=hit.text, field=field))
            taken.append((hit.start, hit.end))
        if recogniser is None or not content:
            continue
        for mention in recogniser.mentions(content):
            if any(start < mention.end and mention.start < end for start, end in taken):
                continue  # the table found it already
            spot = events.Mention(start=mention.start, end=mention.end, text=mention.text, field=field)
            linked = linker.link(mention) if linker is not None else None
            if linked is not None:
                add(linked.id, linked.name, linked.type, "ner", spot)
            else:
                kind = TYPES.get(mention.label, mention.label.lower())
                add(f"ner:{kind}:{fold_name(mention.text)}", mention.text, kind, "ner-unlinked", spot)
    return list(found.values())


class EntitiesStage:
    name: ClassVar[str] = "entities"
    input: ClassVar[TopicSpec] = LABELLED

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = TableSource([settings.entity_table, settings.watchlist])
        self.matcher = Matcher(self.table.entities)
        self.linker = Linker(self.table.entities)
        self.recognisers = Recognisers(settings.ner_language_list)
        self._reload_check = Every()

    async def start(self) -> None:
        return None

    def _maybe_reload(self) -> None:
        if self._reload_check.due() and self.table.reload():
            self.matcher = Matcher(self.table.entities)
            self.linker = Linker(self.table.entities)

    async def process(self, labelled: events.LabelledArticle) -> list[Emit]:
        self._maybe_reload()
        article = labelled.article
        recogniser = self.recognisers.for_language(labelled.language.lang)
        tagged = events.TaggedArticle(id=labelled.id, article=article, language=labelled.language,
                                      entities=tag(self.matcher, article.title, article.text, recogniser, self.linker))
        return [Emit(TAGGED, article.id, tagged)]


def main() -> None:
    from shared.app import run_stage
    from shared.logs import setup_logging

    settings = Settings.from_env()
    setup_logging("entities", settings.log_level, settings.log_format)
    run_stage(EntitiesStage(settings), settings)
