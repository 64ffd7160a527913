"""The story index: where stories live between articles, in Redis for the services and in memory for
``newswatch stories --jsonl``. Both keep the same things and answer the same questions; the linking
decision itself is link.py's.

Redis keys (docs/operations.md has their sizes):
- ``nw:story:s:<story>``: the story's summary (msgpack: counts, languages, sources, titles, entity
  weights, names, numbers, and its centroid as 512 float16), expiring a day after the window ends;
- ``nw:story:ix:<term>``: sorted set story → last seen, of the most recent stories (about 48) that have
  the term (an entity id, a name, an embedding band). A lookup reads the 16 most recent ids per term of
  the article, so its cost does not grow with the number of stories; it expires with the window;
- ``nw:story:a:<article>``: the story an article joined (a redelivered article, or a copy clean
  pointed at its original, finds it), for ``NEWSWATCH_DEDUP_TTL_DAYS`` like the alert keys;
- ``nw:story:m:<story>``: sorted set of the story's articles (article, language, source) by time, the
  last 500: what story rules count within their window;
- ``nw:story:recent``: sorted set story → last seen, for ``newswatch stories top``;
- ``nw:story:lock``: held (SET NX, 10 s lease, compare-and-delete release) while one article is
  linked, so two replicas linking two articles of one new story make one story, not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np
import redis.asyncio as aioredis

from services.stories import link
from shared import redis_store
from shared.failures import TransientError
from shared.settings import Settings

INDEX_CAP = 48  # story ids kept per term (about: the trim runs on a quarter of the writes)
READ_CAP = 16  # the most recent story ids read per term of an article
TRIM_EVERY = 4
MEMBERS_CAP = 500
LOCK_KEY = "nw:story:lock"
LOCK_LEASE_MS = 10_000
LOCK_WAIT_S = 15.0


def story_key(story_id: str) -> str:
    return f"nw:story:s:{story_id}"


def term_key(term: str) -> str:
    return f"nw:story:ix:{term}"


def article_key(article_id: str) -> str:
    return f"nw:story:a:{article_id}"


def members_key(story_id: str) -> str:
    return f"nw:story:m:{story_id}"


RECENT_KEY = "nw:story:recent"


class _Stored(msgspec.Struct, array_like=True):
    """A summary as stored: short, positional (a story key is read for every candidate)."""

    first_seen: float
    last_seen: float
    article_count: int
    centroid: bytes  # float16
    entities: dict[str, float]
    entity_names: dict[str, tuple[str, str]]
    entity_articles: dict[str, int]
    names: dict[str, int]
    numbers: dict[str, int]
    languages: list[str]
    sources: list[str]
    titles: dict[str, str]
    days: dict[int, int] = {}
    scripts: list[str] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Stored)


def pack(story: link.StorySummary) -> bytes:
    return _encoder.encode(_Stored(
        story.first_seen, story.last_seen, story.article_count, story.centroid.astype(np.float16).tobytes(),
        story.entities, story.entity_names, story.entity_articles, story.names, story.numbers,
        story.languages, story.sources, story.titles, story.days, story.scripts))


def unpack(story_id: str, blob: bytes) -> link.StorySummary:
    s = _decoder.decode(blob)
    return link.StorySummary(
        id=story_id, first_seen=s.first_seen, last_seen=s.last_seen, article_count=s.article_count,
        centroid=np.frombuffer(s.centroid, dtype=np.float16).astype(np.float32), entities=s.entities,
        entity_names={k: (v[0], v[1]) for k, v in s.entity_names.items()}, entity_articles=s.entity_articles,
        names=s.names, numbers=s.numbers, days=s.days, scripts=s.scripts, languages=s.languages,
        sources=s.sources, titles=s.titles)


class Member(msgspec.Struct, frozen=True):
    article_id: str
    lang: str
    source: str
    at: float


@dataclass
class Lookup:
    """What the index says of an article when linking starts: the story it joined already (a redelivery),
    the story of the article clean says it copies, and candidate stories for its terms."""

    known: str | None
    original: str | None
    candidates: list[str]
    token: str = ""  # the lock's holder
    released: bool = False


class StoryStore(Protocol):
    """What linking needs of an index. ``linking`` holds the index for one article (the lock, and the
    look-up, in one round trip); ``load`` and ``save`` are called inside it, ``save`` at most once."""

    def linking(self, article_id: str, copy_of: str, terms: Sequence[str],
                since: float) -> contextlib.AbstractAsyncContextManager[Lookup]: ...

    async def load(self, story_ids: Sequence[str]) -> list[link.StorySummary]: ...

    async def save(self, story: link.StorySummary, features: link.Features, terms: Sequence[str],
                   lookup: Lookup) -> None: ...

    async def members(self, story_id: str, since: float) -> list[Member]: ...

    async def recent(self, since: float, limit: int) -> list[link.StorySummary]: ...


def rank(found: Iterable[Sequence[str]], limit: int) -> list[str]:
    """Candidates from each term's story ids (most recent first): by the number of the article's terms they
    share, then by the best place they had in a term's list (the most recent first)."""
    hits: dict[str, int] = {}
    recency: dict[str, int] = {}
    for ids in found:
        for place, sid in enumerate(ids):
            hits[sid] = hits.get(sid, 0) + 1
            recency[sid] = min(recency.get(sid, place), place)
    return sorted(hits, key=lambda s: (-hits[s], recency[s], s))[:limit]


