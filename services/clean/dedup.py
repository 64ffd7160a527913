"""Syndicated copies and near-duplicates, with the index in Redis.

Exact copies share the hash of their normalised text. Near-copies (the same wire story with
other junk, a changed headline, a cut last paragraph) are found with MinHash over word
3-shingles and locality-sensitive hashing: 128 permutations cut into 32 bands of 4 rows, so
that pairs above ~0.42 Jaccard collide in some band with high probability; candidates are then
kept only if their estimated Jaccard similarity reaches the threshold. The index lives in Redis
(not in the process) so that it works across replicas and restarts.

Keys (all expire after the dedup TTL):
- ``nw:clean:article:<id>``   hash: story_id, duplicate_of, similarity (makes redelivery idempotent)
- ``nw:clean:hash:<sha1>``    the first article id with this exact normalised text
- ``nw:clean:mh:<id>``        the article's MinHash signature (uint32 array)
- ``nw:clean:lsh:<band>:<h>`` set of article ids whose band <band> hashes to <h>
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from datasketch import MinHash

from shared.redis_store import as_bytes, as_str

NUM_PERM = 128
BANDS = 32
ROWS = NUM_PERM // BANDS
SHINGLE = 3
_WORD = re.compile(r"\w+", re.UNICODE)


def normalised_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WORD.findall(folded)


def content_hash(text: str) -> str:
    return hashlib.sha1(" ".join(normalised_words(text)).encode("utf-8")).hexdigest()


def signature(text: str) -> np.ndarray:
    tokens = normalised_words(text)
    if len(tokens) < SHINGLE:
        shingles = [" ".join(tokens)] if tokens else [""]
    else:
        shingles = [" ".join(tokens[i:i + SHINGLE]) for i in range(len(tokens) - SHINGLE + 1)]
    mh = MinHash(num_perm=NUM_PERM, seed=1)
    mh.update_batch([s.encode("utf-8") for s in shingles])
    return mh.hashvalues.astype(np.uint32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def band_keys(sig: np.ndarray) -> list[str]:
    keys = []
    for band in range(BANDS):
        chunk = sig[band * ROWS:(band + 1) * ROWS].tobytes()
        keys.append(f"nw:clean:lsh:{band}:{hashlib.blake2b(chunk, digest_size=8).hexdigest()}")
    return keys


@dataclass(frozen=True)
class StoryAssignment:
    story_id: str
    duplicate_of: str
    similarity: float
    content_hash: str

    @property
    def kind(self) -> str:
        if not self.duplicate_of:
            return "new"
        return "exact" if self.similarity >= 1.0 else "near"


class StoryIndex:
    """Assigns each article to a story: its own, or that of the earlier article it copies."""

    def __init__(self, client: aioredis.Redis, threshold: float, ttl_seconds: int) -> None:
        self.redis = client
        self.threshold = threshold
        self.ttl = ttl_seconds

    async def assign(self, article_id: str, text: str) -> StoryAssignment:
        known = await self.redis.hgetall(f"nw:clean:article:{article_id}")
        digest = content_hash(text)
        if known:  # redelivery of an article already assigned: same answer as the first time
            return StoryAssignment(as_str(known[b"story_id"]), as_str(known[b"duplicate_of"]),
                                   float(as_str(known[b"similarity"])), digest)

        first = await self.redis.set(f"nw:clean:hash:{digest}", article_id, nx=True, ex=self.ttl, get=True)
        if first is not None and as_str(first) != article_id:
            original = as_str(first)
            story = await self.redis.hget(f"nw:clean:article:{original}", "story_id")
            return await self._remember(article_id, StoryAssignment(
                as_str(story) if story else original, original, 1.0, digest), None)

        sig = signature(text)
        keys = band_keys(sig)
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.smembers(key)
        candidates: set[str] = set()
        for members in await pipe.execute():
            candidates.update(as_str(m) for m in members)
        candidates.discard(article_id)

        best_id, best_sim = "", 0.0
        if candidates:
            ordered = sorted(candidates)
            stored = await self.redis.mget([f"nw:clean:mh:{c}" for c in ordered])
            for cid, raw in zip(ordered, stored, strict=True):
                if raw is None:
                    continue
                sim = similarity(sig, np.frombuffer(as_bytes(raw), dtype=np.uint32))
                if sim > best_sim or (sim == best_sim and cid < best_id):
                    best_id, best_sim = cid, sim
        if best_id and best_sim >= self.threshold:
            story = await self.redis.hget(f"nw:clean:article:{best_id}", "story_id")
            assignment = StoryAssignment(as_str(story) if story else best_id, best_id, round(best_sim, 4),
                                         digest)
        else:
            assignment = StoryAssignment(article_id, "", 0.0, digest)
        return await self._remember(article_id, assignment, (sig, keys))

    async def _remember(self, article_id: str, assignment: StoryAssignment,
                        lsh: tuple[np.ndarray, list[str]] | None) -> StoryAssignment:
        pipe = self.redis.pipeline(transaction=True)
        key = f"nw:clean:article:{article_id}"
        pipe.hset(key, mapping={"story_id": assignment.story_id, "duplicate_of": assignment.duplicate_of,
                                "similarity": str(assignment.similarity)})
        pipe.expire(key, self.ttl)
        if lsh is not None:
            sig, keys = lsh
            pipe.set(f"nw:clean:mh:{article_id}", sig.tobytes(), ex=self.ttl)
            for band_key in keys:
                pipe.sadd(band_key, article_id)
                pipe.expire(band_key, self.ttl)
        await pipe.execute()
        return assignment
