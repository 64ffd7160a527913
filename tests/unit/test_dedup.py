"""clean's story index, against a real Redis."""

from __future__ import annotations

import asyncio

import numpy as np
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from newswatch.demo.content import ARTICLES
from services.clean.dedup import StoryAssignment, StoryIndex, band_keys, content_hash, normalised_words, signature
from shared import redis_store
from shared.settings import Settings


def _connect(url: str) -> redis_store.aioredis.Redis:
    return redis_store.connect(Settings.from_env({"NEWSWATCH_REDIS_URL": url}))


WIRE = [a for a in ARTICLES if a.story == "wire-putin-pashinyan"]
OTHERS = [a for a in ARTICLES if not a.story]


def _run(redis_url: str, calls: list[tuple[str, str]], threshold: float = 0.6) -> list:
    async def go() -> list:
        client = _connect(redis_url)
        await client.flushdb()
        index = StoryIndex(client, threshold, 3600)
        out = [await index.assign(aid, text) for aid, text in calls]
        await client.aclose()
        return out
    return asyncio.run(go())


def test_exact_near_and_distinct(redis_url: str) -> None:
    original = "\n".join(WIRE[0].paragraphs)
    cut = "\n".join(WIRE[1].paragraphs)  # last paragraph cut
    junked = "Partager\n" + original.upper() + "\nLire aussi : la météo"
    results = _run(redis_url, [("a", original), ("b", cut), ("c", junked), ("d", "\n".join(OTHERS[0].paragraphs))])
    assert results[0].story_id == "a" and results[0].duplicate_of == ""
    assert results[1].story_id == "a" and results[1].duplicate_of == "a" and 0.6 <= results[1].similarity < 1
    assert results[2].story_id == "a" and results[2].kind == "near"
    assert results[3].story_id == "d" and results[3].duplicate_of == ""


def test_exact_copy_and_redelivery_are_stable(redis_url: str) -> None:
    text = "\n".join(OTHERS[1].paragraphs)
    results = _run(redis_url, [("x", text), ("y", text), ("y", text), ("x", text)])
    assert [r.story_id for r in results] == ["x", "x", "x", "x"]
    assert results[1].kind == "exact" and results[2] == results[1]
    assert results[3].duplicate_of == ""


def test_different_articles_never_merge(redis_url: str) -> None:
    calls = [(a.slug, "\n".join(a.paragraphs)) for a in OTHERS]
    assert all(r.duplicate_of == "" for r in _run(redis_url, calls))


def test_content_hash_ignores_case_and_punctuation() -> None:
    assert content_hash("Bakou, Erevan!") == content_hash("bakou erevan")


def _concurrent_copies() -> list[tuple[str, str]]:
    """50 near-copies of one wire story as 50 sites publish it: other junk, some with the last paragraph cut,
    a few exact copies."""
    paragraphs = list(WIRE[0].paragraphs)
    copies = []
    for i in range(50):
        body = paragraphs if i % 3 else paragraphs[:-1] if len(paragraphs) > 2 else paragraphs
        junk = [] if i % 10 == 0 else [f"Partager sur le site numéro {i}", f"Lire aussi : la météo du jour {i}"]
        copies.append((f"copy-{i:02d}", "\n".join([*junk, *body])))
    return copies


def test_concurrent_copies_from_two_replicas_make_one_story(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/7"
    copies = _concurrent_copies()

    async def go() -> tuple[list, list]:
        first, second = _connect(url), _connect(url)  # two replicas, two connections
        await first.flushdb()
        await first.script_flush()  # the first calls take the EVAL fallback
        replicas = [StoryIndex(first, 0.6, 3600), StoryIndex(second, 0.6, 3600)]
        results = await asyncio.gather(*(replicas[i % 2].assign(aid, text) for i, (aid, text) in enumerate(copies)))
        again = await asyncio.gather(*(replicas[(i + 1) % 2].assign(aid, text)
                                       for i, (aid, text) in enumerate(copies)))
        await first.aclose()
        await second.aclose()
        return results, again

    results, again = asyncio.run(go())
    assert len({r.story_id for r in results}) == 1
    assert [r.kind for r in results].count("new") == 1
    new = next(r for r in results if r.kind == "new")
    assert new.story_id == next(aid for (aid, _), r in zip(copies, results, strict=True) if r.kind == "new")
    assert again == results  # redelivery: the same answer, whichever replica gets it


def test_expired_band_member_is_no_candidate(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/8"
    original = "\n".join(WIRE[0].paragraphs)
    copy = "\n".join(WIRE[1].paragraphs)

    async def go() -> tuple:
        client = _connect(url)
        await client.flushdb()
        index = StoryIndex(client, 0.6, 3600)
        first = await index.assign("a", original)
        bands = band_keys(signature(original))
        now = float((await client.time())[0])
        scores = [await client.zscore(key, "a") for key in bands]
        ttls = [await client.ttl(key) for key in bands]
        # "a" aged out of its bands (its expiry is in the past); its signature key is still there
        for key in bands:
            await client.zadd(key, {"a": now - 1})
        second = await index.assign("b", copy)
        shared = set(bands) & set(band_keys(signature(copy)))  # the bands "b" read
        left = [await client.zscore(key, "a") for key in sorted(shared)]
        await client.aclose()
        return first, second, now, scores, ttls, left

    first, second, now, scores, ttls, left = asyncio.run(go())
    assert first.kind == "new"
    assert all(score is not None and now + 3590 <= score <= now + 3601 for score in scores)
    assert all(0 < ttl <= 3600 for ttl in ttls)
    assert second.kind == "new" and second.story_id == "b"  # a near copy, but "a" is no candidate any more
    assert left and all(score is None for score in left)  # the bands read were pruned


def test_band_member_ages_out_with_a_short_ttl(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/9"
    original = "\n".join(WIRE[0].paragraphs)
    copy = "\n".join(WIRE[1].paragraphs)

    async def go() -> StoryAssignment:
        client = _connect(url)
        await client.flushdb()
        short, long = StoryIndex(client, 0.6, 1), StoryIndex(client, 0.6, 3600)
        await short.assign("a", original)
        # the signature outlives the band membership: only the band's score can rule "a" out
        await client.expire("nw:clean:mh:a", 3600)
        await asyncio.sleep(1.2)
        second = await long.assign("b", copy)
        await client.aclose()
        return second

    assert asyncio.run(go()).kind == "new"


@given(st.lists(st.sampled_from(["Moscow", "said", "the", "Karabakh", "ceasefire", "Путин", "وبوتين", "3", "a"]),
                max_size=60).map(" ".join))
@settings(max_examples=100, deadline=None)
def test_signature_is_datasketchs_minhash(text: str) -> None:
    """Signatures stay those of ``MinHash(num_perm=128, seed=1).update_batch`` (they are kept in Redis)."""
    tokens = normalised_words(text)
    shingles = [" ".join(tokens[i:i + 3]) for i in range(len(tokens) - 2)] if len(tokens) >= 3 \
        else [" ".join(tokens)]
    plain = MinHash(num_perm=128, seed=1)
    plain.update_batch([s.encode("utf-8") for s in shingles])
    assert signature(text).tolist() == plain.hashvalues.astype(np.uint32).tolist()
