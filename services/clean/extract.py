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
import unicodedata
from collections.abc import Callable
from copy import copy
from dataclasses import dataclass

from charset_normalizer import from_bytes
from lxml.etree import Element, _Element
from lxml.html import HtmlElement
from trafilatura.external import compare_extraction
from trafilatura.htmlprocessing import convert_tags, tree_cleaning
from trafilatura.main_extractor import extract_content
from trafilatura.settings import Extractor
from trafilatura.xml import delete_element, xmltotxt

from services.clean import fallback
from services.clean.lead import missing_dek, missing_lead
from services.clean.metadata import PageMetadata, page_metadata
from services.clean.prune import parse_html, prune_furniture
from services.clean.textdump import (
    clean_text_dump,
    cut_related_tail,
    is_author_bio,
    is_junk_line,
    is_short_sentence,
    words,
)

# Less than this is a navigation stub or an error page, not an article, unless the text holds a
# sentence (three words or more, ended by a full stop, "?" or "!": a wire flash, a brief).
MIN_WORDS = 8
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


# Byte-order marks of UTF-32 and UTF-16 (UTF-32's first: its little-endian mark begins with UTF-16's).
_WIDE_BOMS = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
              (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"))
_WIDE_CODECS = {"utf-16": 2, "utf-16-le": 2, "utf-16-be": 2, "utf-32": 4, "utf-32-le": 4, "utf-32-be": 4}
_WIDE_SAMPLE = 16384
# A page declared UTF-16/32 is taken at its word only if its bytes look it: HTML's markup is ASCII, which
# UTF-16 writes with a NUL in every other byte (UTF-32: three in four). A page declaring UTF-16 whose
# bytes hold no NULs is an ASCII-compatible page with a wrong label (WHATWG reads such a <meta> as UTF-8).
_WIDE_MIN_NUL_SHARE = 0.05


def declared_charsets(body: bytes, content_type: str = "") -> list[str]:
    """The charsets a page declares: its ``<meta>`` (also written in UTF-16/32, where NULs sit
    between the letters), then the Content-Type header."""
    declared: list[str] = []
    head = body[:4096]
    meta = _META_CHARSET.search(head)
    if meta is None and b"\x00" in head:
        meta = _META_CHARSET.search(body[:4 * 4096].replace(b"\x00", b""))
    if meta:
        declared.append(meta.group(1).decode("ascii", "ignore"))
    header = _HEADER_CHARSET.search(content_type or "")
    if header:
        declared.append(header.group(1))
    return declared


def _byte_order(sample: bytes, unit: int) -> str:
    """"-le" or "-be" for a UTF-16/32 text without a BOM, from where its ASCII's NULs fall."""
    if unit == 2:
        even = sample[0::2].count(0)
        return "-be" if even > sample[1::2].count(0) else "-le"
    return "-be" if sample[3::4].count(0) < sample[0::4].count(0) else "-le"


def wide_encoding(body: bytes, content_type: str = "") -> str:
    """The UTF-16 or UTF-32 codec (with its byte order) a page is written in, or "".

    By its byte-order mark; else by a declared charset (``<meta>`` or header) that names UTF-16 or
    UTF-32, when the bytes agree: NULs where ASCII would put them, and the first 16 KiB decode
    strictly. Real binaries declared so fail that (random bytes hold lone surrogates)."""
    for bom, marked in _WIDE_BOMS:
        if body.startswith(bom):
            return marked
    for name in declared_charsets(body, content_type):
        codec = _lookup(name) or ""
        unit = _WIDE_CODECS.get(codec)
        if unit is None:
            continue
        sample = body[:_WIDE_SAMPLE]
        sample = sample[:len(sample) - len(sample) % unit]
        if not sample or sample.count(0) < _WIDE_MIN_NUL_SHARE * len(sample):
            continue
        if codec in ("utf-16", "utf-32"):
            codec += _byte_order(sample, unit)
        try:
            sample.decode(codec)
        except UnicodeDecodeError:
            continue
        return codec
    return ""


def decode_body(body: bytes, content_type: str = "") -> tuple[str, str]:
    """Decode page bytes; return (text, encoding name).

    Order: a BOM; UTF-16/32 declared by the header or ``<meta>`` when the bytes agree
    (``wide_encoding``: UTF-16 ASCII is valid UTF-8 with NULs in it, so strict UTF-8 must not come
    first for it); strict UTF-8 (it almost never decodes a legacy page by accident, and a header
    saying ISO-8859-1 on a UTF-8 page is a common server mistake); the <meta> charset; the
    header charset; a statistical guess.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        return body[3:].decode("utf-8", "replace"), "utf-8"
    wide = wide_encoding(body, content_type)
    if wide:
        return body.decode(wide, "replace").removeprefix("\ufeff"), wide
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for name in declared_charsets(body, content_type):
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
    if len(kept) > 2 and words(kept[0]) == 1 and words(kept[1]) >= 4:
        kept = kept[1:]  # a one-word kicker over the headline ("Politik", "Analysis"): the section, not text
    kept = cut_related_tail(kept)
    if len(kept) > 2 and is_author_bio(kept[-1]):
        kept = kept[:-1]  # the author's bio closing the page
    return "\n".join(kept)


# Built once: trafilatura otherwise makes a new Extractor (config reads, a date format) on every call,
# a tenth of its fast-mode time. No URL: it only serves links and images, which are not extracted.
_OPTIONS = Extractor(fast=True, precision=True, comments=False, tables=True, dedup=False)


@dataclass
class _TrafilaturaRun:
    """trafilatura's main extractor on a page, with what its fallback comparison needs."""

    tree: HtmlElement  # the page after the raw-tree pruning (what readability reads)
    body: _Element
    raw_text: str  # the body's text as trafilatura measures it


# trafilatura's raw-tree pruning (RAW_TREE_PRUNE_XPATH, REMOVE_COMMENTS_AND_LISTS_XPATH in its xpaths.py),
# the same tests as one plain walk: its XPath form calls back into Python for every div, 0.75 ms a page
# against 0.1 (docs/choices.md). Pages' output is identical on the evaluation set.
_APPENDED_ARTICLES = re.compile(r"mvp-post-add-(?:box|wrap)")  # infinite-scroll containers of follow-up articles
_SCROLL_CONTAINER = re.compile(r"mvp-post-add-(?:box|wrap)|infinite-?scroll")
_COMMENTS_ID = re.compile(r"^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENT_LIST_ID = re.compile(r"^(?:[Cc]omment(?!ary)|comol)")
_COMMENTS_CLASS = re.compile(r"^[Cc]omment(?!ary)|(?:article|post)-comments")
_SCROLL_TAGS = frozenset({"div", "section", "aside"})
_COMMENT_TAGS = frozenset({"div", "list", "section", "details", "ol", "ul"})
_CONVERTED_COMMENT_TAGS = frozenset({"div", "list", "section", "details"})
_RAW_PRUNE_TAGS = _SCROLL_TAGS | _COMMENT_TAGS


def _is_appended_or_comments(element: _Element) -> bool:
    tag, attributes = element.tag, element.attrib
    if not attributes:
        return False
    ident, names = attributes.get("id") or "", attributes.get("class") or ""
    if tag in _SCROLL_TAGS:
        if "elementor-share-buttons" in names:
            return True
        if ((_SCROLL_CONTAINER.search(ident) or _SCROLL_CONTAINER.search(names))
                and (_APPENDED_ARTICLES.search(ident) or _APPENDED_ARTICLES.search(names)
                     or next(element.iter("h1"), None) is None)):
            return True
    if tag in _COMMENT_TAGS and (_COMMENTS_ID.search(ident) or _COMMENTS_CLASS.search(names)):
        return tag not in {"ol", "ul"} or bool(_COMMENT_LIST_ID.search(ident) or _COMMENTS_CLASS.search(names))
    return False


def _is_comments(element: _Element) -> bool:
    """REMOVE_COMMENTS_XPATH's test, run after trafilatura's tag conversion (lists are <list> then)."""
    attributes = element.attrib
    if not attributes:
        return False
    return bool(_COMMENTS_ID.search(attributes.get("id") or "")
                or _COMMENTS_CLASS.search(attributes.get("class") or ""))


def _drop(tree: _Element, tags: frozenset[str], doomed_test: Callable[[_Element], bool]) -> None:
    """Remove the elements with these tags that pass the test (all found first, as XPath does),
    with what they hold, keeping the text that follows them."""
    for element in [element for element in tree.iter(*tags) if doomed_test(element)]:
        delete_element(element)


def _as_text(body: _Element) -> str:
    return unicodedata.normalize("NFC", xmltotxt(body, False)).strip()


def _main_extractor(root: HtmlElement) -> _TrafilaturaRun:
    """trafilatura.extract's steps for precision without comments (trafilatura 2.3.1, pinned; the
    unit tests check the result against extract() itself).

    Called step by step, not through extract(), so that the fallback comparison reuses this run
    instead of repeating it, the page is copied once instead of three times, and the raw-tree
    pruning runs as a plain walk (measured: docs/choices.md). Its forum-thread detection reads
    ld+json scripts, which pruning removed, so it is not asked.
    """
    _drop(root, _RAW_PRUNE_TAGS, _is_appended_or_comments)
    converted = convert_tags(tree_cleaning(copy(root), _OPTIONS), _OPTIONS)
    _drop(converted, _CONVERTED_COMMENT_TAGS, _is_comments)
    try:
        body, raw_text = extract_content(converted, _OPTIONS)
    except (TypeError, ValueError):  # e.g. a control character in the text: trafilatura gives up on the page too
        return _TrafilaturaRun(root, Element("body"), "")
    return _TrafilaturaRun(root, body, raw_text)


def _with_fallbacks(run: _TrafilaturaRun) -> str:
    """trafilatura's comparison of its own result with readability's and jusText's."""
    try:
        # jusText reads the cleaned page before tag conversion: cleaned again here, not kept from the main
        # run, as the fallbacks run on few pages and a kept copy costs every page
        cleaned = tree_cleaning(copy(run.tree), _OPTIONS)
        body, _ = compare_extraction(cleaned, copy(run.tree), run.body, run.raw_text, _OPTIONS)
    except (TypeError, ValueError):
        return ""
    return _as_text(body)


# readability and jusText walk the whole tree several times: on a page of hundreds of thousands of
# elements (3 MB of empty <div>s) they take tens of seconds. The largest page of the evaluation set
# has ~10,000 elements; past this many, the fast text stands.
FALLBACK_MAX_ELEMENTS = 30_000
# Past this many elements (ten times the largest page of the evaluation set) a page is refused:
# trafilatura alone needs ~10 s for 300,000, and clean takes its inputs one at a time.
MAX_ELEMENTS = 100_000


def _element_count(root: HtmlElement, limit: int) -> int:
    """Elements in the tree, counted up to ``limit + 1`` (the walk stops there)."""
    count = 0
    for _ in root.iter():
        count += 1
        if count > limit:
            break
    return count


def _second_opinion(root: HtmlElement, text: str) -> str:
    """The text merged with a fast second extractor's when it holds much less than the page's prose
    (fallback.py); else the text as it is."""
    if not fallback.looks_truncated(len(text), fallback.paragraph_chars_bound(root)):
        return text  # most pages: even the bound is not that much longer than the text
    prose = fallback.prose_paragraphs(root)
    if not fallback.looks_truncated(len(text), sum(len(paragraph) for paragraph in prose)):
        return text
    try:
        theirs = fallback.resiliparse_text(root)
    except Exception:  # a second opinion that fails leaves the first standing
        return text
    return fallback.merge(text, theirs, prose)


def main_text(root: HtmlElement) -> str:
    """The article text of a parsed page, paragraphs joined by "\\n" (the tree is pruned in place).

    A cascade: trafilatura's own extractor first (fast mode, without its readability and
    jusText fallbacks, which cost a third of its time); the fallbacks run only when that text
    is short or much shorter than the article container that pruning found, the cases where
    they change the result (docs/choices.md), and only on trees of at most
    ``FALLBACK_MAX_ELEMENTS`` elements. A text much shorter than the page's own prose then gets
    a second opinion (resiliparse, merged line by line), and the prose of a twin body container
    (the same tag and class beside the one kept) is joined to it (fallback.py).
    """
    container = prune_furniture(root)
    head = root.find("head")
    if head is not None:  # metadata was read already; trafilatura would only walk it
        head.drop_tree()
    run = _main_extractor(root)
    text = _as_text(run.body)
    if len(text) < CASCADE_MAX_CHARS:  # else the fast text stands, and the container is not measured
        container_chars = len(" ".join(container.text_content().split())) if container is not None else 0
        if (len(text) < CASCADE_MIN_CHARS or container_chars > CASCADE_CONTAINER_RATIO * len(text)) \
                and _element_count(root, FALLBACK_MAX_ELEMENTS) <= FALLBACK_MAX_ELEMENTS:
            text = _with_fallbacks(run)
    text = _second_opinion(root, text)
    before, after = fallback.twin_paragraphs(container, text)
    if before or after:
        text = "\n".join([*before, text, *after])
    text = _postfilter(text)
    lead = (missing_lead(root, container, text) or missing_dek(root, container, text)) if text else ""
    return f"{lead}\n{text}" if lead and not is_junk_line(lead) else text


def extract_html(html: str, url: str = "", encoding: str = "") -> ExtractedArticle:
    """Main text and metadata of an HTML page. Raises ExtractionError when no text is found."""
    try:
        root = parse_html(html)
    except ValueError as exc:
        raise ExtractionError(str(exc)) from exc
    if _element_count(root, MAX_ELEMENTS) > MAX_ELEMENTS:
        raise ExtractionError(f"page has over {MAX_ELEMENTS:,} elements; no news page is that large")
    meta = page_metadata(root, url)
    text = main_text(root)
    first, _, rest = text.partition("\n")
    if meta.title and " ".join(first.split()) == meta.title:  # the headline is the title, not text
        text = rest
    if words(text) < MIN_WORDS and not any(is_short_sentence(line) for line in text.split("\n")):
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
