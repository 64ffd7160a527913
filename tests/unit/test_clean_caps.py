"""clean: input caps — binary bodies, oversized bodies, deep nesting, very long text (build_article)."""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import time
import zlib

import pytest

from services.clean import service
from services.clean.service import CUT_MARK, MAX_BODY_BYTES, MAX_TEXT_CHARS, binary_kind, build_article, cut_text
from shared import events
from shared.failures import Kind, PoisonInput, classify
from tests.unit.test_clean_html import ARTICLE, page


def raw(body: bytes, content_type: str = "text/html") -> events.RawPage:
    return events.RawPage(id="x", url="http://a/b", final_url="http://a/b", source="s", fetched_at=time.time(),
                          http_status=200, content_type=content_type, body=body)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    pixels = zlib.compress(b"\x00" + os.urandom(300))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("body", "kind"), [
    (os.urandom(2_000_000), "control bytes"),
    (gzip.compress(page("post-content").encode()), "gzip data"),
    (_png(), "a PNG image"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF document"),
])
def test_binary_body_is_poison_before_extraction(body: bytes, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_extraction(*args: object) -> None:
        raise AssertionError("the extractor ran on a binary body")
    monkeypatch.setattr(service, "extract_page", no_extraction)
    started = time.perf_counter()
    with pytest.raises(PoisonInput, match=rf"body is binary, not text \({kind}\)"):
        build_article(raw(body, "text/html; charset=utf-8"))
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("body", [page("post-content").encode(), page("post-content").encode("utf-16"),
                                  "Ça coûte très cher à Zürich, dit l'élève.".encode("cp1252"),
                                  b"<p>stray NUL\x00 bytes in a page</p>" + b"<p>text</p>" * 500])
def test_text_bodies_are_not_binary(body: bytes) -> None:
    assert binary_kind(body) == ""


def test_body_over_the_cap_is_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "extract_page", lambda *args: pytest.fail("extractor ran"))
    body = page("post-content").encode()
    big = body.replace(b"</body>", b"<p>" + b"x " * (MAX_BODY_BYTES // 2) + b"</p></body>")
    assert len(big) > MAX_BODY_BYTES
    with pytest.raises(PoisonInput, match="over clean's cap of 5,000,000"):
        build_article(raw(big))
    with pytest.raises(PoisonInput, match="over clean's cap"):
        build_article(raw(body), max_body_bytes=1000)


def test_ten_megabytes_of_real_looking_html_is_refused_fast() -> None:
    one = page("post-content")
    body = one[one.index("<body"):one.index("</body>")]
    html = ("<html><body>" + body * (10_000_000 // len(body) + 1) + "</body></html>").encode()
    started = time.perf_counter()
    with pytest.raises(PoisonInput, match="over clean's cap"):
        build_article(raw(html))
    assert time.perf_counter() - started < 1


def test_page_just_under_the_cap_is_processed() -> None:
    paragraphs = "".join(f"<p>{i}. {ARTICLE[i % 3]}</p>" for i in range(4000))  # ~0.9 MB
    article = build_article(raw(f"<html><body><article><h1>T</h1>{paragraphs}</article></body></html>".encode()))
    assert article.text.startswith("0. ") and article.text.count("\n") == 3999


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deeply_nested_page_is_poison_with_its_reason(depth: int) -> None:
    html = ("<html><body>" + "<div>" * depth + f"<p>{ARTICLE[0]}</p>" + "</div>" * depth + "</body></html>").encode()
    with pytest.raises(PoisonInput, match="nested deeper than 256 elements"):
        build_article(raw(html))


def test_nesting_under_the_limit_is_processed() -> None:
    html = ("<html><body>" + "<div>" * 200 + f"<p>{ARTICLE[0]}</p>" + "</div>" * 200 + "</body></html>").encode()
    assert build_article(raw(html)).text == ARTICLE[0]


def test_recursion_error_becomes_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    def deep(*args: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(service, "extract_page", deep)
    with pytest.raises(PoisonInput, match="too deeply nested") as caught:
        build_article(raw(page("post-content").encode()))
    assert classify(caught.value) is Kind.POISON


def test_long_text_is_cut_at_a_paragraph_end() -> None:
    paragraph = "Le ministre a parlé du transit des marchandises entre les deux pays. " * 10
    text = "\n".join(f"{i} {paragraph.strip()}" for i in range(2000))
    assert len(text) > MAX_TEXT_CHARS
    cut = cut_text(text)
    assert len(cut) <= MAX_TEXT_CHARS and cut.endswith(f"\n{CUT_MARK}")
    kept = cut.split("\n")[:-1]
    assert kept == text.split("\n")[:len(kept)]  # whole paragraphs only
    assert cut_text("short\ntext") == "short\ntext"
    one_paragraph = "mot " * 300_000
    assert len(cut_text(one_paragraph)) <= MAX_TEXT_CHARS  # no paragraph end: cut at a space


def test_build_article_cuts_long_text() -> None:
    paragraphs = "".join(f"<p>{i}. {ARTICLE[i % 3]}</p>" for i in range(400))
    html = f"<html><body><article><h1>T</h1>{paragraphs}</article></body></html>".encode()
    article = build_article(raw(html), max_text_chars=10_000)
    assert len(article.text) <= 10_000 and article.text.endswith(f"\n{CUT_MARK}")
    assert article.text.split("\n")[-2].endswith(".")


def test_a_huge_tree_is_refused_and_big_ones_skip_the_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 MB of empty <div>s (286,000 elements) took 40 s in trafilatura and its readability and jusText
    fallbacks: refused after the parse; a page of 40,000 elements skips the fallbacks."""
    from services.clean import extract

    calls: list[int] = []
    real = extract._with_fallbacks

    def counting(run: object) -> str:
        calls.append(1)
        return real(run)  # type: ignore[arg-type]

    monkeypatch.setattr(extract, "_with_fallbacks", counting)
    def no_extraction(root: object) -> None:
        pytest.fail("the extractor ran on a page it should refuse first")

    monkeypatch.setattr(extract, "_main_extractor", no_extraction)
    divs = b"<html><body>" + b"<div><div></div></div>" * (3 * 2**20 // 22) + b"</body></html>"
    with pytest.raises(PoisonInput, match="over 100,000 elements"):
        build_article(raw(divs))
    monkeypatch.undo()
    monkeypatch.setattr(extract, "_with_fallbacks", counting)
    with pytest.raises(PoisonInput):
        build_article(raw(b"<html><body>" + b"<div><div></div></div>" * 20_000 + b"</body></html>"))
    assert calls == []
    # an ordinary short page still gets them
    with contextlib.suppress(PoisonInput):
        build_article(raw(b"<html><body><div><p>Trop court.</p></div></body></html>"))
    assert calls == [1]
