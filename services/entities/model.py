"""The entity model every part of the entities service shares: an entity of the table, and an
alias the matcher looks for. Imports nothing from the service, so the table (kb.py), the run-time
lists (gazetteer.py), the matcher and the NER linker all depend on it, never on each other in a
circle."""

from __future__ import annotations

from dataclasses import dataclass, field


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
