"""DFG pseudo-label refinement of one 2D slice: presence, seed, stages 1-3 per class, then the score merge.

Deviation from the reference when stage 1 found a stable box but stages 2/3 did not: the reference returned the
last stage-2 mask after a failed stage 3 (a mask no rule called stable) and the stage-1 mask after stage 2 ran out
of steps; here both cases keep the stable stage-1 mask, as does an empty stage-2/3 answer (the reference crashed
on an empty stage-2 mask). METHOD.md's "no stable box -> model prediction" applies when stage 1 finds none.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .config import DFGConfig
from .decoder import BoxDecoder
from .masks import largest_component
from .merge import merge_labels
from .neighbours import neighbour_offsets, normalise_channels, pair_links
from .seed import confident_pixels, seed_region
from .stages import run_stage1, run_stage2
from .trace import STAGE_NONE, ClassTrace, SliceResult

DEFAULT_CONFIG = DFGConfig()


def refine_slice(image2d: np.ndarray, probs: np.ndarray, feats: np.ndarray, segmenter: Any,
                 config: DFGConfig = DEFAULT_CONFIG, embedding: Any = None, lazy: bool = True) -> SliceResult:
    """Refine every foreground class of one slice with box-prompted SAM.

    ``probs`` is the (K, H, W) softmax incl. background, ``feats`` the (C, H, W) target-model features on the same
    grid (normalised here). The slice is embedded at most once, and only when a class is present (or reuse
    ``embedding``). Per class: absent -> model prediction; stage 1 without a stable box -> model prediction;
    stage 2/3 without a stable box -> the stage-1 mask. ``lazy=False`` runs the plain search (every box of a
    stage decoded, no cache); it returns the same masks with more decoder work. The pixel constants of
    ``config`` are scaled to this slice's size first (``DFGConfig.for_slice``).
    """
    probs = np.asarray(probs)
    n_classes, height, width = probs.shape
    if feats.shape[1:] != (height, width):
        raise ValueError(f"features {feats.shape} are not on the probability grid {(height, width)}")
    config = config.for_slice((height, width))
    pred = np.argmax(probs, axis=0)
    decoder = BoxDecoder(segmenter, image2d, embedding, lazy=lazy,
                         postprocess=lambda m: largest_component(m, config.fill_mask_holes))
    offsets = neighbour_offsets(config.neighbour_radius)
    links: np.ndarray | None = None
    refined: dict[int, np.ndarray] = {}
    traces: dict[int, ClassTrace] = {}
    for cls in range(1, n_classes):
        n_conf = confident_pixels(probs[cls], config.presence_prob)
        trace = ClassTrace(cls, n_conf >= config.presence_min_pixels, n_conf)
        traces[cls] = trace
        if not trace.present:
            trace.reason = "absent"
            continue
        if links is None:  # once per slice, only when some class is searched
            links = pair_links(normalise_channels(feats), offsets, config.stage1_cos_threshold)
        n_steps = config.steps_for(cls)
        first = run_stage1(seed_region(probs[cls], config.seed_tolerance), links, offsets, decoder, n_steps, config)
        trace.steps.extend(first.steps)
        if first.mask is None:
            trace.reason = f"stage 1: {first.reason}, no stable box"
            continue
        later = run_stage2(first.mask, decoder, n_steps, config)
        trace.steps.extend(later.steps)
        if later.mask is not None and later.mask.any():
            refined[cls], trace.stage, trace.box = later.mask, later.stage, later.box
            trace.reason = f"stage {later.stage}: {later.reason}"
        else:  # deviation (module docstring): a stable stage-1 box exists, keep its mask
            refined[cls], trace.stage, trace.box = first.mask, 1, first.box
            trace.reason = f"stage 1: {first.reason}; stages 2/3: {later.reason or 'empty mask'}, stage-1 mask kept"
        trace.iou = decoder.iou.get(trace.box)
        _bound_area(refined, trace, pred, config)
    label = merge_labels(pred, refined, n_classes, config.score_refined, config.score_unrefined,
                         config.score_background, probs if config.overlap_by_probability else None)
    return SliceResult(label, refined, traces, decoder.decoder_calls, decoder.decoder_launches,
                       decoder.encoder_calls)


def _bound_area(refined: dict[int, np.ndarray], trace: ClassTrace, pred: np.ndarray, config: DFGConfig) -> None:
    """Discard a refined mask over ``max_growth`` x the model's own mask or under 1 / ``max_shrink`` of it (each
    off when 0): a box that SAM answers with most of the abdomen, or a seed box that never grew, passes the
    pixel-count stability rules just as well as a good one."""
    if trace.cls not in refined:
        return
    area, own = int(refined[trace.cls].sum()), int((pred == trace.cls).sum())
    if config.max_growth > 0 and area > config.max_growth * own:
        why = f"> {config.max_growth:g} x"
    elif config.max_shrink > 0 and area * config.max_shrink < own:
        why = f"< 1/{config.max_shrink:g} of"
    else:
        return
    del refined[trace.cls]
    trace.stage, trace.discarded_area, trace.box, trace.iou = STAGE_NONE, area, None, None
    trace.reason += f"; mask of {area} px {why} the model's {own} px, model prediction kept"
