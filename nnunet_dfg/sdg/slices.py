"""Training prompts for SDG's mask-decoder fine-tuning (pure): source slices, their boxes, jitter, canvases.

Two box sources. ``refined`` (SDG's step 3, the default): the source model's SDG boxes on its own training
slices (threshold + largest component, ``prompt_search.volume_boxes(..., "sdg")``), i.e. exactly the prompts
``sdg-predict`` gives SAM, whole-slice boxes included with ``--empty-box full``; each box's target is that
class's ground truth on the slice -- an empty mask where the model boxed a class that is not there (the reference
trains on such slices too), and a class without a box is not trained on (inference gives it no box either).
``gt``: tight ground-truth boxes (the project's ablation).

Jitter, as the reference's loaders (``np.random.randint(0, 10)`` per side on its 512 px slices): every side of the
box moves *outward* by its own uniform integer in [0, max_shift], clipped to the slice, drawn anew each time a
slice is visited, so the decoder learns to tolerate loose boxes rather than to expect tight ones. ``max_shift`` is
in the slice's pixels here; ``finetune.FinetuneConfig.shift_for`` scales the reference's 9 to the slice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..prompt_search.config import SDGConfig
from ..prompt_search.masks import Box, bbox
from ..prompt_search.sdg import class_boxes


@dataclass(frozen=True)
class TrainingSlice:
    """One axial source slice: image (H, W) float32 and labels (H, W) integer; ``key`` ("CASE/z") says where it
    came from; ``boxes``: the source model's refined boxes per class (None: prompt with ground-truth boxes)."""

    image: np.ndarray
    label: np.ndarray
    key: str
    boxes: Mapping[int, Box] | None = None

    @property
    def case(self) -> str:
        return self.key.rsplit("/", 1)[0]


def foreground_slices(label3d: np.ndarray) -> list[int]:
    """Indices along axis 0 of the slices holding any foreground (label > 0; nnU-Net's -1 counts as background)."""
    label3d = np.asarray(label3d)
    return [int(z) for z in np.flatnonzero((label3d > 0).reshape(label3d.shape[0], -1).any(axis=1))]


def grow_box(box: Box, shape: tuple[int, int], rng: np.random.Generator, max_shift: int = 9) -> Box:
    """Inclusive (x0, y0, x1, y1) box with each side pushed outward by 0..max_shift px at random, clipped to the
    (H, W) slice."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    height, width = shape
    d = rng.integers(0, max_shift + 1, size=4)
    x0, y0, x1, y1 = (int(v) for v in box)
    return (max(x0 - int(d[0]), 0), max(y0 - int(d[1]), 0),
            min(x1 + int(d[2]), width - 1), min(y1 + int(d[3]), height - 1))


def jitter_box(mask: np.ndarray, rng: np.random.Generator, max_shift: int = 9) -> Box:
    """Tight box of a non-empty mask, each side pushed outward by 0..max_shift px at random, clipped."""
    tight = bbox(np.asarray(mask, dtype=bool))
    if tight is None:
        raise ValueError("cannot box an empty mask")
    return grow_box(tight, mask.shape, rng, max_shift)


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


def refined_prompts(boxes: Mapping[int, Box], label2d: np.ndarray, rng: np.random.Generator,
                    max_shift: int = 9) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(classes, (N, 4) jittered boxes, (N, H, W) bool targets) for given class boxes on one slice: the target is
    the class's ground truth, empty where the class is absent (a false-positive box teaches "nothing here")."""
    label2d = np.asarray(label2d)
    classes = sorted(int(c) for c in boxes)
    if not classes:
        return [], np.zeros((0, 4), np.int64), np.zeros((0,) + label2d.shape, bool)
    jittered = np.array([grow_box(boxes[c], label2d.shape, rng, max_shift) for c in classes], dtype=np.int64)
    return classes, jittered, np.stack([label2d == c for c in classes])


def training_prompts(probs2d: np.ndarray, label2d: np.ndarray, rng: np.random.Generator,
                     config: SDGConfig = SDGConfig(), max_shift: int = 9) -> tuple[list[int], np.ndarray, np.ndarray]:
    """SDG fine-tuning data of one source slice from the source model's (K, H, W) probabilities and the (H, W)
    ground truth: the SDG refined box of every class the model finds (as ``sdg-predict`` prompts), jittered, with
    its ground-truth target (:func:`refined_prompts`)."""
    return refined_prompts(class_boxes(np.asarray(probs2d), "sdg", config), label2d, rng, max_shift)


def item_prompts(item: TrainingSlice, rng: np.random.Generator, max_shift: int = 9,
                 min_pixels: int = 1) -> tuple[list[int], np.ndarray, np.ndarray]:
    """A pool slice's prompts: its refined boxes when it has them, else jittered ground-truth boxes."""
    if item.boxes is None:
        return slice_prompts(item.label, rng, max_shift, min_pixels)
    return refined_prompts(item.boxes, item.label, rng, max_shift)


def tile_groups(pool: Sequence[TrainingSlice], n: int = 1) -> list[list[int]]:
    """Pool indices in canvases of up to n*n consecutive slices of one case and shape: ``sdg-predict --tile n``
    groups a volume's boxed slices the same way, so training sees the neighbours inference will."""
    if n < 1:
        raise ValueError(f"tile grid must be >= 1, got {n}")
    groups: list[list[int]] = []
    for i, item in enumerate(pool):
        last = pool[groups[-1][-1]] if groups else None
        if (last is None or len(groups[-1]) == n * n or last.case != item.case
                or last.image.shape != item.image.shape):
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def epoch_batches(n_canvases: int, per_step: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One pass over the canvases: all of them in a fresh random order, in consecutive batches of ``per_step``
    (the last may be smaller; the reference's loader drops it, but on a small pool that would drop slices)."""
    if n_canvases < 1:
        raise ValueError("no training slices")
    if per_step < 1:
        raise ValueError(f"per_step must be >= 1, got {per_step}")
    order = rng.permutation(n_canvases)
    return [order[start:start + per_step] for start in range(0, n_canvases, per_step)]
