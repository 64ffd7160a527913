"""A second opinion for bodies that look truncated: the page's own prose against what was extracted.

A page's prose is its paragraphs (``<p>`` of 25+ characters, at most 30 % of their text in links,
as a teaser list's are). When the extracted text holds much less than that, the extractor may
have kept the first of two body containers, a print header, or a teaser: a fast second extractor
(resiliparse's main-content text) then reads the page, and its lines are taken only where they
are ours or the page's prose paragraphs, so that what it adds is bounded by that prose (its menus,
lists and link lines are not taken). Ours is replaced when it is tiny, else merged when it is a
subset of the fallback's. Measured in docs/choices.md.
"""

from __future__ import annotations

from lxml import etree
from lxml.html import HtmlElement

MIN_PROSE_CHARS = 25
MAX_PROSE_LINK_SHARE = 0.3
# The fallback runs when the extracted text holds less than this share of the page's prose.
GATE_SHARE = 0.5
# Under this many characters, a text that shares no line with the fallback's is replaced, not merged.
TINY_CHARS = 200
# The merged text may not exceed the page's prose by more than this factor (headings, lists between paragraphs).
MAX_PROSE_FACTOR = 1.5


def _squash(text: str) -> str:
    return " ".join(text.split())


def prose_paragraphs(root: HtmlElement) -> set[str]:
    """The page's paragraphs of running text (whitespace-squashed)."""
    return set(_ordered_prose(root))


def paragraph_chars_bound(root: HtmlElement) -> int:
    """An upper bound of the prose's length, cheaper than measuring it: the raw text of every
    paragraph long enough, whitespace and links included."""
    total = 0
    for paragraph in root.iter("p"):
        length = len(paragraph.text_content())
        if length >= MIN_PROSE_CHARS:
            total += length
    return total


def looks_truncated(text_chars: int, prose_chars: int) -> bool:
    return text_chars < GATE_SHARE * prose_chars


def resiliparse_text(root: HtmlElement) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    html = etree.tostring(root, encoding="unicode", method="html")
    return str(extract_plain_text(html, main_content=True, comments=False, post_meta=False, alt_texts=False,
                                  links=False, list_bullets=False))


def merge(ours: str, theirs: str, prose: set[str]) -> str:
    """Our lines with the fallback's prose paragraphs that we lack, in page order; ``ours`` when that adds
    nothing or outgrows the page's prose.

    The fallback's lines count only where they are ours or the page's prose paragraphs (its menus and
    link lists are not taken). Ours that it lacks stay where they stood: before the next line we share;
    a tiny text of ours that it does not share at all is replaced.
    """
    own = [_squash(line) for line in ours.split("\n") if line.strip()]
    position = {line: i for i, line in enumerate(own)}
    merged: list[str] = []
    done = 0  # our lines emitted so far
    added = 0
    for line in dict.fromkeys(_squash(line) for line in theirs.split("\n") if line.strip()):
        at = position.get(line)
        if at is not None:
            if at >= done:
                merged.extend(own[done:at + 1])
                done = at + 1
        elif line in prose:
            merged.append(line)
            added += len(line)
    if done or sum(len(line) for line in own) >= TINY_CHARS:
        merged.extend(own[done:])
    # else ours is a scrap the fallback does not share (a print header, a label): replaced
    total = sum(len(line) for line in merged)
    if not added or total > MAX_PROSE_FACTOR * sum(len(paragraph) for paragraph in prose):
        return ours
    return "\n".join(merged)


# A twin holds at least this many prose paragraphs (a box of one is a donation call, a note on the text).
MIN_TWIN_PARAGRAPHS = 2
_POST_HEADINGS = ("h1", "h2")


def twin_paragraphs(container: HtmlElement | None, text: str) -> tuple[list[str], list[str]]:
    """Prose paragraphs of the container's twins that ``text`` lacks: (before it, after it).

    A twin is a sibling of the same tag and class with two prose paragraphs or more, with no
    headline between them (that would be the next post of a list): an article split in two body
    blocks around an advertisement or a picture, of which an extractor keeps the first.
    """
    if container is None or not container.get("class"):
        return [], []
    parent = container.getparent()
    if parent is None:
        return [], []
    squashed = _squash(text)
    signature = container.get("class")
    before: list[list[str]] = []
    after: list[str] = []
    seen_container = False
    for element in parent.iterchildren():
        if element is container:
            seen_container = True
            continue
        if element.tag != container.tag or element.get("class") != signature:
            if next(element.iter(*_POST_HEADINGS), None) is not None:  # another post: twins are adjacent
                if seen_container:
                    break
                before = []
            continue
        paragraphs = _ordered_prose(element)
        if len(paragraphs) < MIN_TWIN_PARAGRAPHS:
            continue
        missing = [paragraph for paragraph in paragraphs if paragraph not in squashed]
        if seen_container:
            after.extend(missing)
        else:
            before.append(missing)
    return [paragraph for block in before for paragraph in block], after


def _ordered_prose(element: HtmlElement) -> list[str]:
    paragraphs = []
    for paragraph in element.iter("p"):
        raw = paragraph.text_content()
        if len(raw) < MIN_PROSE_CHARS:  # most short ones, before the squashing
            continue
        text = _squash(raw)
        if len(text) < MIN_PROSE_CHARS:
            continue
        if paragraph.find(".//a") is not None:
            linked = sum(len(_squash(link.text_content())) for link in paragraph.iter("a"))
            if linked > MAX_PROSE_LINK_SHARE * len(text):
                continue
        paragraphs.append(text)
    return paragraphs
