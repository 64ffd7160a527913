"""Alert rules: loading from YAML (reloaded when the file changes) and matching an article.

A rule is a ``query`` (services/alert/query.py: boolean, phrases, wildcards, NEAR, fields), an
EMM-style weighted list (``weights`` + ``threshold``), or both; the list keys of the first format
(``any``, ``all``, ``none``, ``entities_*``, ``languages``, ``sources``) still work and are converted
to the same query AST (ANDed with ``query`` when both are given). A ``spike`` turns a rule into a
volume rule (services/alert/spike.py). See docs/rules.md for the file format and examples.

``RuleSet`` matches many rules fast: one Aho-Corasick automaton over the literals of the rules'
terms; each rule is indexed by its most selective required clause (a term, any term of an OR, an
entity id or type, a language or source) and kept only if the document meets its other clauses;
the few rules that require nothing (a pure NOT) are checked always; only these candidates are
evaluated. ``RuleSet.match_naive`` is the loop over every rule, for checks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
import msgspec

from services.alert import query as q
from shared import events
from shared.config import ConfigError, convert, read_yaml

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")
WEBHOOK_FORMATS = ("json", "slack")


class RuleError(ConfigError):
    pass


Term = q.Term


@dataclass(frozen=True)
class Webhook:
    url: str
    format: str = "json"  # "json": the alert event; "slack": {"text", "blocks"} for Slack-compatible hooks


@dataclass(frozen=True)
class Spike:
    """``min_articles`` from ``min_sources`` distinct sources within ``window_minutes``, or (with
    ``ratio``) ``ratio`` times the rolling baseline rate of the last ``baseline_hours``."""

    window_minutes: float
    min_articles: int = 1
    min_sources: int = 1
    ratio: float = 0.0
    baseline_hours: float = 0.0


@dataclass(frozen=True)
class StoryRule:
    """A story reaching ``min_languages`` languages and ``min_sources`` sources among its articles of the
    last ``window_minutes`` (a story breaking across languages): once per (rule, story)."""

    window_minutes: float
    min_languages: int = 1
    min_sources: int = 1
    min_articles: int = 1


@dataclass(frozen=True, eq=False)
class Rule:
    id: str
    name: str
    query: q.Node
    weights: tuple[tuple[q.Term, float], ...] = ()
    threshold: float = 0.0
    severity: str = "info"
    webhooks: tuple[Webhook, ...] = ()
    cooldown_minutes: float = 0.0
    spike: Spike | None = None
    story: StoryRule | None = None
    source_query: str = ""
    pred: q.Pred = field(init=False, repr=False)
    # what a match reports: the query's positive terms and entities, then the weighted terms
    probes: tuple[q.Probe, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "probes", (*q.positive_conditions(self.query),
                                            *(t for t, w in self.weights if w > 0)))
        pred = q.compile_node(self.query)
        if self.weights:
            weights, threshold = self.weights, self.threshold
            query_pred = pred

            def pred(doc: q.Doc) -> bool:
                return query_pred(doc) and sum(w for t, w in weights if doc.has(t)) >= threshold
        object.__setattr__(self, "pred", pred)

    def requires(self) -> q.Clauses | None:
        """Clauses a matching document must meet (see ``query.requirements``), most selective first."""
        clauses = list(q.requirements(self.query) or ())
        if self.weights and self.threshold > 0:
            clauses.append(frozenset(k for t, w in self.weights if w > 0 for k in q.required(t) or ()))
        return sorted(clauses, key=q._selectivity) if clauses else None

    def score(self, doc: q.Doc, naive: bool = False) -> float:
        present = (lambda t: bool(q.naive_starts(doc, t))) if naive else doc.has
        return sum(w for t, w in self.weights if present(t))

    def matches(self, doc: q.Doc, naive: bool = False) -> bool:
        """Whether the rule matches (``naive``: by the literal AST evaluation, for checks)."""
        if not naive:
            return self.pred(doc)
        return q.naive_eval(self.query, doc) and (not self.weights or self.score(doc, True) >= self.threshold)


@dataclass
class Match:
    rule: Rule
    terms: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    term_nodes: list[q.Term] = field(default_factory=list)


def found(rule: Rule, doc: q.Doc) -> Match:
    terms, entities = q.found_in(rule.probes, doc)
    return Match(rule, [t.written for t in terms], sorted(entities), terms)


# --- the rules file ------------------------------------------------------------------------

# Text written in a rule: a YAML scalar ("all: [2024]" is the word 2024).
Scalar = str | int | float
# A list of texts, or one text on its own ("any: ceasefire").
Texts = list[Scalar] | str | None


class WebhookDoc(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    format: str = "json"


class SpikeDoc(msgspec.Struct, forbid_unknown_fields=True):
    window_minutes: float
    min_articles: int | None = None
    min_sources: int | None = None
    ratio: float | None = None
    baseline_hours: float | None = None


class StoryRuleDoc(msgspec.Struct, forbid_unknown_fields=True):
    window_minutes: float
    min_languages: int | None = None
    min_sources: int | None = None
    min_articles: int | None = None


Hooks = list[str | WebhookDoc] | str | WebhookDoc | None


class RuleDoc(msgspec.Struct, forbid_unknown_fields=True):
    """One rule as written in the rules file (docs/rules.md). Unknown keys are an error: a typo
    must not silently widen a rule."""

    id: Scalar | None = None
    name: Scalar | None = None
    query: Scalar | None = None
    weights: dict[str, float] | None = None
    threshold: float | None = None
    severity: str | None = None
    cooldown_minutes: float | None = None
    spike: SpikeDoc | None = None
    story: StoryRuleDoc | None = None
    any: Texts = None
    all: Texts = None
    none: Texts = None
    entities_any: Texts = None
    entities_all: Texts = None
    entities_none: Texts = None
    languages: Texts = None
    sources: Texts = None
    webhook: Hooks = None
    webhooks: Hooks = None


class RulesDoc(msgspec.Struct):
    rules: list[RuleDoc]


_KNOWN_KEYS = frozenset(RuleDoc.__struct_fields__)


def _texts(value: Texts) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _terms(value: Texts, where: str, path: str) -> list[q.Term]:
    try:
        return [q.make_term(t) for t in _texts(value)]
    except ValueError as exc:
        raise RuleError(f"{where}: {exc} - at `{path}`") from exc


def _hooks(value: Hooks, where: str, path: str) -> list[Webhook]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        hook = Webhook(item) if isinstance(item, str) else Webhook(item.url, item.format)
        if hook.format not in WEBHOOK_FORMATS:
            raise RuleError(f"{where}: webhook format {hook.format!r}: expected one of {', '.join(WEBHOOK_FORMATS)}"
                            f" - at `{path}`")
        if not hook.url.startswith(("http://", "https://")):
            raise RuleError(f"{where}: webhook {hook.url!r}: expected an http:// or https:// URL - at `{path}`")
        out.append(hook)
    return out


def _list_query(raw: RuleDoc, where: str, n: int) -> list[q.Node]:
    """The list keys of the first rules format, as AST conditions (ANDed)."""
    parts: list[q.Node] = []
    at = f"$.rules[{n}]"
    if langs := _texts(raw.languages):
        parts.append(q.Or(tuple(q.Lang(x.lower()) for x in langs)))
    if sources := _texts(raw.sources):
        parts.append(q.Or(tuple(q.Source(x) for x in sources)))
    parts.extend(q.Entity(x) for x in sorted(set(_texts(raw.entities_all))))
    if ent_any := _texts(raw.entities_any):
        parts.append(q.Or(tuple(q.Entity(x) for x in ent_any)))
    if ent_none := _texts(raw.entities_none):
        parts.append(q.Not(q.Or(tuple(q.Entity(x) for x in ent_none))))
    parts.extend(_terms(raw.all, where, f"{at}.all"))
    if any_terms := _terms(raw.any, where, f"{at}.any"):
        parts.append(q.Or(tuple(any_terms)))
    if none_terms := _terms(raw.none, where, f"{at}.none"):
        parts.append(q.Not(q.Or(tuple(none_terms))))
    return parts


def _spike(raw: SpikeDoc, where: str, n: int) -> Spike:
    at = f"$.rules[{n}].spike"
    if raw.window_minutes <= 0:
        raise RuleError(f"{where}: spike.window_minutes must be > 0 - at `{at}`")
    if raw.ratio is not None:
        if raw.ratio <= 1 or not raw.baseline_hours or raw.baseline_hours * 60 <= raw.window_minutes:
            raise RuleError(f"{where}: a ratio spike needs ratio > 1 and baseline_hours longer than the window "
                            f"- at `{at}`")
        # a quiet baseline makes any article a jump: at least 3 articles (min_articles) in the window
        return Spike(raw.window_minutes, max(1, raw.min_articles or 3), max(1, raw.min_sources or 1), raw.ratio,
                     raw.baseline_hours)
    if raw.min_articles is None or raw.min_articles < 1:
        raise RuleError(f"{where}: spike needs min_articles >= 1 (and optionally min_sources), or ratio and "
                        f"baseline_hours - at `{at}`")
    return Spike(raw.window_minutes, raw.min_articles, max(1, raw.min_sources or 1))


def _story(raw: StoryRuleDoc, where: str, n: int) -> StoryRule:
    at = f"$.rules[{n}].story"
    if raw.window_minutes <= 0:
        raise RuleError(f"{where}: story.window_minutes must be > 0 - at `{at}`")
    counts = {"min_languages": raw.min_languages, "min_sources": raw.min_sources, "min_articles": raw.min_articles}
    for name, value in counts.items():
        if value is not None and value < 1:
            raise RuleError(f"{where}: story.{name} must be >= 1 - at `{at}.{name}`")
    if all(value in (None, 1) for value in counts.values()):
        raise RuleError(f"{where}: a story rule needs min_languages, min_sources or min_articles above 1 "
                        f"(else every story fires) - at `{at}`")
    return StoryRule(raw.window_minutes, raw.min_languages or 1, raw.min_sources or 1, raw.min_articles or 1)


def _rule(raw: RuleDoc, n: int, origin: str) -> Rule:
    rule_id = str(raw.id)
    where = f"{origin}: rule {rule_id}"
    at = f"$.rules[{n}]"
    parts = _list_query(raw, where, n)
    list_trigger = bool(_texts(raw.any) or _texts(raw.all) or _texts(raw.entities_any) or _texts(raw.entities_all))
    text = "" if raw.query is None else str(raw.query)
    if raw.query is not None:
        try:
            parts.append(q.parse(text))
        except q.QueryError as exc:
            raise RuleError(f"{where}: query {exc} - at `{at}.query`") from exc
    weights: list[tuple[q.Term, float]] = []
    for term, weight in (raw.weights or {}).items():
        try:
            weights.append((q.make_term(term), float(weight)))
        except ValueError as exc:
            raise RuleError(f"{where}: {exc} - at `{at}.weights`") from exc
    if weights and raw.threshold is None:
        raise RuleError(f"{where}: weights need a threshold - at `{at}`")
    if raw.threshold is not None and not weights:
        raise RuleError(f"{where}: threshold without weights - at `{at}`")
    if raw.spike is not None and raw.story is not None:
        raise RuleError(f"{where}: a rule is a spike rule or a story rule, not both - at `{at}`")
    if not (list_trigger or raw.query is not None or weights or raw.story is not None):
        raise RuleError(f"{where}: needs at least one of query, weights, any, all, entities_any, entities_all "
                        f"- at `{at}`")
    node: q.Node = q.Everything() if not parts else parts[0] if len(parts) == 1 else q.And(tuple(parts))
    severity = (raw.severity or "info").lower()
    if severity not in SEVERITIES:
        raise RuleError(f"{where}: severity {raw.severity!r}: expected one of {', '.join(SEVERITIES)} - at "
                        f"`{at}.severity`")
    if raw.cooldown_minutes is not None and raw.cooldown_minutes < 0:
        raise RuleError(f"{where}: cooldown_minutes must be >= 0 - at `{at}.cooldown_minutes`")
    return Rule(
        id=rule_id, name=rule_id if raw.name in (None, "") else str(raw.name), query=node,
        weights=tuple(weights), threshold=float(raw.threshold or 0.0), severity=severity,
        webhooks=tuple(_hooks(raw.webhook, where, f"{at}.webhook") + _hooks(raw.webhooks, where, f"{at}.webhooks")),
        cooldown_minutes=float(raw.cooldown_minutes or 0.0),
        spike=_spike(raw.spike, where, n) if raw.spike is not None else None,
        story=_story(raw.story, where, n) if raw.story is not None else None, source_query=text,
    )


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
        if str(raw_rule.id) in seen:
            raise RuleError(f"{origin}: rule {raw_rule.id}: id used twice - at `$.rules[{n}]`")
        seen.add(str(raw_rule.id))
        rules.append(_rule(raw_rule, n, origin))
    return rules


def load_rules(path: str) -> list[Rule]:
    return parse_rules(read_yaml(path, error=RuleError), path)


# --- matching many rules -------------------------------------------------------------------


def _field_key(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def _flat(key: q.Key) -> str:
    """A requirement key as one string: a text literal as itself (it starts with a space), a field
    as "kind:value" (``_field_key``, also what ``candidates`` gives a document's fields), so that
    what a document has is one set of strings."""
    kind, value = key
    return value if kind == "text" else _field_key(kind, value)


class RuleSet:
    """Rules compiled for matching: the pre-filter (automaton, entity and type indexes) and the rules."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self.by_id = {r.id: r for r in self.rules}
        self.automaton: Any = ahocorasick.Automaton()
        # a literal or field key → the rules indexed by it (their most selective clause has it)
        self.indexed: dict[str, list[int]] = {}
        self.always: list[int] = []
        self.others: list[tuple[frozenset[str], ...]] = []  # each rule's clauses but the indexed one
        literals: set[str] = set()
        for i, rule in enumerate(self.rules):
            clauses = rule.requires()
            if clauses is None:
                self.always.append(i)
                self.others.append(())
                continue
            flat = [frozenset(_flat(k) for k in clause) for clause in clauses]
            self.others.append(tuple(flat[1:]))
            for key in flat[0]:
                self.indexed.setdefault(key, []).append(i)
            literals.update(k for clause in flat for k in clause if k.startswith(" "))
        for rule in self.rules:  # every term's literal, so that a term's presence is a set look-up
            for term in [*q.terms_of(rule.query), *(t for t, _ in rule.weights)]:
                if not term.title:
                    literals.add(term.literal)
        self.literals = frozenset(literals)
        for literal in literals:
            self.automaton.add_word(literal, literal)
        self.has_literals = bool(literals)
        if self.has_literals:
            self.automaton.make_automaton()

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, doc: q.Doc) -> list[int]:
        """Indexes of the rules the document could match (every other rule cannot): those whose
        indexed clause it meets, kept if it meets their other clauses too; and the always-checked."""
        found = {literal for _, literal in self.automaton.iter(doc.joined)} if self.has_literals else set()
        doc.known, doc.found = self.literals, found
        fields = [_field_key("entity", eid) for eid in doc.entities]
        fields.extend(_field_key("type", etype) for etype in doc.types)
        fields.extend((_field_key("lang", doc.lang), _field_key("source", doc.source)))
        present = found.union(fields)
        indexed = self.indexed
        hit: set[int] = set()
        for key in present:
            ids = indexed.get(key)
            if ids is not None:
                hit.update(ids)
        others = self.others
        out = self.always.copy()
        for i in hit:
            for clause in others[i]:
                if present.isdisjoint(clause):
                    break
            else:
                out.append(i)
        out.sort()
        return out

    def match(self, doc: q.Doc, spikes: bool = True) -> list[Match]:
        rules = self.rules
        return [found(rules[i], doc) for i in self.candidates(doc)
                if rules[i].pred(doc) and (spikes or rules[i].spike is None)]

    def match_ids(self, doc: q.Doc) -> list[str]:
        rules = self.rules
        return [rules[i].id for i in self.candidates(doc) if rules[i].pred(doc)]

    def match_naive(self, doc: q.Doc, naive_eval: bool = False) -> list[str]:
        """Ids of the matching rules by the loop over every rule (no pre-filter)."""
        return [r.id for r in self.rules if r.matches(doc, naive_eval)]


def doc_of(tagged: events.TaggedArticle) -> q.Doc:
    article = tagged.article
    return q.Doc(article.title, article.text, tagged.language.lang, article.source,
                 [(e.id, e.type) for e in tagged.entities])


def match_article(rules: RuleSet | Sequence[Rule], tagged: events.TaggedArticle, spikes: bool = True) -> list[Match]:
    ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules)
    return ruleset.match(doc_of(tagged), spikes)
