"""Generated demo news: many made-up articles across the demo sites, for load and fault drills.

Deterministic (a seed): the same ``generate(n)`` always gives the same articles. The prose is
English built from a vocabulary with a seeded random generator, so no two stories share much
text (their word 3-shingles barely overlap), while a *copy* (``copy_every``: every k-th article
republishes an earlier story on another site, its last paragraph cut) is a near-duplicate of its
original, as a syndicated wire story is.

Alerts are decided by marker words and the rules of ``DRILL_RULES_YAML``: an article carries
``amberwave`` when its story number is even, ``cobaltline`` when it is a multiple of three; the rule
``drill-silent`` matches a word no article carries. ``expected_alerts`` gives the (rule, story)
pairs that must fire, once each. Entities are not part of what these articles test: ``entities``
is empty and no check reads it.
"""

from __future__ import annotations

import random

from newswatch.demo.content import SITES, DemoArticle, story_key

DRILL_RULES_YAML = """\
# Rules for the generated articles (newswatch.demo.generated): marker words decide the alerts.
rules:
  - id: drill-amber
    name: Stories that carry the amber marker
    any: [amberwave]
  - id: drill-cobalt
    name: Stories that carry the cobalt marker
    any: [cobaltline]
  - id: drill-silent
    name: A marker no generated article carries (must stay silent)
    any: [violetnever]
"""

RULE_MARKERS: dict[str, str] = {"drill-amber": "amberwave", "drill-cobalt": "cobaltline"}

_ADJ = ("northern", "regional", "coastal", "municipal", "provisional", "rural", "central", "eastern",
        "independent", "joint", "annual", "national", "western", "local", "technical", "southern", "urban",
        "temporary", "senior", "public", "private", "historic", "modest", "sudden", "careful", "lengthy")
_NOUN = ("council", "harbour", "committee", "railway", "budget", "school board", "water utility", "bridge",
         "grain market", "ferry service", "hospital", "museum", "port authority", "tax office", "court",
         "farmers' union", "power plant", "library", "airport", "fishing fleet", "district", "assembly",
         "trade fair", "weather service", "orchestra", "textile mill", "bus network", "university")
_VERB = ("approved", "postponed", "reviewed", "announced", "criticised", "expanded", "reduced", "delayed",
         "welcomed", "questioned", "extended", "suspended", "defended", "renewed", "published", "examined")
_OBJ = ("a new timetable", "the spending plan", "a repair programme", "the hiring freeze", "a safety audit",
        "the winter schedule", "a pilot scheme", "the tender process", "a fresh inquiry", "the price cap",
        "a loan agreement", "the opening hours", "a land survey", "the water tariff", "a training course")
_WHEN = ("on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday", "late on Saturday",
         "early on Sunday", "last week", "this morning", "after a long meeting", "before the holidays")
_TOWN = ("Velmora", "Ostrakan", "Perivale", "Dunmarsh", "Caldoria", "Brenholt", "Sarvik", "Marrowfield",
         "Tolsany", "Quenwick", "Aldermoor", "Ravensk", "Lindhaven", "Korvatt", "Heslowe", "Pennant Bay")
_TAIL = ("officials said", "according to a statement", "a spokesperson confirmed", "residents were told",
         "the minutes show", "local reporters learned", "the chairman told reporters", "records indicate")


_SYLLABLES = ("ka", "lor", "ven", "tri", "mos", "dal", "quen", "bar", "sil", "tor", "mar", "ish", "van", "rel",
              "pol", "nik", "ast", "ber", "cor", "dun", "el", "fen", "gra", "hol")


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def _sentence(rng: random.Random, town: str, person: str, when: str) -> str:
    return (f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)} of {town} {rng.choice(_VERB)} "
            f"{rng.choice(_OBJ)} {when}, {rng.choice(_TAIL)}, while {person} and the {rng.choice(_ADJ)} "
            f"{rng.choice(_NOUN)} {rng.choice(_VERB)} {rng.choice(_OBJ)}.")


def _paragraphs(rng: random.Random, markers: list[str], town: str) -> tuple[str, ...]:
    # One event: its own town, its own people, one day. Stories of other towns and people are other
    # events, as the stories stage must see (they share only the template's vocabulary).
    person = f"{_name(rng, 2)} {_name(rng, 3)}"
    when = rng.choice(_WHEN)
    paragraphs = [" ".join(_sentence(rng, town, person, when) for _ in range(3)) for _ in range(5)]
    if markers:  # in the first paragraph: a copy (last paragraph cut) keeps it
        paragraphs[0] += " The project is known locally as " + " and ".join(markers) + "."
    return tuple(paragraphs)


def markers_for(story_number: int) -> list[str]:
    found = []
    if story_number % 2 == 0:
        found.append(RULE_MARKERS["drill-amber"])
    if story_number % 3 == 0:
        found.append(RULE_MARKERS["drill-cobalt"])
    return found


def generate(n: int, *, spacing: float = 0.5, copy_every: int = 7, seed: int = 2024) -> tuple[DemoArticle, ...]:
    """``n`` articles, one every ``spacing`` seconds (server time, before pacing), round the demo
    sites; every ``copy_every``-th article (0: none) republishes the story of the article four places
    before it on the next site, last paragraph cut."""
    rng = random.Random(seed)
    out: list[DemoArticle] = []
    originals: list[DemoArticle] = []
    for i in range(n):
        site = SITES[i % len(SITES)]
        if copy_every and i % copy_every == copy_every - 1 and len(originals) >= 4:
            original = originals[-4]
            out.append(DemoArticle(
                site=site.id if site.id != original.site else SITES[(i + 1) % len(SITES)].id,
                slug=f"gen-{i:04d}-copy", title=f"Wire: {original.title}", paragraphs=original.paragraphs[:-1],
                delay=i * spacing, author="Wire desk", lang="en", entities=frozenset(), story=original.slug))
            continue
        number = len(originals)
        town = f"{rng.choice(_TOWN)}-{_name(rng, 2)}"
        article = DemoArticle(
            site=site.id, slug=f"gen-{i:04d}", title=f"{town}: the {rng.choice(_NOUN)} {rng.choice(_VERB)} "
                                                     f"{rng.choice(_OBJ)} (story {number})",
            paragraphs=_paragraphs(rng, markers_for(number), town), delay=i * spacing, author=f"Reporter {number % 9}",
            lang="en", entities=frozenset())
        originals.append(article)
        out.append(article)
    return tuple(out)


def story_number(article: DemoArticle, articles: tuple[DemoArticle, ...]) -> int:
    originals = [a for a in articles if not a.story]
    key = story_key(article)
    return next(i for i, a in enumerate(originals) if a.slug == key)


def expected_alerts(articles: tuple[DemoArticle, ...]) -> frozenset[tuple[str, str]]:
    """(rule id, story key) pairs the drill rules must raise, each exactly once."""
    out: set[tuple[str, str]] = set()
    for number, article in enumerate(a for a in articles if not a.story):
        for rule, marker in RULE_MARKERS.items():
            if marker in markers_for(number):
                out.add((rule, story_key(article)))
    return frozenset(out)
