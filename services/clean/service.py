"""clean's wiring: raw-pages → articles. The logic is in extract.py, textdump.py and dedup.py.

Input caps (a page past one is a poison input, dead-lettered by the runtime with the reason):

- a body over ``MAX_BODY_BYTES`` (5,000,000 bytes, fetch's default page cap): parsing and
  extraction cost grows with the page, and clean's one CPU worker must not be held for long;
- a binary body whatever its declared type (compressed data, an image, a PDF, an archive, or
  bytes with NULs or many control characters): refused before decoding, without the extractor;
- a page nested deeper than the HTML parser's limit (256), or one that exhausts Python's
  recursion: refused with that reason (prune.parse_html; RecursionError caught here).

Text longer than ``MAX_TEXT_CHARS`` is cut at the last paragraph end before the cap, and a
last line ``[…]`` says so: a long document still carries its news, and a cut keeps it under
the message cap and spaCy's 1,000,000-character limit downstream.
"""

from __future__ import annotations

import logging
import re
from typing import ClassVar

from services.clean.dedup import Fingerprint, StoryIndex, fingerprint
from services.clean.extract import ExtractionError, extract_page, wide_encoding
from shared import events, metrics, pipeline, redis_store
from shared.failures import PoisonInput
from shared.runtime import Emit, cpu
from shared.settings import Settings
from shared.topics import ARTICLES

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5_000_000
MAX_TEXT_CHARS = 1_000_000
CUT_MARK = "[…]"

# Leading bytes of binary formats a server may still label text/html.
_MAGIC = (
    (b"\x1f\x8b", "gzip data"), (b"(\xb5/\xfd", "zstd data"), (b"\xfd7zXZ\x00", "xz data"),
    (b"PK\x03\x04", "a zip archive"), (b"7z\xbc\xaf\x27\x1c", "a 7z archive"), (b"Rar!\x1a\x07", "a rar archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"%PDF-", "a PDF document"), (b"\x00\x00\x01\x00", "an icon"),
    (b"wOFF", "a web font"), (b"wOF2", "a web font"), (b"\x7fELF", "an executable"),
    (b"OggS", "an Ogg stream"), (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
)
_RIFF = re.compile(rb"^RIFF....(WEBP|WAVE|AVI )", re.DOTALL)
# C0 controls that no text uses (tab, newlines, form feed and ESC, which ISO-2022 encodings use, are allowed).
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_CONTROL_CHARS = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd]")  # U+FFFD: bytes that did not decode
_SAMPLE_BYTES = 65536
_MAX_CONTROL_SHARE = 0.01  # random or compressed bytes: ~10 %


def binary_kind(body: bytes, content_type: str = "") -> str:
    """What a binary body is ("gzip data", "a PNG image", "control bytes"…), or "" for text.

    Magic numbers first, then the share of control bytes (NUL included) in the first 64 KiB:
    over 1 % is binary (random or compressed bytes: ~10 %; one page of the evaluation set holds
    22 stray NULs in 194 KB, 0.01 %). A page in UTF-16 or UTF-32 (its BOM, or a charset declared in
    the header or a ``<meta>`` that its bytes bear out: ``extract.wide_encoding``) has NULs in
    every other byte: its control characters are counted in its decoded text instead."""
    for magic, kind in _MAGIC:
        if body.startswith(magic):
            return kind
    if _RIFF.match(body):
        return "a media file"
    if body.startswith(b"\xef\xbb\xbf"):
        return ""
    wide = wide_encoding(body, content_type)
    if wide:
        text = body[:_SAMPLE_BYTES].decode(wide, "replace")
        if text and len(_CONTROL_CHARS.findall(text)) > _MAX_CONTROL_SHARE * len(text):
            return "control characters"
        return ""
    sample = body[:_SAMPLE_BYTES]
    if sample and len(_CONTROL.findall(sample)) > _MAX_CONTROL_SHARE * len(sample):
        return "control bytes"
    return ""


def cut_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """The text, or, when longer than ``limit``, its paragraphs up to the last that ends before
    the limit (a paragraph longer than the limit alone is cut at a space), then ``[…]``."""
    if len(text) <= limit:
        return text
    room = limit - len(CUT_MARK) - 1
    end = text.rfind("\n", 0, room + 1)
    if end <= 0:
        end = text.rfind(" ", 0, room + 1)
    if end <= 0:
        end = room
    return f"{text[:end].rstrip()}\n{CUT_MARK}"


def build_article(page: events.RawPage, max_body_bytes: int = MAX_BODY_BYTES,
                  max_text_chars: int = MAX_TEXT_CHARS) -> events.Article:
    """The article of a raw page, before story assignment. Raises PoisonInput if there is none."""
    if page.http_status >= 400:
        raise PoisonInput(f"HTTP status {page.http_status} is not a page")
    if len(page.body) > max_body_bytes:
        raise PoisonInput(f"body is {len(page.body):,} bytes, over clean's cap of {max_body_bytes:,}")
    kind = binary_kind(page.body, page.content_type)
    if kind:
        raise PoisonInput(f"body is binary, not text ({kind}), though declared {page.content_type or 'untyped'}")
    try:
        extracted = extract_page(page.body, page.content_type, page.final_url or page.url)
    except ExtractionError as exc:
        raise PoisonInput(str(exc)) from exc
    except RecursionError as exc:
        raise PoisonInput("page too deeply nested to extract (recursion limit)") from exc
    text = cut_text(extracted.text, max_text_chars)
    if text is not extracted.text:
        log.warning("article text cut", extra={"id": page.id, "chars": len(extracted.text), "kept": len(text)})
    return events.Article(
        id=page.id, url=page.final_url or page.url, source=page.source, fetched_at=page.fetched_at,
        title=extracted.title or page.feed_title, text=text,
        canonical_url=extracted.canonical_url or page.final_url or page.url,
        published=extracted.published or page.feed_published, updated=extracted.updated,
        authors=extracted.authors,
        site_name=extracted.site_name, description=extracted.description, image=extracted.image,
        encoding=extracted.encoding, lang_hint=page.lang_hint,
    )


def _article_and_fingerprint(page: events.RawPage) -> tuple[events.Article, Fingerprint]:
    article = build_article(page)
    return article, fingerprint(article.text)


class CleanStage:
    decl: ClassVar[pipeline.StageDecl] = pipeline.CLEAN

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index: StoryIndex | None = None
        metrics.init_clean()

    async def start(self) -> None:
        client = redis_store.connect(self.settings)
        await client.ping()
        self.index = StoryIndex(client, self.settings.near_dup_threshold,
                                self.settings.dedup_ttl_days * 86400)

    async def process(self, page: events.RawPage) -> list[Emit]:
        assert self.index is not None
        article, found = await cpu(_article_and_fingerprint, page)
        story = await self.index.assign(article.id, article.text, found)
        article.content_hash = story.content_hash
        article.story_id = story.story_id
        article.duplicate_of = story.duplicate_of
        article.similarity = story.similarity
        metrics.CLEAN_ARTICLES.labels(story.kind).inc()
        return [Emit(ARTICLES, article.id, article)]


def main() -> None:
    from shared.logs import setup_logging
    from shared.runtime import run_service

    settings = Settings.from_env()
    setup_logging("clean", settings.log_level, settings.log_format)
    run_service("clean", [CleanStage(settings)], settings)
