"""Article metadata from the page head: title, dates, authors, canonical URL, site, description, image.

Publishers state these for search engines and social cards (OpenGraph, schema.org JSON-LD,
Dublin Core, itemprop), and those statements carry times with their UTC offset; they are read
first. htmldate, which looks at the visible page and the URL, is the fallback for dates. Dates
come out as ISO 8601: with the publisher's offset when one was given, as a bare date otherwise
(no timezone is invented).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urljoin

from htmldate import find_date
from lxml import html as lxml_html

_PUBLISHED_KEYS = ("article:published_time", "og:published_time", "datepublished", "dc.date.issued",
                   "dcterms.issued", "dc.date", "pubdate", "publishdate", "date", "sailthru.date",
                   "parsely-pub-date")
_UPDATED_KEYS = ("article:modified_time", "og:updated_time", "datemodified", "dcterms.modified",
                 "last-modified", "lastmod")
_TITLE_KEYS = ("og:title", "twitter:title", "headline", "dc.title")
_AUTHOR_KEYS = ("author", "article:author", "dc.creator", "byl", "parsely-author", "sailthru.author")
_SITE_KEYS = ("og:site_name", "application-name", "publisher", "dc.publisher")
_DESCRIPTION_KEYS = ("og:description", "description", "twitter:description", "dc.description")
_IMAGE_KEYS = ("og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src",
               "image", "thumbnailurl")
_TITLE_SUFFIX = re.compile(r"\s+[|–—\-:·•]\s+[^|–—\-:·•]{2,60}$")
_BY_PREFIX = re.compile(r"^\s*(by|par|von|por|di|от|بقلم)\s+", re.IGNORECASE)


@dataclass
class PageMetadata:
    title: str = ""
    published: str = ""
    updated: str = ""
    authors: list[str] = field(default_factory=list)
    canonical_url: str = ""
    site_name: str = ""
    description: str = ""
    image: str = ""


def iso_datetime(value: str) -> str:
    """ISO 8601 form of a date or time as publishers write it; "" when it is not one."""
    value = value.strip()
    if not value:
        return ""
    try:
        return date.fromisoformat(value).isoformat()  # a bare date stays one: no time, no offset
    except ValueError:
        pass
    candidate = value[:-1] + "+00:00" if value.endswith("Z") else value
    # "+0200" offsets are common in meta tags; fromisoformat wants "+02:00".
    candidate = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", candidate)
    try:
        return datetime.fromisoformat(candidate).isoformat()
    except ValueError:
        return ""


def _meta_values(root: lxml_html.HtmlElement) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for meta in root.iter("meta"):
        key = (meta.get("property") or meta.get("name") or meta.get("itemprop") or "").strip().lower()
        content = (meta.get("content") or "").strip()
        if key and content:
            values.setdefault(key, []).append(content)
    # itemprop on visible elements (<time itemprop="datePublished" datetime=…>, <span itemprop="author">).
    for element in root.iterfind(".//*[@itemprop]"):
        if element.tag == "meta":
            continue
        key = (element.get("itemprop") or "").strip().lower()
        content = element.get("datetime") or element.get("content") or element.text_content()
        if key and content and content.strip():
            values.setdefault(key, []).append(content.strip())
    return values


def _json_ld_objects(root: lxml_html.HtmlElement) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for script in root.iterfind(".//script[@type='application/ld+json']"):
        try:
            data = json.loads(script.text or "")
        except (ValueError, TypeError):
            continue
        stack = data if isinstance(data, list) else [data]
        while stack:
            item = stack.pop(0)
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                objects.append(item)
                graph = item.get("@graph")
                if isinstance(graph, list):
                    stack.extend(graph)
    return objects


def _article_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    for item in objects:
        kind = item.get("@type")
        kinds = kind if isinstance(kind, list) else [kind]
        if any(isinstance(k, str) and ("Article" in k or k in {"BlogPosting", "Report"}) for k in kinds):
            return item
    return {}


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return _names(value.get("name"))
    if isinstance(value, list):
        return [name for item in value for name in _names(item)]
    return []


def _first(values: dict[str, list[str]], keys: tuple[str, ...]) -> str:
    for key in keys:
        for value in values.get(key, []):
            if value:
                return value
    return ""


def _image_url(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("url") or value.get("contentUrl") or "")
    if isinstance(value, list) and value:
        return _image_url(value[0])
    return ""


def _fallback_date(root: lxml_html.HtmlElement, url: str, original: bool) -> str:
    try:
        found = find_date(root, url=url or None, original_date=original, extensive_search=False,
                          outputformat="%Y-%m-%d")
    except Exception:  # htmldate raises on odd trees; a missing date is not an error
        return ""
    return found or ""


def _clean_authors(raw: list[str]) -> list[str]:
    authors: list[str] = []
    for entry in raw:
        for part in re.split(r"\s*(?:;|\||,\s+and\s+|\s+and\s+|\s+et\s+|\s+und\s+)\s*", entry):
            name = _BY_PREFIX.sub("", part).strip(" ,")
            if name and not name.startswith(("http://", "https://")) and len(name) <= 80 and name not in authors:
                authors.append(name)
    return authors


def page_metadata(root: lxml_html.HtmlElement, url: str = "") -> PageMetadata:
    """Metadata of a parsed page (read before pruning: it lives in <head> and in scripts)."""
    values = _meta_values(root)
    article = _article_object(_json_ld_objects(root))

    title = str(article.get("headline") or "") or _first(values, _TITLE_KEYS)
    if not title:
        heading = next(root.iter("h1"), None)
        title = heading.text_content() if heading is not None else ""
    if not title:
        tag = next(root.iter("title"), None)
        title = _TITLE_SUFFIX.sub("", tag.text_content()) if tag is not None else ""

    published = iso_datetime(str(article.get("datePublished") or "")) or iso_datetime(
        _first(values, _PUBLISHED_KEYS))
    if not published:
        time_tag = next(root.iterfind(".//time[@datetime]"), None)
        if time_tag is not None:
            published = iso_datetime(time_tag.get("datetime") or "")
    if not published:
        published = _fallback_date(root, url, original=True)
    updated = iso_datetime(str(article.get("dateModified") or "")) or iso_datetime(_first(values, _UPDATED_KEYS))

    authors = _clean_authors(_names(article.get("author")) or
                             [v for key in _AUTHOR_KEYS for v in values.get(key, [])])
    canonical = ""
    for link in root.iterfind(".//link[@rel]"):
        if "canonical" in (link.get("rel") or "").lower().split() and link.get("href"):
            canonical = link.get("href", "")
            break
    canonical = canonical or _first(values, ("og:url",))
    site_name = _first(values, _SITE_KEYS) or (_names(article.get("publisher")) or [""])[0]
    image = _image_url(article.get("image")) or _first(values, _IMAGE_KEYS)
    return PageMetadata(
        title=" ".join(title.split()),
        published=published,
        updated=updated if updated != published else "",
        authors=authors,
        canonical_url=urljoin(url, canonical) if canonical else "",
        site_name=" ".join(site_name.split()),
        description=" ".join(_first(values, _DESCRIPTION_KEYS).split()),
        image=urljoin(url, image) if image else "",
    )
