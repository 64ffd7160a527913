"""Text rules several services share: folding for matching (names, rule terms), words of folded
text, and the name variants of languages whose words change form (Russian case endings, Arabic
joined prefixes and spellings).

Folding maps a text to the form that matches whatever its case, accents, Arabic letter forms,
tatweel, diacritics, apostrophe or hyphen style; every folded character remembers the original
character it came from, so a match maps back to offsets in the original text.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

import numpy as np

# --- folding -------------------------------------------------------------------------------

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
_WORD = re.compile(r"\w+", re.UNICODE)


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
    """(folded text, original index of each folded character). Whitespace runs become one space,
    and leading whitespace is dropped.

    Entities and alert snippets fold whole articles: a loop over the characters cost ~1 ms per
    5,000. So the text's code points go through numpy tables of each character's fold (filled a
    block of 256 characters at a time, on first sight), and the index comes from each fold's
    length (docs/choices.md). Text with a character outside the Basic Multilingual Plane (an emoji)
    takes ``fold_slow``, the definition, character by character; a property test holds the two equal."""
    if len(text) < _FOLD_BY_CHARACTER:
        return fold_slow(text)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if int(codes.max()) >= _BMP:
        return fold_slow(text)
    _fill_fold_tables(codes)
    lengths = _FOLD_LENGTH[codes]
    index: np.ndarray | None = None
    if bool((lengths == 1).all()):
        folded = _FOLD_CODES[codes, 0]
    else:  # some character folds to none (a combining mark, tatweel) or to several (ß → ss)
        folded = _FOLD_CODES[codes][np.arange(_FOLD_WIDTH) < lengths[:, None]]
        index = np.repeat(np.arange(len(codes)), lengths)
    # a space is dropped when it starts the text or follows a space
    drop = folded == 32
    drop[1:] &= folded[:-1] == 32
    if bool(drop.any()):
        keep = ~drop
        folded = folded[keep]
        index = (index if index is not None else np.arange(len(codes)))[keep]
    return (folded.tobytes().decode("utf-32-le", "surrogatepass"),
            index.tolist() if index is not None else list(range(len(codes))))


def _fill_fold_tables(codes: np.ndarray) -> None:
    """Fill the fold tables for the blocks of 256 characters ``codes`` use that are not filled yet."""
    seen = np.bincount(codes >> 8, minlength=_BMP >> 8).astype(bool)
    for block in np.flatnonzero(seen & ~_FOLD_BLOCK_READY).tolist():
        for code in range(block << 8, (block + 1) << 8):
            folded = fold_char(chr(code))
            _FOLD_LENGTH[code] = len(folded)
            _FOLD_CODES[code, :len(folded)] = [ord(c) for c in folded]
        _FOLD_BLOCK_READY[block] = True


def fold_slow(text: str) -> tuple[str, list[int]]:
    """``fold``, character by character: what it means."""
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
    """A name folded, without leading or trailing space: the key names are compared by."""
    return fold(name)[0].strip()


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _FoldTable(dict[int, str]):
    """``str.translate`` table of ``fold_char``, filled on first sight of each character."""

    def __missing__(self, code: int) -> str:
        folded = self[code] = fold_char(chr(code))
        return folded


FOLD_TABLE = _FoldTable()  # text.translate(FOLD_TABLE): folded, whitespace runs not collapsed


# fold's tables, over the Basic Multilingual Plane: each character's fold (at most three characters
# there: a Hangul syllable decomposes into three jamo), padded with 0, and the fold's length
_BMP = 0x10000
_FOLD_BY_CHARACTER = 128  # shorter texts (names, titles) are folded faster one character at a time
_FOLD_WIDTH = 3
_FOLD_CODES = np.zeros((_BMP, _FOLD_WIDTH), dtype=np.uint32)
_FOLD_LENGTH = np.zeros(_BMP, dtype=np.intp)
_FOLD_BLOCK_READY = np.zeros(_BMP >> 8, dtype=bool)


def _word_part(folded: str) -> str:
    return "".join(c if is_word_char(c) else " " for c in folded)


# ASCII bytes folded, with the bytes that are not word characters as spaces; the bytes of UTF-8
# sequences (0x80 and above) kept for the second pass.
_ASCII_WORDS = bytes(
    ord(_word_part(chr(b).lower())) if b < 0x80 else b for b in range(256)
)


class _WordTable(dict[int, str]):
    """``str.translate`` table: each character folded, the non-word characters of the fold as spaces."""

    def __missing__(self, code: int) -> str:
        folded = self[code] = _word_part(fold_char(chr(code)))
        return folded


_WORD_TABLE = _WordTable()
# A run that starts at a non-ASCII character, up to the next ASCII letter or digit: one translate
# call per run keeps Latin-script text (a few accented letters) on the fast ASCII path and takes
# Cyrillic or Arabic text (ASCII spaces and punctuation between the words) in one piece.
_NON_ASCII_RUN = re.compile(r"([^\x00-\x7f][^a-z0-9]*)")


def folded_words(text: str) -> list[str]:
    """The words of ``text`` after folding: "HAUT-KARABAKH" → ["haut", "karabakh"].

    The same words as ``fold(text)`` gives (folding is per character; a word is a run of \\w
    characters). Why not one ``str.translate`` with ``FOLD_TABLE`` and a regex: CPython translates
    ASCII text with a 128-entry cache but every other character by a dict look-up, ~40 ns each, and
    matching thousands of rules spends most of its time here. So the ASCII bytes go through
    ``bytes.translate`` (a 256-byte table, in C), and only the runs with other characters through
    the dict."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORDS).decode("ascii").split()
    ascii_done = text.encode("utf-8", "surrogatepass").translate(_ASCII_WORDS).decode("utf-8", "surrogatepass")
    parts = _NON_ASCII_RUN.split(ascii_done)
    parts[1::2] = [part.translate(_WORD_TABLE) for part in parts[1::2]]
    return "".join(parts).split()


