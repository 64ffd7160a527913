"""entities: variants in fr, en, ar, ru are linked to one id; no false hits."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.entities.gazetteer import usable_name
from services.entities.kb import TableError, load_table
from services.entities.match import Matcher
from services.entities.ner import CHUNK_CHARS, Linker, NerMention, Recognisers, SpacyFrench, chunks
from services.entities.service import tag, watched_tagger
from shared.text import arabic_forms, russian_forms

MATCHER = Matcher(load_table())


def ids(text: str) -> list[str]:
    return [h.entity.id for h in MATCHER.find(text)]


@pytest.mark.parametrize("text", ["Vladimir Putin", "Poutine", "Путин", "Путина", "Путиным", "بوتين", "وبوتين",
                                  "لبوتين", "فلاديمير بوتين", "Владимиром Путиным"])
def test_putin_in_every_form(text: str) -> None:
    assert ids(text) == ["Q7747"]


@pytest.mark.parametrize("text", ["Haut-Karabakh", "Haut Karabakh", "du Haut‑Karabakh", "Nagorno-Karabakh",
                                  "Нагорный Карабах", "Нагорного Карабаха", "в Нагорном Карабахе", "قره باغ",
                                  "قره باج", "وقره باغ", "Bergkarabach", "Dağlık Karabağ"])
def test_karabakh_in_every_form(text: str) -> None:
    assert ids(text) == ["nw:place:nagorno-karabakh"]


def test_french_elision_and_accents() -> None:
    assert ids("l'Azerbaïdjan, d’Arménie et l’ONU") == ["Q227", "Q399", "Q1065"]
    assert ids("AZERBAIDJAN") == ["Q227"]


def test_leftmost_longest() -> None:
    assert ids("le Conseil de sécurité de l'ONU") == ["Q37470"]
    assert ids("Vladimir Poutine") == ["Q7747"]


@pytest.mark.parametrize("text", ["une poutine au fromage", "un accord, un seul", "la russie", "le kremlin",
                                  "Azerbaijani", "arménien", "Putinism", "un Armenian", "us and them",
                                  "الأرميني", "Путинский"])
def test_no_false_hits(text: str) -> None:
    assert ids(text) == []


def test_offsets_point_into_the_original_text() -> None:
    text = "Selon l’agence, وبوتين et Sergueï Lavrov — à Moscou."
    for hit in MATCHER.find(text):
        assert text[hit.start:hit.end] == hit.text
    assert [h.text for h in MATCHER.find(text)] == ["بوتين", "Sergueï Lavrov", "Moscou"]


def test_tag_groups_mentions_by_entity() -> None:
    hits = tag(MATCHER, "Poutine et Aliyev", "Vladimir Poutine a appelé Ilham Aliyev. Poutine a insisté.")
    putin = next(h for h in hits if h.id == "Q7747")
    assert [(m.field, m.text) for m in putin.mentions] == [("title", "Poutine"), ("text", "Vladimir Poutine"),
                                                           ("text", "Poutine")]
    assert putin.type == "person" and putin.name == "Vladimir Putin"


def test_variant_generators() -> None:
    assert {"Армении", "Армению", "Арменией"} <= russian_forms("Армения")
    assert "Баку" in russian_forms("Баку") and len(russian_forms("Баку")) == 1
    forms = arabic_forms("الكرملين")
    assert {"الكرملين", "والكرملين", "بالكرملين", "للكرملين"} <= set(forms)
    assert forms["والكرملين"] == 1


def test_watchlist_is_reloaded(tmp_path: Path) -> None:
    import asyncio
    import os

    watch = tmp_path / "watch.yaml"
    watch.write_text("entities:\n  - {id: nw:org:acme, type: organisation, name: Acme, names: {en: [Acme Corp]}}\n")
    source = watched_tagger("", str(watch))
    assert [h.entity.id for h in source.value.matcher.find("Acme Corp said.")] == ["nw:org:acme"]
    watch.write_text("entities:\n  - {id: Q7747, names: {en: [the Russian leader]}}\n")
    os.utime(watch, (1, 1))
    assert asyncio.run(source.refresh(force=True))
    assert [h.entity.id for h in source.value.matcher.find("The Russian leader spoke.")] == ["Q7747"]
    watch.write_text("not: [valid")
    os.utime(watch, (2, 2))
    assert not asyncio.run(source.refresh(force=True))  # a broken edit keeps the table it had
    assert "not valid YAML" in source.error or "valid" in source.error
    assert [h.entity.id for h in source.value.matcher.find("The Russian leader spoke.")] == ["Q7747"]


def test_table_errors_name_the_file_and_the_place(tmp_path: Path) -> None:
    table = tmp_path / "watch.yaml"
    table.write_text("entities:\n  - {id: a, names: {en: [Acme]}}\n  - {id: b, names: [Bcme]}\n", "utf-8")
    with pytest.raises(TableError, match=r"watch\.yaml: Expected `object \| null`, got `array` - at "
                                         r"`\$\.entities\[1\]\.names`"):
        load_table([str(table)], gazetteer=False)
    table.write_text("entities:\n  - {id: a, acronyms: [[AC]]}\n", "utf-8")
    with pytest.raises(TableError, match=r"`\$\.entities\[0\]\.acronyms\[0\]`"):
        load_table([str(table)], gazetteer=False)
    table.write_text("entities:\n  - {name: Acme}\n", "utf-8")
    with pytest.raises(TableError, match=r"watch\.yaml: entity #0 has no id"):
        load_table([str(table)], gazetteer=False)
    table.write_text("entities: nothing\n", "utf-8")
    with pytest.raises(TableError, match="expected a mapping with an 'entities' list"):
        load_table([str(table)], gazetteer=False)
    # A watchlist saved in Latin-1 is refused with the line of the first byte that is not UTF-8.
    table.write_bytes("entities:\n  - {id: a, names: {fr: [Société Acme]}}\n".encode("latin-1"))
    with pytest.raises(TableError, match=r"watch\.yaml: line 2: byte 0xe9 is not UTF-8"):
        load_table([str(table)], gazetteer=False)


def test_table_short_forms_are_accepted(tmp_path: Path) -> None:
    table = tmp_path / "watch.yaml"
    table.write_text("entities:\n  - {id: 2024, names: {en: Acme Corp, fr: }, acronyms: ACME, geonames: '12',"
                     " context: [market], offices: {EU: chair}}\n", "utf-8")
    acme = load_table([str(table)], gazetteer=False)[-1]
    assert (acme.id, acme.type, acme.name, acme.names, acme.acronyms, acme.geonames, acme.context, acme.offices) == (
        "2024", "other", "2024", {"en": ["Acme Corp"], "fr": []}, ["ACME"], 12, ["market"], {"EU": ["chair"]})


class FakeRecogniser:
    """Stands in for a NER model: returns the mentions it was given."""

    def __init__(self, mentions: list[NerMention]) -> None:
        self._mentions = mentions

    def mentions(self, text: str) -> list[NerMention]:
        return self._mentions


def test_ner_mentions_are_linked_by_name_or_unique_surname() -> None:
    linker = Linker(load_table())
    def linked(text: str) -> str | None:
        entity = linker.link(NerMention(0, len(text), "PER", text))
        return entity.id if entity else None

    assert linked("Sergueï Lavrov") == "nw:person:sergey-lavrov"
    assert linked("Сергея Лаврова") == "nw:person:sergey-lavrov"  # surname in the genitive
    assert linked("M. Pachinian") == "nw:person:nikol-pashinyan"
    assert linker.link(NerMention(0, 15, "PER", "Anna Petrossian")) is None
    assert linked("Carney") == "nw:person:mark-carney"
    assert linked("Art Carney") is None  # the same surname after another given name is another person
    assert linked("Francesca Albanese") is None
    assert linked("Yi") is None and linked("III") is None  # Wang Yi, Charles III: not surnames
    assert linker.link(NerMention(0, 6, "ORG", "Moscou")) is None  # a place is not an organisation


def test_tag_adds_what_the_table_misses_once() -> None:
    text = "Vladimir Poutine a reçu Anna Petrossian au Kremlin."
    recogniser = FakeRecogniser([NerMention(0, 16, "PER", "Vladimir Poutine"),
                                 NerMention(24, 39, "PER", "Anna Petrossian")])
    table = load_table()
    found = {e.id: e for e in tag(Matcher(table), "", text, recogniser, Linker(table))}
    assert found["Q7747"].source == "table" and len(found["Q7747"].mentions) == 1  # not counted twice
    unlinked = found["ner:person:anna petrossian"]
    assert unlinked.source == "ner-unlinked" and unlinked.type == "person"
    assert text[unlinked.mentions[0].start:unlinked.mentions[0].end] == "Anna Petrossian"


def test_ner_languages_are_checked() -> None:
    with pytest.raises(ValueError, match="no NER model for xx"):
        Recognisers(["fr", "xx"])
    assert Recognisers([]).for_language("fr") is None


def test_spacy_french_finds_people_and_places() -> None:
    found = SpacyFrench().mentions("Le président Emmanuel Macron s'est rendu à Marseille mardi.")
    assert ("Emmanuel Macron", "PER") in {(m.text, m.label) for m in found}
    assert ("Marseille", "LOC") in {(m.text, m.label) for m in found}


def test_long_texts_go_through_ner_in_pieces_cut_at_paragraph_ends() -> None:
    # Memory grows with the text a model gets at once (3.5 GB for 1,000,000 characters of French): a long
    # article is recognised in pieces, and its mentions keep their places in the whole text.
    paragraph = "Le président Emmanuel Macron s'est rendu à Marseille mardi avec Vladimir Poutine.\n"
    text = paragraph * (2 * CHUNK_CHARS // len(paragraph) + 3)
    pieces = chunks(text)
    assert len(pieces) == 3 and all(len(p) <= CHUNK_CHARS and p.endswith("\n") for _, p in pieces)
    assert "".join(p for _, p in pieces) == text and [o for o, _ in pieces][1] == len(pieces[0][1])
    assert chunks("abcdefghij", 4) == [(0, "abcd"), (4, "efgh"), (8, "ij")]  # no break anywhere: cut at the size
    assert chunks("un. deux trois", 10) == [(0, "un. "), (4, "deux trois")] and chunks("") == [(0, "")]
    found = SpacyFrench().mentions(text)
    alone = SpacyFrench().mentions(paragraph)
    assert len(found) == len(alone) * text.count("\n")
    assert all(text[m.start:m.end] == m.text for m in found)
    assert {(m.text, m.label) for m in found} == {(m.text, m.label) for m in alone}


def test_entity_that_needs_context_counts_only_with_it(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("""entities:
  - id: nw:place:jordan-river
    type: place
    name: Jordan River
    names: {en: [Jordan]}
    context: [river, Dead Sea]