def trims(article_id: str, key: str) -> bool:
    """Whether this write trims ``key`` to its cap: a quarter of the writes, chosen by a hash (the same
    choice for a redelivery), so that a set stays near its cap at a quarter of the commands."""
    return zlib.crc32(f"{article_id}|{key}".encode()) % TRIM_EVERY == 0


CANDIDATES = 16  # stories scored per article: the best by shared terms


class RedisStoryStore:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.window_s = settings.story_window_hours * 3600
        self.article_ttl = settings.dedup_ttl_days * 86400
        self.story_ttl = int(self.window_s + 86400)
        self.instance = uuid.uuid4().hex
        # This process's articles queue here, not on the Redis lock: only replicas contend for that one
        # (a poll with backoff), and the articles of one process would otherwise poll it against each other.
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def linking(self, article_id: str, copy_of: str, terms: Sequence[str],
                      since: float) -> AsyncIterator[Lookup]:
        async with self._local, self._linking(article_id, copy_of, terms, since) as lookup:
            yield lookup

    @contextlib.asynccontextmanager
    async def _linking(self, article_id: str, copy_of: str, terms: Sequence[str],
                       since: float) -> AsyncIterator[Lookup]:
        """Takes the lock and reads what linking needs in the same round trip (the reads run after the SET NX
        on the server, so they see every write of the lock's previous holder, made before its release)."""
        token = f"{self.instance}:{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + LOCK_WAIT_S
        pause = 0.001
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(LOCK_KEY, token, nx=True, px=LOCK_LEASE_MS)
            pipe.get(article_key(article_id))
            pipe.get(article_key(copy_of or article_id))
            for term in terms:
                pipe.zrevrangebyscore(term_key(term), "+inf", since, start=0, num=READ_CAP)
            replies = await pipe.execute()
            if replies[0]:
                break
            if time.monotonic() > deadline:
                raise TransientError(f"the story lock ({LOCK_KEY}) stayed held for {LOCK_WAIT_S:.0f} s")
            await asyncio.sleep(pause)
            pause = min(0.01, pause * 2)  # another replica holds it for about a millisecond
        known, original = (redis_store.as_str(r) if r is not None else None for r in replies[1:3])
        candidates = rank(([redis_store.as_str(m) for m in found] for found in replies[3:]), CANDIDATES)
        lookup = Lookup(known, original if copy_of else None, candidates, token)
        try:
            yield lookup
        finally:
            if not lookup.released:
                await redis_store.delete_if_holds(self.redis, LOCK_KEY, token)

    async def load(self, story_ids: Sequence[str]) -> list[link.StorySummary]:
        if not story_ids:
            return []
        blobs = await self.redis.mget([story_key(s) for s in story_ids])
        return [unpack(sid, redis_store.as_bytes(blob)) for sid, blob in zip(story_ids, blobs, strict=True)
                if blob is not None]

    def _write(self, pipe: aioredis.client.Pipeline, story: link.StorySummary, features: link.Features,
               terms: Sequence[str]) -> None:
        pipe.set(story_key(story.id), pack(story), ex=self.story_ttl)
        pipe.set(article_key(features.article_id), story.id, ex=self.article_ttl)
        member = msgspec.json.encode(Member(features.article_id, features.lang, features.source, features.at))
        pipe.zadd(members_key(story.id), {member: features.at})
        if trims(features.article_id, members_key(story.id)):
            pipe.zremrangebyrank(members_key(story.id), 0, -MEMBERS_CAP - 1)
        pipe.expire(members_key(story.id), self.story_ttl)
        for term in terms:
            key = term_key(term)
            pipe.zadd(key, {story.id: story.last_seen})
            if trims(features.article_id, key):
                pipe.zremrangebyrank(key, 0, -INDEX_CAP - 1)
            pipe.expire(key, int(self.window_s + 3600))
        pipe.zadd(RECENT_KEY, {story.id: story.last_seen})

    async def save(self, story: link.StorySummary, features: link.Features, terms: Sequence[str],
                   lookup: Lookup) -> None:
        """The story's writes and the lock's release, in one round trip (the release last)."""
        pipe = self.redis.pipeline(transaction=False)
        self._write(pipe, story, features, terms)
        # stories that ended before the window leave the recent set (amortised: a few at a time)
        pipe.zremrangebyscore(RECENT_KEY, "-inf", features.at - self.window_s - 86400)
        pipe.eval(redis_store.DELETE_IF_HOLDS, 1, LOCK_KEY, lookup.token)
        lookup.released = True
        await pipe.execute()

    async def members(self, story_id: str, since: float) -> list[Member]:
        found = await self.redis.zrangebyscore(members_key(story_id), since, "+inf")
        return [msgspec.json.decode(redis_store.as_bytes(m), type=Member) for m in found]

    async def recent(self, since: float, limit: int) -> list[link.StorySummary]:
        ids = [redis_store.as_str(s) for s in await self.redis.zrevrangebyscore(RECENT_KEY, "+inf", since,
                                                                              start=0, num=limit)]
        return await self.load(ids)


