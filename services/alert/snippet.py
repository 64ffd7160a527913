"""A snippet of an article's text around the first matched term, with every matched term marked «…»."""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.alert import query as q
from shared.text import fold

_WORD = re.compile(r"\w+", re.UNICODE)
OPEN, CLOSE = "«", "»"


def marked_snippet(text: str, terms: Sequence[q.Term], width: int = 280) -> str:
    """At most about ``width`` characters of ``text``, starting a little before the first matched term,
    each occurrence of a term (words as matched, on folded text) between « and »."""
    folded, index = fold(text)
    spans = [(m.start(), m.end()) for m in _WORD.finditer(folded)]
    doc = q.Doc("", text)
    if len(doc.words) != len(spans):  # cannot happen: both are \w+ runs of the folded text
        return text[:width]
    marks: list[tuple[int, int]] = []
    for term in terms:
        if term.title:
            continue
        for p in q.naive_starts(doc, term):
            start = index[spans[p][0]]
            end = index[spans[p + len(term.words) - 1][1] - 1] + 1
            marks.append((start, end))
    if not marks:
        return text[:width].strip()
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