# --- Russian: nouns and names change their ending with grammatical case -------------------
_CASES = 6  # nominative, genitive, dative, accusative, instrumental, prepositional
_RU_ENDINGS: list[tuple[str, list[list[str]]]] = [
    ("ый", [["ый"], ["ого"], ["ому"], ["ый", "ого"], ["ым"], ["ом"]]),
    ("ий", [["ий"], ["ого", "его"], ["ому", "ему"], ["ий", "ого"], ["им"], ["ом", "ем"]]),
    ("ая", [["ая"], ["ой"], ["ой"], ["ую"], ["ой"], ["ой"]]),
    ("я", [["я"], ["и"], ["и", "е"], ["ю"], ["ей"], ["и", "е"]]),
    ("а", [["а"], ["ы", "и"], ["е", "и"], ["у"], ["ой", "ей"], ["е", "и"]]),
    ("й", [["й"], ["я"], ["ю"], ["я"], ["ем"], ["е"]]),
    ("ь", [["ь"], ["и", "я"], ["и", "ю"], ["ь", "я"], ["ью", "ем"], ["и", "е"]]),
]
_RU_INDECLINABLE = tuple("оуиеюэ") + tuple("ОУИЕЮЭ")


def _ru_token_forms(token: str, case: int) -> list[str]:
    if len(token) < 3 or token.isupper() or token.endswith(_RU_INDECLINABLE):
        return [token]
    for ending, table in _RU_ENDINGS:
        if token.endswith(ending):
            stem = token[: -len(ending)]
            return [stem + e for e in table[case]]
    if token[-1].isalpha():  # hard consonant
        return [[token], [token + "а"], [token + "у"], [token + "а", token], [token + "ом", token + "ым"],
                [token + "е"]][case]
    return [token]


def russian_forms(name: str) -> set[str]:
    """The name in the six cases; each word takes the same case (Владимира Путина)."""
    tokens = name.split()
    forms = {name}
    for case in range(_CASES):
        per_token = [_ru_token_forms(t, case) for t in tokens]
        forms.update(" ".join(combo) for combo in itertools.product(*per_token))
    return forms


# --- Arabic: clitic prefixes are written joined to the word; "g" is written ج or غ ------------
_AR_PREFIXES = ("و", "ب", "ل", "ك", "ف", "وب", "ول", "وك", "فب", "فل", "فك")


def is_arabic(text: str) -> bool:
    """Whether ``text`` has a character of the Arabic block."""
    return any("\u0600" <= ch <= "\u06ff" for ch in text)


def arabic_forms(folded: str) -> dict[str, int]:
    """Spelling variants (ج/غ) and the forms with a prefix, each with the prefix's length.

    On a name that starts with ال, a prefix ending in ل absorbs the alif: ل + الكرملين = للكرملين.
    """
    spellings = {folded, folded.replace("غ", "ج"), folded.replace("ج", "غ")}
    forms = dict.fromkeys(spellings, 0)
    for base in spellings:
        for prefix in _AR_PREFIXES:
            if base.startswith("ال") and prefix.endswith("ل"):
                forms.setdefault(prefix[:-1] + "ل" + base[1:], len(prefix) - 1)
            else:
                forms.setdefault(prefix + base, len(prefix))
    return forms
