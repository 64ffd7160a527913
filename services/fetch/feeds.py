"""Sources, feeds and sitemaps: what to poll and what a poll lists. Plain functions, no I/O.

The sources file (``NEWSWATCH_SOURCES``) is YAML:

    sources:
      - id: lecourrier            # stable id, carried by every article of this source
        feeds: [https://example.org/rss.xml]     # RSS or Atom
        sitemaps: [https://example.org/news-sitemap.xml]
        pages: [https://example.org/live]        # polled as they are (article = the page)
        lang: fr                  # optional hint for langdetect
        poll_seconds: 120         # optional, else NEWSWATCH_POLL_SECONDS
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import courlan
import feedparser
import yaml


class SourcesError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    id: str
    feeds: tuple[str, ...] = ()
    sitemaps: tuple[str, ...] = ()
    pages: tuple[str, ...] = ()
    lang: str = ""
    poll_seconds: float | None = None


@dataclass(frozen=True)
class Item:
    """One article a feed, sitemap or page list points to."""

    url: str
    title: str = ""
    published: str = ""
    lang: str = ""


@dataclass
class FeedResult:
    items: list[Item] = field(default_factory=list)
    title: str = ""
    lang: str = ""


def _urls(raw: dict[str, Any], key: str, source_id: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if isinstance(value, str):
        value = [value]
    for url in value:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SourcesError(f"source {source_id}: {key} entry {url!r} is not an http(s) URL")
    return tuple(value)


def parse_sources(doc: Any, origin: str = "sources") -> list[Source]:
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list):
        raise SourcesError(f"{origin}: expected a mapping with a 'sources' list")
    out: list[Source] = []
    for n, raw in enumerate(doc["sources"]):
        if not isinstance(raw, dict) or not raw.get("id"):
            raise SourcesError(f"{origin}: source #{n + 1} has no id")
        sid = str(raw["id"])
        source = Source(
            id=sid, feeds=_urls(raw, "feeds", sid), sitemaps=_urls(raw, "sitemaps", sid),
            pages=_urls(raw, "pages", sid), lang=str(raw.get("lang", "")),
            poll_seconds=float(raw["poll_seconds"]) if raw.get("poll_seconds") else None,
        )
        if not (source.feeds or source.sitemaps or source.pages):
            raise SourcesError(f"source {sid}: lists no feeds, sitemaps or pages")
        out.append(source)
    return out


def load_sources(path: str) -> list[Source]:
    try:
        return parse_sources(yaml.safe_load(Path(path).read_text("utf-8")), path)
    except OSError as exc:
        raise SourcesError(f"cannot read sources file {path}: {exc}") from exc


def normalise_url(url: str) -> str:
    """The URL without tracking parameters, fragment, default port or case differences in the host."""
    try:
        return courlan.normalize_url(url, strict=True)
    except (ValueError, AttributeError):
        return url.strip()


def article_id(url: str) -> str:
    """Stable article id: the same article URL always gives the same id, whatever its tracking junk."""
    return hashlib.sha1(normalise_url(url).encode("utf-8")).hexdigest()[:20]


def parse_feed(body: bytes, base_url: str = "") -> FeedResult:
    """Items of an RSS or Atom feed (feedparser copes with broken XML; it reports, we don't raise)."""
    parsed = feedparser.parse(body, response_headers={"content-location": base_url} if base_url else None)
    feed_lang = (parsed.feed.get("language") or "").split("-")[0].lower()
    result = FeedResult(title=parsed.feed.get("title", ""), lang=feed_lang)
    for entry in parsed.entries:
        link = entry.get("link") or ""
        if not link.startswith(("http://", "https://")):
            continue
        published = entry.get("published") or entry.get("updated") or ""
        result.items.append(Item(url=link, title=entry.get("title", ""), published=published, lang=feed_lang))
    return result


_SM = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
_NEWS = "{http://www.google.com/schemas/sitemap-news/0.9}"


def parse_sitemap(body: bytes) -> tuple[list[Item], list[str]]:
    """(article items, nested sitemap URLs) of a sitemap or sitemap index (news extension read)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise SourcesError(f"sitemap is not XML: {exc}") from exc
    items: list[Item] = []
    nested: list[str] = []
    for node in root.iter(f"{_SM}sitemap"):
        loc = node.findtext(f"{_SM}loc")
        if loc:
            nested.append(loc.strip())
    for node in root.iter(f"{_SM}url"):
        loc = (node.findtext(f"{_SM}loc") or "").strip()
        if not loc.startswith(("http://", "https://")):
            continue
        news = node.find(f"{_NEWS}news")
        title = published = lang = ""
        if news is not None:
            title = (news.findtext(f"{_NEWS}title") or "").strip()
            published = (news.findtext(f"{_NEWS}publication_date") or "").strip()
            lang = (news.findtext(f"{_NEWS}publication/{_NEWS}language") or "").strip()
        published = published or (node.findtext(f"{_SM}lastmod") or "").strip()
        items.append(Item(url=loc, title=title, published=published, lang=lang))
    return items, nested
