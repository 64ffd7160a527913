"""Story linking, the pure part: what an article brings (its features), what a story holds (its
summary), how alike the two are (the link score), and the story after the article joins it.

An article joins the best-scoring story of the candidates that the index returns for its terms
(entities, names, embedding bands), if that story's last article is within the window and the score
reaches the threshold; else it starts a story of its own. Precision comes first: a false merge hides
news, a missed link only repeats an alert. The score is a logistic combination of four signals,
each in [0, 1]:

- ``embedding``: cosine of the article's title-and-lead embedding with the story's centroid (the
  multilingual encoder: one space for every language);
- ``names``: overlap of capitalised words (folded: Pachinian ≠ Pashinyan, but Biden = Biden in de and
  en), the signal that carries proper names the entity table does not know;
- ``entities``: weighted overlap of canonical entity ids (Poutine = Путин = بوتين), people weighing
  more than places;
- ``numbers``: overlap of numbers (dates, counts, quantities), written the same in most languages;
- ``days``: the weekdays the lead names (jeudi = Thursday = الخميس = четверг): +1 when the article and
  the story name one in common, -1 when both name weekdays and none is shared (a call on Thursday and a
  visit on Monday are two events, however alike their actors and words), 0 otherwise. A conflict is a
  veto, not a weight: no score links two leads that date themselves on different days.

The weights were fitted on the machine-translated SemEval-2022 pairs and checked on the original
ones, which they never saw (docs/choices.md, ``make bench-stories``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from shared import events
from shared.text import fold_name

# Logistic weights of (embedding, names, entities, numbers, days) and the intercept (docs/choices.md).
WEIGHTS = (8.23, 1.83, 0.72, 0.28, 0.0)  # days: fitted ~0 (a shared weekday is weak); a conflict vetoes
INTERCEPT = -4.14

# Weekday names, folded (shared.text.fold_name), by language; the index is the day (0 = Monday). Forms
# after a preposition are listed where they differ (Polish and Russian accusative).
_WEEKDAYS: dict[str, int] = {}
for _names in (
    "monday tuesday wednesday thursday friday saturday sunday",  # en
    "lundi mardi mercredi jeudi vendredi samedi dimanche",  # fr
    "montag dienstag mittwoch donnerstag freitag samstag sonntag",  # de
    "lunes martes miercoles jueves viernes sabado domingo",  # es
    "lunedi martedi mercoledi giovedi venerdi sabato domenica",  # it
    "maandag dinsdag woensdag donderdag vrijdag zaterdag zondag",  # nl
    "poniedzialek wtorek sroda czwartek piatek sobota niedziela",  # pl
    "poniedzialek wtorek srode czwartek piatek sobote niedziele",  # pl, after "w"
    "pazartesi sali carsamba persembe cuma cumartesi pazar",  # tr
    "понедельник вторник среда четверг пятница суббота воскресенье",  # ru
    "понедельник вторник среду четверг пятницу субботу воскресенье",  # ru, after "в"
    "понеділок вівторок середа четвер п'ятниця субота неділя",  # uk
    "الاثنين الثلاثاء الاربعاء الخميس الجمعه السبت الاحد",  # ar (folded: hamza and ta marbuta)
):
    for _day, _name in enumerate(_names.split()):
        _WEEKDAYS[_name] = _day
LEAD_CHARS = 400  # weekdays are read in the title and the lead: later ones are often other days

ENTITY_WEIGHT = {"person": 1.0, "organisation": 0.7, "organization": 0.7, "place": 0.5}
UNLINKED_FACTOR = 0.6  # a name NER found but the table does not know: less sure than a linked id
MAX_NAMES = 48  # per article and per story: the rest adds cost, not signal
MAX_NUMBERS = 24
MAX_ENTITIES = 32
MAX_SOURCES = 50  # per story, in the story's state
TEXT_CHARS = 2000  # names and numbers are read on the title and this much of the text

LSH_BANDS = 6
LSH_BITS = 8
LSH_TERMS = 4  # bands indexed per article (each costs a write and a read; entities and names find most)
_PLANES = np.random.default_rng(20261208).standard_normal((LSH_BANDS * LSH_BITS, 512)).astype(np.float32)

_NAME = re.compile(r"[^\W\d_][\w'’-]*")
_NUMBER = re.compile(r"\d+(?:[.,: ]\d+)*")


@dataclass(frozen=True)
class Features:
    """What an article brings to linking."""

    article_id: str
    at: float  # epoch seconds: when the article appeared (its fetch time)
    lang: str
    source: str
    title: str
    embedding: np.ndarray  # unit vector (zero when the encoder read nothing)
    entities: dict[str, float]  # canonical id → weight
    entity_names: dict[str, tuple[str, str]]  # canonical id → (name, type)
    names: frozenset[str]
    numbers: frozenset[str]
    days: frozenset[int] = frozenset()  # weekdays the title and lead name (0 = Monday)
    script: str = ""  # the article's script (langdetect's), e.g. Latn, Arab, Cyrl
    copy_of: str = ""  # the story id clean gave the article when it copies another ("" if none)


@dataclass
class StorySummary:
    """A story as linking sees it, and as the index stores it."""

    id: str
    first_seen: float
    last_seen: float
    article_count: int
    centroid: np.ndarray  # unit mean of the articles' embeddings
    entities: dict[str, float]  # id → summed weight over its articles (the top MAX_ENTITIES kept)
    entity_names: dict[str, tuple[str, str]]
    entity_articles: dict[str, int]  # id → articles that name it
    names: dict[str, int]  # name → articles that have it (the top MAX_NAMES kept)
    numbers: dict[str, int]
    days: dict[int, int] = field(default_factory=dict)  # weekday → articles that name it
    scripts: list[str] = field(default_factory=list)  # the scripts of its articles
    languages: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Signals:
    embedding: float
    names: float
    entities: float
    numbers: float
    days: float = 0.0

    def score(self) -> float:
        x = (WEIGHTS[0] * self.embedding + WEIGHTS[1] * self.names + WEIGHTS[2] * self.entities
             + WEIGHTS[3] * self.numbers + WEIGHTS[4] * self.days + INTERCEPT)
        return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class Decision:
    """``story``: the story the article joins (None: it starts one); ``score``: against that story."""

    story: StorySummary | None
    score: float
    outcome: str  # "new", "linked", "copy"


# --- features ------------------------------------------------------------------------------------


# Words repeat across articles (names, weekdays): their folds are kept (fold_name costs ~5 µs a word).
_fold_word = lru_cache(maxsize=1 << 17)(fold_name)

_SENTENCE_END = re.compile(r"[.!?:;«»\"“”„(\[\n—–-]\s*$")


def names_of(text: str) -> frozenset[str]:
    """Capitalised words of three letters or more, folded, but for those that open a sentence (a capital
    there says nothing) and weekday names (``days`` reads them); the longest first when there are too many."""
    found = set()
    for m in _NAME.finditer(text):
        word = m.group(0)
        if not word[0].isupper() or len(word) < 3:
            continue
        before = text[max(0, m.start() - 3):m.start()]
        if m.start() == 0 or _SENTENCE_END.search(before):
            continue
        folded = _fold_word(word)
        if folded and folded not in _WEEKDAYS:
            found.add(folded)
    if len(found) > MAX_NAMES:
        found = set(sorted(found, key=lambda n: (-len(n), n))[:MAX_NAMES])
    return frozenset(found)


def numbers_of(text: str) -> frozenset[str]:
    """Numbers of two digits or more, their separators dropped (2,000 = 2.000 = 2 000)."""
    found = {re.sub(r"\D", "", m.group(0)) for m in _NUMBER.finditer(text)}
    found = {n for n in found if len(n) >= 2}
    if len(found) > MAX_NUMBERS:
        found = set(sorted(found, key=lambda n: (-len(n), n))[:MAX_NUMBERS])
    return frozenset(found)


def days_of(text: str) -> frozenset[int]:
    """The weekdays a text names, in any of the languages of ``_WEEKDAYS``."""
    found = set()
    for match in _NAME.finditer(text):
        word = _fold_word(match.group(0))
        day = _WEEKDAYS.get(word)
        if day is None and "-" in word:  # a prefix joined by a hyphen, or a compound
            day = _WEEKDAYS.get(word.rsplit("-", 1)[-1])
        if day is None and len(word) > 3 and word[:1] in "وب" and word[1:] in _WEEKDAYS:  # Arabic wa-, bi-
            day = _WEEKDAYS[word[1:]]
        if day is not None:
            found.add(day)
    return frozenset(found)


def entity_weights(hits: Iterable[events.EntityHit]) -> tuple[dict[str, float], dict[str, tuple[str, str]]]:
    weights: dict[str, float] = {}
    names: dict[str, tuple[str, str]] = {}
    for hit in hits:
        weight = ENTITY_WEIGHT.get(hit.type, 0.5) * (UNLINKED_FACTOR if hit.source == "ner-unlinked" else 1.0)
        weights[hit.id] = max(weights.get(hit.id, 0.0), weight)
        names[hit.id] = (hit.name, hit.type)
    if len(weights) > MAX_ENTITIES:
        kept = sorted(weights, key=lambda i: -weights[i])[:MAX_ENTITIES]
        weights = {i: weights[i] for i in kept}
        names = {i: names[i] for i in kept}
    return weights, names


def features_of(tagged: events.TaggedArticle, embedding: np.ndarray) -> Features:
    article = tagged.article
    head = f"{article.title}\n{article.text[:TEXT_CHARS]}"
    weights, names = entity_weights(tagged.entities)
    copy_of = article.story_id if article.story_id and article.story_id != article.id else ""
    return Features(
        article_id=article.id, at=article.fetched_at, lang=tagged.language.lang, source=article.source,
        title=article.title, embedding=embedding, entities=weights, entity_names=names,
        names=names_of(head), numbers=numbers_of(head), copy_of=copy_of,
        days=days_of(f"{article.title}\n{article.text[:LEAD_CHARS]}"), script=tagged.language.script,
    )


# --- index terms ---------------------------------------------------------------------------------


def lsh_codes(vector: np.ndarray) -> list[str]:
    """The embedding's bands: LSH_BANDS codes of LSH_BITS random-hyperplane signs each."""
    if not vector.any():
        return []
    bits = (_PLANES @ vector) > 0
    return [f"{band}:{int(np.packbits(bits[band * LSH_BITS:(band + 1) * LSH_BITS])[0]):02x}"
            for band in range(LSH_BANDS)]


