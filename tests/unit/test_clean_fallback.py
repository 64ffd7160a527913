"""clean: the second opinion on truncated bodies and the twin body containers, on pages written for these tests."""

from __future__ import annotations

from services.clean import fallback
from services.clean.extract import main_text
from services.clean.prune import parse_html

STORY = [
    f"Le conseil municipal de Gyumri a voté mardi, après {n} heures de débat, le plan qui prévoit un "
    f"nouveau pont sur l'Akhourian, la réfection de la route du nord et {n} lignes de bus de plus."
    for n in range(2, 10)
]


def test_prose_paragraphs_skip_short_and_link_heavy_ones() -> None:
    root = parse_html(f"""<html><body><p>{STORY[0]}</p><p>Court.</p>
<p><a href="/a">{STORY[1]}</a></p><p>{STORY[2]} <a href="/b">le plan</a></p></body></html>""")
    assert fallback.prose_paragraphs(root) == {STORY[0], f"{STORY[2]} le plan"}


def test_the_cheap_bound_is_never_below_the_prose() -> None:
    root = parse_html(f"""<html><body><p>  {STORY[0]}  </p><p>Court.</p><p><a href="/a">{STORY[1]}</a></p>
<p>{STORY[2]}</p></body></html>""")
    prose = sum(len(paragraph) for paragraph in fallback.prose_paragraphs(root))
    assert fallback.paragraph_chars_bound(root) >= prose + len(STORY[1])  # links and spaces counted too


def test_gate_opens_only_when_the_text_holds_much_less_than_the_prose() -> None:
    assert fallback.looks_truncated(400, 1000)
    assert not fallback.looks_truncated(600, 1000)


def test_merge_adds_the_fallbacks_prose_in_page_order_and_keeps_ours() -> None:
    ours = "\n".join([STORY[0], "Sous-titre du texte", STORY[2]])
    theirs = "\n".join(["Accueil", STORY[0], STORY[1], STORY[2], STORY[3], "Mentions légales"])
    prose = set(STORY[:4])
    merged = fallback.merge(ours, theirs, prose).split("\n")
    # menus and footers of the fallback are not prose: not taken; our own subheading stays in place
    assert merged == [STORY[0], STORY[1], "Sous-titre du texte", STORY[2], STORY[3]]


def test_merge_replaces_nothing_when_it_adds_nothing_or_outgrows_the_prose() -> None:
    ours = STORY[0]
    assert fallback.merge(ours, "\n".join(["Accueil", STORY[0]]), {STORY[0]}) == ours
    # the page's prose is the bound: more than 1.5 times it is not this page's article
    assert fallback.merge(ours, "\n".join([STORY[0], STORY[1]]), {STORY[1]}) == ours


def test_merge_fills_a_tiny_text() -> None:
    assert fallback.merge("Imprimer", "\n".join(STORY[:3]), set(STORY[:3])).split("\n") == STORY[:3]


def split_page(between: str) -> str:
    first = "".join(f"<p>{p}</p>" for p in STORY[:4])
    second = "".join(f"<p>{p}</p>" for p in STORY[4:])
    return f"""<html><body><header><a href="/">Accueil</a></header><main><h1>Le pont de Gyumri</h1>
<div class="article-body">{first}</div>{between}<div class="article-body">{second}</div></main></body></html>"""


def test_article_split_over_two_identical_containers_is_joined() -> None:
    text = main_text(parse_html(split_page('<div class="pub"><a href="/car">Une voiture neuve</a></div>')))
    assert all(paragraph in text for paragraph in STORY)
    assert text.index(STORY[3]) < text.index(STORY[4])
    root = parse_html(split_page("<figure><img src='pont.jpg'></figure>"))
    container = root.find(".//div[@class='article-body']")
    assert fallback.twin_paragraphs(container, "\n".join(STORY[:4])) == ([], STORY[4:])


def test_next_post_of_a_list_is_no_twin() -> None:
    root = parse_html(split_page("<h2>Un autre billet</h2>"))
    container = root.find(".//div[@class='article-body']")
    assert fallback.twin_paragraphs(container, "\n".join(STORY[:4])) == ([], [])
