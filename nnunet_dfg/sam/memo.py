"""`EmbeddingMemo`: reuse the embedding of a slice that is segmented again in the same process.

The encoder pass is the expensive half of SAM (~1.5 s per slice for LiteMedSAM on 2 CPU cores, against ~50 ms
per decoded box). When one ``refine`` run writes several prompt modes (``--prompt dfg,box,sdg``), every mode sees
the same slices; the memo encodes each slice once. The caller clears it after each case, so memory stays bounded
by one volume's embeddings (Z x 4 MB for a 64 x 64 x 256 embedding).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["EmbeddingMemo"]


def slice_key(image: np.ndarray) -> tuple:
    """Identity of a slice by content: equal pixels give the same embedding, whichever array holds them."""
    image = np.ascontiguousarray(image)
    return image.dtype.str, image.shape, hashlib.sha1(image.tobytes()).digest()


class EmbeddingMemo:
    """A segmenter that remembers embeddings by slice content; everything else is the wrapped segmenter's."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter
        self._memo: dict[tuple, Any] = {}
        self.hits = 0

    def embed(self, image: np.ndarray) -> Any:
        key = slice_key(image)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self.segmenter.embed(image)
        else:
            self.hits += 1
        return found

    def clear(self) -> None:
        self._memo.clear()

    def __len__(self) -> int:
        return len(self._memo)

    def __getattr__(self, name: str) -> Any:  # segment, segment_logits, name, counters, ...
        return getattr(self.segmenter, name)