def index_terms(features: Features) -> list[str]:
    """The terms an article is found by, and finds its candidate stories by: its strongest entities,
    its longest names (long names are rarer) and its embedding's bands."""
    entities = sorted(features.entities, key=lambda i: (-features.entities[i], i))[:6]
    names = sorted(features.names, key=lambda n: (-len(n), n))[:6]
    return ([f"e:{e}" for e in entities] + [f"n:{n}" for n in names]
            + [f"h:{code}" for code in lsh_codes(features.embedding)[:LSH_TERMS]])


# --- the score -----------------------------------------------------------------------------------


def _overlap(article: frozenset[str] | dict[str, float], story: dict[str, int] | dict[str, float]) -> float:
    if not article or not story:
        return 0.0
    shared = sum(1 for key in article if key in story)
    return shared / math.sqrt(len(article) * len(story))


def _weighted_overlap(article: dict[str, float], story: dict[str, float], count: int) -> float:
    if not article or not story:
        return 0.0
    # the story's weights are sums over its articles: their mean is comparable with one article's
    mean = {k: v / max(1, count) for k, v in story.items()}
    shared = sum(min(w, mean[k]) for k, w in article.items() if k in mean)
    return shared / math.sqrt(sum(article.values()) * sum(mean.values()))


def signals(features: Features, story: StorySummary) -> Signals:
    embedding = float(np.dot(features.embedding, story.centroid)) if features.embedding.any() else 0.0
    entities = _weighted_overlap(features.entities, story.entities, story.article_count)
    # Capitalised words match only within a script (and Arabic has no capitals): across scripts the
    # canonical entity ids are the names' evidence, so they stand in for it.
    same_script = not features.script or not story.scripts or features.script in story.scripts
    return Signals(
        embedding=max(0.0, embedding),
        names=_overlap(features.names, story.names) if same_script else entities,
        entities=entities,
        numbers=_overlap(features.numbers, story.numbers),
        days=_days(features.days, story.days),
    )


