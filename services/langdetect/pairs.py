"""Close language pairs the statistical models confuse on short text: Turkish/Azerbaijani,
Ukrainian/Russian, Spanish/Portuguese.

Each pair is told apart by linguistic facts, weighed as evidence (positive for the pair's first
language, negative for its second):
- letters one language writes and the other does not (Azerbaijani ə x q, Turkish â î û;
  Ukrainian і ї є ґ and the apostrophe before я ю є ї, Russian ы э ъ ё; Portuguese ã õ ç â ê ô à,
  Spanish ñ ¿ ¡);
- very frequent function words of one language that the other does not have (Turkish "ve",
  "için", "değil" where Azerbaijani writes "və", "üçün", "deyil"; Ukrainian "що", "як", "це" where
  Russian writes "что", "как", "это"; Spanish "el", "los", "y" where Portuguese writes "o", "os",
  "e");
- suffixes (Turkish present "-iyor", future "-acak", infinitive "-mak" where Azerbaijani has
  "-ir", "-acaq", "-maq"; Ukrainian "-ння" where Russian has "-ние"; Spanish "-ción", "-dad"
  where Portuguese has "-ção", "-dade");
- spelling rules: Turkish puts an apostrophe before a name's ending (Ankara'da), Azerbaijani a
  hyphen after an acronym or a number (ABŞ-da, 2016-cı).
Names (a capital inside the text) are left out of the suffix checks.
The word lists are the languages' most frequent words (grammar books, frequency lists), not
picked from any evaluation text. No model, nothing loaded: a few set look-ups and regexes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Punctuation around a word; inside, a word may hold an apostrophe (м'ясо) or a hyphen (Ajudamo-lo).
_AROUND = "\"'’ʼ`«»„“”‘‹›.,;:!?¿¡()[]{}<>—–-…*/\\|#%&+=~^@$"
_INSIDE = str.maketrans("", "", "'’ʼ-")


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_Patterns = tuple[tuple[re.Pattern[str], int], ...]


def _in_words(*patterns: tuple[str, int]) -> _Patterns:
    """Word patterns (^ and $ for the word's ends) made to run once over words joined by spaces."""
    return tuple((re.compile(src.replace("^", r"(?<!\w)").replace("$", r"(?!\w)")), weight)
                 for src, weight in patterns)


def _scored(words: list[str], patterns: _Patterns) -> int:
    joined = " ".join(words)
    return sum(weight * len(pattern.findall(joined)) for pattern, weight in patterns)


def _words(text: str) -> list[str]:
    """The words of a text, without numbers or anything holding a digit."""
    words = []
    for token in text.split():
        word = token.strip(_AROUND)
        if word and (word.isalpha() or word.translate(_INSIDE).isalpha()):
            words.append(word)
    return words


def _count(text: str, letters: str) -> int:
    return sum(text.count(letter) for letter in letters)


# --- Azerbaijani (+) / Turkish (-) -------------------------------------------------------------

# Azerbaijani words (without ə, x or q, which count as letters) that Turkish spells otherwise.
_AZ_WORDS = _set("""
üçün çünki heç hansı böyük kiçik öz olub edib edir deyir gedir getdi etdi bildirib hamı hamısı
salam dörd yeddi min güc ağac borc idi
respublika respublikası nazir naziri nazirliyi prezidenti yanvar fevral aprel iyun iyul
sentyabr oktyabr noyabr dekabr
""")
# Turkish words Azerbaijani spells otherwise (və, üçün, kimi, deyil, çox, yox, mən, sən, nə …).
_TR_WORDS = _set("""
ve için gibi çok yok ben sen ne şimdi her en kadar ile ama veya yani çünkü bile diye olarak hem
sadece ancak fakat bazı şu nasıl neden niçin nerede hangi hiç birlikte hâlâ hala artık önce henüz
hemen yine belki biraz bugün yarın gece hepsi başka eski güzel kız evet hayır lütfen merhaba
teşekkürler böyle şöyle öyle ayrıca dört yedi bin güç
büyük küçük iyi kendi kendisi bana sana beni seni benim senin eğer göre yıl yılı yılında yıllık
tarafından üzere karşı mı mi mu mü mısın misin musun müsün cumhurbaşkanı başkan bakan
bakanı bakanlığı ocak şubat nisan mayıs haziran temmuz ağustos eylül ekim kasım aralık
""")
_AZ_LETTERS = frozenset("xqäXQÄ")  # ä: how the schwa was printed in 1991-92 and is still typed
_TR_LETTERS = frozenset("âîûÂÎÛ")
_TR_SUFFIXES = _in_words(
    # present continuous -iyor (Azerbaijani -ir): the stem's vowel narrows to ı i u ü before it
    (r"[ıiuü]yor(?:um|sun|uz|sunuz|lar|du|dum|dun|duk|dunuz|dular|muş|sa|ken|mu|mı)?$", 3),
    # future -acak/-ecek (Azerbaijani -acaq/-əcək)
    (r"(?:acak|ecek|acağ|eceğ)", 2),
    ("değil", 2),  # Azerbaijani deyil
    # infinitive -mak/-mek (Azerbaijani -maq/-mək)
    (r"m(?:ak|ek)(?:ta|te|tan|ten|la|le)?$", 2),
    # ability -ebil/-abil written on the verb (Azerbaijani: edə bilər, two words)
    (r"[ae]bil(?:ir|di|dı|en|se|sin|iriz|irler|miş|mış)", 2),
    # suffixes after a voiceless consonant turn t in Turkish, stay d in Azerbaijani: etti, gitti,
    # yaptı, kitapta, olmuştur (etdi, getdi, kitabda, olmuşdur)
    (r"[çfhpşt]t(?:[ıiuü](?:m|n|k|niz|nız|nuz|nüz|lar|ler)?|[ae]n?)$", 1),
    (r"[çfhkpsşt]t[ıiuü]r(?:lar|ler)?$", 2),
    # a back vowel then k or p at the end: Turkish çocuk, yok, kitap; Azerbaijani uşaq, yox, kitab
    (r"[aıou]k$|[aeıioöuü]p$", 1),
    ("ken$", 1),  # -ken (Azerbaijani -kən)
)
_AZ_SUFFIXES = _in_words(
    # Turkish does not end a word in b or c (kitap, ağaç): Azerbaijani olub, edib, kitab, güc
    ("[ıiuü]b$", 2), ("[aeıioöuü][bc]$", 1),
    ("deyil", 2),  # Turkish değil
    # d after a voiceless consonant (Turkish t): etdi, olmuşdur, getdi
    ("[çfpsşt]d[ıiuüaeə]", 2),
    # present -ır/-ir after a vowel: başlayır, oxuyur, deyir (Turkish başlıyor, okuyor, diyor)
    ("[aeıioöuü]y[ıiuü]r(?:lar|am|san|ıq|ik|uq|ük|sınız|siniz|dı|di)?$", 2),
)


# Whole-text marks of the spelling rules. Turkish puts an apostrophe between a name or a number and
# its case ending (Ankara'da, Tom'un, 2016'da); Azerbaijani writes it on (Bakıda) or after a hyphen
# (ABŞ-da, 2016-cı il), and counts years with "il" (Turkish yıl).
_TR_MARKS = (
    (re.compile(r"(?:[A-ZÇĞİÖŞÜ][^\W\d_]*|\d)['’](?:[dt][ae]n?|n?[ıiuü]n|y?[ae]|y?[ıiuü]|y?l[ae]|n[dt][ae]n?|ki|"
                r"l[ae]r|l[ae]r[ıi]|nc[ıiuü]|s[ıiuü]|[dt][ıiuü]r)\b"), 3),
)
_AZ_MARKS = (
    (re.compile(r"\d\s?-\s?(?:c[ıiuü]|[ıiuü]nc[ıiuü])\b"), 3),
    (re.compile(r"[A-ZÇĞİÖŞÜƏ]{2}\s?-\s?(?:d[aeə]n?|n?[ıiuü]n|y[aeə]|[ıiuü]|l[aeə]r)\b"), 2),
    (re.compile(r"\d\s+il(?:in|ində|də|dən|i)?\b"), 2),
)


def _turkic_lower(word: str) -> str:
    return word.replace("İ", "i").replace("I", "ı").lower()


def az_tr_evidence(text: str) -> int:
    """Positive for Azerbaijani, negative for Turkish (the schwa is the caller's, it decides alone)."""
    score = 0
    if "'" in text or "’" in text:
        score -= sum(weight * len(p.findall(text)) for p, weight in _TR_MARKS)
    if "-" in text or " il" in text:
        score += sum(weight * len(p.findall(text)) for p, weight in _AZ_MARKS)
    plain: list[str] = []  # words for the suffixes: not names, not in the lists
    for i, raw in enumerate(_words(text)):
        word = _turkic_lower(raw)
        # a capital inside the text, or inside the word (DemirClub): a name
        proper = (raw[0].isupper() and i > 0) or not raw[1:].islower()
        if not _AZ_LETTERS.isdisjoint(raw):
            score += 1 if proper else 2  # foreign names (Xi, Qatar) are written with them in Turkish too
        if not _TR_LETTERS.isdisjoint(raw):
            score -= 2
        if word in _AZ_WORDS:
            score += 2
        elif word in _TR_WORDS:
            score -= 2
        elif not proper:
            plain.append(word)
    return score + _scored(plain, _AZ_SUFFIXES) - _scored(plain, _TR_SUFFIXES)


# --- Ukrainian (+) / Russian (-) ----------------------------------------------------------------

_UK_LETTERS = "іїєґІЇЄҐ"
# Ukrainian typed with a Latin i for і (вiн, долинi; "i" alone for the conjunction і).
_LATIN_I = re.compile(r"(?<=[\u0400-\u04ff])[iI]|[iI](?=[\u0400-\u04ff])|(?<![^\W\d_])[iI](?![^\W\d_])")
_RU_LETTERS = "ыэъёЫЭЪЁ"
# Ukrainian writes an apostrophe where Russian writes ъ or ь: м'ясо, об'єкт, п'ять (мясо, объект, пять).
_UK_APOSTROPHE = re.compile("[бвмпфрБВМПФР]['’ʼ][яюєїЯЮЄЇ]")
_UK_WORDS = _set("""
та що як це але його вона вони ми ви був була було були коли якщо або ще де який яка яке якого
якої яких якому якими також цей ця цього цієї щоб дуже можна треба хто чи року з нього мене
зараз тепер бути буде будуть можуть може можу кажуть каже країни країна держави тобто зокрема
саме лише щодо проте адже однак наприклад згодом кожен кожна кожне кожного деякі деяких вже ось доки
""")
_RU_WORDS = _set("""
и что как он она они его ее если или еще когда который которая которое которые которого которой
котором которым которых также только из всех года году где кто тоже очень нет да себя меня
тебя будет может могут можно надо сейчас теперь потом после между под со во ко ни но с к страны
страна россии россия ничего сказал против например однако каждый каждая каждое некоторые некоторых вот
""")
# Words both languages have but that one of them uses much more: left out (на, не, до, по, за …).
_UK_SUFFIXES = _in_words(
    ("(?:ння|ття|ззя|ддя|лля|сся)$", 2),  # питання, життя (вопрос… Russian -ние, -тие)
    ("(?:ють|ують|ають)$", 2),  # 3rd person plural with ь (Russian -ют, -уют, -ают)
    ("(?:ати|ити|ути|яти)$", 1),  # infinitive -ти (Russian -ть)
    ("ою$", 1),  # instrumental -ою (Russian -ой)
    ("(?:ав|ив|яв|ув)$", 1),  # past tense -в (Russian -л): казав, робив (сказал, делал)
    ("вся$", 2),  # past reflexive -вся (Russian -лся): одружився (женился)
    ("тиме(?:ш|мо|те|уть)?$", 2),  # future -тиме: робитиме (Russian будет делать)
    ("тися$", 1),  # reflexive infinitive -тися (Russian -ться)
)
_RU_SUFFIXES = _in_words(
    ("(?:ние|ния|нию|нием|нии|тие|тия)$", 2),  # Ukrainian -ння, -ття
    ("(?:ая|яя|ое|ее|ие)$", 2),  # adjective endings (Ukrainian -а, -я, -е, -є, -і)
    ("[аяуе]ет$", 2),  # 3rd person singular -ет (Ukrainian -є, -е)
    ("(?:ют|ой)$", 1),  # -ют (Ukrainian -ють), -ой (Ukrainian -ою, -ий)
    ("лся$", 2),  # past reflexive -лся (Ukrainian -вся)
)


def uk_ru_evidence(text: str) -> int:
    """Positive for Ukrainian, negative for Russian."""
    score = 3 * (_count(text, _UK_LETTERS) - _count(text, _RU_LETTERS))
    if "i" in text or "I" in text:
        score += 3 * len(_LATIN_I.findall(text))
    if "'" in text or "’" in text or "ʼ" in text:
        score += 3 * len(_UK_APOSTROPHE.findall(text))
    plain: list[str] = []
    for raw in _words(text):
        if len(raw) == 1 and raw.isupper():  # an initial (П. К.)
            continue
        word = raw.lower()
        if word in _UK_WORDS:
            score += 2
        elif word in _RU_WORDS:
            score -= 2
        elif len(word) >= 4:
            plain.append(word)
    return score + _scored(plain, _UK_SUFFIXES) - _scored(plain, _RU_SUFFIXES)


# --- Spanish (+) / Portuguese (-) ---------------------------------------------------------------

_ES_LETTERS = "ñÑ¿¡"
_PT_LETTERS = "ãõçâêôàÃÕÇÂÊÔÀ"
_ES_WORDS = _set("""
el los las la lo y en un una del al con es son su sus más pero muy fue hay sin hasta cuando
donde también ese eso esto ha han ya yo él ella ellos le les otro otra otros nuevo nueva puede
tiene tienen dijo gobierno ciudad mismo después ni uno aquí entonces año años hoy
""")
_PT_WORDS = _set("""
e em um uma do da na nas ao aos pelo pela pelos pelas num numa com não mais
muito muita foi ele ela eles elas isso isto esse essa seu sua seus suas há já até ainda quando
onde mesmo depois pode ter tem são estão eu você nós ou nem sem outro outra outros novo nova
ano anos governo cidade disse também aqui então hoje através portanto
""")
# Words both languages have, one far more often: the Portuguese article o and as (Spanish "or", "ace").
_PT_WEAK_WORDS = _set("o as")
# "o" and "a" (Spanish "or"/"to", Portuguese "the") and "no" (Spanish "not", Portuguese "in the")
# are in neither list: both languages use them constantly.
_ES_SUFFIXES = _in_words(
    ("(?:ción|ciones|sión|siones)$", 2),  # Portuguese -ção, -ções, -são
    ("dad(?:es)?$", 2),  # Portuguese -dade(s)
    ("ón$", 1),  # Portuguese -ão, -om
    ("ll", 1),  # Portuguese lh
    ("[^qg]ue", 1),  # diphthong ue (puede, nuevo): Portuguese pode, novo
    ("y", 1),  # mayor, proyecto, ayuda: Portuguese writes no y (maior, projeto, ajuda)
    ("cc|ct", 1),  # acción, proyecto (Portuguese ação, projeto)
)
_PT_SUFFIXES = _in_words(
    ("dade(?:s)?$", 2),  # Spanish -dad(es)
    ("(?:lh|nh)", 2),  # Spanish ll, ñ
    ("[aeiou]m$", 2),  # Spanish words do not end in m: também, bem, homem (también, bien)
    ("ss", 1),  # Spanish never doubles s: isso, processo (eso, proceso)
)


def es_pt_evidence(text: str) -> int:
    """Positive for Spanish, negative for Portuguese."""
    score = 3 * (_count(text, _ES_LETTERS) - _count(text, _PT_LETTERS))
    plain: list[str] = []
    raws = _words(text)
    words = [raw.lower() for raw in raws]
    for i, (raw, word) in enumerate(zip(raws, words, strict=True)):
        if word in _ES_WORDS:
            score += 2
        # Spanish writes "e" for "y" before an i sound: padre e hijo, España e Italia
        elif word in _PT_WORDS and not (word == "e" and words[i + 1:i + 2]
                                        and words[i + 1].startswith(("i", "hi"))):
            score -= 2
        elif word in _PT_WEAK_WORDS:
            score -= 1
        elif not raw[0].isupper() and len(word) >= 3:
            plain.append(word)
    return score + _scored(plain, _ES_SUFFIXES) - _scored(plain, _PT_SUFFIXES)


# The pairs, each (first language, second language, evidence: positive for the first).
PAIRS: dict[str, tuple[str, str, Callable[[str], int]]] = {}
for _first, _second, _evidence in (("az", "tr", az_tr_evidence), ("uk", "ru", uk_ru_evidence),
                                   ("es", "pt", es_pt_evidence)):
    PAIRS[_first] = PAIRS[_second] = (_first, _second, _evidence)


def pair_evidence(lang: str, text: str) -> tuple[str, int] | None:
    """For a language of a pair: the other language and the evidence for ``lang`` over it."""
    pair = PAIRS.get(lang)
    if pair is None:
        return None
    first, second, evidence = pair
    score = evidence(text)
    return (second, score) if lang == first else (first, -score)
