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
from dataclasses import dataclass, field
from typing import Any

import msgspec

from shared import events
from shared.config import ConfigError, convert, read_yaml
from shared.text import folded_words

log = logging.getLogger(__name__)

class RuleError(ConfigError):
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
        words = tuple(folded_words(raw.rstrip("*")))
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


# Text written in a rule: a YAML scalar ("all: [2024]" is the word 2024).
Scalar = str | int | float
# A list of texts, or one text on its own ("any: ceasefire").
Texts = list[Scalar] | str | None


class RuleDoc(msgspec.Struct, forbid_unknown_fields=True):
    """One rule as written in the rules file (docs/rules.md). Unknown keys are an error: a typo
    must not silently widen a rule."""

    id: Scalar | None = None
    name: Scalar | None = None
    any: Texts = None
    all: Texts = None
    none: Texts = None
    entities_any: Texts = None
    entities_all: Texts = None
    entities_none: Texts = None
    languages: Texts = None
    sources: Texts = None
    webhook: Texts = None
    webhooks: Texts = None


class RulesDoc(msgspec.Struct):
    rules: list[RuleDoc]


_KNOWN_KEYS = frozenset(RuleDoc.__struct_fields__)


def _texts(value: Texts) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _terms(value: Texts, where: str, path: str) -> tuple[Term, ...]:
    try:
        return tuple(Term.parse(t) for t in _texts(value))
    except RuleError as exc:
        raise RuleError(f"{where}: {exc} - at `{path}`") from exc


def parse_rules(doc: Any, origin: str = "rules") -> list[Rule]:
    """The rules of a rules document; errors name ``origin``, the rule and the place (``$.rules[2].any``)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{origin}: expected a mapping with a 'rules' list")
    for n, raw in enumerate(doc["rules"]):  # before decoding: a message that lists the known keys
        unknown = set(raw) - _KNOWN_KEYS if isinstance(raw, dict) else set()
        if unknown:
            raise RuleError(f"{origin}: rule {raw.get('id', f'#{n + 1}')}: unknown keys {sorted(map(str, unknown))} "
                            f"(known: {sorted(_KNOWN_KEYS)}) - at `$.rules[{n}]`")
    rules: list[Rule] = []
    seen: set[str] = set()
    for n, raw_rule in enumerate(convert(doc, RulesDoc, origin, error=RuleError).rules):
        if raw_rule.id is None or raw_rule.id == "":
            raise RuleError(f"{origin}: rule #{n + 1} has no id - at `$.rules[{n}]`")
        rule_id = str(raw_rule.id)
        where = f"{origin}: rule {rule_id}"
        if rule_id in seen:
            raise RuleError(f"{where}: id used twice - at `$.rules[{n}]`")
        seen.add(rule_id)
        rule = Rule(
            id=rule_id, name=rule_id if raw_rule.name in (None, "") else str(raw_rule.name),
            any=_terms(raw_rule.any, where, f"$.rules[{n}].any"),
            all=_terms(raw_rule.all, where, f"$.rules[{n}].all"),
            none=_terms(raw_rule.none, where, f"$.rules[{n}].none"),
            entities_any=frozenset(_texts(raw_rule.entities_any)),
            entities_all=frozenset(_texts(raw_rule.entities_all)),
            entities_none=frozenset(_texts(raw_rule.entities_none)),
            languages=frozenset(_texts(raw_rule.languages)),
            sources=frozenset(_texts(raw_rule.sources)),
            webhooks=tuple(_texts(raw_rule.webhook) + _texts(raw_rule.webhooks)),
        )
        if not (rule.any or rule.all or rule.entities_any or rule.entities_all):
            raise RuleError(f"{where}: needs at least one of any, all, entities_any, entities_all "
                            f"- at `$.rules[{n}]`")
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
            self.words.extend(folded_words(part))
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
