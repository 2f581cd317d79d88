"""The DFG search constants are the reference's at 256 px and scale with the slice (DFGConfig.for_slice): pinned
values, clamps on small slices, overrides, and the same decisions on a slice and its 2x upsampled copy."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fake_segmenter import FakeSegmenter, box_mask, sam_like_features
from nnunet_dfg.prompt_search import DFGConfig, refine_slice
from nnunet_dfg.prompt_search.config import AREA_FIELDS
from nnunet_dfg.prompt_search.neighbours import neighbour_offsets
from nnunet_dfg.refine.command import parse_search_configs

REFERENCE = DFGConfig()


def _pixels(cfg: DFGConfig) -> tuple:
    return (cfg.presence_min_pixels, cfg.stage1_min_mask, cfg.stage1_tol_two_step, cfg.stage1_tol_one_step,
            cfg.stage2_tol_three_step, cfg.stage2_tol_two_step, cfg.stage2_tol_one_step, cfg.box_margin,
            cfg.neighbour_radius, cfg.stage3_inflate_px)


def test_reference_values_at_256_px():
    for shape in ((256, 256), (128, 512)):  # same pixel count: same scale
        cfg = REFERENCE.for_slice(shape)
        assert _pixels(cfg) == (200, 50, 35, 15, 45, 30, 15, 3, 4, 2) and cfg.reference_side == 0
        assert dataclasses.replace(cfg, reference_side=256) == REFERENCE
    assert len(neighbour_offsets(REFERENCE.for_slice((256, 256)).neighbour_radius)) == 44


def test_counts_scale_with_area_distances_with_side():
    assert _pixels(REFERENCE.for_slice((512, 512))) == (800, 200, 140, 60, 180, 120, 60, 6, 7, 4)
    assert _pixels(REFERENCE.for_slice((128, 128))) == (50, 12.5, 8.75, 3.75, 11.25, 7.5, 3.75, 2, 3, 1)
    # 64 px: counts stay fractional (compared with >=, > and <), distances at least 1 px, radius 2 = 8-neighbours
    small = REFERENCE.for_slice((64, 64))
    assert _pixels(small) == (12.5, 3.125, 2.1875, 0.9375, 2.8125, 1.875, 0.9375, 1, 2, 1)
    assert {tuple(o) for o in neighbour_offsets(small.neighbour_radius)} == {
        (dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx}
    tiny = DFGConfig(box_margin=0, stage3_inflate_px=0).for_slice((16, 16))
    assert (tiny.box_margin, tiny.stage3_inflate_px, tiny.neighbour_radius) == (0, 0, 2)  # 0 is kept, not clamped
    # ratios, probabilities and step budgets do not scale
    assert (small.presence_prob, small.max_growth, small.steps_for(4), small.stage2_cap) == (0.8, 0.0, 35, 0.35)


def test_overrides_are_at_the_reference_side_or_plain_pixels():
    assert DFGConfig(presence_min_pixels=400).for_slice((128, 128)).presence_min_pixels == 100
    own = DFGConfig(presence_min_pixels=40, box_margin=2, reference_side=64)
    assert (own.for_slice((64, 64)).presence_min_pixels, own.for_slice((64, 64)).box_margin) == (40, 2)
    plain = DFGConfig(presence_min_pixels=40, reference_side=0)
    assert plain.for_slice((64, 64)) is plain and plain.for_slice((512, 512)).presence_min_pixels == 40
    scaled = REFERENCE.for_slice((96, 80))
    assert scaled.for_slice((96, 80)) == scaled  # already in pixels
    configs = parse_search_configs(["dfg", "sdg"], '{"presence_min_pixels": 40, "reference_side": 0}')
    assert configs["dfg"][0] == plain and configs["dfg"][1] == {"presence_min_pixels": 40, "reference_side": 0}
    with pytest.raises(ValueError, match="reference_side"):
        DFGConfig(reference_side=-1)
    assert set(AREA_FIELDS) <= {f.name for f in dataclasses.fields(DFGConfig)}


def test_refine_slice_scales_to_the_slice():
    # 20 confident pixels on a 64 px slice: present at the scaled 12.5, absent at the reference's plain 200
    probs = np.full((2, 64, 64), 0.5, np.float32)
    probs[1, 30:34, 30:35] = 0.9
    probs[0] = 1 - probs[1]
    truth = (probs[1] > 0.8).astype(int)
    feats = np.stack([truth, 1 - truth]).astype(np.float32)
    scaled = refine_slice(np.zeros((64, 64)), probs, feats, FakeSegmenter(truth))
    plain = refine_slice(np.zeros((64, 64)), probs, feats, FakeSegmenter(truth), DFGConfig(reference_side=0))
    assert scaled.traces[1].present and scaled.traces[1].steps and not plain.traces[1].present


# ---------------------------------------------------------------- the same slice at 2x resolution
N = 256
ORGANS = {1: (90, 150, 60, 120), 2: (160, 210, 140, 220)}  # rows y0:y1, cols x0:x1
CORES = {1: (118, 122, 88, 92), 2: (183, 187, 178, 182)}   # the most confident pixels: the seeds
SAM_PAD = {1: 9, 2: -8}  # SAM's answer (and its features) reach past organ 1 and stay inside organ 2


def _rect(y0: int, y1: int, x0: int, x1: int, pad: int = 0) -> np.ndarray:
    m = np.zeros((N, N), bool)
    m[y0 - pad:y1 + pad, x0 - pad:x1 + pad] = True
    return m


def _up(a: np.ndarray, f: int) -> np.ndarray:
    """Nearest-neighbour upsampling of the last two axes by ``f``."""
    return np.repeat(np.repeat(a, f, axis=-2), f, axis=-1)


def _sam_answer(box: tuple[int, int, int, int], sam: np.ndarray) -> np.ndarray:
    """SAM's region inside the box minus a notch whose size jumps with the box width: consecutive masks differ by
    a few to a few tens of pixels once the box covers the region, around the stability tolerances."""
    m = (sam > 0) & box_mask(sam.shape, box)
    m.flat[np.flatnonzero(m)[:((box[2] - box[0] + 1) * 37) % 59]] = False
    return m


def _search(f: int, cfg: DFGConfig = REFERENCE):
    """The 256 px slice upsampled ``f`` x; the segmenter answers for the box at 256 px, upsampled."""
    truth, sam = np.zeros((N, N), int), np.zeros((N, N), int)
    probs = np.full((3, N, N), 0.02, np.float32)
    for c, organ in ORGANS.items():
        truth[_rect(*organ)], sam[_rect(*organ, pad=SAM_PAD[c])] = c, c
        probs[c][_rect(*organ)], probs[c][_rect(*CORES[c])] = 0.9, 0.99
    probs[0] = 1 - probs[1] - probs[2]
    feats = np.stack([truth == k for k in range(3)]).astype(np.float32) + 0.01
    seg = FakeSegmenter(_up(truth, f), mask_fn=lambda b: _up(_sam_answer(tuple(v // f for v in b), sam), f),
                        features=_up(sam_like_features(sam), f))
    return refine_slice(np.zeros((N * f, N * f)), _up(probs, f), _up(feats, f), seg, cfg)


def _scaled_step(step, f: int):
    x0, y0, x1, y1 = step.box
    times = (lambda v: None if v is None else v * f * f)
    return dataclasses.replace(step, box=(x0 * f, y0 * f, x1 * f + f - 1, y1 * f + f - 1), area=step.area * f * f,
                               changed_1=times(step.changed_1), changed_2=times(step.changed_2),
                               changed_3=times(step.changed_3))


def test_2x_upsampled_slice_takes_the_same_decisions():
    small, big = _search(1), _search(2)
    # the case exercises the rules near their tolerances: stage-2 one-step (14 < 15), stage-1 two-step (31 < 35),
    # stage 3 after a box that stopped at once
    assert [(t.stage, t.reason) for t in small.traces.values()] == [
        (2, "stage 2: box stopped, stable one-step"), (3, "stage 3: stable two-step")]
    assert small.traces[2].steps[-4].changed_2 == 31 and small.traces[1].steps[-1].changed_1 == 14
    for c, trace in small.traces.items():
        other = big.traces[c]
        assert (other.stage, other.reason, other.confident_pixels) == (trace.stage, trace.reason,
                                                                       4 * trace.confident_pixels)
        assert other.steps == [_scaled_step(s, 2) for s in trace.steps]
        assert np.array_equal(big.refined[c], _up(small.refined[c], 2))
    assert np.array_equal(big.label, _up(small.label, 2)) and big.decoder_calls == small.decoder_calls
    # the reference's plain pixels at 512 px take other decisions (the case is sensitive to the scaling)
    plain = _search(2, DFGConfig(reference_side=0))
    assert [t.stage for t in plain.traces.values()] != [t.stage for t in big.traces.values()]
