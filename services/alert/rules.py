"""Alert rules: loading from YAML (reloaded when the file changes) and matching an article.

A rule matches when every condition it sets holds:
- ``any``: at least one of these terms or phrases; ``all``: every one; ``none``: none of them.
  Terms are matched as whole words on folded text (case, accents, Arabic letter forms), a
  phrase as consecutive words; a trailing ``*`` matches any word that starts with the term.
- ``entities_any`` / ``entities_all`` / ``entities_none``: canonical entity ids.
- ``languages``: the article's language is one of these; ``sources``: its source id is one of these.
See docs/rules.md for the file format and examples.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from services.entities.normalise import fold
from shared import events
from shared.config import ConfigError, read_yaml

log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+", re.UNICODE)


class RuleError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    """A term or phrase, folded into words; ``prefix`` when written with a trailing *."""

    written: str
    words: tuple[str, ...]
    prefix: bool

    @classmethod
    def parse(cls, written: str) -> Term:
        raw = written.strip()
        prefix = raw.endswith("*")
        words = tuple(_WORD.findall(fold(raw.rstrip("*"))[0]))
        if not words:
            raise RuleError(f"term {written!r} has no words")
        return cls(raw, words, prefix)


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    any: tuple[Term, ...] = ()
    all: tuple[Term, ...] = ()
    none: tuple[Term, ...] = ()
    entities_any: frozenset[str] = frozenset()
    entities_all: frozenset[str] = frozenset()
    entities_none: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    webhooks: tuple[str, ...] = ()


@dataclass
class Match:
    rule: Rule
    terms: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)


_KNOWN_KEYS = {"id", "name", "any", "all", "none", "entities_any", "entities_all", "entities_none",
               "languages", "sources", "webhook", "webhooks"}


def _strings(raw: dict[str, Any], key: str, rule_id: str) -> list[str]:
    value = raw.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise RuleError(f"rule {rule_id}: {key!r} must be a list of strings")
    return [str(v) for v in value]


def parse_rules(doc: Any, origin: str = "rules") -> list[Rule]:
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{origin}: expected a mapping with a 'rules' list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for n, raw in enumerate(doc["rules"]):
        if not isinstance(raw, dict) or not raw.get("id"):
            raise RuleError(f"{origin}: rule #{n + 1} has no id")
        rule_id = str(raw["id"])
        unknown = set(raw) - _KNOWN_KEYS
        if unknown:
            raise RuleError(f"rule {rule_id}: unknown keys {sorted(unknown)} (known: {sorted(_KNOWN_KEYS)})")
        if rule_id in seen:
            raise RuleError(f"rule {rule_id}: id used twice")
        seen.add(rule_id)
        rule = Rule(
            id=rule_id, name=str(raw.get("name", rule_id)),
            any=tuple(Term.parse(t) for t in _strings(raw, "any", rule_id)),
            all=tuple(Term.parse(t) for t in _strings(raw, "all", rule_id)),
            none=tuple(Term.parse(t) for t in _strings(raw, "none", rule_id)),
            entities_any=frozenset(_strings(raw, "entities_any", rule_id)),
            entities_all=frozenset(_strings(raw, "entities_all", rule_id)),
            entities_none=frozenset(_strings(raw, "entities_none", rule_id)),
            languages=frozenset(_strings(raw, "languages", rule_id)),
            sources=frozenset(_strings(raw, "sources", rule_id)),
            webhooks=tuple(_strings(raw, "webhook", rule_id) + _strings(raw, "webhooks", rule_id)),
        )
        if not (rule.any or rule.all or rule.entities_any or rule.entities_all):
            raise RuleError(f"rule {rule_id}: needs at least one of any, all, entities_any, entities_all")
        rules.append(rule)
    return rules


def load_rules(path: str) -> list[Rule]:
    try:
        doc = read_yaml(path)
    except ConfigError as exc:
        raise RuleError(str(exc)) from exc
    return parse_rules(doc, path)


class FoldedText:
    """An article's title and text as folded words, for term look-ups."""

    def __init__(self, *parts: str) -> None:
        self.words: list[str] = []
        for part in parts:
            self.words.extend(_WORD.findall(fold(part)[0]))
        self.vocabulary = set(self.words)
        self.joined = " " + " ".join(self.words) + " "

    def has(self, term: Term) -> bool:
        if len(term.words) == 1 and not term.prefix:
            return term.words[0] in self.vocabulary
        phrase = " " + " ".join(term.words)
        if term.prefix:
            return phrase in self.joined
        return phrase + " " in self.joined


def match_rule(rule: Rule, article: events.TaggedArticle, text: FoldedText) -> Match | None:
    if rule.languages and article.language.lang not in rule.languages:
        return None
    if rule.sources and article.article.source not in rule.sources:
        return None
    ids = {e.id for e in article.entities}
    if rule.entities_all and not rule.entities_all <= ids:
        return None
    if rule.entities_any and not rule.entities_any & ids:
        return None
    if rule.entities_none & ids:
        return None
    if any(text.has(t) for t in rule.none):
        return None
    if not all(text.has(t) for t in rule.all):
        return None
    any_hits = [t.written for t in rule.any if text.has(t)]
    if rule.any and not any_hits:
        return None
    entity_hits = sorted((rule.entities_all | rule.entities_any) & ids)
    return Match(rule, [t.written for t in rule.all] + any_hits, entity_hits)


def match_article(rules: list[Rule], article: events.TaggedArticle) -> list[Match]:
    text = FoldedText(article.article.title, article.article.text)
    return [m for rule in rules if (m := match_rule(rule, article, text)) is not None]
