"""HTML page → article: decoding, main text and metadata. Plain functions, no Kafka.

The main text comes from a hybrid measured in docs/choices.md: our own pruning cuts page
furniture out of the lxml tree first (prune.py, sparing the article container), trafilatura
(precision mode, no comments) then extracts from the smaller tree, and a line post-filter
drops the boilerplate lines it still keeps (share prompts, credits, "read also" pointers,
copyright lines). Metadata is read from the unpruned page (metadata.py). Bytes are decoded
trusting the bytes over a wrong charset header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import trafilatura
from charset_normalizer import from_bytes
from lxml.html import HtmlElement

from services.clean.lead import missing_lead
from services.clean.metadata import PageMetadata, page_metadata
from services.clean.prune import parse_html, prune_furniture
from services.clean.textdump import clean_text_dump, cut_related_tail, is_junk_line, words

MIN_WORDS = 8  # less than this is a navigation stub or an error page, not an article
# When the fast extraction is shorter than this, or the article container holds this many
# times more text, trafilatura's fallback extractors get a say (measured: docs/choices.md).
# But a fast extraction of this length or more stands: its fallbacks then cost much and change little.
CASCADE_MIN_CHARS = 250
CASCADE_CONTAINER_RATIO = 1.5
CASCADE_MAX_CHARS = 1000

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.I)


class ExtractionError(ValueError):
    """The page holds no article text."""


@dataclass
class ExtractedArticle(PageMetadata):
    text: str = ""
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
    return "\n".join(cut_related_tail(kept))


def _trafilatura(root: HtmlElement, url: str, fast: bool) -> str:
    return trafilatura.extract(root, url=url or None, include_comments=False, favor_precision=True, fast=fast,
                               include_tables=True, deduplicate=False, with_metadata=False) or ""


def main_text(root: HtmlElement, url: str = "") -> str:
    """The article text of a parsed page, paragraphs joined by "\\n" (the tree is pruned in place).

    A cascade: trafilatura's own extractor first (fast mode, without its readability and
    jusText fallbacks, which cost a third of its time); the fallbacks run only when that text
    is short or much shorter than the article container that pruning found, the cases where
    they change the result (docs/choices.md).
    """
    container = prune_furniture(root)
    head = root.find("head")
    if head is not None:  # metadata was read already; trafilatura would only walk it
        head.drop_tree()
    text = _trafilatura(root, url, fast=True)  # trafilatura works on a copy: root stays as it was
    if len(text) < CASCADE_MAX_CHARS:  # else the fast text stands, and the container is not measured
        container_chars = len(" ".join(container.text_content().split())) if container is not None else 0
        if len(text) < CASCADE_MIN_CHARS or container_chars > CASCADE_CONTAINER_RATIO * len(text):
            text = _trafilatura(root, url, fast=False)
    text = _postfilter(text)
    lead = missing_lead(root, container, text) if text else ""
    return f"{lead}\n{text}" if lead and not is_junk_line(lead) else text


def extract_html(html: str, url: str = "", encoding: str = "") -> ExtractedArticle:
    """Main text and metadata of an HTML page. Raises ExtractionError when no text is found."""
    try:
        root = parse_html(html)
    except ValueError as exc:
        raise ExtractionError(str(exc)) from exc
    meta = page_metadata(root, url)
    text = main_text(root, url)
    first, _, rest = text.partition("\n")
    if meta.title and " ".join(first.split()) == meta.title:  # the headline is the title, not text
        text = rest
    if words(text) < MIN_WORDS:
        raise ExtractionError(f"no article text found in the page ({words(text)} words)")
    return ExtractedArticle(**vars(meta), text=text, encoding=encoding)


def extract_page(body: bytes, content_type: str, url: str = "") -> ExtractedArticle:
    """Raw response → article: HTML through trafilatura, plain text through the text-dump cleaner."""
    text, encoding = decode_body(body, content_type)
    if "text/plain" in (content_type or "").lower():
        title, article_text = clean_text_dump(text)
        if not article_text:
            raise ExtractionError("no article text left after removing junk lines")
        return ExtractedArticle(title=title, text=article_text, encoding=encoding)
    return extract_html(text, url=url, encoding=encoding)
