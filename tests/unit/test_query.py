"""The rule query language: parsing, errors, semantics; property tests (hypothesis) that any input
parses or fails with a QueryError, and that the matcher (index + pre-filter) agrees with the naive
evaluation of the AST."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.alert import query as q
from services.alert.rules import RuleError, RuleSet, parse_rules


def doc(text: str, title: str = "", lang: str = "fr", source: str = "s",
        entities: tuple[tuple[str, str], ...] = ()) -> q.Doc:
    return q.Doc(title, text, lang, source, entities)


def hit(query: str, d: q.Doc) -> bool:
    node = q.parse(query)
    fast, naive = q.compile_node(node)(d), q.naive_eval(node, d)
    assert fast == naive, query
    return fast


def test_boolean_precedence_and_juxtaposition() -> None:
    d = doc("Un cessez-le-feu au HAUT-KARABAKH, après des négociations.")
    assert hit("Haut-Karabakh", d) and hit('"haut karabakh"', d) and hit("négoci*", d)
    assert hit("cessez-le-feu karabakh", d) and hit("cessez-le-feu AND karabakh", d)
    assert not hit("karabakh football", d) and hit("karabakh OR football", d)
    assert hit("football OR trêve OR karabakh NOT match", d)  # AND binds tighter than OR
    assert not hit("karabakh NOT négociations", d) and hit("NOT football", d)
    assert hit("(football OR trêve) OR (négoci* AND feu)", d)
    assert not hit('"karabakh cessez"', d)  # a phrase is consecutive words
    assert hit("and", doc("this and that"))  # lower-case and, or, not are words


def test_proximity_on_terms_phrases_and_groups() -> None:
    d = doc("Le président Poutine a reçu mardi Nikol Pachinian au Kremlin.")
    assert hit("poutine NEAR/4 pachinian", d) and not hit("poutine NEAR/3 pachinian", d)
    assert hit("pachinian NEAR/4 poutine", d) and not hit("pachinian ONEAR/4 poutine", d)
    assert hit('poutine ONEAR/3 "nikol pachinian"', d)
    assert hit("(putin OR poutine) NEAR/1 (reçu OR président)", d)
    assert hit("président ONEAR/0 poutine", d) and not hit("poutine ONEAR/0 président", d)


def test_fields() -> None:
    d = doc("Les troupes sont entrées dans la ville.", title="Offensive au Karabakh", lang="fr", source="lemonde",
            entities=(("Q7747", "person"), ("nw:place:nagorno-karabakh", "place")))
    assert hit("title:karabakh", d) and not hit("title:troupes", d) and hit("title:(offensive AND karabakh)", d)
    assert hit("lang:fr source:lemonde", d) and not hit("lang:en", d)
    assert hit('entity:Q7747 entity:"nw:place:nagorno-karabakh"', d) and not hit("entity:Q30", d)
    assert hit("type:person", d) and not hit("type:organisation", d)


def test_terms_fold_like_entity_names() -> None:
    assert hit("Haut-Karabakh", doc("HAUT KARABAKH"))
    assert hit("l'armée", doc("L’ARMÉE"))
    assert hit("الأسد", doc("الاسد")) and hit("قرة باغ", doc("قره باغ"))  # Arabic letter forms fold


@pytest.mark.parametrize(("text", "column", "message"), [
    ("", 1, "expected a term"),
    ("karabakh AND", 13, "expected a term"),
    ("(karabakh OR paix", 18, r"expected a closing \)"),
    ("karabakh)", 9, "closes nothing"),
    ('"cessez le feu', 1, "no closing"),
    ("foo:bar", 1, "unknown field 'foo'"),
    ("lang:french", 6, "language code"),
    ("type:ship", 6, "person | place | organisation"),
    ("a NEAR/x b", 3, "NEAR/n"),
    ("a NEAR/3 (b AND c)", 3, "on the right of NEAR/3"),
    ("a NEAR/3 b NEAR/3 c", 12, "combine proximity conditions with AND"),
    ("né*goci", 1, "only at the end"),
    ("(" * 200 + "a" + ")" * 200, 66, "nested more than"),
    ("title:", 7, "after title:"),
])
def test_errors_name_the_column_and_what_was_expected(text: str, column: int, message: str) -> None:
    with pytest.raises(q.QueryError, match=message) as err:
        q.parse(text)
    assert err.value.column == column


def test_rule_errors_name_the_rule_and_the_place() -> None:
    with pytest.raises(RuleError, match=r"rule k: query column 12: expected a term.* - at `\$\.rules\[0\]\.query`"):
        parse_rules({"rules": [{"id": "k", "query": "karabakh OR"}]})


# --- property tests ---------------------------------------------------------------------------

@given(st.text(max_size=60))
@settings(max_examples=400, deadline=None)
def test_any_text_parses_or_fails_clearly(text: str) -> None:
    try:
        node = q.parse(text)
    except q.QueryError as exc:
        assert str(exc).startswith("column ")
        return
    q.compile_node(node)(doc("x"))
    q.required(node)


OPS = st.sampled_from(["AND", "OR", "NOT", "NEAR/2", "ONEAR/1", "(", ")", '"', "*", "title:", "lang:", "entity:",
                       "type:", "paix", "feu", "Haut-Karabakh", " "])


@given(st.lists(OPS, max_size=12))
@settings(max_examples=400, deadline=None)
def test_any_token_soup_gives_a_rule_or_a_rule_error(parts: list[str]) -> None:
    try:
        parse_rules({"rules": [{"id": "r", "query": " ".join(parts)}]})
    except RuleError as exc:
        assert "rule r: query column" in str(exc)


VOCAB = ["paix", "pax", "feu", "cessez", "haut", "karabakh", "négociations", "armée"]
TEXT_WORDS = [*VOCAB, "Paix", "NÉGOCIATIONS", "l'armée", "Haut-Karabakh", "le", "de", "et"]
word = st.sampled_from(VOCAB)
span_leaf = st.one_of(
    word, word.map(lambda w: w[:3] + "*"),
    st.lists(word, min_size=2, max_size=3).map(lambda ws: '"' + " ".join(ws) + '"'),
    st.lists(word, min_size=2, max_size=2).map(lambda ws: '"' + " ".join(ws) + '*"'),
)
span = st.one_of(span_leaf, st.lists(span_leaf, min_size=2, max_size=3).map(lambda xs: "(" + " OR ".join(xs) + ")"))
field_leaf = st.sampled_from(["lang:fr", "lang:en", "source:s", "entity:Q1", 'entity:"nw:x"', "type:person",
                              "type:place"])
near = st.tuples(span, st.sampled_from(["NEAR", "ONEAR"]), st.integers(0, 4), span).map(
    lambda t: f"{t[0]} {t[1]}/{t[2]} {t[3]}")
leaf = st.one_of(span_leaf, span_leaf.map(lambda s: f"title:{s}"), field_leaf, near)
queries = st.recursive(leaf, lambda inner: st.one_of(
    st.tuples(inner, inner).map(lambda t: f"({t[0]} OR {t[1]})"),
    st.tuples(inner, inner).map(lambda t: f"{t[0]} AND {t[1]}"),
    st.tuples(inner, inner).map(lambda t: f"{t[0]} {t[1]}"),
    inner.map(lambda x: f"NOT {x}"),
    inner.map(lambda x: f"title:({x})"),
), max_leaves=6)
docs = st.builds(
    lambda title, text, lang, ents: doc(" ".join(text), " ".join(title), lang, "s", tuple(ents)),
    st.lists(st.sampled_from(TEXT_WORDS), max_size=4), st.lists(st.sampled_from(TEXT_WORDS), max_size=25),
    st.sampled_from(["fr", "en"]),
    st.lists(st.sampled_from([("Q1", "person"), ("nw:x", "place"), ("Q2", "organisation")]), max_size=2))


@given(queries, docs)
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_matcher_agrees_with_the_naive_evaluation(text: str, d: q.Doc) -> None:
    node = q.parse(text)
    assert q.compile_node(node)(d) == q.naive_eval(node, d), text


@given(st.lists(queries, min_size=1, max_size=8), st.lists(docs, min_size=1, max_size=4))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_prefilter_keeps_every_match(texts: list[str], ds: list[q.Doc]) -> None:
    ruleset = RuleSet(parse_rules({"rules": [{"id": str(i), "query": t} for i, t in enumerate(texts)]}))
    for d in ds:
        assert ruleset.match_ids(d) == ruleset.match_naive(d, naive_eval=True)


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_fast_folded_words_are_the_words_of_fold(text: str) -> None:
    import re

    from shared.text import fold, folded_words
    assert folded_words(text) == re.findall(r"\w+", fold(text)[0])


@given(st.one_of(st.text(max_size=80), st.text(st.characters(max_codepoint=127), max_size=80)))
@settings(max_examples=400, deadline=None)
def test_a_documents_joined_words_are_the_folded_words(text: str) -> None:
    from shared.text import folded_words
    d = doc(text, title=text[:10])
    words = folded_words(text[:10]) + folded_words(text)
    assert d.joined == (" " + " ".join(words) + " " if words else " ")
    assert d.words == folded_words(text[:10]) + folded_words(text) and d.n_title == len(folded_words(text[:10]))
