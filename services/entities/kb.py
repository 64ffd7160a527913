"""The entity table: canonical ids, types and names per language, and the aliases the matcher
looks for (with the Russian and Arabic name variants of shared/text.py).

Tables are YAML files (``entities: [{id, type, name, names: {lang: [..]}, acronyms: [..]}]``,
decoded into ``TableDoc``): the built-in starter table (data/entities.yaml), an optional extra
table, and the user's watchlist. Later files add names to an id already defined, or define new
entities.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import msgspec

from services.entities.gazetteer import gazetteer as run_time_places
from services.entities.model import Alias, Entity
from shared.config import ConfigError, convert, read_yaml
from shared.text import arabic_forms, fold_name, is_arabic, russian_forms

log = logging.getLogger(__name__)

# A YAML scalar written where text is expected: "id: 2024" and "names: {en: [1984]}" are text.
Scalar = str | int | float


class TableError(ConfigError):
    pass


class EntityDoc(msgspec.Struct):
    """One entity as written in a table file. A list may be written as one value (``names: {en: Putin}``);
    a key set to nothing (``acronyms:``) is the same as no key. Other keys are ignored."""

    id: Scalar | None = None
    type: Scalar | None = None
    name: Scalar | None = None
    names: dict[str, list[Scalar] | Scalar | None] | None = None
    acronyms: list[Scalar] | Scalar | None = None
    iso: Scalar | None = None
    geonames: int | None = None
    context: list[Scalar] | Scalar | None = None
    context_names: list[Scalar] | Scalar | None = None
    offices: dict[str, list[Scalar] | Scalar | None] | None = None


class TableDoc(msgspec.Struct):
    entities: list[EntityDoc]


def _texts(value: list[Scalar] | Scalar | None) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _entity(doc: EntityDoc) -> Entity:
    entity_id = str(doc.id)
    return Entity(
        id=entity_id, type=str(doc.type or "other"), name=str(doc.name if doc.name not in (None, "") else entity_id),
        names={lang: _texts(v) for lang, v in (doc.names or {}).items()},
        acronyms=_texts(doc.acronyms), iso=str(doc.iso or ""), geonames=doc.geonames or 0,
        context=_texts(doc.context), context_names=_texts(doc.context_names),
        offices={member: _texts(v) for member, v in (doc.offices or {}).items()},
    )


def _parse(doc: Any, origin: str) -> list[Entity]:
    """The entities of a table document; errors name ``origin`` and the place (``$.entities[3].names``)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entities"), list):
        raise TableError(f"{origin}: expected a mapping with an 'entities' list")
    table = convert(doc, TableDoc, origin, error=TableError)
    for n, entity in enumerate(table.entities):
        if entity.id is None or entity.id == "":
            raise TableError(f"{origin}: entity #{n} has no id - at `$.entities[{n}]`")
    return [_entity(e) for e in table.entities]


def read_table(path: str) -> list[Entity]:
    """The entities of a table file (strict UTF-8, typed)."""
    return _parse(read_yaml(path, error=TableError), path)


def _merge_gazetteer(entities: list[Entity]) -> None:
    """Add the run-time countries and cities: into the curated entry that claims them (by ISO code,
    GeoNames id or English name), else as entities of their own, without names another entity has."""
    by_iso = {e.iso: e for e in entities if e.iso}
    by_geonames = {e.geonames: e for e in entities if e.geonames}
    by_english = {n: e for e in entities if e.type == "place" for n in e.names.get("en", [])}
    owned = {fold_name(n) for e in entities for names in e.names.values() for n in names}
    for found in run_time_places():
        english = found.names.get("en", [])
        target = (by_iso.get(found.iso) if found.iso else None) or by_geonames.get(found.geonames) \
            or next((by_english[n] for n in english if n in by_english), None)
        fresh = {lang: [n for n in names if fold_name(n) not in owned] for lang, names in found.names.items()}
        fresh = {lang: names for lang, names in fresh.items() if names}
        if target is not None:
            if found.geonames and not target.geonames and not target.iso:
                target.geonames = found.geonames  # where the place is: places.py reads it
            for lang, names in fresh.items():
                target.names.setdefault(lang, []).extend(names)
        elif fresh:
            entities.append(Entity(found.id, found.type, found.name, fresh, iso=found.iso, geonames=found.geonames))
        owned.update(fold_name(n) for names in fresh.values() for n in names)


def load_table(extra_paths: list[str] | None = None, gazetteer: bool = True) -> list[Entity]:
    """The built-in table, the run-time countries and cities, then extra tables (later files add
    names to existing ids)."""
    with resources.as_file(resources.files("services.entities").joinpath("data/entities.yaml")) as builtin:
        entities = read_table(str(builtin))
    if gazetteer:
        _merge_gazetteer(entities)
    by_id = {e.id: e for e in entities}
    for path in extra_paths or []:
        if not path:
            continue
        for entity in read_table(path):
            known = by_id.get(entity.id)
            if known is None:
                by_id[entity.id] = entity
                entities.append(entity)
                continue
            for lang, names in entity.names.items():
                known.names.setdefault(lang, []).extend(n for n in names if n not in known.names.get(lang, []))
            known.acronyms.extend(a for a in entity.acronyms if a not in known.acronyms)
    return entities


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
                    forms = arabic_forms(folded) if is_arabic(folded) else {folded: 0}
                    out.extend(Alias(f, idx, written, False, capital, p, needs_context) for f, p in forms.items())
        for acronym in entity.acronyms:
            out.append(Alias(fold_name(acronym), idx, acronym, True, False,
                             needs_context=_needs_context(entity, acronym)))
    return out
