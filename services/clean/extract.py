"""HTML page → article: decoding, main text and metadata. Plain functions, no Kafka.

trafilatura does the main-text extraction (include_comments=False, favor_precision=True): it
was the best open extractor measured on a multilingual news set (docs/choices.md). Around it:
byte decoding that trusts the bytes over a wrong charset header, and a post-filter that drops
boilerplate lines trafilatura sometimes keeps (share prompts, cookie notices, copyright lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import trafilatura
from charset_normalizer import from_bytes

from services.clean.textdump import is_junk_line, words

MIN_WORDS = 8  # less than this is a navigation stub or an error page, not an article

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.I)


class ExtractionError(ValueError):
    """The page holds no article text."""


@dataclass
class ExtractedArticle:
    title: str
    text: str
    published: str = ""
    authors: list[str] = field(default_factory=list)
    canonical_url: str = ""
    site_name: str = ""
    description: str = ""
    image: str = ""
    encoding: str = ""


def _lookup(name: str) -> str | None:
    import codecs

    try:
        return codecs.lookup(name.strip().lower()).name
    except LookupError:
        return None


def decode_body(body: bytes, content_type: str = "") -> tuple[str, str]:
    """Decode page bytes; return (text, encoding name).

    Order: a BOM; strict UTF-8 (it almost never decodes a legacy page by accident, and a header
    saying ISO-8859-1 on a UTF-8 page is a common server mistake); the <meta> charset; the
    header charset; a statistical guess.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        return body[3:].decode("utf-8", "replace"), "utf-8"
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return body.decode("utf-16", "replace"), "utf-16"
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    declared: list[str] = []
    meta = _META_CHARSET.search(body[:4096])
    if meta:
        declared.append(meta.group(1).decode("ascii", "ignore"))
    header = _HEADER_CHARSET.search(content_type or "")
    if header:
        declared.append(header.group(1))
    for name in declared:
        codec = _lookup(name)
        # A page declared Latin-1 is, in practice, windows-1252 (WHATWG encoding standard).
        if codec in {"latin-1", "iso8859-1", "ascii"}:
            codec = "cp1252"
        if codec and codec != "utf-8":
            try:
                return body.decode(codec), codec
            except UnicodeDecodeError:
                continue
    best = from_bytes(body).best()
    if best is not None and best.encoding:
        return str(best), best.encoding
    return body.decode("utf-8", "replace"), "utf-8"


def _postfilter(text: str) -> str:
    kept = [line for line in text.split("\n") if line.strip() and not is_junk_line(line)]
    return "\n".join(kept)


def extract_html(html: str, url: str = "", encoding: str = "") -> ExtractedArticle:
    """Main text and metadata of an HTML page. Raises ExtractionError when no text is found."""
    doc = trafilatura.bare_extraction(
        html, url=url or None, include_comments=False, favor_precision=True, with_metadata=True,
        include_tables=True, deduplicate=False,
    )
    if doc is None:
        raise ExtractionError("no article text found in the page")
    data = doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)
    text = _postfilter(data.get("text") or "")
    if words(text) < MIN_WORDS:
        raise ExtractionError(f"no article text found in the page ({words(text)} words)")
    authors = [a.strip() for a in re.split(r";|\|", data.get("author") or "") if a.strip()]
    return ExtractedArticle(
        title=(data.get("title") or "").strip(),
        text=text,
        published=data.get("date") or "",
        authors=authors,
        canonical_url=data.get("url") or "",
        site_name=data.get("sitename") or "",
        description=data.get("description") or "",
        image=data.get("image") or "",
        encoding=encoding,
    )


def extract_page(body: bytes, content_type: str, url: str = "") -> ExtractedArticle:
    """Raw response → article: HTML through trafilatura, plain text through the text-dump cleaner."""
    from services.clean.textdump import clean_text_dump

    text, encoding = decode_body(body, content_type)
    if "text/plain" in (content_type or "").lower():
        title, article_text = clean_text_dump(text)
        if not article_text:
            raise ExtractionError("no article text left after removing junk lines")
        return ExtractedArticle(title=title, text=article_text, encoding=encoding)
    return extract_html(text, url=url, encoding=encoding)
