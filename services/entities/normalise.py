"""Text normalisation for name matching, with a map back to the original offsets.

The same function folds the table's names and the article text, so that a name matches
whatever its case, accents, Arabic letter forms, tatweel, diacritics, apostrophe or hyphen
style. Every folded character remembers the original character it came from.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Arabic letter forms that writers use interchangeably.
_ARABIC = {
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا",
    "ة": "ه",
    "ى": "ي", "ئ": "ي",
    "ؤ": "و",
    "ک": "ك", "ی": "ي", "گ": "ج",
    "ـ": "",  # tatweel
}
_APOSTROPHES = "'’‘ʼ`´"
_DASHES = "-‐‑‒–—―"


@lru_cache(maxsize=65536)
def fold_char(ch: str) -> str:
    """The folded form of one character: possibly empty, possibly several characters."""
    if ch in _ARABIC:
        return _ARABIC[ch]
    if ch in _APOSTROPHES:
        return "'"
    if ch in _DASHES or ch.isspace():
        return " "
    decomposed = unicodedata.normalize("NFD", ch)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    # Arabic harakat and the superscript alef are combining marks: dropped above.
    folded = kept.casefold()
    return "".join(_ARABIC.get(c, c) for c in folded)


def fold(text: str) -> tuple[str, list[int]]:
    """(folded text, original index of each folded character). Whitespace runs become one space."""
    out: list[str] = []
    index: list[int] = []
    last_space = True
    for i, ch in enumerate(text):
        for c in fold_char(ch):
            if c == " ":
                if last_space:
                    continue
                last_space = True
            else:
                last_space = False
            out.append(c)
            index.append(i)
    return "".join(out), index


def fold_name(name: str) -> str:
    return fold(name)[0].strip()


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"
