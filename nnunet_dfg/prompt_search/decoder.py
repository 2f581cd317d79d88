"""Per-slice access to the box-prompted segmenter: lazy embedding, box-keyed mask cache and work counters.

The image encoder is the expensive part and runs at most once per slice, only when a box is first needed. The
searches revisit boxes often (growth that stalls, stage 3 clipped at the border, several classes), so in lazy
mode every distinct box is decoded once per slice; plain mode (``lazy=False``) decodes every request, for the
equivalence tests and benchmarks.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .masks import Box
from .neighbours import normalise_channels

MaskFilter = Callable[[np.ndarray], np.ndarray]


class BoxDecoder:
    """Decode boxes against one slice's embedding; ``postprocess`` is applied to every raw SAM mask."""

    def __init__(self, segmenter: Any, image2d: np.ndarray, embedding: Any = None, lazy: bool = True,
                 postprocess: MaskFilter | None = None) -> None:
        self._segmenter = segmenter
        self._image = image2d
        self._embedding = embedding
        self._features: np.ndarray | None = None
        self._cache: dict[Box, np.ndarray] = {}
        self._post = postprocess
        # SAM's predicted IoU of each decoded box's raw mask, where the segmenter exposes its IoU head
        # (``segment_with_iou``); empty otherwise
        self.iou: dict[Box, float] = {}
        self.lazy = lazy
        self.decoder_calls = 0     # boxes sent to the mask decoder
        self.decoder_launches = 0  # segment() invocations
        self.encoder_calls = 0

    @property
    def embedding(self) -> Any:
        if self._embedding is None:
            self._embedding = self._segmenter.embed(self._image)
            self.encoder_calls += 1
        return self._embedding

    @property
    def started(self) -> bool:
        return self._embedding is not None

    def sam_features(self) -> np.ndarray:
        """Channel-normalised SAM embedding on the slice grid (stage 2's G), computed once per slice."""
        if self._features is None:
            self._features = normalise_channels(self.embedding.features())
        return self._features

    def _run(self, boxes: Sequence[Box]) -> list[np.ndarray]:
        array = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        with_iou = getattr(self._segmenter, "segment_with_iou", None)
        if with_iou is not None:
            raw, iou = with_iou(self.embedding, array)
            self.iou.update(zip(boxes, (float(v) for v in iou)))
        else:
            raw = self._segmenter.segment(self.embedding, array)
        self.decoder_calls += len(boxes)
        self.decoder_launches += 1
        masks = [np.asarray(m, dtype=bool) for m in raw]
        return [self._post(m) for m in masks] if self._post is not None else masks

    def decode(self, boxes: Sequence[Box]) -> list[np.ndarray]:
        """Masks for ``boxes`` in order; one segmenter launch for whatever is not cached (nothing when all are)."""
        boxes = [tuple(int(v) for v in b) for b in boxes]
        if not boxes:
            return []
        if not self.lazy:
            return self._run(boxes)
        missing = list(dict.fromkeys(b for b in boxes if b not in self._cache))
        if missing:
            self._cache.update(zip(missing, self._run(missing)))
        return [self._cache[b] for b in boxes]

    def decode_one(self, box: Box) -> np.ndarray:
        return self.decode([box])[0]
