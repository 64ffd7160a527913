"""clean's story index, against a real Redis."""

from __future__ import annotations

import asyncio

from newswatch.demo.content import ARTICLES
from services.clean.dedup import StoryIndex, content_hash
from shared.redis_store import connect

WIRE = [a for a in ARTICLES if a.story == "wire-putin-pashinyan"]
OTHERS = [a for a in ARTICLES if not a.story]


def _run(redis_url: str, calls: list[tuple[str, str]], threshold: float = 0.6) -> list:
    async def go() -> list:
        client = connect(redis_url)
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
