"""Main-text extraction benchmark on trafilatura's multilingual evaluation set, when present.

Compares, on the same pages and one core: newswatch's extractor (pruning, trafilatura with a
fallback cascade, a second opinion on truncated bodies, lead recovery and line post-filter:
services/clean/extract.py), trafilatura alone (favor_precision,
include_comments=False) and resiliparse (main_content, comments and post metadata off).
Scoring follows the set's README: a "with" snippet found in the output (whitespace-normalised
substring) is a true positive, else a false negative; a "without" snippet found is a leak
(false positive), else a true negative. Pages are decoded once, before timing, for everyone.

Usage: python bench/extraction.py [--limit N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.clean.extract import decode_body, extract_html, main_text
from services.clean.prune import parse_html

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "extraction"
ARCHIVE = EVAL / "trafilatura-evalset.tar.gz"
_SPACE = re.compile(r"\s+")


@dataclass
class Page:
    url: str
    html: str
    wanted: list[str]
    unwanted: list[str]


@dataclass
class Score:
    precision: float
    recall: float
    f1: float
    leak: float
    pages_per_s: float


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def load_pages(limit: int | None) -> list[Page]:
    """The evaluation set's pages, unpacked to a temporary folder and decoded (the archive must exist)."""
    pages = []
    with tempfile.TemporaryDirectory(prefix="nw-evalset-") as tmp:
        with tarfile.open(ARCHIVE) as archive:
            archive.extractall(tmp, filter="data")
        folder = Path(tmp)
        entries = json.loads((folder / "evaldata.json").read_text("utf-8"))
        for url, entry in entries.items():
            path = folder / "cache" / entry["file"]
            if not path.exists():
                path = folder / "eval" / entry["file"]
            html, _ = decode_body(path.read_bytes(), "")
            pages.append(Page(url, html, entry["with"], entry["without"]))
    return pages[:limit] if limit else pages


def score(pages: list[Page], outputs: list[str], seconds: float) -> Score:
    tp = fn = fp = tn = 0
    for page, output in zip(pages, outputs, strict=True):
        text = normalise(output)
        for snippet in page.wanted:
            if normalise(snippet) in text:
                tp += 1
            else:
                fn += 1
        for snippet in page.unwanted:
            if normalise(snippet) in text:
                fp += 1
            else:
                tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1, fp / (fp + tn) if fp + tn else 0.0, len(pages) / seconds)


def newswatch(page: Page) -> str:
    return main_text(parse_html(page.html))


def newswatch_with_metadata(page: Page) -> str:
    return extract_html(page.html, page.url).text


def trafilatura_precision(page: Page) -> str:
    import trafilatura

    return trafilatura.extract(page.html, url=page.url, include_comments=False, favor_precision=True) or ""


def resiliparse_main_content(page: Page) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(page.html, main_content=True, comments=False, post_meta=False, alt_texts=False,
                              links=False, list_bullets=False)


EXTRACTORS: dict[str, Callable[[Page], str]] = {
    "newswatch (prune + trafilatura + post-filter)": newswatch,
    "newswatch, with metadata": newswatch_with_metadata,
    "trafilatura favor_precision": trafilatura_precision,
    "resiliparse main_content": resiliparse_main_content,
}


def run(extractors: dict[str, Callable[[Page], str]], pages: list[Page], progress: Progress,
        warm_up: int = 10, chunk: int = 50) -> dict[str, Score]:
    """Every extractor on every page, in chunks of ``chunk`` pages taken in turn (CPU time).

    Run one after another over the whole set, the first one took the cold start and the ratio moved
    by ±15 % between runs with whatever the machine did meanwhile; chunks spread a busy stretch over
    every extractor while each still runs in its steady state. Each one is first run untimed on
    ``warm_up`` pages (imports, compiled patterns)."""
    for extractor in extractors.values():
        for page in pages[:warm_up]:
            with contextlib.suppress(Exception):
                extractor(page)
    task = progress.add_task("extracting", total=len(pages))
    outputs: dict[str, list[str]] = {name: [] for name in extractors}
    seconds = dict.fromkeys(extractors, 0.0)
    for first in range(0, len(pages), chunk):
        part = pages[first:first + chunk]
        for name, extractor in extractors.items():
            started = time.process_time()
            for page in part:
                try:
                    text = extractor(page)
                except Exception:  # an extractor failing on a page scores it as empty output
                    text = ""
                outputs[name].append(text)
            seconds[name] += time.process_time() - started
        progress.advance(task, len(part))
    return {name: score(pages, outputs[name], seconds[name]) for name in extractors}


def pages_from_command_line(benchmark: str) -> tuple[Console, list[Page]] | None:
    """The console and the evaluation pages (``--limit N``), or None when the set is absent (said so)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pages")
    args = parser.parse_args()
    console = Console(width=150)
    if not ARCHIVE.exists():
        console.print(f"evaluation data not found at {ARCHIVE}: skipping the {benchmark} benchmark")
        return None
    return console, load_pages(args.limit)


def main() -> None:
    loaded = pages_from_command_line("extraction")
    if loaded is None:
        return
    console, pages = loaded
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for every extractor
    console.print(f"{len(pages)} pages from {ARCHIVE} (one core, CPU time)")
    with Progress(console=console, transient=True) as progress:
        results = run(EXTRACTORS, pages, progress)

    ours = results["newswatch (prune + trafilatura + post-filter)"]
    table = Table(title="Main-text extraction, trafilatura evaluation set")
    for column in ("extractor", "precision", "recall", "F1", "leak", "pages/s", "newswatch speed ×"):
        table.add_column(column, justify="left" if column == "extractor" else "right")
    for name, result in results.items():
        table.add_row(name, f"{result.precision:.3f}", f"{result.recall:.3f}", f"{result.f1:.3f}",
                      f"{result.leak:.3f}", f"{result.pages_per_s:.1f}", f"{ours.pages_per_s / result.pages_per_s:.2f}")
    console.print(table)
    ratio = ours.pages_per_s / results["trafilatura favor_precision"].pages_per_s
    checks = [("F1 ≥ 0.950", f"{ours.f1:.3f}", ours.f1 >= 0.95),
              ("leak ≤ 0.045", f"{ours.leak:.3f}", ours.leak <= 0.045),
              ("≥ 2× trafilatura's pages/s", f"{ratio:.2f}×", ratio >= 2)]
    console.print("Targets (issue 14): " + ", ".join(f"{name}: {value} {'met' if ok else 'NOT met'}"
                                                     for name, value, ok in checks))


if __name__ == "__main__":
    main()
