"""The rule query language: text → AST (``parse``) → matcher (``compile_node``), plus a naive
evaluator of the AST (``naive_eval``) that the property tests and the benchmark check the matcher
against.

Grammar (docs/rules.md has it with examples)::

    query    = or_expr
    or_expr  = and_expr { "OR" and_expr }
    and_expr = unary { [ "AND" ] unary }              juxtaposition is AND
    unary    = "NOT" unary | near
    near     = primary [ ( "NEAR/" n | "ONEAR/" n ) primary ]
    primary  = term | phrase | "(" or_expr ")" | field
    field    = "title:" ( term | phrase | "(" or_expr ")" )
             | "lang:" code | "source:" id | "entity:" ( id | phrase ) | "type:" entity-type
    term     = word characters, with an optional trailing "*"
    phrase   = '"' words [ "*" ] '"'

Terms are folded like entity names (``shared.text``): case, accents, Arabic letter forms, elision
and hyphens, so ``Haut-Karabakh`` is the phrase "haut karabakh". A document's words are its title's
folded words then its text's; NEAR/n means at most n words between the two operands (in either
order), ONEAR/n the same with the left operand first.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from shared.text import folded_words

FIELDS = ("title", "lang", "source", "entity", "type")
ENTITY_TYPES = ("person", "place", "organisation")
MAX_DEPTH = 64


class QueryError(ValueError):
    """A query that does not parse: ``column`` (1-based) and what was expected there."""

    def __init__(self, column: int, message: str) -> None:
        super().__init__(f"column {column}: {message}")
        self.column = column
        self.message = message


# --- AST -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """A word or phrase (folded words), ``prefix`` when its last word ends with *; ``title`` when it
    must occur in the title."""

    written: str
    words: tuple[str, ...]
    prefix: bool = False
    title: bool = False
    # the pre-filter key: the folded phrase between spaces (open at the end for a prefix)
    literal: str = field(init=False, repr=False, compare=False)
    key: str = field(init=False, repr=False, compare=False)  # what a document caches occurrences by

    def __post_init__(self) -> None:
        literal = " " + " ".join(self.words) + ("" if self.prefix else " ")
        object.__setattr__(self, "literal", literal)
        object.__setattr__(self, "key", ("T" if self.title else "") + literal)

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class Near:
    left: Term | Or  # an Or of Terms only
    right: Term | Or
    distance: int
    ordered: bool


@dataclass(frozen=True)
class Lang:
    code: str


@dataclass(frozen=True)
class Source:
    id: str


@dataclass(frozen=True)
class Entity:
    id: str


@dataclass(frozen=True)
class EntityType:
    type: str


@dataclass(frozen=True)
class Nothing:
    """Matches no document (an empty list in an old-style rule)."""


@dataclass(frozen=True)
class Everything:
    """Matches every document (a rule with only a weights list)."""


Node = Term | And | Or | Not | Near | Lang | Source | Entity | EntityType | Nothing | Everything


def make_term(written: str, title: bool = False) -> Term:
    """A term as written (``négoci*``, ``Haut-Karabakh``); raises ValueError when it has no words."""
    raw = written.strip()
    prefix = raw.endswith("*")
    body = raw.rstrip("*")
    if "*" in body:
        raise ValueError(f"term {written!r}: a wildcard * goes only at the end of a term")
    words = tuple(folded_words(body))
    if not words:
        raise ValueError(f"term {written!r} has no words")
    return Term(raw, words, prefix, title)


# --- parser ----------------------------------------------------------------------------------

_NEAR = re.compile(r"(O?)NEAR/(\d+)$")
_FIELD = re.compile(r"([A-Za-z_]+):(.*)$", re.S)
_LANG = re.compile(r"[a-z]{2,3}$")
_STOP = set('()"') | {" ", "\t", "\n", "\r"}


@dataclass
class _Tok:
    kind: str  # "(", ")", "AND", "OR", "NOT", "NEAR", "PHRASE", "WORD", "FIELD", "END"
    text: str
    column: int
    distance: int = 0
    ordered: bool = False


def _tokens(query: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        col = i + 1
        if ch in "()":
            out.append(_Tok(ch, ch, col))
            i += 1
            continue
        if ch == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise QueryError(col, 'a phrase opened here has no closing "')
            out.append(_Tok("PHRASE", query[i + 1:end], col))
            i = end + 1
            continue
        j = i
        while j < n and query[j] not in _STOP and not query[j].isspace():
            j += 1
        word = query[i:j]
        i = j
        if word in ("AND", "OR", "NOT"):
            out.append(_Tok(word, word, col))
        elif (near := _NEAR.match(word)) is not None:
            distance = int(near.group(2)) if len(near.group(2)) < 6 else 10 ** 6
            out.append(_Tok("NEAR", word, col, distance=distance, ordered=bool(near.group(1))))
        elif word.startswith(("NEAR/", "ONEAR/")):
            raise QueryError(col, f"expected NEAR/n or ONEAR/n with a number of words n, found {word!r}")
        elif (fld := _FIELD.match(word)) is not None:
            name = fld.group(1)
            if name.lower() not in FIELDS:
                raise QueryError(col, f"unknown field {name!r} (fields: {', '.join(f + ':' for f in FIELDS)})")
            out.append(_Tok("FIELD", name.lower(), col))
            if fld.group(2):
                out.append(_Tok("WORD", fld.group(2), col + len(name) + 1))
        else:
            out.append(_Tok("WORD", word, col))
    out.append(_Tok("END", "", n + 1))
    return out


def _describe(tok: _Tok) -> str:
    if tok.kind == "END":
        return "the end of the query"
    if tok.kind == "PHRASE":
        return f'the phrase "{tok.text}"'
    if tok.kind == "FIELD":
        return f"the field {tok.text}:"
    return repr(tok.text)


_EXPECT_OPERAND = "a term, a \"phrase\", NOT, ( or a field (title:, lang:, source:, entity:, type:)"


class _Parser:
    def __init__(self, query: str) -> None:
        self.toks = _tokens(query)
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.pos]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def fail(self, expected: str, tok: _Tok | None = None) -> QueryError:
        tok = tok or self.tok
        return QueryError(tok.column, f"expected {expected}, found {_describe(tok)}")

    def parse(self) -> Node:
        node = self.or_expr(title=False)
        if self.tok.kind != "END":
            if self.tok.kind == ")":
                raise self.fail("an operator or the end of the query (this ) closes nothing)")
            raise self.fail("AND, OR or the end of the query")
        return node

    def or_expr(self, title: bool) -> Node:
        parts = [self.and_expr(title)]
        while self.tok.kind == "OR":
            self.take()
            parts.append(self.and_expr(title))
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self, title: bool) -> Node:
        parts = [self.unary(title)]
        while True:
            if self.tok.kind == "AND":
                self.take()
            elif self.tok.kind not in ("NOT", "(", "PHRASE", "WORD", "FIELD"):
                break
            parts.append(self.unary(title))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self, title: bool) -> Node:
        if self.tok.kind == "NOT":
            self.take()
            self.enter()
            node = Not(self.unary(title))
            self.depth -= 1
            return node
        return self.near(title)

    def near(self, title: bool) -> Node:
        left = self.primary(title)
        if self.tok.kind != "NEAR":
            return left
        op = self.take()
        right = self.primary(title)
        for side, node in (("left", left), ("right", right)):
            if not _span(node):
                raise QueryError(op.column, f"expected terms, phrases or an OR-group of them on the {side} of "
                                            f"{op.text}, found a {_kind(node)}")
        if self.tok.kind == "NEAR":
            raise QueryError(self.tok.column, f"expected AND, OR or the end after {op.text} and its operands, found "
                                              f"{self.tok.text}: combine proximity conditions with AND")
        return Near(left, right, op.distance, op.ordered)  # type: ignore[arg-type]

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(self.tok.column, f"nested more than {MAX_DEPTH} levels deep")

    def group(self, title: bool) -> Node:
        self.take()  # (
        self.enter()
        node = self.or_expr(title)
        self.depth -= 1
        if self.tok.kind != ")":
            raise self.fail("a closing )" if self.tok.kind == "END" else "AND, OR or a closing )")
        self.take()
        return node

    def term(self, tok: _Tok, title: bool) -> Term:
        try:
            return make_term(tok.text, title)
        except ValueError as exc:
            raise QueryError(tok.column, f"expected a term with letters or digits: {exc}") from None

    def primary(self, title: bool) -> Node:
        tok = self.tok
        if tok.kind == "(":
            return self.group(title)
        if tok.kind in ("WORD", "PHRASE"):
            self.take()
            return self.term(tok, title)
        if tok.kind == "FIELD":
            self.take()
            return self.field(tok)
        raise self.fail(_EXPECT_OPERAND)

    def value(self, name: str) -> _Tok:
        tok = self.tok
        if tok.kind not in ("WORD", "PHRASE") or not tok.text.strip():
            raise self.fail(f"a value after {name}:")
        self.take()
        return tok

    def field(self, tok: _Tok) -> Node:
        name = tok.text
        if name == "title":
            nxt = self.tok
            if nxt.kind == "(":
                return self.group(title=True)
            if nxt.kind in ("WORD", "PHRASE"):
                self.take()
                return self.term(nxt, True)
            raise self.fail("a term, a \"phrase\" or ( after title:")
        val = self.value(name)
        text = val.text.strip()
        if name == "lang":
            code = text.lower()
            if not (_LANG.match(code)):
                raise QueryError(val.column, f"expected a language code (ISO 639-1 such as fr) after lang:, "
                                             f"found {text!r}")
            return Lang(code)
        if name == "source":
            return Source(text)
        if name == "entity":
            return Entity(text)
        kind = text.lower()
        if kind not in ENTITY_TYPES:
            raise QueryError(val.column, f"expected {' | '.join(ENTITY_TYPES)} after type:, found {text!r}")
        return EntityType(kind)


def _span(node: Node) -> bool:
    return isinstance(node, Term) or (isinstance(node, Or) and all(_span(c) for c in node.children))


def _kind(node: Node) -> str:
    return {And: "AND-group", Or: "group with more than terms", Not: "NOT", Near: "NEAR"}.get(
        type(node), "field condition")


def parse(query: str) -> Node:
    """The AST of a query; raises QueryError (with the column and what was expected)."""
    if not isinstance(query, str):
        raise QueryError(1, f"expected a query text, found {type(query).__name__}")
    return _Parser(query).parse()


def span_terms(node: Node) -> list[Term]:
    if isinstance(node, Term):
        return [node]
    assert isinstance(node, Or)
    return [t for c in node.children for t in span_terms(c)]


# --- documents -------------------------------------------------------------------------------


class Doc:
    """A document as the matchers see it: folded words (title first), language, source, entities.

    Term presence is a substring test on the joined folded words (or, after ``RuleSet.candidates``,
    a look-up in the literals its automaton found); a term's word positions (for NEAR) are found
    by searching its literal in the joined words, so no per-word index of the document is built."""

    def __init__(self, title: str, text: str, lang: str = "", source: str = "",
                 entities: Iterable[tuple[str, str]] = ()) -> None:
        title_words = folded_words(title)
        self.words = title_words + folded_words(text)
        self.n_title = len(title_words)
        # " w1 w2 … ": every word between single spaces, so a term's literal is a substring
        self.title_joined = " " + " ".join(title_words) + " " if title_words else " "
        self.joined = " " + " ".join(self.words) + " " if self.words else " "
        self.lang = lang
        self.source = source
        self.entities = {eid: etype for eid, etype in entities}
        self.types = set(self.entities.values())
        self._occ: dict[str, list[int]] = {}
        self._has: dict[str, bool] = {}
        # set by RuleSet.candidates: the literals its automaton knows, and those found here
        self.known: AbstractSet[str] = frozenset()
        self.found: AbstractSet[str] = frozenset()

    @property
    def title_words(self) -> list[str]:
        return self.words[:self.n_title]

    def has(self, term: Term) -> bool:
        """Whether ``term`` occurs (in the title only, for a title term)."""
        literal = term.literal
        if not term.title and literal in self.known:
            return literal in self.found
        got = self._has.get(term.key)
        if got is None:
            got = self._has[term.key] = literal in (self.title_joined if term.title else self.joined)
        return got

    def starts(self, term: Term) -> list[int]:
        """Sorted start positions (word indexes) of ``term``, cached per document.

        Each occurrence of the term's literal " w1 w2 " (" w1 w2" for a prefix) starts at a
        space; the word it starts is the number of spaces before that one."""
        cached = self._occ.get(term.key)
        if cached is not None:
            return cached
        text = self.title_joined if term.title else self.joined
        literal = term.literal
        found: list[int] = []
        index = counted = 0
        at = text.find(literal)
        while at >= 0:
            index += text.count(" ", counted, at)
            counted = at
            found.append(index)
            at = text.find(literal, at + 1)
        self._occ[term.key] = found
        return found


def naive_starts(doc: Doc, term: Term) -> list[int]:
    """Start positions of ``term`` by a scan of every word position (the reference)."""
    words, n = doc.words, len(term.words)
    limit = doc.n_title if term.title else len(words)
    out = []
    for p in range(0, limit - n + 1):
        ok = all(words[p + k] == term.words[k] for k in range(n - 1))
        last = words[p + n - 1]
        if ok and (last.startswith(term.words[-1]) if term.prefix else last == term.words[-1]):
            out.append(p)
    return out


def _near_naive(a: list[tuple[int, int]], b: list[tuple[int, int]], n: int, ordered: bool) -> bool:
    for s1, e1 in a:
        for s2, e2 in b:
            if e1 <= s2 and s2 - e1 <= n:
                return True
            if not ordered and e2 <= s1 and s1 - e2 <= n:
                return True
    return False


def naive_eval(node: Node, doc: Doc) -> bool:
    """The AST evaluated literally, with linear scans: the reference the matcher must agree with."""
    if isinstance(node, Term):
        return bool(naive_starts(doc, node))
    if isinstance(node, And):
        return all(naive_eval(c, doc) for c in node.children)
    if isinstance(node, Or):
        return any(naive_eval(c, doc) for c in node.children)
    if isinstance(node, Not):
        return not naive_eval(node.child, doc)
    if isinstance(node, Near):
        def spans(side: Term | Or) -> list[tuple[int, int]]:
            return [(p, p + len(t.words)) for t in span_terms(side) for p in naive_starts(doc, t)]
        return _near_naive(spans(node.left), spans(node.right), node.distance, node.ordered)
    if isinstance(node, Lang):
        return doc.lang == node.code
    if isinstance(node, Source):
        return doc.source == node.id
    if isinstance(node, Entity):
        return node.id in doc.entities
    if isinstance(node, EntityType):
        return node.type in doc.types
    return isinstance(node, Everything)


# --- the matcher: the AST compiled to closures over the document's index ----------------------

Pred = Callable[[Doc], bool]


def _spans_fast(terms: Sequence[Term], doc: Doc) -> list[tuple[int, int]]:
    out = [(p, p + len(t.words)) for t in terms for p in doc.starts(t)]
    if len(terms) > 1:
        out.sort()
    return out


def _near_fast(a: list[tuple[int, int]], b: list[tuple[int, int]], n: int, ordered: bool, longest_b: int) -> bool:
    if not a or not b:
        return False
    b_starts = [s for s, _ in b]
    for s1, e1 in a:
        # b after a: e1 <= s2 <= e1 + n
        i = bisect_left(b_starts, e1)
        if i < len(b_starts) and b_starts[i] <= e1 + n:
            return True
        if not ordered:
            # b before a: e2 <= s1 and s1 - e2 <= n, with e2 = s2 + len <= s2 + longest_b
            lo = bisect_left(b_starts, s1 - n - longest_b)
            hi = bisect_right(b_starts, s1)
            for _s2, e2 in b[lo:hi]:
                if e2 <= s1 and s1 - e2 <= n:
                    return True
    return False


def compile_node(node: Node) -> Pred:
    """A predicate over a Doc, equivalent to ``naive_eval(node, doc)``."""
    if isinstance(node, Term):
        literal = node.literal
        if node.title:
            return lambda doc: doc.has(node)
        return lambda doc: (literal in doc.found) if literal in doc.known else doc.has(node)
    if isinstance(node, And):
        return _chain([compile_node(c) for c in _cheap_first(node.children)], conjunction=True)
    if isinstance(node, Or):
        return _chain([compile_node(c) for c in _cheap_first(node.children)], conjunction=False)
    if isinstance(node, Not):
        inner = compile_node(node.child)
        return lambda doc: not inner(doc)
    if isinstance(node, Near):
        left, right = span_terms(node.left), span_terms(node.right)
        longest = max(len(t.words) for t in right)
        dist, ordered = node.distance, node.ordered
        return lambda doc: _near_fast(_spans_fast(left, doc), _spans_fast(right, doc), dist, ordered, longest)
    if isinstance(node, Lang):
        code = node.code
        return lambda doc: doc.lang == code
    if isinstance(node, Source):
        sid = node.id
        return lambda doc: doc.source == sid
    if isinstance(node, Entity):
        eid = node.id
        return lambda doc: eid in doc.entities
    if isinstance(node, EntityType):
        etype = node.type
        return lambda doc: etype in doc.types
    if isinstance(node, Everything):
        return lambda doc: True
    return lambda doc: False


def _chain(parts: list[Pred], conjunction: bool) -> Pred:
    """``all``/``any`` of the predicates as nested lambdas (no generator per call)."""
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return (lambda doc: a(doc) and b(doc)) if conjunction else (lambda doc: a(doc) or b(doc))
    if len(parts) == 3:
        a, b, c = parts
        return ((lambda doc: a(doc) and b(doc) and c(doc)) if conjunction
                else (lambda doc: a(doc) or b(doc) or c(doc)))
    head, rest = parts[0], _chain(parts[1:], conjunction)
    return (lambda doc: head(doc) and rest(doc)) if conjunction else (lambda doc: head(doc) or rest(doc))


def _cost(node: Node) -> int:
    if isinstance(node, Lang | Source | Entity | EntityType | Nothing | Everything):
        return 0
    if isinstance(node, Term):
        return 1 if len(node.words) == 1 and not node.prefix else 2
    if isinstance(node, Not):
        return _cost(node.child)
    if isinstance(node, Near):
        return 10
    return 1 + sum(_cost(c) for c in node.children)


def _cheap_first(children: Sequence[Node]) -> list[Node]:
    return sorted(children, key=_cost)  # a stable sort; AND/OR do not depend on order


# --- what a match found, and what a rule requires ------------------------------------------


Probe = Term | Entity | EntityType


def positive_conditions(node: Node, negated: bool = False) -> list[Probe]:
    """The terms, entities and entity types of the query's positive (not negated) conditions, in
    query order: what a match reports as found, when the document has them."""
    if isinstance(node, Term | Entity | EntityType):
        return [] if negated else [node]
    if isinstance(node, And | Or):
        return [p for c in node.children for p in positive_conditions(c, negated)]
    if isinstance(node, Not):
        return positive_conditions(node.child, not negated)
    if isinstance(node, Near):
        return [] if negated else [*span_terms(node.left), *span_terms(node.right)]
    return []


def found_in(probes: Sequence[Probe], doc: Doc) -> tuple[list[Term], list[str]]:
    """The distinct terms (by how they are written) and entity ids among ``probes`` that the
    document has, in order."""
    terms: list[Term] = []
    written: set[str] = set()
    entities: list[str] = []
    for probe in probes:
        if isinstance(probe, Term):
            if probe.written not in written and doc.has(probe):
                written.add(probe.written)
                terms.append(probe)
        elif isinstance(probe, Entity):
            if probe.id in doc.entities and probe.id not in entities:
                entities.append(probe.id)
        else:
            entities.extend(e for e, t in doc.entities.items() if t == probe.type and e not in entities)
    return terms, entities


# A requirement: ("text", literal) for a term's folded literal, ("entity", id), ("type", type),
# ("lang", code), ("source", id).
Key = tuple[str, str]
Clauses = list[frozenset[Key]]


def requirements(node: Node) -> Clauses | None:
    """What a matching document must have, as clauses each of which it must meet by having one of
    the clause's keys (None: nothing, the rule is always checked).

    AND needs its children's clauses; OR one clause (a key of each child's best clause); NEAR both
    sides'; NOT needs nothing. lang: and source: are keys too, the least selective ones."""
    if isinstance(node, Term):
        return [frozenset({("text", node.literal)})]
    if isinstance(node, Entity):
        return [frozenset({("entity", node.id)})]
    if isinstance(node, EntityType):
        return [frozenset({("type", node.type)})]
    if isinstance(node, Lang):
        return [frozenset({("lang", node.code)})]
    if isinstance(node, Source):
        return [frozenset({("source", node.id)})]
    if isinstance(node, Nothing):
        return [frozenset()]
    if isinstance(node, Or):
        keys: set[Key] = set()
        for c in node.children:
            sub = requirements(c)
            if sub is None:
                return None
            keys |= min(sub, key=_selectivity)
        return [frozenset(keys)]
    if isinstance(node, And | Near):
        parts = node.children if isinstance(node, And) else (node.left, node.right)
        out: Clauses = []
        for c in parts:
            out.extend(requirements(c) or ())
        return out or None
    return None


def required(node: Node) -> frozenset[Key] | None:
    """The most selective clause of ``requirements``: the keys a rule is indexed by."""
    clauses = requirements(node)
    return min(clauses, key=_selectivity) if clauses else None


def _selectivity(keys: AbstractSet[Key] | None) -> float:
    """Lower is more selective: fewer keys, longer literals (phrases, long words), entities."""
    if keys is None:
        return float("inf")
    score = 0.0
    for kind, value in keys:
        if kind == "entity":
            score += 0.2
        elif kind == "type":
            score += 5.0
        elif kind in ("lang", "source"):
            score += 20.0
        else:
            words = value.split()
            length = len(value.strip())
            score += (0.3 if len(words) > 1 else 1.0) * (1.0 + 8.0 / max(1, length))
            if not value.endswith(" "):
                score += 8.0 / max(1, length)  # a prefix matches more words
    return score


def terms_of(node: Node) -> list[Term]:
    """Every term of the query."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, And | Or):
        return [t for c in node.children for t in terms_of(c)]
    if isinstance(node, Not):
        return terms_of(node.child)
    if isinstance(node, Near):
        return span_terms(node.left) + span_terms(node.right)
    return []
