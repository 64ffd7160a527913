"""Near-duplicate benchmark: the clean service's StoryIndex, on a real Redis, over a pair set
built from the extraction evaluation set's pages (when present).

The pair set: every page whose extracted article has 80+ words is an original. Each original
gets one copy made the way syndication makes them, in rotation: other site junk around the text
(share lines, a cookie notice, a comment header, a copyright footer, a related-articles run
taken from other pages), a changed headline line, the last paragraph cut, and all three
together. Negatives are all the pairs of different originals (same-site pages included: they
share the site's furniture). The originals go in first, then the copies.

Precision = copies linked to their own original / all links made (an original linked to
another original is a false link); recall = copies linked to their own original / copies.

Usage: python bench/near_dups.py [--limit N]
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.progress import Progress
from rich.table import Table

from bench.extraction import newswatch, pages_from_command_line
from newswatch import local
from services.clean.dedup import StoryIndex
from shared import redis_store
from shared.settings import Settings

JUNK = [
    "Partager cet article", "Share on Facebook", "Tweet", "Teilen", "Поделиться", "شارك على فيسبوك",
    "We use cookies to improve your experience. Accept all cookies",
    "12 commentaires", "Leave a reply", "© 2026 Example Media. All rights reserved.",
    "Lire aussi", "Read more", "Abonnez-vous à notre newsletter",
]


def make_copy(text: str, kind: int, rng: random.Random, other_lines: list[str]) -> str:
    lines = text.split("\n")
    if kind in (0, 3):  # other site's junk around the text
        lines = rng.sample(JUNK, 3) + lines + rng.sample(other_lines, min(4, len(other_lines))) + rng.sample(JUNK, 3)
    if kind in (1, 3):  # changed headline
        lines = ["Breaking: " + " ".join(rng.sample(other_lines, 1)[0].split()[:8]), *lines]
    if kind in (2, 3) and len(text.split("\n")) > 2:  # last paragraph cut
        last = text.split("\n")[-1]
        lines = [line for line in lines if line != last]
    return "\n".join(lines)


async def measure(originals: list[tuple[str, str]], copies: list[tuple[str, str, str]], redis_url: str,
                  threshold: float, progress: Progress) -> tuple[int, int, int]:
    client = redis_store.connect(Settings.from_env({"NEWSWATCH_REDIS_URL": redis_url}))
    await client.flushdb()
    index = StoryIndex(client, threshold, 3600)
    false_links = correct = 0
    task = progress.add_task(f"threshold {threshold}", total=len(originals) + len(copies))
    for article_id, text in originals:
        assigned = await index.assign(article_id, text)
        false_links += bool(assigned.duplicate_of)
        progress.advance(task)
    for article_id, original_id, text in copies:
        assigned = await index.assign(article_id, text)
        if assigned.duplicate_of:
            if assigned.story_id == original_id or assigned.duplicate_of == original_id:
                correct += 1
            else:
                false_links += 1
        progress.advance(task)
    await client.aclose()
    return correct, false_links, len(copies)


def main() -> None:
    loaded = pages_from_command_line("near-duplicate")
    if loaded is None:
        return
    console, pages = loaded
    rng = random.Random(11)
    originals: list[tuple[str, str]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("extracting the originals", total=len(pages))
        seen: set[str] = set()
        for number, page in enumerate(pages):
            progress.advance(task)
            try:
                text = newswatch(page)
            except Exception:
                continue
            # Two eval pages with the very same article are one original, not a negative pair.
            if len(text.split()) >= 80 and text not in seen:
                seen.add(text)
                originals.append((f"orig-{number}", text))
    all_lines = [line for _, text in originals for line in text.split("\n") if 4 <= len(line.split()) <= 25]
    copies = [(f"copy-{i}", oid, make_copy(text, i % 4, rng, rng.sample(all_lines, 20)))
              for i, (oid, text) in enumerate(originals)]

    default = Settings.from_env().near_dup_threshold
    port = local.free_port()
    with tempfile.TemporaryDirectory(prefix="nw-redis-") as workdir:
        proc = local.start_redis(port, Path(workdir), Path(workdir) / "redis.log")
        try:
            rows = []
            with Progress(console=console, transient=True) as progress:
                for threshold in sorted({0.5, default, 0.7, 0.8}):
                    correct, false_links, total = asyncio.run(
                        measure(originals, copies, f"redis://127.0.0.1:{port}/0", threshold, progress))
                    rows.append((threshold, correct, false_links, total))
        finally:
            local.stop([proc])
    negatives = len(originals) * (len(originals) - 1) // 2
    table = Table(title=f"Near-duplicates: {len(copies)} copies, {negatives:,} pairs of different articles")
    for column in ("threshold", "precision", "recall", "false links", "missed copies"):
        table.add_column(column, justify="right")
    for threshold, correct, false_links, total in rows:
        precision = correct / (correct + false_links) if correct + false_links else 1.0
        marker = " (default)" if threshold == default else ""
        table.add_row(f"{threshold}{marker}", f"{precision:.4f}", f"{correct / total:.4f}", str(false_links),
                      str(total - correct))
    console.print(table)
    console.print("Targets (issue 3): precision ≥ 0.99, recall ≥ 0.95.")


if __name__ == "__main__":
    main()