""", "utf-8")
    matcher = Matcher(load_table([str(extra)], gazetteer=False))
    assert [h.entity.id for h in matcher.find("Jordan scored twenty points last night.")] == []
    found = [h.entity.id for h in matcher.find("The Jordan flows into the Dead Sea.")]
    assert found == ["nw:place:jordan-river"]


@pytest.mark.parametrize(("text", "entity"), [
    ("Le président s'est rendu en France.", "iso3166:FR"), ("زار الرئيس فرنسا أمس", "iso3166:FR"),
    ("Визит во Францию", "iso3166:FR"), ("Almanya ile görüşme", "iso3166:DE"),
    ("Meeting in Buenos Aires", None), ("Flüge nach Peking", None),
])
def test_run_time_countries_and_cities(text: str, entity: str | None) -> None:
    found = [h.entity for h in MATCHER.find(text)]
    assert found, text
    if entity:
        assert found[0].id == entity
    else:
        assert found[0].id.startswith("geonames:") and found[0].type == "place"


def test_gazetteer_names_that_look_like_words_or_codes_are_not_used() -> None:
    assert not usable_name("BAK") and not usable_name("baku") and not usable_name("Also")
    assert usable_name("Bakou") and usable_name("باكو")
    assert ids("the nice weather in may") == []


@pytest.mark.parametrize(("text", "found"), [
    ("Atlanta, Georgia, voted for the governor.", False),
    ("جورجيا ولاية أمريكية في الجنوب", False),
    ("La Géorgie a voté dimanche.", True),  # only "Georgia" and جورجيا need context
    ("Грузия подписала соглашение", True),
    ("Georgia's ruling party, in Tbilisi, said", True),
    ("His great-uncle was the actor Art Carney.", False),
    ("Carney told reporters in Ottawa", True),
    ("Erdoğan Bayraktar ve beraberindekiler", False),  # a given name
    ("Cumhurbaşkanı Erdoğan konuştu", True),
])
def test_names_that_need_context(text: str, found: bool) -> None:
    ambiguous = {"Q230", "nw:person:mark-carney", "Q39259"}
    assert bool(ambiguous & set(ids(text))) is found


G20 = ["AR", "AU", "BR", "CA", "CN", "FR", "DE", "IN", "ID", "IT", "JP", "MX", "RU", "SA", "ZA", "KR", "TR", "GB", "US"]
SOUTH_CAUCASUS_AND_NEIGHBOURS = ["AM", "AZ", "GE", "IR"]  # and RU, TR above
OFFICES = {"head of state", "head of government", "foreign minister", "defence minister"}
EU_OFFICES = {"president of the European Commission", "president of the European Council",
              "high representative for foreign affairs", "commissioner for defence"}


def test_starter_table_has_every_office_of_the_g20_and_the_south_caucasus() -> None:
    people = [e for e in load_table(gazetteer=False) if e.type == "person"]
    held: dict[str, set[str]] = {}
    for person in people:
        for member, offices in person.offices.items():
            held.setdefault(member, set()).update(offices)
    for member in G20 + SOUTH_CAUCASUS_AND_NEIGHBOURS:
        assert held.get(member, set()) >= OFFICES, member
    assert held["EU"] >= EU_OFFICES
    assert "head of the commission" in held["African Union"]
    for person in people:  # every person can be found in Russian and Arabic text, whose scripts differ
        assert person.names.get("ru") and person.names.get("ar"), person.name
    ids_seen = [e.id for e in load_table(gazetteer=False)]
    assert len(ids_seen) == len(set(ids_seen))


@pytest.mark.parametrize(("text", "entity"), [
    ("Le chancelier Friedrich Merz a reçu Frank-Walter Steinmeier", ["nw:person:friedrich-merz",
                                                                     "nw:person:frank-walter-steinmeier"]),
    ("Президент Южной Кореи Ли Чжэ Мён", ["nw:person:lee-jae-myung"]),
    ("التقى وزير الخارجية السعودي فيصل بن فرحان", ["nw:person:faisal-bin-farhan"]),
    ("Kaja Kallas et Ursula von der Leyen", ["nw:person:kaja-kallas", "nw:person:ursula-von-der-leyen"]),
    ("El presidente Javier Milei y Claudia Sheinbaum", ["nw:person:javier-milei", "nw:person:claudia-sheinbaum"]),
    ("Премьер-министр Японии Санаэ Такаити", ["nw:person:sanae-takaichi"]),
])
def test_g20_leaders_in_several_languages(text: str, entity: list[str]) -> None:
    assert [i for i in ids(text) if not i.startswith(("iso3166:", "Q"))] == entity