class MemoryStoryStore:
    """The same index in this process's memory (``newswatch stories --jsonl``, unit tests)."""

    def __init__(self, settings: Settings) -> None:
        self.window_s = settings.story_window_hours * 3600
        self.stories: dict[str, link.StorySummary] = {}
        self.index: dict[str, dict[str, float]] = {}
        self.articles: dict[str, str] = {}
        self.story_members: dict[str, list[Member]] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def linking(self, article_id: str, copy_of: str, terms: Sequence[str],
                      since: float) -> AsyncIterator[Lookup]:
        async with self._lock:
            found = ([sid for _, sid in sorted(((t, s) for s, t in self.index.get(term, {}).items() if t >= since),
                                                reverse=True)[:READ_CAP]] for term in terms)
            yield Lookup(self.articles.get(article_id), self.articles.get(copy_of) if copy_of else None,
                         rank(found, CANDIDATES))

    async def load(self, story_ids: Sequence[str]) -> list[link.StorySummary]:
        return [self.stories[s] for s in story_ids if s in self.stories]

    async def save(self, story: link.StorySummary, features: link.Features, terms: Sequence[str],
                   lookup: Lookup) -> None:
        self.stories[story.id] = story
        self.articles[features.article_id] = story.id
        members = self.story_members.setdefault(story.id, [])
        members.append(Member(features.article_id, features.lang, features.source, features.at))
        del members[:-MEMBERS_CAP]
        for term in terms:
            entries = self.index.setdefault(term, {})
            entries[story.id] = story.last_seen
            if len(entries) > INDEX_CAP:
                for sid, _ in sorted(entries.items(), key=lambda kv: kv[1])[: len(entries) - INDEX_CAP]:
                    del entries[sid]

    async def members(self, story_id: str, since: float) -> list[Member]:
        return [m for m in self.story_members.get(story_id, []) if m.at >= since]

    async def recent(self, since: float, limit: int) -> list[link.StorySummary]:
        found = sorted((s for s in self.stories.values() if s.last_seen >= since), key=lambda s: -s.last_seen)
        return found[:limit]
