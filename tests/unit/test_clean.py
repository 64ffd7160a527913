"""clean: text dumps, HTML extraction, decoding."""

from __future__ import annotations

import time

import pytest

from newswatch.demo.content import ARTICLES
from newswatch.demo.server import DemoSites, article_path
from services.clean.extract import ExtractionError, decode_body, extract_page
from services.clean.service import build_article
from services.clean.textdump import clean_text_dump, is_junk_line
from shared import events
from shared.runtime import PoisonInput
from tests.conftest import FIXTURES


def test_french_dump_keeps_every_sentence_and_drops_junk() -> None:
    title, text = clean_text_dump((FIXTURES / "dump_fr_comments.txt").read_text("utf-8"))
    assert title == "La Géorgie et l'Arménie signent un accord sur le transit des marchandises"
    for sentence in ("TBILISSI, 3 mai", "un guichet unique", "le chemin le plus court", "- a-t-il ajouté.",
                     "qui dépassent parfois deux jours en été."):
        assert sentence in text
    for junk in ("Partager", "Accueil", "5 minutes de lecture", "Abonnez-vous", "commentaires", "Très bonne",
                 "files d'attente", "+3", "Tous droits", "Roustaveli", "+995", "fbtelegram"):
        assert junk not in text, junk
    assert not {"Accueil", "International", "Politique", "Économie"} & set(text.split("\n"))  # the menu


def test_arabic_dump_drops_masthead_and_captions() -> None:
    title, text = clean_text_dump((FIXTURES / "dump_ar_masthead.txt").read_text("utf-8"))
    assert title == "أرمينيا وجورجيا توقعان اتفاقا لتسهيل عبور الشاحنات"
    assert text.count("\n") == 2  # three paragraphs
    for junk in ("رئيس التحرير", "سامي عبد الله", "صورة أرشيفية", "جميع الحقوق"):
        assert junk not in text


@pytest.mark.parametrize("line", ["Spread the love", "Leave A Reply", "fbtelegramyoutubexinstagramtiktok",
                                  "© 2025 ARMENPRESS", "+374 10 539818", "Comment (0)", "No data",
                                  "Social Media Auto Publish Powered By : XYZScripts.com", "  -2",
                                  "13 Octobre 2020 13: 29", "Partager sur Facebook", "اقرأ أيضا"])
def test_junk_lines(line: str) -> None:
    assert is_junk_line(line)


@pytest.mark.parametrize("line", ["- dit Akar.", "Le ministre turc a souligné qu'Ankara était prête.",
                                  "Source : Turquie, 2020", "وقال بوتين في مستهل اللقاء"])
def test_not_junk_lines(line: str) -> None:
    assert not is_junk_line(line)


def test_decoding_trusts_bytes_and_meta_over_wrong_header() -> None:
    ru = "<html><head><meta charset='windows-1251'></head><body>Путин в Москве</body></html>"
    text, enc = decode_body(ru.encode("cp1251"), "text/html; charset=iso-8859-1")
    assert "Путин в Москве" in text and enc == "cp1251"
    utf8 = "<p>Азербайджан</p>".encode()
    assert decode_body(utf8, "text/html; charset=iso-8859-1") == ("<p>Азербайджан</p>", "utf-8")
    ar = "<html><body>قره باغ</body></html>".encode("cp1256")
    assert "قره باغ" in decode_body(ar, "text/html; charset=windows-1256")[0]


@pytest.mark.parametrize("article", ARTICLES, ids=lambda a: a.slug)
def test_demo_pages_extract_the_article_only(article) -> None:
    status, kind, body = DemoSites(pace=0).handle(article_path(article), "http://127.0.0.1:1")
    assert status == 200
    extracted = extract_page(body, kind, "http://127.0.0.1:1" + article_path(article))
    assert extracted.title == article.title
    assert extracted.text.split("\n") == list(article.paragraphs)
    assert extracted.authors == [article.author]
    assert extracted.canonical_url.endswith(article_path(article))


def test_empty_page_is_poison() -> None:
    with pytest.raises(ExtractionError):
        extract_page(b"<html><body><nav>Home</nav></body></html>", "text/html")
    page = events.RawPage(id="x", url="http://a/b", final_url="http://a/b", source="s", fetched_at=time.time(),
                          http_status=200, content_type="text/html", body=b"<html></html>")
    with pytest.raises(PoisonInput):
        build_article(page)


@pytest.mark.parametrize(("dump", "title", "text"), [
    ("Nous sommes de votre avis.\n", "", "Nous sommes de votre avis."),
    ("Moscow: talks with Baku resume Monday\n", "", "Moscow: talks with Baku resume Monday"),
    ("Flash\nMoscow says talks with Baku will resume on Monday.\n", "Flash",
     "Moscow says talks with Baku will resume on Monday."),
    ("Baku confirms talks.\nThey resume on Monday in Moscow, the ministry said.\n", "",
     "Baku confirms talks.\nThey resume on Monday in Moscow, the ministry said."),
    ("Spread the love\nNous sommes de votre avis.\nPartager\n© 2026 Le Journal\n", "", "Nous sommes de votre avis."),
])
def test_short_dumps_are_kept(dump: str, title: str, text: str) -> None:
    assert clean_text_dump(dump) == (title, text)
    extracted = extract_page(dump.encode(), "text/plain; charset=utf-8")
    assert (extracted.title, extracted.text) == (title, text)


@pytest.mark.parametrize("dump", ["Accueil\nInternational\nPolitique\n© 2026 Le Journal\n", "Accueil\nContact\n",
                                  "Partager\nTweet\n"])
def test_junk_only_dumps_stay_empty(dump: str) -> None:
    assert clean_text_dump(dump)[1] == ""
    with pytest.raises(ExtractionError):
        extract_page(dump.encode(), "text/plain")


@pytest.mark.parametrize(("html", "text"), [
    ("<html><body><article><h1>Flash</h1><p>Moscow says talks with Baku will resume on Monday.</p></article>"
     "</body></html>", "Moscow says talks with Baku will resume on Monday."),
    ("<html><body><article><h1>Flash</h1><p>Talks resume Monday.</p></article></body></html>",
     "Talks resume Monday."),
    ("<html><body><p>Nous sommes de votre avis.</p></body></html>", "Nous sommes de votre avis."),
    ("<html><head><title>Baku</title></head><body><div class='content'><h1>Baku</h1><p>Baku confirms talks.</p>"
     "<p>They resume Monday.</p></div></body></html>", "Baku confirms talks.\nThey resume Monday."),
    ("<html><body><nav><a href='/'>Accueil</a></nav><div><p>Moscou dit que les discussions reprendront lundi.</p>"
     "</div><footer>© 2026 Le Journal. Tous droits réservés.</footer></body></html>",
     "Moscou dit que les discussions reprendront lundi."),
])
def test_short_html_articles_are_kept(html: str, text: str) -> None:
    page = events.RawPage(id="x", url="http://a/b", final_url="http://a/b", source="s", fetched_at=time.time(),
                          http_status=200, content_type="text/html", body=html.encode())
    assert build_article(page).text == text


def test_navigation_stub_is_still_poison() -> None:
    with pytest.raises(ExtractionError):
        extract_page(b"<html><body><div><a href='/'>Home</a> <a href='/news'>News</a> Contact us</div></body></html>",
                     "text/html")
