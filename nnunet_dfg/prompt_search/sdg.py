"""SDG refined boxes (METHOD.md, SDG step 2), the plain-box baseline, and a slice's result from SAM's masks.

Unlike DFG there is no search: one box per class, and SAM's mask is used as is (the SDG reference thresholds the
sigmoid and keeps every region). Running SAM on the boxes (tiled or not) is the volume engine's job
(``nnunet_dfg.volume``); this module stays pure.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from skimage.transform import resize

from .config import SDGConfig
from .masks import Box, bbox, largest_component
from .merge import merge_labels
from .trace import ClassTrace, SliceResult, StepRecord


def sdg_box(prob2d: np.ndarray, threshold: float = 0.75, downscale: int = 128) -> Box | None:
    """Box of the largest confident component: the map is bilinearly resized so its longer side is ``downscale``
    (maps already that small are used as they are), thresholded at ``threshold``, reduced to its largest
    8-connected component, and that component's pixel extent is scaled back to inclusive slice coordinates.

    No confident pixel -> None. The reference's empty check never fires (its largest "component" is then the
    whole map), so it prompts with the whole slice there: :func:`volume_boxes` does that with
    ``SDGConfig.empty_box="full"``; by default the caller keeps the model's argmax for the class.
    """
    prob2d = np.asarray(prob2d, dtype=np.float32)
    height, width = prob2d.shape
    small = prob2d
    if max(height, width) > downscale:
        scale = downscale / max(height, width)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        small = resize(prob2d, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    core = largest_component(small > threshold, fill_holes=False)
    tight = bbox(core)
    if tight is None:
        return None
    sy, sx = height / small.shape[0], width / small.shape[1]
    x0, y0, x1, y1 = tight
    return (int(np.floor(x0 * sx)), int(np.floor(y0 * sy)),
            min(int(np.ceil((x1 + 1) * sx)) - 1, width - 1), min(int(np.ceil((y1 + 1) * sy)) - 1, height - 1))


def plain_box(prob2d: np.ndarray, threshold: float = 0.5) -> Box | None:
    """The "box" baseline: bbox of every pixel above ``threshold`` (outliers included), None when there is none."""
    return bbox(np.asarray(prob2d) > threshold)


BOX_PROMPTS: tuple[str, ...] = ("sdg", "box")
_REASONS = {"sdg": "sdg box", "box": "plain box"}


def class_boxes(probs2d: np.ndarray, prompt: str, config: SDGConfig) -> dict[int, Box]:
    """Foreground class -> its box on one slice's (K, H, W) probabilities (``sdg``: :func:`sdg_box`, ``box``:
    :func:`plain_box`); classes without a box are left out."""
    if prompt not in BOX_PROMPTS:
        raise ValueError(f"prompt must be one of {BOX_PROMPTS}, got {prompt!r}")
    boxes = {}
    for cls in range(1, probs2d.shape[0]):
        box = (sdg_box(probs2d[cls], config.threshold, config.downscale) if prompt == "sdg"
               else plain_box(probs2d[cls], config.plain_threshold))
        if box is not None:
            boxes[cls] = box
    return boxes


def whole_slice_box(shape: tuple[int, int]) -> Box:
    """The inclusive box of a whole (H, W) slice."""
    return 0, 0, int(shape[1]) - 1, int(shape[0]) - 1


def volume_boxes(probs: np.ndarray, prompt: str, config: SDGConfig,
                 slices: Sequence[int] | None = None) -> dict[int, dict[int, Box]]:
    """Slice -> class -> box over a (K, Z, H, W) volume of probabilities (``slices``: only those, default all).

    ``config.empty_box="none"``: :func:`class_boxes` of each slice. ``"full"``: a class that has a box on at least
    one slice of the volume also gets the whole slice as its box on every slice where it has none (the SDG
    reference's box where its thresholded map is empty). A class never boxed in the volume gets no box anywhere:
    the reference is single-class (the prostate is in every volume); a multi-class model's organ it never finds
    confidently is taken to be outside the volume, as DFG keeps an absent class absent. Note that a whole-slice
    box carries no class: two classes that both get one on a slice get the same prompt, hence the same mask.
    """
    wanted = range(probs.shape[1]) if slices is None else [int(z) for z in slices]
    if config.empty_box == "none":
        return {z: class_boxes(probs[:, z], prompt, config) for z in wanted}
    every = {z: class_boxes(probs[:, z], prompt, config) for z in range(probs.shape[1])}
    found = sorted(set().union(*every.values())) if every else []
    whole = whole_slice_box(probs.shape[2:])
    return {z: {c: every[z].get(c, whole) for c in found} for z in wanted}


def box_slice_result(pred: np.ndarray, n_classes: int, prompt: str, boxes: Mapping[int, Box],
                     masks: Sequence[np.ndarray], config: SDGConfig, decoder_launches: int = 0,
                     encoder_calls: int = 0) -> SliceResult:
    """One slice's result from its class boxes and SAM's masks for them (in the same order): SAM's mask used as is
    for every boxed class, the model's argmax ``pred`` for the others, DFG-style score merge."""
    reason = _REASONS[prompt]
    traces = {c: ClassTrace(c, c in boxes, reason=reason if c in boxes else "no foreground")
              for c in range(1, n_classes)}
    refined: dict[int, np.ndarray] = {}
    for (cls, box), mask in zip(boxes.items(), masks):
        refined[cls] = np.asarray(mask, dtype=bool)
        traces[cls].stage = 1
        traces[cls].steps.append(StepRecord(1, 0, box, int(np.count_nonzero(mask))))
    label = merge_labels(pred, refined, n_classes, config.score_refined, config.score_unrefined,
                         config.score_background)
    return SliceResult(label, refined, traces, decoder_calls=len(boxes), decoder_launches=decoder_launches,
                       encoder_calls=encoder_calls)
