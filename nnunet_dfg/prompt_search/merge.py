"""Merge per-class results into one label map by scores, so SAM-refined masks win over model predictions."""
from __future__ import annotations

from typing import Mapping

import numpy as np


def merge_labels(pred: np.ndarray, refined: Mapping[int, np.ndarray], n_classes: int, score_refined: float = 2.0,
                 score_unrefined: float = 1.0, score_background: float = 0.5,
                 overlap_probs: np.ndarray | None = None) -> np.ndarray:
    """Argmax over per-class scores: refined mask ``score_refined``, the model's argmax ``pred == c`` of an
    unrefined class ``score_unrefined``, background ``score_background``.

    A refined class replaces its model prediction entirely (pixels the model gave it but SAM did not go to
    whichever other class scores, else background). ``np.argmax`` returns the first maximum, so ties between
    refined classes go to the lower class index, as in the reference; with ``overlap_probs`` (the (K, H, W)
    softmax) a refined class scores ``score_refined`` plus its probability inside its mask, so where two refined
    masks overlap the model's likelier class wins and nothing else changes.
    """
    pred = np.asarray(pred)
    scores = np.zeros((n_classes,) + pred.shape, dtype=np.float32)
    scores[0] = score_background
    for cls in range(1, n_classes):
        if cls in refined:
            mask = np.asarray(refined[cls], dtype=np.float32)
            scores[cls] = mask * (score_refined + (0.0 if overlap_probs is None else overlap_probs[cls]))
        else:
            scores[cls] = score_unrefined * (pred == cls)
    if n_classes > 256:
        raise ValueError("labels are stored as uint8")
    return np.argmax(scores, axis=0).astype(np.uint8)
