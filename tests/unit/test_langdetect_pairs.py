"""langdetect: the close pairs (Turkish/Azerbaijani, Ukrainian/Russian, Spanish/Portuguese) on short text."""

from __future__ import annotations

import pytest

from services.langdetect.detect import detect
from services.langdetect.pairs import az_tr_evidence, es_pt_evidence, pair_evidence, uk_ru_evidence


@pytest.mark.parametrize(("text", "lang"), [
    # Turkish: -iyor, the apostrophe before a name's ending, ve/için/değil, -acak, -mak, t after p/ç
    ("Ne yapıyorsun?", "tr"),
    ("Tom'un nerede olduğunu bilmiyorum.", "tr"),
    ("Yarın Ankara'ya gideceğim.", "tr"),
    ("Bu iş için erken değil.", "tr"),
    ("Kapıyı açtı ve gitti.", "tr"),
    ("Okula gitmek istemiyor.", "tr"),
    # Azerbaijani without a schwa: x and q, -ıb, -yır, -cı after a year, hyphened endings
    ("Çox sağ ol", "az"),
    ("Uşaqlar kitab oxuyur.", "az"),
    ("Qız yazır.", "az"),
    ("Onlar Bakıda yaşayır.", "az"),
    ("O, 2016-cı ildə Bakıya köçüb.", "az"),
    ("Bu barada ABŞ-da danışıb.", "az"),
    ("Bu müxtәsәr nümunәlәrdәn biri", "az"),  # the Cyrillic ә typed for ə is not Kazakh
    # two words both languages have: both are possible
    ("bu gün", "und"), ("bir şey", "und"),
])
def test_turkish_and_azerbaijani_short_text(text: str, lang: str) -> None:
    assert detect(text).lang == lang


def test_turkish_read_through_the_wrong_code_page_is_turkish() -> None:
    # windows-1254 shown as windows-1252: ı ş ğ become ý þ ð (fastText says Czech)
    assert detect("Bakanlýk yarýn açýklama yapacak, dedi Ýstanbul valisi.").lang == "tr"
    assert detect("Það er gott að vera hér.").lang == "is"  # Icelandic keeps its þ and ð
    assert detect("Það er gott").lang == "is"


@pytest.mark.parametrize(("text", "lang"), [
    ("Я думаю, що так.", "uk"),
    ("Це було дуже давно.", "uk"),
    ("Вона каже, що буде дощ.", "uk"),
    ("Вiн прийшов додому", "uk"),  # a Latin i typed for і
    ("Він прийшов додому пізно.", "uk"),
    ("Он сказал, что будет дождь.", "ru"),
    ("Это было очень давно.", "ru"),
    ("Когда он вернулся домой?", "ru"),
])
def test_ukrainian_and_russian_short_text(text: str, lang: str) -> None:
    assert detect(text).lang == lang


@pytest.mark.parametrize(("text", "lang"), [
    ("Não sei o que fazer.", "pt"),
    ("No sé qué hacer.", "es"),
    ("O governo da cidade anunciou", "pt"),
    ("El gobierno de la ciudad anunció", "es"),
    ("A situação política no país", "pt"),
    ("La situación política en el país", "es"),
    ("Ele também disse que vai votar.", "pt"),
])
def test_spanish_and_portuguese_short_text(text: str, lang: str) -> None:
    assert detect(text).lang == lang


def test_names_alone_keep_their_language() -> None:
    assert detect("Poutine reçoit Pachinian").lang == "fr"
    assert detect("Erdoğan Aliyev ile görüştü").lang == "tr"


@pytest.mark.parametrize(("text", "sign"), [
    ("yapıyorum", -1), ("olmuştur", -1), ("Ankara'da", -1), ("gelecek", -1), ("bilmek", -1),
    ("olub", 1), ("olmuşdur", 1), ("çox", 1), ("2010-cu il", 1), ("başlayır", 1),
    ("bu gün", 0), ("şähär", 1), ("Xi Jinping", 1),  # a name with x leans to Azerbaijani; the referee weighs it
])
def test_az_tr_evidence(text: str, sign: int) -> None:
    score = az_tr_evidence(text)
    assert (score > 0) - (score < 0) == sign


@pytest.mark.parametrize(("text", "sign"), [
    ("що", 1), ("питання", 1), ("м'ясо", 1), ("вони знають", 1), ("вiн", 1),
    ("что", -1), ("решение", -1), ("новая", -1), ("делает", -1), ("объект", -1),
    ("на столе", 0),
])
def test_uk_ru_evidence(text: str, sign: int) -> None:
    score = uk_ru_evidence(text)
    assert (score > 0) - (score < 0) == sign


@pytest.mark.parametrize(("text", "sign"), [
    ("el niño", 1), ("nación", 1), ("ciudad", 1), ("España e Italia", 1), ("llamar", 1),
    ("não", -1), ("nação", -1), ("cidade", -1), ("Brasil e Argentina", -1), ("também", -1), ("trabalho", -1),
    ("a casa", 0),
])
def test_es_pt_evidence(text: str, sign: int) -> None:
    score = es_pt_evidence(text)
    assert (score > 0) - (score < 0) == sign


def test_pair_evidence_is_for_the_language_asked() -> None:
    assert pair_evidence("tr", "yapıyorum") == ("az", 3)
    assert pair_evidence("az", "yapıyorum") == ("tr", -3)
    assert pair_evidence("fr", "bonjour") is None
