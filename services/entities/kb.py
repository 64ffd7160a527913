"""The entity table: canonical ids, types and names per language, and the name variants
the matcher looks for (Russian case endings, Arabic prefixes and spellings).

Tables are YAML files (``entities: [{id, type, name, names: {lang: [..]}, acronyms: [..]}]``):
the built-in starter table, an optional extra table, and the user's watchlist. Later files
add names to an id already defined, or define new entities.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from services.entities.normalise import fold_name

log = logging.getLogger(__name__)


@dataclass
class Entity:
    id: str
    type: str
    name: str
    names: dict[str, list[str]] = field(default_factory=dict)
    acronyms: list[str] = field(default_factory=list)
    iso: str = ""  # ISO 3166 alpha-2 of a country: the run-time country list merges into this entry
    geonames: int = 0  # GeoNames id of a place: the run-time city list merges into this entry
    # Needs context: the entity counts only if one of these words is also in the text (a name
    # shared with something else, such as "Georgia", the country and the US state).
    context: list[str] = field(default_factory=list)
    # The names (or acronyms) that need that context; empty: all of them. "Georgia" needs it, "Géorgie" does not.
    context_names: list[str] = field(default_factory=list)
    # Offices a person holds or held: member (ISO 3166 code, "EU", "African Union") → offices,
    # such as "head of state" or "former defence minister". Descriptive: matching does not use it.
    offices: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Alias:
    """One string to look for, folded, and how a hit on it must look in the original text."""

    folded: str
    entity: int  # index into the table's entity list
    written: str  # the name as written in the table
    exact: bool  # acronym: the original text must equal ``written`` exactly
    capital: bool  # the original text must start with a capital letter
    prefix: int = 0  # folded characters of a joined clitic (Arabic و ب ل ...) not part of the name
    needs_context: bool = False  # counts only with one of the entity's context words in the text


class TableError(ValueError):
    pass


def _parse(doc: Any, origin: str) -> list[Entity]:
    if not isinstance(doc, dict) or not isinstance(doc.get("entities"), list):
        raise TableError(f"{origin}: expected a mapping with an 'entities' list")
    out = []
    for n, raw in enumerate(doc["entities"]):
        if not isinstance(raw, dict) or not raw.get("id"):
            raise TableError(f"{origin}: entity #{n} has no id")
        names = raw.get("names") or {}
        if not isinstance(names, dict):
            raise TableError(f"{origin}: entity {raw['id']}: 'names' must map language → list")
        out.append(Entity(
            id=str(raw["id"]), type=str(raw.get("type", "other")), name=str(raw.get("name", raw["id"])),
            names={str(lang): [str(x) for x in (v if isinstance(v, list) else [v])] for lang, v in names.items()},
            acronyms=[str(x) for x in raw.get("acronyms") or []],
            iso=str(raw.get("iso") or ""), geonames=int(raw.get("geonames") or 0),
            context=[str(x) for x in raw.get("context") or []],
            context_names=[str(x) for x in raw.get("context_names") or []],
            offices={str(member): [str(x) for x in (v if isinstance(v, list) else [v])]
                     for member, v in (raw.get("offices") or {}).items()},
        ))
    return out


def _merge_gazetteer(entities: list[Entity]) -> None:
    """Add the run-time countries and cities: into the curated entry that claims them (by ISO code,
    GeoNames id or English name), else as entities of their own, without names another entity has."""
    from services.entities.gazetteer import gazetteer

    by_iso = {e.iso: e for e in entities if e.iso}
    by_geonames = {e.geonames: e for e in entities if e.geonames}
    by_english = {n: e for e in entities if e.type == "place" for n in e.names.get("en", [])}
    owned = {fold_name(n) for e in entities for names in e.names.values() for n in names}
    for found in gazetteer():
        english = found.names.get("en", [])
        target = (by_iso.get(found.iso) if found.iso else None) or by_geonames.get(found.geonames) \
            or next((by_english[n] for n in english if n in by_english), None)
        fresh = {lang: [n for n in names if fold_name(n) not in owned] for lang, names in found.names.items()}
        fresh = {lang: names for lang, names in fresh.items() if names}
        if target is not None:
            for lang, names in fresh.items():
                target.names.setdefault(lang, []).extend(names)
        elif fresh:
            entities.append(Entity(found.id, found.type, found.name, fresh, iso=found.iso, geonames=found.geonames))
        owned.update(fold_name(n) for names in fresh.values() for n in names)


def load_table(extra_paths: list[str] | None = None, gazetteer: bool = True) -> list[Entity]:
    """The built-in table, the run-time countries and cities, then extra tables (later files add
    names to existing ids)."""
    builtin = resources.files("services.entities").joinpath("data/entities.yaml").read_text("utf-8")
    entities = _parse(yaml.safe_load(builtin), "built-in table")
    if gazetteer:
        _merge_gazetteer(entities)
    by_id = {e.id: e for e in entities}
    for path in extra_paths or []:
        if not path:
            continue
        for entity in _parse(yaml.safe_load(Path(path).read_text("utf-8")), path):
            known = by_id.get(entity.id)
            if known is None:
                by_id[entity.id] = entity
                entities.append(entity)
                continue
            for lang, names in entity.names.items():
                known.names.setdefault(lang, []).extend(n for n in names if n not in known.names.get(lang, []))
            known.acronyms.extend(a for a in entity.acronyms if a not in known.acronyms)
    return entities


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


def _is_arabic(text: str) -> bool:
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


def _needs_context(entity: Entity, written: str) -> bool:
    return bool(entity.context) and (not entity.context_names or written in entity.context_names)


def aliases(entities: list[Entity]) -> list[Alias]:
    out: list[Alias] = []
    for idx, entity in enumerate(entities):
        for lang, names in entity.names.items():
            for written in names:
                capital = written[:1].isupper()
                needs_context = _needs_context(entity, written)
                variants = russian_forms(written) if lang == "ru" else {written}
                for variant in variants:
                    folded = fold_name(variant)
                    if not folded:
                        continue
                    forms = arabic_forms(folded) if _is_arabic(folded) else {folded: 0}
                    out.extend(Alias(f, idx, written, False, capital, p, needs_context) for f, p in forms.items())
        for acronym in entity.acronyms:
            out.append(Alias(fold_name(acronym), idx, acronym, True, False,
                             needs_context=_needs_context(entity, acronym)))
    return out
