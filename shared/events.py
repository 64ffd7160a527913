"""Event schemas: the contract between services. One typed, versioned schema per topic.

Every event is a msgspec Struct serialised as JSON. The ``schema`` field carries the schema
name and version (``raw_page/1``); a consumer refuses any other tag with a clear error, so a
breaking change is a new version number, and old and new can coexist on a topic during a
rollout. Bytes fields (the raw page) travel base64-encoded.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, Union

import msgspec


class Event(msgspec.Struct, kw_only=True, tag_field="schema", forbid_unknown_fields=False):
    """Base of every event. ``id`` is the article id: the Kafka key of every topic but alerts."""


class RawPage(Event, tag="raw_page/1"):
    """fetch → clean: one fetched page, with its raw bytes kept so that it can be replayed."""

    id: str  # article id: hash of the normalised URL
    url: str  # URL as listed in the feed
    final_url: str  # URL after redirects
    source: str  # source id from the sources file
    fetched_at: float  # epoch seconds
    http_status: int
    content_type: str  # e.g. "text/html; charset=windows-1256" or "text/plain"
    body: bytes  # raw response body, undecoded
    feed_url: str = ""
    feed_title: str = ""  # the item's title in the feed
    feed_published: str = ""  # ISO 8601, as the feed gave it
    lang_hint: str = ""  # language the source or feed declares
    replay: bool = False  # produced again by `newswatch replay` (clean re-extracts it; it is never replayed again)


class Article(Event, tag="article/1"):
    """clean → langdetect: the article without the page around it."""

    id: str
    url: str
    source: str
    fetched_at: float
    title: str
    text: str  # paragraphs separated by "\n"
    canonical_url: str = ""
    published: str = ""  # ISO 8601, with the UTC offset when the page gives one
    updated: str = ""  # ISO 8601: last update, when the page states one apart from published
    authors: list[str] = msgspec.field(default_factory=list)
    site_name: str = ""
    description: str = ""
    image: str = ""
    encoding: str = ""
    lang_hint: str = ""
    content_hash: str = ""  # hash of the normalised text: exact copies share it
    story_id: str = ""  # the id of the first article of the story; copies share it
    duplicate_of: str = ""  # the article this one copies, if any
    similarity: float = 0.0  # estimated Jaccard similarity to duplicate_of


class LanguageSegment(msgspec.Struct, kw_only=True):
    start: int  # character offsets into Article.text
    end: int
    lang: str
    confidence: float


class Language(msgspec.Struct, kw_only=True):
    lang: str  # ISO 639-1, or "und"
    confidence: float
    script: str  # ISO 15924 name, e.g. "Latn", "Arab", "Cyrl"
    title_lang: str = "und"
    segments: list[LanguageSegment] = msgspec.field(default_factory=list)


class LabelledArticle(Event, tag="labelled_article/1"):
    """langdetect → entities: the article and its language."""

    id: str
    article: Article
    language: Language


class Mention(msgspec.Struct, kw_only=True, array_like=False):
    start: int  # offsets into the field named by ``field`` (title or text)
    end: int
    text: str
    field: str = "text"


class Alternative(msgspec.Struct, kw_only=True):
    """Another entity the mentions may be, when the text does not say which: a place name of the table
    that is also a town elsewhere ("Paris": Paris, France, or Paris, Texas, id ``geonames:4717560``)."""

    id: str
    name: str


class EntityHit(msgspec.Struct, kw_only=True):
    id: str  # canonical id (Wikidata QID where one exists)
    name: str  # canonical (English) name
    type: str  # person, place, organisation, ...
    mentions: list[Mention] = msgspec.field(default_factory=list)
    # "table": found by the name table; "ner": found by NER and linked to the table;
    # "ner-unlinked": found by NER only (id "ner:<type>:<name>", no canonical entity).
    source: str = "table"
    # Unsure: the other entities the mentions may be (best first). Added within tagged_article/1: an
    # optional field with a default, so an event without it decodes as before and a consumer that
    # does not know it ignores it (unknown fields are not forbidden): not a breaking change.
    alternatives: list[Alternative] = msgspec.field(default_factory=list)


class TaggedArticle(Event, tag="tagged_article/1"):
    """entities → alert: the article, its language and its entities."""

    id: str
    article: Article
    language: Language
    entities: list[EntityHit] = msgspec.field(default_factory=list)


class StoryRef(msgspec.Struct, kw_only=True):
    """The story an article belongs to, as the stories stage left it after linking the article."""

    id: str  # story id: the story id clean gave the story's first article (its own id unless a copy)
    outcome: str  # "new" (the article starts the story), "linked" (it joined by score), "copy" (clean's copy)
    score: float = 0.0  # link score against the story (0 for "new")
    first_seen: float = 0.0  # epoch seconds: the story's first article (its fetch time)
    last_seen: float = 0.0
    article_count: int = 1
    languages: list[str] = msgspec.field(default_factory=list)  # every language of the story so far
    sources: list[str] = msgspec.field(default_factory=list)  # every source of the story so far (capped)


class LinkedArticle(Event, tag="linked_article/1"):
    """stories → alert (and users): the tagged article with the story it belongs to."""

    id: str
    article: Article
    language: Language
    story: StoryRef
    entities: list[EntityHit] = msgspec.field(default_factory=list)


class StoryEntity(msgspec.Struct, kw_only=True):
    id: str
    name: str
    type: str
    articles: int  # articles of the story that name it


class Story(Event, tag="story/1"):
    """stories → users: a story's state, published each time it changes (a new article, language or
    source). Key: the story id."""

    id: str  # story id
    first_seen: float
    last_seen: float
    article_count: int
    languages: list[str]
    sources: list[str]
    titles: dict[str, str]  # one title per language: the first article's in that language
    top_entities: list[StoryEntity] = msgspec.field(default_factory=list)
    article_id: str = ""  # the article that changed it
    changes: list[str] = msgspec.field(default_factory=list)  # "new", "article", "language", "source"


class Alert(Event, tag="alert/3"):
    """alert → users: one rule matched one story, a spike rule crossed its threshold, or a story rule saw a
    story cross its counts. Key: the rule id (one rule's alerts stay in order).

    alert/3 adds what is known of the story when the alert is made (``story_languages``,
    ``story_sources``, ``story_articles``) and the ``story`` kind; alert/2 records still decode
    (``AlertV2``), with those fields empty."""

    id: str  # alert id: rule id + story id (a spike: rule id + "spike" + the crossing's time)
    rule_id: str
    rule_name: str
    story_id: str
    article_id: str
    url: str
    title: str
    source: str
    lang: str
    published: str  # the article's publication time (ISO 8601), as the page gave it
    created_at: float  # epoch seconds: when the alert was made
    severity: str = "info"  # info, warning, critical
    matched_at: float = 0.0  # epoch seconds: when the article matched the rule
    matched_terms: list[str] = msgspec.field(default_factory=list)
    matched_entities: list[str] = msgspec.field(default_factory=list)
    snippet: str = ""  # a piece of the text with the matched terms marked «like this»
    kind: str = "match"  # "match" (one story) or "spike" (volume)
    article_count: int = 0  # spike: articles in the window
    sources: list[str] = msgspec.field(default_factory=list)  # spike: their distinct sources
    top_titles: list[str] = msgspec.field(default_factory=list)  # spike: the latest titles
    story_languages: list[str] = msgspec.field(default_factory=list)  # the story's languages so far
    story_sources: list[str] = msgspec.field(default_factory=list)  # the story's sources so far
    story_articles: int = 0  # the story's articles so far


class AlertV2(Alert, tag="alert/2"):
    """An alert written before alert/3 (same fields, the story's fields empty): read, never written."""


class DeadLetter(Event, tag="dead_letter/2"):
    """Any stage → operators: an input the stage could not process, with the reason.

    The payload is capped (``NEWSWATCH_DEAD_LETTER_PAYLOAD_BYTES``) so that a dead letter always fits
    the broker; ``topic``/``partition``/``offset`` point at the whole input, and ``payload_sha256``
    identifies it."""

    id: str  # key of the failed message, or "" when it had none
    stage: str
    topic: str
    partition: int
    offset: int
    error: str  # exception class
    reason: str  # human-readable
    payload: bytes  # the input as received, cut to the cap
    kind: str = "poison"  # "poison", or "unknown" (an unexpected exception, after retries)
    where: str = ""  # file:line in function, where the exception was raised
    attempts: int = 1
    payload_bytes: int = 0  # size of the whole input
    payload_sha256: str = ""
    truncated: bool = False  # payload is only the head of the input
    failed_at: float = msgspec.field(default_factory=time.time)


E = TypeVar("E", bound=Event)

_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder] = {}
# Older versions a reader of a schema still accepts, decoded into the older class (a subclass).
_OLDER: dict[type, tuple[type, ...]] = {Alert: (AlertV2,)}


class SchemaError(ValueError):
    """An input that is not a valid event of the expected schema and version."""


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(kind: type[E], payload: bytes | None) -> E:
    if payload is None:
        raise SchemaError(f"empty message where {kind.__name__} was expected")
    decoder = _decoders.get(kind)
    if decoder is None:
        older = _OLDER.get(kind, ())
        accepted: Any = kind if not older else Union[(kind, *older)]
        decoder = _decoders[kind] = msgspec.json.Decoder(accepted)
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as exc:
        tag = kind.__struct_config__.tag
        raise SchemaError(f"not a valid {tag} event: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise SchemaError(f"not JSON: {exc}") from exc
