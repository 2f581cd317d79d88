"""SDG box refinement of a whole volume with the encoder shared by ``tile`` x ``tile`` slices (pure, no I/O).

Same per-slice semantics as ``prompt_search.refine_slice_sdg`` / ``refine_slice_box`` (one box per class from the
class probability, SAM's mask used as is, DFG-style score merge: refined 2 / model 1 / background 0.5), but the
slices that need SAM are embedded ``tile * tile`` at a time (``sam.tiling``). ``tile=1`` reproduces
``refine.volume.refine_volume(prompt="sdg"|"box")`` exactly.

Counters: a canvas's single encoder pass and single decoder launch are booked on the first slice of its group, so ``VolumeResult.total``
sums stay exact.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..prompt_search import ClassTrace, SDGConfig, SliceResult, StepRecord, plain_box, sdg_box
from ..prompt_search.merge import merge_labels
from ..refine.volume import VolumeResult
from ..sam.tiling import segment_tiled

BOX_PROMPTS: tuple[str, ...] = ("sdg", "box")


def class_boxes(probs2d: np.ndarray, prompt: str, config: SDGConfig) -> dict[int, tuple[int, int, int, int]]:
    """Foreground class -> its box on one slice's (K, H, W) probabilities; classes without a box are left out."""
    if prompt not in BOX_PROMPTS:
        raise ValueError(f"prompt must be one of {BOX_PROMPTS}, got {prompt!r}")
    boxes = {}
    for cls in range(1, probs2d.shape[0]):
        if prompt == "sdg":
            box = sdg_box(probs2d[cls], config.threshold, config.downscale)
        else:
            box = plain_box(probs2d[cls], config.plain_threshold)
        if box is not None:
            boxes[cls] = box
    return boxes


def refine_volume_tiled(image: np.ndarray, probs: np.ndarray, segmenter: Any, prompt: str = "sdg",
                        config: SDGConfig | None = None, tile: int = 2, slices: Sequence[int] | None = None,
                        on_slice: Callable[[int, SliceResult], None] | None = None) -> VolumeResult:
    """Refine ``probs`` (K, Z, H, W) on ``image`` (Z, H, W) slice-wise along axis 0; unlisted slices keep argmax."""
    config = config or SDGConfig()
    if probs.ndim != 4 or image.shape != probs.shape[1:]:
        raise ValueError(f"image {image.shape} and probabilities {probs.shape} do not match")
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    n_classes, n_slices = probs.shape[:2]
    label = np.argmax(probs, axis=0).astype(np.uint8)
    wanted = list(range(n_slices)) if slices is None else sorted(set(int(z) for z in slices))
    result = VolumeResult(label=label, skipped=[z for z in range(n_slices) if z not in set(wanted)])
    boxes = {z: class_boxes(probs[:, z], prompt, config) for z in wanted}
    reason = "sdg box" if prompt == "sdg" else "plain box"
    busy = [z for z in wanted if boxes[z]]
    masks = segment_tiled(segmenter, [image[z] for z in busy],
                          [np.array(list(boxes[z].values()), dtype=np.int64).reshape(-1, 4) for z in busy], tile)
    by_slice = dict(zip(busy, masks))
    first_of_group = {z for i, z in enumerate(busy) if i % (tile * tile) == 0}
    for z in wanted:
        traces = {c: ClassTrace(c, c in boxes[z], reason=reason if c in boxes[z] else "no foreground")
                  for c in range(1, n_classes)}
        refined: dict[int, np.ndarray] = {}
        for (cls, box), mask in zip(boxes[z].items(), by_slice.get(z, ())):
            refined[cls] = np.asarray(mask, dtype=bool)
            traces[cls].stage = 1
            traces[cls].steps.append(StepRecord(1, 0, box, int(np.count_nonzero(mask))))
        merged = merge_labels(label[z], refined, n_classes, config.score_refined, config.score_unrefined,
                              config.score_background)
        n_boxes = len(boxes[z])
        starts = int(z in first_of_group)  # one embedding and one decoder launch per canvas
        r = SliceResult(merged, refined, traces, decoder_calls=n_boxes, decoder_launches=starts,
                        encoder_calls=starts)
        label[z] = merged
        result.slices[z] = r
        if on_slice is not None:
            on_slice(z, r)
    return result
