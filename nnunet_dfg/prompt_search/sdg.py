"""SDG refined boxes (METHOD.md, SDG step 2), the plain-box baseline, and their one-shot per-slice refinement.

Unlike DFG there is no search: one box per class, all classes decoded in a single launch against one embedding,
and SAM's mask is used as is (the SDG reference thresholds the sigmoid and keeps every region).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from skimage.transform import resize

from .config import SDGConfig
from .decoder import BoxDecoder
from .masks import Box, bbox, largest_component
from .merge import merge_labels
from .trace import ClassTrace, SliceResult, StepRecord


def sdg_box(prob2d: np.ndarray, threshold: float = 0.75, downscale: int = 128) -> Box | None:
    """Box of the largest confident component: the map is bilinearly resized so its longer side is ``downscale``
    (maps already that small are used as they are), thresholded at ``threshold``, reduced to its largest
    8-connected component, and that component's pixel extent is scaled back to inclusive slice coordinates.

    No confident pixel -> None: the reference code then produced a near-full-image box (a bug that prompts SAM
    with the whole slice); without a box the caller keeps the model's (empty) prediction.
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


BoxRule = Callable[[np.ndarray], "Box | None"]


def _refine_with_boxes(image2d: np.ndarray, probs: np.ndarray, segmenter: Any, box_rule: BoxRule, reason: str,
                       config: SDGConfig, embedding: Any, lazy: bool) -> SliceResult:
    probs = np.asarray(probs)
    n_classes = probs.shape[0]
    pred = np.argmax(probs, axis=0)
    traces: dict[int, ClassTrace] = {}
    boxes: dict[int, Box] = {}
    for cls in range(1, n_classes):
        box = box_rule(probs[cls])
        traces[cls] = ClassTrace(cls, box is not None, reason=reason if box is not None else "no foreground")
        if box is not None:
            boxes[cls] = box
    decoder = BoxDecoder(segmenter, image2d, embedding, lazy=lazy)
    masks = decoder.decode(list(boxes.values()))  # one launch; no embedding at all when there is no box
    refined: dict[int, np.ndarray] = {}
    for (cls, box), mask in zip(boxes.items(), masks):
        refined[cls] = mask
        traces[cls].stage = 1
        traces[cls].steps.append(StepRecord(1, 0, box, int(np.count_nonzero(mask))))
    label = merge_labels(pred, refined, n_classes, config.score_refined, config.score_unrefined,
                         config.score_background)
    return SliceResult(label, refined, traces, decoder.decoder_calls, decoder.decoder_launches,
                       decoder.encoder_calls)


def refine_slice_sdg(image2d: np.ndarray, probs: np.ndarray, segmenter: Any, config: SDGConfig = SDGConfig(),
                     embedding: Any = None, lazy: bool = True) -> SliceResult:
    """SAM with one SDG box per class (classes without a box keep the model prediction), DFG-style merge."""
    return _refine_with_boxes(image2d, probs, segmenter, lambda p: sdg_box(p, config.threshold, config.downscale),
                              "sdg box", config, embedding, lazy)


def refine_slice_box(image2d: np.ndarray, probs: np.ndarray, segmenter: Any, config: SDGConfig = SDGConfig(),
                     embedding: Any = None, lazy: bool = True) -> SliceResult:
    """Baseline: SAM with the unfiltered bbox of each class's thresholded probability map, DFG-style merge."""
    return _refine_with_boxes(image2d, probs, segmenter, lambda p: plain_box(p, config.plain_threshold),
                              "plain box", config, embedding, lazy)
