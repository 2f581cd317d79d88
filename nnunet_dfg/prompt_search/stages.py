"""The three stages of the dual-feature-guided box search for one class on one slice (METHOD.md, DFG step 3).

Efficiency: in every stage the sequence of regions, hence of boxes, depends only on the features and the starting
region, never on SAM's masks, so boxes come from a ``BoxSequence`` and masks are requested separately. In lazy mode
(the default) a mask is decoded only when a stability rule needs it, in order, and the search stops at the first
stable step; the decoder's box cache makes repeated boxes free. In plain mode each stage decodes all its boxes up
front (one batched call, no cache). Both modes run the same rules on the same masks, so they return identical
results; only the decoder work differs. ``cfg`` here is in pixels of the slice (``DFGConfig.for_slice``, applied
by ``refine_slice``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import DFGConfig
from .decoder import BoxDecoder
from .masks import Box, expand_box, region_box
from .neighbours import grow_by_eligibility, grow_by_links
from .stability import back_changes, first_stable, stage1_rule, stage3_rule
from .trace import STAGE_NONE, StepRecord

Grow = Callable[[np.ndarray], np.ndarray]


class BoxSequence:
    """Prompt boxes of a region grown one step at a time, computed on demand and memoised.

    Once a growth step leaves the region unchanged it is saturated: no more growth is computed and every later
    box equals the last one.
    """

    def __init__(self, region: np.ndarray, grow: Grow, margin: int) -> None:
        self._region = np.asarray(region, dtype=bool)
        self._grow = grow
        self._margin = margin
        self._boxes: list[Box] = []
        self._saturated = False

    def _advance(self) -> None:
        if self._boxes and not self._saturated:
            grown = self._grow(self._region)
            if np.array_equal(grown, self._region):
                self._saturated = True
            else:
                self._region = grown
        self._boxes.append(region_box(self._region, self._margin))

    def __getitem__(self, step: int) -> Box:
        while len(self._boxes) <= step:
            self._advance()
        return self._boxes[step]

    def take(self, n: int) -> list[Box]:
        return [self[i] for i in range(n)]


@dataclass
class StageOutcome:
    """Mask kept by a stage (None when it found no stable box), the stage that produced it and why, and the box
    that produced it."""

    mask: np.ndarray | None
    stage: int
    reason: str
    steps: list[StepRecord] = field(default_factory=list)
    box: Box | None = None


MaskAt = Callable[[int], np.ndarray]


def _masks(decoder: BoxDecoder, boxes: list[Box] | BoxSequence, n: int) -> MaskAt:
    """Lazy: decode step i when asked (cached). Plain: decode the first n boxes now in one launch."""
    if decoder.lazy:
        return lambda i: decoder.decode_one(boxes[i])
    return decoder.decode([boxes[i] for i in range(n)]).__getitem__


def run_stage1(seed: np.ndarray, links: np.ndarray, offsets: np.ndarray, decoder: BoxDecoder, n_steps: int,
               cfg: DFGConfig) -> StageOutcome:
    """Grow the seed over target-feature links; stop at the first box whose SAM mask is stable.

    Empty SAM masks are skipped (the region still grows) and do not enter the stability history, as in the
    reference. No stable step within ``n_steps`` -> no mask ("max steps").
    """
    seq = BoxSequence(seed, lambda r: grow_by_links(r, links, offsets), cfg.box_margin)
    mask_at = _masks(decoder, seq, n_steps)
    history: list[np.ndarray] = []
    steps: list[StepRecord] = []
    for step in range(n_steps):
        mask = mask_at(step)
        area = int(np.count_nonzero(mask))
        if area == 0:
            steps.append(StepRecord(1, step, seq[step], 0))
            continue
        history.append(mask)
        one, two = back_changes(history, 1), back_changes(history, 2)
        steps.append(StepRecord(1, step, seq[step], area, one, two))
        reason = stage1_rule(area, one, two, cfg.stage1_min_mask, cfg.stage1_tol_one_step, cfg.stage1_tol_two_step)
        if reason is not None:
            return StageOutcome(mask, 1, reason, steps, seq[step])
    return StageOutcome(None, STAGE_NONE, "max steps", steps)


def sam_feature_eligibility(g_n: np.ndarray, mask: np.ndarray, cfg: DFGConfig) -> np.ndarray:
    """Pixels close enough to the mask's SAM-feature centroid to join in stage 2: ``1 - <G_q, c> < t`` with
    ``t = min(factor * avg, cap)``, avg the mean cosine distance inside the mask (its own spread sets the bar)."""
    centroid = g_n[:, mask].mean(axis=1)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    dist = 1.0 - np.einsum("chw,c->hw", g_n, centroid)
    threshold = min(cfg.stage2_factor * float(dist[mask].mean()), cfg.stage2_cap)
    return dist < threshold


def run_stage2(mask1: np.ndarray, decoder: BoxDecoder, n_steps: int, cfg: DFGConfig) -> StageOutcome:
    """Grow the stage-1 mask over SAM features until SAM's mask settles.

    Returns the middle mask once a mask differs from three steps back by < tol (three-step). When the box stops
    growing: the first two-step-stable mask, else the first one-step-stable one, else stage 3 from that box.
    After ``n_steps`` the same two fallbacks apply, then no mask (the caller keeps the stage-1 mask).
    """
    eligible = sam_feature_eligibility(decoder.sam_features(), mask1, cfg)
    seq = BoxSequence(mask1, lambda r: grow_by_eligibility(r, eligible, cfg.neighbour_radius), cfg.box_margin)
    n_decode = n_steps
    if not decoder.lazy:  # plain: everything up to the first repeated box
        boxes = seq.take(n_steps)
        n_decode = next((i for i in range(1, n_steps) if boxes[i] == boxes[i - 1]), n_steps)
    mask_at = _masks(decoder, seq, n_decode)
    history: list[np.ndarray] = []
    steps: list[StepRecord] = []
    for step in range(n_steps):
        box = seq[step]
        if step > 0 and box == seq[step - 1]:
            settled = _settle(history, "box stopped", cfg)
            if settled is not None:
                return StageOutcome(history[settled[0]], 2, settled[1], steps, steps[settled[0]].box)
            return run_stage3(box, history, decoder, cfg, steps)
        mask = mask_at(step)
        history.append(mask)
        one, two, three = (back_changes(history, k) for k in (1, 2, 3))
        steps.append(StepRecord(2, step, box, int(np.count_nonzero(mask)), one, two, three))
        if three is not None and three < cfg.stage2_tol_three_step:
            return StageOutcome(history[-2], 2, "stable three-step", steps, steps[-2].box)
    settled = _settle(history, "max steps", cfg)
    if settled is not None:
        return StageOutcome(history[settled[0]], 2, settled[1], steps, steps[settled[0]].box)
    return StageOutcome(None, STAGE_NONE, "max steps", steps)


def _settle(history: list[np.ndarray], why: str, cfg: DFGConfig) -> tuple[int, str] | None:
    """Index of the first two-step-stable mask of the stage-2 history, else of the first one-step-stable one
    (with the reason), else None. Stage 2 records one step per mask, so the index is also that of its step."""
    idx = first_stable(history, 2, cfg.stage2_tol_two_step)
    if idx is not None:
        return idx, f"{why}, stable two-step"
    idx = first_stable(history, 1, cfg.stage2_tol_one_step)
    if idx is not None:
        return idx, f"{why}, stable one-step"
    return None


def run_stage3(box: Box, history: list[np.ndarray], decoder: BoxDecoder, cfg: DFGConfig,
               steps: list[StepRecord]) -> StageOutcome:
    """Inflate the stalled box by ``inflate_px`` per side up to ``stage3_steps`` times; return the first mask that
    is two- or one-step stable against the continued stage-2 history.

    Deviation: boxes are clipped to the slice (the reference let them leave the image); a clipped box that no
    longer grows repeats, is served from the cache and is trivially stable.
    """
    shape = history[-1].shape
    boxes = [expand_box(box, cfg.stage3_inflate_px * (k + 1), shape) for k in range(cfg.stage3_steps)]
    mask_at = _masks(decoder, boxes, len(boxes))
    for k, grown in enumerate(boxes):
        mask = mask_at(k)
        history.append(mask)
        steps.append(StepRecord(3, k, grown, int(np.count_nonzero(mask)),
                                back_changes(history, 1), back_changes(history, 2)))
        reason = stage3_rule(history, cfg.stage2_tol_two_step, cfg.stage2_tol_one_step)
        if reason is not None:
            return StageOutcome(mask, 3, reason, steps, grown)
    return StageOutcome(None, STAGE_NONE, "no stable box", steps)
