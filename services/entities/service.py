"""entities' wiring: articles-labelled → articles-tagged. The logic is in kb.py, match.py and ner.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.entities.kb import load_table
from services.entities.match import Matcher, alternatives
from services.entities.ner import TYPES, Linker, Recogniser, Recognisers, mentions_where_needed
from shared import events, pipeline
from shared.runtime import Emit, cpu
from shared.settings import Settings
from shared.text import fold_name
from shared.topics import TAGGED
from shared.watched import Watched


def tag(matcher: Matcher, title: str, text: str, recogniser: Recogniser | None = None,
        linker: Linker | None = None) -> list[events.EntityHit]:
    """Entities of an article, in order of first mention (title first), each with its mentions.

    The table's matches come first; NER mentions (when a recogniser is given) add what the
    table does not cover, linked to the table where the linker can, typed and unlinked otherwise.
    """
    found: dict[str, events.EntityHit] = {}

    def add(entity_id: str, name: str, kind: str, source: str, mention: events.Mention,
            alternatives: list[events.Alternative] | None = None) -> None:
        entry = found.get(entity_id)
        if entry is None:
            entry = found[entity_id] = events.EntityHit(id=entity_id, name=name, type=kind, source=source,
                                                        alternatives=alternatives or [])
        entry.mentions.append(mention)

    # title and text are matched together: a place name that is also a town elsewhere means one place
    # in the whole article
    table_hits = matcher.find_fields([title, text])
    for (field, content), hits in zip((("title", title), ("text", text)), table_hits, strict=True):
        taken: list[tuple[int, int]] = []
        for hit in hits:
            add(hit.entity.id, hit.entity.name, hit.entity.type, "table",
                events.Mention(start=hit.start, end=hit.end, text=hit.text, field=field), alternatives(hit))
            taken.append((hit.start, hit.end))
        if recogniser is None or not content:
            continue
        for mention in mentions_where_needed(recogniser, content, taken):
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


@dataclass(frozen=True)
class Tagger:
    """What the entity table compiles to; rebuilt as a whole when a table file changes."""

    matcher: Matcher
    linker: Linker


def watched_tagger(entity_table: str, watchlist: str) -> Watched[Tagger]:
    paths = [p for p in (entity_table, watchlist) if p]

    def build() -> Tagger:
        entities = load_table(paths)
        return Tagger(Matcher(entities), Linker(entities))

    return Watched("entity table", paths, build)


def tag_labelled(tagger: Tagger, recognisers: Recognisers, labelled: events.LabelledArticle) -> events.TaggedArticle:
    """What the stage does to one article (the CLI's `rules test` calls it too): table, NER of the
    article's language, linker."""
    article = labelled.article
    recogniser = recognisers.for_language(labelled.language.lang)
    return events.TaggedArticle(id=labelled.id, article=article, language=labelled.language,
                                entities=tag(tagger.matcher, article.title, article.text, recogniser, tagger.linker))


class EntitiesStage:
    decl: ClassVar[pipeline.StageDecl] = pipeline.ENTITIES

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tagger = watched_tagger(settings.entity_table, settings.watchlist)
        self.recognisers = Recognisers(settings.ner_language_list)

    async def start(self) -> None:
        # NER models load here, off the event loop, never on the first article of their language.
        for lang in self.recognisers.languages:
            await cpu(self.recognisers.for_language, lang)

    def _tag(self, tagger: Tagger, labelled: events.LabelledArticle) -> events.TaggedArticle:
        return tag_labelled(tagger, self.recognisers, labelled)

    async def process(self, labelled: events.LabelledArticle) -> list[Emit]:
        await self.tagger.refresh()
        tagged = await cpu(self._tag, self.tagger.value, labelled)
        return [Emit(TAGGED, tagged.id, tagged)]


def main() -> None:
    from shared.logs import setup_logging
    from shared.runtime import run_service

    settings = Settings.from_env()
    setup_logging("entities", settings.log_level, settings.log_format)
    run_service("entities", [EntitiesStage(settings)], settings)
