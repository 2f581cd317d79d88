"""Training prompts for SDG's mask-decoder fine-tuning: source slices and jittered ground-truth boxes (pure).

Jitter convention: every side of the tight ground-truth box moves *outward* by its own uniform integer in
[0, max_shift] (0..9 in SDG), clipped to the slice. This is MedSAM's ``bbox_shift`` augmentation, on which SDG's
fine-tuning builds: at inference the refined SDG box comes from a thresholded probability map plus SAM, and the
decoder learns to tolerate loose boxes rather than to expect tight ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..prompt_search.masks import Box, bbox


@dataclass(frozen=True)
class TrainingSlice:
    """One axial source slice: image (H, W) float32 and labels (H, W) integer; ``key`` says where it came from."""

    image: np.ndarray
    label: np.ndarray
    key: str


def foreground_slices(label3d: np.ndarray) -> list[int]:
    """Indices along axis 0 of the slices holding any foreground (label > 0; nnU-Net's -1 counts as background)."""
    label3d = np.asarray(label3d)
    return [int(z) for z in np.flatnonzero((label3d > 0).reshape(label3d.shape[0], -1).any(axis=1))]


def jitter_box(mask: np.ndarray, rng: np.random.Generator, max_shift: int = 9) -> Box:
    """Tight box of a non-empty mask, each side pushed outward by 0..max_shift px at random, clipped."""
    tight = bbox(np.asarray(mask, dtype=bool))
    if tight is None:
        raise ValueError("cannot box an empty mask")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    height, width = mask.shape
    d = rng.integers(0, max_shift + 1, size=4)
    x0, y0, x1, y1 = tight
    return (max(x0 - int(d[0]), 0), max(y0 - int(d[1]), 0),
            min(x1 + int(d[2]), width - 1), min(y1 + int(d[3]), height - 1))


def slice_prompts(label2d: np.ndarray, rng: np.random.Generator, max_shift: int = 9,
                  min_pixels: int = 1) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Per class present (at least ``min_pixels``): (classes, (N, 4) jittered boxes, (N, H, W) bool targets).

    Each class's target is the whole class mask, every connected part included: the box covers them all and
    SDG's decoder output is used as is at inference.
    """
    label2d = np.asarray(label2d)
    classes, boxes, targets = [], [], []
    for cls in np.unique(label2d):
        if cls <= 0:
            continue
        mask = label2d == cls
        if int(mask.sum()) < min_pixels:
            continue
        classes.append(int(cls))
        boxes.append(jitter_box(mask, rng, max_shift))
        targets.append(mask)
    if not classes:
        return [], np.zeros((0, 4), np.int64), np.zeros((0,) + label2d.shape, bool)
    return classes, np.array(boxes, dtype=np.int64), np.stack(targets)


def epoch_order(n_pool: int, n_per_epoch: int, rng: np.random.Generator) -> np.ndarray:
    """Which pool slices one epoch visits: all of them shuffled when ``n_per_epoch`` covers the pool, else a
    random subset without repeats."""
    if n_pool < 1:
        raise ValueError("no training slices")
    return rng.permutation(n_pool)[:max(1, min(n_per_epoch, n_pool))]
