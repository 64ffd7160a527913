"""Syndicated copies and near-duplicates, with the index in Redis.

Exact copies share the hash of their normalised text. Near-copies (the same wire story with
other junk, a changed headline, a cut last paragraph) are found with MinHash over word
3-shingles and locality-sensitive hashing: 128 permutations cut into 32 bands of 4 rows, so
that pairs above ~0.42 Jaccard collide in some band with high probability; candidates are then
kept only if their estimated Jaccard similarity reaches the threshold. The index lives in Redis
(not in the process) so that it works across replicas and restarts.

One story decision is one Redis Lua script (``_ASSIGN``, run by EVALSHA, EVAL when the server
does not know it yet): the article's earlier assignment (a redelivery gets the same answer), the
exact hash, the band candidates and their signatures (equal 4-byte slots ÷ 128 = similarity),
the best candidate at or above the threshold (ties: the smallest id), and the writes of the
assignment, the signature and the band memberships happen with no other command in between.
Two replicas handed copies of one story at once thus cannot both call it new. The MinHash is
computed in Python before the script, which only compares bytes.

Keys (all expire after the dedup TTL):
- ``nw:clean:article:<id>``   hash: story_id, duplicate_of, similarity (makes redelivery idempotent)
- ``nw:clean:hash:<sha1>``    the first article id with this exact normalised text
- ``nw:clean:mh:<id>``        the article's MinHash signature (128 little-endian uint32, 512 bytes)
- ``nw:clean:lsh:<band>:<h>`` sorted set of the article ids whose band <band> hashes to <h>; a
  member's score is its own expiry time (Redis server clock, seconds). Expired members are
  removed whenever the band is read and are never candidates; the key's EXPIRE is refreshed on
  each write, so a busy band lives on while its members still age out one by one.

The script reads and writes keys it is not given in KEYS (the candidates' ``article`` and ``mh``
keys, which it learns from the bands): it needs a single Redis instance (or a primary with
replicas), not Redis Cluster, where those keys could live on other shards.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import numpy as np
import redis.asyncio as aioredis
from datasketch import MinHash
from redis.exceptions import NoScriptError

from shared.redis_store import as_str

NUM_PERM = 128
BANDS = 32
ROWS = NUM_PERM // BANDS
SHINGLE = 3
_WORD = re.compile(r"\w+", re.UNICODE)


def normalised_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WORD.findall(folded)


def content_hash(text: str) -> str:
    return _content_hash(normalised_words(text))


def _content_hash(tokens: list[str]) -> str:
    return hashlib.sha1(" ".join(tokens).encode("utf-8")).hexdigest()


def signature(text: str) -> np.ndarray:
    """The text's MinHash: 128 uint32 values, what datasketch's ``MinHash(num_perm=128, seed=1)`` gives
    after ``update_batch`` of the UTF-8 shingles (a test holds them equal), so that signatures already
    in Redis stay comparable. Two costs of the plain call are avoided (docs/choices.md): a new
    MinHash draws its permutations anew (~0.4 ms a page), so they are drawn once; and its hash
    function unpacks each shingle's SHA-1 prefix alone, so the prefixes are read by one
    ``np.frombuffer`` and handed over as numbers."""
    return _signature(normalised_words(text))


def _signature(tokens: list[str]) -> np.ndarray:
    if len(tokens) < SHINGLE:
        shingles = [" ".join(tokens)] if tokens else [""]
    else:
        shingles = [" ".join(tokens[i:i + SHINGLE]) for i in range(len(tokens) - SHINGLE + 1)]
    # datasketch's sha1_hash32: the first four bytes of the SHA-1, little-endian
    digests = b"".join([hashlib.sha1(s.encode("utf-8")).digest()[:4] for s in shingles])
    mh = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=_as_is, permutations=_permutations(), scheme=SCHEME)
    mh.update_batch(np.frombuffer(digests, dtype="<u4").tolist())
    return mh.hashvalues.astype(np.uint32)


SCHEME = "affine32"  # datasketch 2's default, named: signatures of another scheme do not compare


def _as_is(value: int) -> int:
    return value


@cache
def _permutations() -> np.ndarray:
    return MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME).permutations


Fingerprint = tuple[str, np.ndarray]  # (content hash, MinHash signature)


def fingerprint(text: str) -> Fingerprint:
    """What the index compares: the exact hash and the MinHash, from one pass over the words."""
    tokens = normalised_words(text)
    return _content_hash(tokens), _signature(tokens)


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


ARTICLE_PREFIX = "nw:clean:article:"
HASH_PREFIX = "nw:clean:hash:"
MINHASH_PREFIX = "nw:clean:mh:"

# KEYS: article key, exact-hash key, own signature key, then the BANDS band keys.
# ARGV: article id, signature bytes, threshold, TTL seconds, article key prefix, signature key prefix.
# Returns {story_id, duplicate_of, similarity}.
_ASSIGN = """
local article_key, hash_key, mh_key = KEYS[1], KEYS[2], KEYS[3]
local id, sig = ARGV[1], ARGV[2]
local threshold, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local article_prefix, mh_prefix = ARGV[5], ARGV[6]

