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