def _days(article: frozenset[int], story: dict[int, int]) -> float:
    if not article or not story:
        return 0.0
    return 1.0 if any(day in story for day in article) else -1.0


def decide(features: Features, candidates: Sequence[StorySummary], threshold: float, window_s: float,
           copy: StorySummary | None = None) -> Decision:
    """The story the article joins: clean's copy set first (a copy is its original's story), else the
    best candidate within the window at or above the threshold, else a new story."""
    if copy is not None:
        return Decision(copy, 1.0, "copy")
    best: StorySummary | None = None
    best_score = 0.0
    for story in candidates:
        if features.at - story.last_seen > window_s or story.first_seen - features.at > window_s:
            continue  # a story that ended before the window, or (a late article) began long after it
        found = signals(features, story)
        if found.days < 0:
            continue  # the leads name different weekdays: two events (a missed link costs less than a merge)
        score = found.score()
        if score > best_score or (score == best_score and best is not None and story.id < best.id):
            best, best_score = story, score
    if best is not None and best_score >= threshold:
        return Decision(best, best_score, "linked")
    return Decision(None, best_score, "new")


# --- the story after the article joins -----------------------------------------------------------


def _top(counts: dict[str, int], cap: int) -> dict[str, int]:
    if len(counts) <= cap:
        return counts
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:cap])