local known = redis.call('HMGET', article_key, 'story_id', 'duplicate_of', 'similarity')
if known[1] then
  return {known[1], known[2] or '', known[3] or '0.0'}
end

local function remember(story, original, similarity)
  redis.call('HSET', article_key, 'story_id', story, 'duplicate_of', original, 'similarity', similarity)
  redis.call('EXPIRE', article_key, ttl)
  return {story, original, similarity}
end

local first = redis.call('GET', hash_key)
if first and first ~= id then
  local story = redis.call('HGET', article_prefix .. first, 'story_id') or first
  return remember(story, first, '1.0')
end
if not first then
  redis.call('SET', hash_key, id, 'EX', ttl)
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local seen, candidates = {}, {}
for i = 4, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%.6f', now))
  for _, member in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    if member ~= id and not seen[member] then
      seen[member] = true
      candidates[#candidates + 1] = member
    end
  end
end
table.sort(candidates)

local slots = #sig / 4
local best_id, best_count = '', 0
for _, candidate in ipairs(candidates) do
  local other = redis.call('GET', mh_prefix .. candidate)
  if other and #other == #sig then
    local count = 0
    for k = 1, #sig, 4 do
      if string.sub(sig, k, k + 3) == string.sub(other, k, k + 3) then
        count = count + 1
      end
    end
    -- candidates are visited in id order: a strictly better count wins, a tie keeps the smaller id
    if count > best_count then
      best_id, best_count = candidate, count
    end
  end
end

local result
if best_id ~= '' and best_count / slots >= threshold then
  -- round(similarity, 4), halves to even, as Python's round() does
  local scaled = best_count * 10000 / slots
  local whole = math.floor(scaled)
  local rest = scaled - whole
  if rest > 0.5 or (rest == 0.5 and whole % 2 == 1) then
    whole = whole + 1
  end
  local story = redis.call('HGET', article_prefix .. best_id, 'story_id') or best_id
  result = remember(story, best_id, string.format('%.4f', whole / 10000))
else
  result = remember(id, '', '0.0')
end

redis.call('SET', mh_key, sig, 'EX', ttl)
local expiry = string.format('%.6f', now + ttl)
for i = 4, #KEYS do
  redis.call('ZADD', KEYS[i], expiry, id)
  redis.call('EXPIRE', KEYS[i], ttl)
end
return result
"""
_ASSIGN_SHA = hashlib.sha1(_ASSIGN.encode("utf-8")).hexdigest()


class StoryIndex:
    """Assigns each article to a story: its own, or that of the earlier article it copies.

    ``assign`` is one atomic Redis script: safe with several clean replicas on one Redis."""

    def __init__(self, client: aioredis.Redis, threshold: float, ttl_seconds: int) -> None:
        self.redis = client
        self.threshold = threshold
        self.ttl = ttl_seconds

    async def assign(self, article_id: str, text: str, found: Fingerprint | None = None) -> StoryAssignment:
        """The article's story. ``found``: the text's ``fingerprint``, when the caller computed it
        already (clean does, on its CPU worker: it is ~2 ms of work a page)."""
        digest, sig = found if found is not None else fingerprint(text)
        keys = [f"{ARTICLE_PREFIX}{article_id}", f"{HASH_PREFIX}{digest}", f"{MINHASH_PREFIX}{article_id}",
                *band_keys(sig)]
        args: list[str | bytes | int] = [article_id, sig.astype("<u4").tobytes(), repr(float(self.threshold)),
                                         int(self.ttl), ARTICLE_PREFIX, MINHASH_PREFIX]
        try:
            reply = await self.redis.evalsha(_ASSIGN_SHA, len(keys), *keys, *args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH / a restart): EVAL caches it
            reply = await self.redis.eval(_ASSIGN, len(keys), *keys, *args)
        story_id, duplicate_of, sim = (as_str(value) for value in reply)
        return StoryAssignment(story_id, duplicate_of, float(sim), digest)
