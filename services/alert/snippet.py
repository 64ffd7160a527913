"""A snippet of an article's text around the first matched term, with every matched term marked «…»."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from services.alert import query as q
from shared.text import fold

_WORD = re.compile(r"\w+", re.UNICODE)
OPEN, CLOSE = "«", "»"


def marked_snippet(text: str, terms: Sequence[q.Term], width: int = 280) -> str:
    """At most about ``width`` characters of ``text``, starting a little before the first matched term,
    each occurrence of a term (words as matched, on folded text) between « and »."""
    words = [t for t in terms if not t.title]
    if not words:  # a rule of languages, entities or title terms only: nothing in the text to mark
        return text[:width].strip()
    doc = q.Doc("", text)
    found = [(p, len(term.words)) for term in words for p in q.naive_starts(doc, term)]
    if not found:
        return text[:width].strip()
    folded, index = fold(text)
    # the spans of the words up to the last one marked (a match is usually early in the text)
    last = max(p + n for p, n in found)
    spans = [(m.start(), m.end()) for m in itertools.islice(_WORD.finditer(folded), last)]
    if len(spans) < last:  # cannot happen: both are \w+ runs of the folded text
        return text[:width]
    marks: list[tuple[int, int]] = []
    for p, n in found:
        start = index[spans[p][0]]
        end = index[spans[p + n - 1][1] - 1] + 1
        marks.append((start, end))
    marks.sort()
    kept: list[tuple[int, int]] = []
    for start, end in marks:  # no overlaps: the earliest, longest first
        if kept and start < kept[-1][1]:
            continue
        kept.append((start, end))
    lo = max(0, kept[0][0] - width // 4)
    if lo > 0:  # start at a word boundary
        space = text.find(" ", lo)
        lo = space + 1 if 0 <= space < kept[0][0] else lo
    hi = min(len(text), lo + width)
    out, pos = [], lo
    for start, end in kept:
        if start >= hi:
            break
        out.append(text[pos:start] + OPEN + text[start:end] + CLOSE)
        pos = end
    if pos < hi:
        out.append(text[pos:hi])
    body = "".join(out).replace("\n", " ").strip()
    return ("…" if lo > 0 else "") + body + ("…" if hi < len(text) else "")
