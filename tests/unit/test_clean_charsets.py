"""clean: pages in UTF-16 and UTF-32 (issue 21, case 3). A charset declared by the header or a
``<meta>``, or a byte-order mark, is honoured before the binary sniff counts control bytes (UTF-16
writes ASCII with a NUL in every other byte, and is valid UTF-8 with NULs in it); real binaries
declared so are still refused."""

from __future__ import annotations

import gzip
import os
import random
import time

import pytest

from services.clean.extract import decode_body, wide_encoding
from services.clean.service import binary_kind, build_article
from shared import events
from shared.failures import PoisonInput
from tests.unit.test_clean_html import ARTICLE, page

BOMS = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-le": b"\xff\xfe\x00\x00",
        "utf-32-be": b"\x00\x00\xfe\xff"}


def raw(body: bytes, content_type: str) -> events.RawPage:
    return events.RawPage(id="x", url="http://a/b", final_url="http://a/b", source="s", fetched_at=time.time(),
                          http_status=200, content_type=content_type, body=body)


def encoded(codec: str, bom: bool, meta: str = "") -> bytes:
    html = page("post-content", f'<meta charset="{meta}">' if meta else "")
    return (BOMS[codec] if bom else b"") + html.encode(codec)


# Every way a UTF-16 page arrives: little or big endian, with or without its BOM, the charset in the
# header (with or without the byte order), in a <meta> only, or nowhere but the BOM.
CASES = [
    (codec, bom, header, meta)
    for codec in ("utf-16-le", "utf-16-be")
    for bom, header, meta in [
        (True, "text/html", ""),  # the BOM alone
        (True, "text/html; charset=utf-16", ""),
        (False, "text/html; charset=utf-16", ""),  # the issue's case: declared, no BOM
        (False, f"text/html; charset={codec.replace('-le', 'le').replace('-be', 'be')}", ""),
        (False, "text/html", "utf-16"),  # declared in the page only
        (True, "text/html", "utf-16"),
        (False, "text/html; charset=UTF-16", "utf-16"),
    ]
]


@pytest.mark.parametrize(("codec", "bom", "header", "meta"), CASES)
def test_utf16_pages_are_text_and_extracted(codec: str, bom: bool, header: str, meta: str) -> None:
    body = encoded(codec, bom, meta)
    assert wide_encoding(body, header) == codec
    assert binary_kind(body, header) == ""
    text, encoding = decode_body(body, header)
    assert encoding == codec and text.startswith("<html>") and ARTICLE[0] in text
    article = build_article(raw(body, header))
    assert article.text.split("\n")[0] == ARTICLE[0] and article.encoding == codec


def test_the_issue_case_ascii_utf16_without_bom() -> None:
    # ASCII text in UTF-16LE is valid UTF-8 with a NUL after every letter: strict UTF-8 came first
    # and the page was dead-lettered as "control bytes"
    words = "Yerevan and Tbilisi agreed on Tuesday to open a new border post for lorries, the ministry said."
    html = f"<html><head><title>Border post</title></head><body><article><p>{words}</p></article></body></html>"
    body = html.encode("utf-16-le")
    assert body.decode("utf-8") != html  # valid UTF-8, NULs and all
    assert binary_kind(body) == "control bytes"  # undeclared: nothing says it is UTF-16
    assert binary_kind(body, "text/html; charset=utf-16") == ""
    assert build_article(raw(body, "text/html; charset=utf-16")).text == words


@pytest.mark.parametrize("codec", ["utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("declared", ["bom", "header", "meta"])
def test_utf32_pages_too(codec: str, declared: str) -> None:
    body = encoded(codec, declared == "bom", "utf-32" if declared == "meta" else "")
    header = "text/html; charset=utf-32" if declared == "header" else "text/html"
    assert binary_kind(body, header) == ""
    article = build_article(raw(body, header))
    assert article.text.split("\n")[0] == ARTICLE[0] and article.encoding == codec


def test_a_utf16_label_on_an_ascii_compatible_page_is_ignored() -> None:
    # a UTF-8 page whose server or <meta> says UTF-16 (a common slip): read as the UTF-8 it is
    body = page("post-content", '<meta charset="utf-16">').encode("utf-8")
    assert wide_encoding(body, "text/html; charset=utf-16") == ""
    assert decode_body(body, "text/html; charset=utf-16") == (body.decode("utf-8"), "utf-8")
    assert binary_kind(body, "text/html; charset=utf-16") == ""


@pytest.mark.parametrize("header", ["text/html; charset=utf-16", "text/html; charset=utf-16le",
                                    "text/html; charset=utf-32", "text/html"])
def test_real_binaries_declared_utf16_are_still_refused(header: str) -> None:
    rng = random.Random(21)
    noise = bytes(rng.getrandbits(8) for _ in range(200_000))
    # NUL-rich binary data (a bitmap, a database page): half its bytes NUL, the rest random
    sparse = bytes(b if i % 2 else 0 for i, b in enumerate(noise))
    for body, kind in [(noise, "control"), (sparse, "control"), (BOMS["utf-16-le"] + noise, "control characters"),
                       (gzip.compress(encoded("utf-16-le", False)), "gzip data"),
                       (b"%PDF-1.7\n" + os.urandom(5000), "a PDF document")]:
        found = binary_kind(body, header)
        assert found.startswith(kind), (header, body[:8], found)
        with pytest.raises(PoisonInput, match="body is binary"):
            build_article(raw(body, header))
