"""Find the table's entities in text: Aho-Corasick over folded text, whole words only,
leftmost-longest and non-overlapping, with offsets back into the original text. A place name
that is also a town elsewhere is linked by what the text says around it (places.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ahocorasick

from services.entities.kb import aliases
from services.entities.model import Alias, Entity
from services.entities.places import Places, Resolution
from shared import events
from shared.text import fold, fold_name, is_word_char


@dataclass(frozen=True)
class Hit:
    entity: Entity
    start: int  # offsets into the original text
    end: int
    text: str
    # Unsure: the other place the name may be (the table's place, or its namesake elsewhere).
    alternatives: tuple[Entity, ...] = ()


def alternatives(hit: Hit) -> list[events.Alternative]:
    """A hit's alternatives as the tagged-article event carries them (``EntityHit.alternatives``)."""
    return [events.Alternative(id=e.id, name=e.name) for e in hit.alternatives]


class Matcher:
    def __init__(self, entities: list[Entity], places: bool = True) -> None:
        """``places``: place names that are also towns elsewhere are linked by context (else always
        to the table's place, as the matcher did before)."""
        self.entities = entities
        self.places = Places(entities) if places else None
        self._automaton = ahocorasick.Automaton()
        grouped: dict[str, list[Alias]] = {}
        for alias in aliases(entities):
            grouped.setdefault(alias.folded, []).append(alias)
        for folded, group in grouped.items():
            self._automaton.add_word(folded, (len(folded), tuple(group)))
        self._automaton.make_automaton()
        # Entities that need context: the folded words, one of which must be in the text too.
        self._context = {i: [fold_name(w) for w in e.context if fold_name(w)]
                         for i, e in enumerate(entities) if e.context}

    @staticmethod
    def _accept(alias: Alias, original: str) -> bool:
        if alias.exact:
            return original == alias.written
        return not alias.capital or original[:1].isupper() or not original[:1].isalpha()

    def find(self, text: str) -> list[Hit]:
        return self.find_fields([text])[0]

    def find_fields(self, texts: Sequence[str]) -> list[list[Hit]]:
        """The hits of each of an article's fields (its title, its text): a place name that is also a
        town elsewhere is read on all of them together (one sense per article)."""
        parts = [self._names(text) for text in texts]
        resolved = self._resolve(texts, parts) if self.places is not None else {}
        return [self._hits(text, *part, resolved) for text, part in zip(texts, parts, strict=True)]

    def _names(self, text: str) -> tuple[str, list[int], list[tuple[int, int, Alias]]]:
        """(folded text, its index, the names found: leftmost-longest, non-overlapping)."""
        if not text:
            return "", [], []
        folded, index = fold(text)
        candidates: list[tuple[int, int, Alias]] = []
        for end_idx, (length, group) in self._automaton.iter(folded):
            start = end_idx - length + 1
            if start > 0 and is_word_char(folded[start - 1]):
                continue
            if end_idx + 1 < len(folded) and is_word_char(folded[end_idx + 1]):
                continue
            o_start, o_end = index[start], index[end_idx] + 1
            original = text[o_start:o_end]
            for alias in group:
                if self._accept(alias, original):
                    candidates.append((start, end_idx + 1, alias))
                    break
        # Leftmost-longest, non-overlapping: "Conseil de sécurité de l'ONU" beats "ONU".
        candidates.sort(key=lambda c: (c[0], -(c[1] - c[0])))
        kept: list[tuple[int, int, Alias]] = []
        taken_until = -1
        for start, end, alias in candidates:
            if start < taken_until:
                continue
            taken_until = end
            kept.append((start, end, alias))
        return folded, index, kept

    def _hits(self, text: str, folded: str, index: list[int], kept: list[tuple[int, int, Alias]],
              resolved: dict[int, Resolution]) -> list[Hit]:
        hits: list[Hit] = []
        for start, end, alias in kept:
            # The mention is the name without a joined clitic: وبوتين → بوتين.
            o_start, o_end = index[start + alias.prefix], index[end - 1] + 1
            resolution = resolved.get(alias.entity)
            if resolution is not None and resolution.entity is not self.entities[alias.entity]:
                hits.append(Hit(resolution.entity, o_start, o_end, text[o_start:o_end], resolution.alternatives))
                continue  # the text points to a namesake elsewhere
            context = self._context.get(alias.entity) if alias.needs_context else None
            if context and not any(word in folded for word in context):
                continue  # an ambiguous name with nothing around it that says which thing it is
            alternatives = resolution.alternatives if resolution is not None else ()
            hits.append(Hit(self.entities[alias.entity], o_start, o_end, text[o_start:o_end], alternatives))
        return hits

    def _resolve(self, texts: Sequence[str],
                 parts: list[tuple[str, list[int], list[tuple[int, int, Alias]]]]) -> dict[int, Resolution]:
        """Which place each ambiguous place name is: once per name, on all the fields."""
        assert self.places is not None
        ambiguous = self.places.ambiguous
        spans: dict[int, list[set[tuple[int, int]]]] = {}
        for n, (_folded, _index, kept) in enumerate(parts):
            for start, end, alias in kept:
                if alias.entity in ambiguous:
                    spans.setdefault(alias.entity, [set() for _ in parts])[n].add((start, end))
        if not spans:
            return {}
        clues = [self.places.clues(folded, text, index) if folded else []
                 for text, (folded, index, _kept) in zip(texts, parts, strict=True)]
        found: dict[int, Resolution] = {}
        for entity, mentions in spans.items():
            fields = [(folded, field_mentions, field_clues) for (folded, _, _), field_mentions, field_clues
                      in zip(parts, mentions, clues, strict=True)]
            resolution = self.places.resolve(entity, fields)
            if resolution is not None:
                found[entity] = resolution
        return found