def new_story(story_id: str, features: Features) -> StorySummary:
    return StorySummary(
        id=story_id, first_seen=features.at, last_seen=features.at, article_count=1,
        centroid=features.embedding.astype(np.float32), entities=dict(features.entities),
        entity_names=dict(features.entity_names), entity_articles=dict.fromkeys(features.entities, 1),
        names=dict.fromkeys(features.names, 1), numbers=dict.fromkeys(features.numbers, 1),
        days=dict.fromkeys(features.days, 1), scripts=[features.script] if features.script else [],
        languages=[features.lang] if features.lang and features.lang != "und" else [],
        sources=[features.source] if features.source else [],
        titles={features.lang or "und": features.title} if features.title else {},
    )


def absorb(story: StorySummary, features: Features) -> tuple[StorySummary, list[str]]:
    """The story with the article in it, and what changed: "article", and "language", "source" when new."""
    changes = ["article"]
    n = story.article_count
    centroid = story.centroid * n + features.embedding
    norm = float(np.linalg.norm(centroid))
    entities = dict(story.entities)
    entity_articles = dict(story.entity_articles)
    entity_names = dict(story.entity_names)
    for key, weight in features.entities.items():
        entities[key] = entities.get(key, 0.0) + weight
        entity_articles[key] = entity_articles.get(key, 0) + 1
        entity_names[key] = features.entity_names.get(key, entity_names.get(key, (key, "")))
    if len(entities) > MAX_ENTITIES:
        kept = sorted(entities, key=lambda k: (-entities[k], k))[:MAX_ENTITIES]
        entities = {k: entities[k] for k in kept}
        entity_articles = {k: entity_articles[k] for k in kept}
        entity_names = {k: entity_names[k] for k in kept if k in entity_names}
    names = dict(story.names)
    for name in features.names:
        names[name] = names.get(name, 0) + 1
    numbers = dict(story.numbers)
    for number in features.numbers:
        numbers[number] = numbers.get(number, 0) + 1
    days = dict(story.days)
    for day in features.days:
        days[day] = days.get(day, 0) + 1
    languages = list(story.languages)
    if features.lang and features.lang != "und" and features.lang not in languages:
        languages.append(features.lang)
        changes.append("language")
    sources = list(story.sources)
    if features.source and features.source not in sources:
        if len(sources) < MAX_SOURCES:
            sources.append(features.source)
        changes.append("source")
    titles = dict(story.titles)
    if features.title and (features.lang or "und") not in titles:
        titles[features.lang or "und"] = features.title
    return StorySummary(
        id=story.id, first_seen=min(story.first_seen, features.at), last_seen=max(story.last_seen, features.at),
        article_count=n + 1, centroid=(centroid / norm if norm > 0 else centroid).astype(np.float32),
        entities=entities, entity_names=entity_names, entity_articles=entity_articles,
        names=_top(names, MAX_NAMES), numbers=_top(numbers, MAX_NUMBERS), days=days,
        scripts=story.scripts + ([features.script] if features.script and features.script not in story.scripts else []),
        languages=languages, sources=sources, titles=titles,
    ), changes


def story_event(story: StorySummary, article_id: str, changes: list[str]) -> events.Story:
    top = sorted(story.entity_articles, key=lambda k: (-story.entity_articles[k], -story.entities.get(k, 0.0), k))
    return events.Story(
        id=story.id, first_seen=story.first_seen, last_seen=story.last_seen, article_count=story.article_count,
        languages=list(story.languages), sources=list(story.sources), titles=dict(story.titles),
        top_entities=[events.StoryEntity(id=k, name=story.entity_names.get(k, (k, ""))[0],
                                         type=story.entity_names.get(k, ("", ""))[1],
                                         articles=story.entity_articles[k]) for k in top[:10]],
        article_id=article_id, changes=changes,
    )


def story_ref(story: StorySummary, decision: Decision) -> events.StoryRef:
    return events.StoryRef(
        id=story.id, outcome=decision.outcome, score=round(decision.score, 4), first_seen=story.first_seen,
        last_seen=story.last_seen, article_count=story.article_count, languages=list(story.languages),
        sources=list(story.sources),
    )
