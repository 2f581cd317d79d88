"""Refine a volume slice by slice with any prompt mode (pure: arrays and a segmenter in, labels and traces out).

The searches are 2D (the DFG/SDG references work on axial slices), so a 3D prediction is refined along axis 0 of
nnU-Net's network grid, the axis its 2d configuration slices along too. A slice's result depends on that slice
alone (and, with ``tile`` > 1, on the slices sharing its encoder canvas, fixed by slice order), which is what
makes resumed runs reproduce uninterrupted ones.

This is the one place where box prompts meet SAM: ``dfg`` runs ``prompt_search.refine_slice`` (which decodes
step by step), ``sdg``/``box`` compute every slice's class boxes, decode them with ``sam.tiling.segment_tiled``
(``tile`` x ``tile`` slices per encoder pass, SDG's merging strategy; ``tile=1`` is one pass per slice) and merge
with ``prompt_search.box_slice_result``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..prompt_search import BOX_PROMPTS, DFGConfig, SDGConfig, SliceResult, box_slice_result, refine_slice, volume_boxes
from ..sam.tiling import segment_tiled
from .result import VolumeResult, default_config

OnSlice = Callable[[int, SliceResult], None]


def refine_volume(image: np.ndarray, probs: np.ndarray, features: np.ndarray | None, segmenter: Any,
                  prompt: str = "dfg", config: DFGConfig | SDGConfig | None = None,
                  slices: Sequence[int] | None = None, on_slice: OnSlice | None = None,
                  tile: int = 1) -> VolumeResult:
    """Refine ``probs`` (K, Z, H, W) slice by slice; ``image`` (Z, H, W) is what the segmenter sees.

    ``features`` (C, Z, H, W) are the target model's decoder features (needed by ``dfg`` only). Slices not in
    ``slices`` keep the model's argmax. ``on_slice`` is called after every searched slice (progress bars).
    ``tile`` > 1 (box prompts only) embeds ``tile * tile`` slices per encoder pass.
    """
    config = config or default_config(prompt)
    if prompt == "dfg" and not isinstance(config, DFGConfig):
        raise TypeError("prompt 'dfg' needs a DFGConfig")
    if prompt in BOX_PROMPTS and not isinstance(config, SDGConfig):
        raise TypeError(f"prompt {prompt!r} needs an SDGConfig")
    if probs.ndim != 4 or image.shape != probs.shape[1:]:
        raise ValueError(f"image {image.shape} and probabilities {probs.shape} do not match")
    if prompt == "dfg" and (features is None or features.shape[1:] != probs.shape[1:]):
        raise ValueError("prompt 'dfg' needs features on the probability grid")
    if tile < 1 or (tile > 1 and prompt == "dfg"):
        raise ValueError(f"tile must be 1 for dfg (it decodes step by step per slice) and >= 1 otherwise, got {tile}")
    label = np.argmax(probs, axis=0).astype(np.uint8)
    n_slices = probs.shape[1]
    wanted = list(range(n_slices)) if slices is None else sorted(set(int(z) for z in slices))
    result = VolumeResult(label=label, skipped=[z for z in range(n_slices) if z not in set(wanted)])
    if prompt == "dfg":
        results = (refine_slice(image[z], probs[:, z], features[:, z], segmenter, config) for z in wanted)
    else:
        results = _box_slices(image, probs, label, segmenter, prompt, config, wanted, tile)
    for z, r in zip(wanted, results):
        label[z] = r.label
        result.slices[z] = r
        if on_slice is not None:
            on_slice(z, r)
    return result


def _box_slices(image: np.ndarray, probs: np.ndarray, label: np.ndarray, segmenter: Any, prompt: str,
                config: SDGConfig, wanted: list[int], tile: int) -> list[SliceResult]:
    """Every wanted slice's box-prompt result. A canvas's single encoder pass and decoder launch are booked on the
    first slice of its group, so ``VolumeResult.total`` sums stay exact; slices without a box cost nothing."""
    boxes = volume_boxes(probs, prompt, config, wanted)  # with config.empty_box 'full', whole-slice boxes too
    busy = [z for z in wanted if boxes[z]]
    masks = segment_tiled(segmenter, [image[z] for z in busy],
                          [np.array(list(boxes[z].values()), dtype=np.int64).reshape(-1, 4) for z in busy], tile)
    by_slice = dict(zip(busy, masks))
    first_of_group = {z for i, z in enumerate(busy) if i % (tile * tile) == 0}
    out = []
    for z in wanted:
        starts = int(z in first_of_group)
        out.append(box_slice_result(label[z], probs.shape[0], prompt, boxes[z], by_slice.get(z, ()), config,
                                    decoder_launches=starts, encoder_calls=starts))
    return out
