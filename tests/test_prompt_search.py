"""Unit tests of nnunet_dfg.prompt_search on hand-made slices with a fake segmenter (no SAM, no torch)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from fake_segmenter import (FakeSegmenter, box_mask, by_width, constant_links, naive_grow, sam_like_features, square,
                            two_organ_slice)
from nnunet_dfg.prompt_search import (DFGConfig, SDGConfig, box_slice_result, class_boxes, plain_box, refine_slice,
                                      sdg_box)
from nnunet_dfg.prompt_search.decoder import BoxDecoder
from nnunet_dfg.prompt_search.merge import merge_labels
from nnunet_dfg.prompt_search.neighbours import (grow_by_eligibility, grow_by_links, neighbour_offsets,
                                                 normalise_channels, pair_links, pair_similarity)
from nnunet_dfg.prompt_search.seed import is_present, seed_region
from nnunet_dfg.prompt_search.stages import BoxSequence, run_stage1, run_stage2
from nnunet_dfg.volume import refine_volume

CFG = DFGConfig()


# ---------------------------------------------------------------- config, neighbours, seed
def test_config_defaults_and_steps():
    assert CFG.steps_for(1) == 25 and CFG.steps_for(2) == 20 and CFG.steps_for(3) == 20 and CFG.steps_for(4) == 35
    assert CFG.steps_for(9) == 25
    assert (CFG.presence_prob, CFG.presence_min_pixels, CFG.seed_tolerance) == (0.8, 200, 0.005)
    assert (CFG.stage2_factor, CFG.stage2_cap, CFG.stage3_inflate_px, CFG.stage3_steps) == (2.5, 0.35, 2, 6)
    assert (SDGConfig().threshold, SDGConfig().downscale) == (0.75, 128)
    with pytest.raises(dataclasses.FrozenInstanceError):
        CFG.box_margin = 5


def test_neighbour_offsets_radius_4():
    off = neighbour_offsets(4)
    d2 = (off ** 2).sum(1)
    assert len(off) == 44 and d2.min() >= 1 and d2.max() < 16
    assert len({tuple(o) for o in off}) == 44 and {tuple(-o) for o in off} == {tuple(o) for o in off}
    assert {(0, 3), (2, 3), (-3, -2)} <= {tuple(o) for o in off} and (3, 3) not in {tuple(o) for o in off}


def test_pair_similarity_matches_direct_cosine():
    rng = np.random.default_rng(0)
    f = normalise_channels(rng.normal(size=(5, 9, 11)))
    off = neighbour_offsets(4)
    sims = pair_similarity(f, off)
    for k, (dy, dx) in enumerate(off):
        for y, x in [(0, 0), (4, 5), (8, 10), (2, 9)]:
            qy, qx = y + dy, x + dx
            inside = 0 <= qy < 9 and 0 <= qx < 11
            expect = float(f[:, y, x] @ f[:, qy, qx]) if inside else -np.inf
            assert sims[k, y, x] == pytest.approx(expect, abs=1e-5)


def test_vectorised_growth_equals_naive():
    rng = np.random.default_rng(1)
    f = ndimage.gaussian_filter(rng.normal(size=(3, 24, 24)), sigma=(0, 2, 2))
    f_n = normalise_channels(f)
    off = neighbour_offsets(4)
    links = pair_links(f_n, off, 0.95)
    region = np.zeros((24, 24), bool)
    region[10:12, 5:7] = True
    region[0, 23] = True  # corner pixel: border handling
    fast = slow = region
    for _ in range(3):
        fast, slow = grow_by_links(fast, links, off), naive_grow(slow, f_n, 0.95)
        assert np.array_equal(fast, slow)
    assert fast.sum() > region.sum() + 10  # the case actually grows


def test_stage2_growth_is_disc_dilation_within_eligible():
    rng = np.random.default_rng(2)
    eligible = rng.random((20, 20)) < 0.6
    region = np.zeros((20, 20), bool)
    region[9, 9] = region[0, 0] = True
    out = grow_by_eligibility(region, eligible, 4)
    expect = region.copy()
    for y, x in zip(*np.nonzero(region)):
        for qy in range(20):
            for qx in range(20):
                if (qy - y) ** 2 + (qx - x) ** 2 < 16 and eligible[qy, qx]:
                    expect[qy, qx] = True
    assert np.array_equal(out, expect)


def test_presence_threshold():
    p = np.zeros((64, 64))
    p.flat[:199] = 0.81
    p.flat[199:260] = 0.8  # not strictly above
    assert not is_present(p)
    p.flat[199] = 0.9
    assert is_present(p)


def test_seed_is_largest_filled_region_within_tolerance():
    p = np.full((64, 64), 0.5)
    p[10:30, 10:30] = 0.996  # large ring (max - 0.004 qualifies) with a low-probability hole
    p[15:25, 15:25] = 0.2
    p[40:46, 40:46] = 1.0    # small region at the maximum
    p[50:60, 5:25] = 0.994   # bigger than the small one but outside the tolerance
    s = seed_region(p)
    expect = np.zeros_like(s)
    expect[10:30, 10:30] = True
    assert np.array_equal(s, expect)


# ---------------------------------------------------------------- stage 1
SHAPE = (64, 64)
# seed pixel (32, 32): step k has region extent +-3k, box +-(3k + 3), width 6k + 7


def _seed():
    s = np.zeros(SHAPE, bool)
    s[32, 32] = True
    return s


def _stage1(script, cfg=CFG, n_steps=10, lazy=True):
    links, off = constant_links(SHAPE)
    seg = by_width({6 * k + 7: m for k, m in enumerate(script)}, SHAPE)
    dec = BoxDecoder(seg, np.zeros(SHAPE), lazy=lazy)
    return run_stage1(_seed(), links, off, dec, n_steps, cfg), seg


def test_stage1_two_step_rule_stops_at_first_stable_step():
    sq = [square(SHAPE, 32, 32, s) for s in (10, 12, 16, 12, 12, 12)]
    out, seg = _stage1(sq)
    assert out.stage == 1 and out.reason == "stable two-step" and np.array_equal(out.mask, sq[3])
    assert len(out.steps) == 4 and len(seg.decoded) == 4  # nothing decoded after the stable step
    assert out.steps[3].changed_2 == 0 and out.steps[3].changed_1 == 256 - 144
    assert [b[2] - b[0] + 1 for b in seg.decoded] == [7, 13, 19, 25]


def test_stage1_one_step_rule_and_min_mask_size():
    sq = [square(SHAPE, 32, 32, 6), square(SHAPE, 32, 32, 6), square(SHAPE, 32, 32, 10),
          square(SHAPE, 32, 32, 16), square(SHAPE, 32, 32, 16, extra=1)]
    out, _ = _stage1(sq)
    # step 1 is identical to step 0 but only 36 px (<= 50): not stable
    assert out.reason == "stable one-step" and out.steps[-1].step == 4 and out.steps[-1].changed_1 == 1
    assert np.array_equal(out.mask, sq[4])


def test_stage1_empty_masks_are_skipped_not_compared():
    e = np.zeros(SHAPE, bool)
    sq = [e, square(SHAPE, 32, 32, 10), e, square(SHAPE, 32, 32, 10)]
    out, _ = _stage1(sq)
    assert out.reason == "stable one-step" and out.steps[-1].step == 3 and out.steps[2].area == 0


def test_stage1_max_steps_gives_no_mask():
    sq = [square(SHAPE, 32, 32, s) for s in (8, 14, 20, 26)]
    out, seg = _stage1(sq, n_steps=4)
    assert out.mask is None and out.stage == 0 and out.reason == "max steps" and len(seg.decoded) == 4


def test_box_sequence_saturates_and_repeats():
    region = np.zeros((20, 20), bool)
    region[5:8, 5:8] = True
    calls = []
    seq = BoxSequence(region, lambda r: calls.append(1) or r, margin=3)
    assert seq.take(5) == [(2, 2, 10, 10)] * 5 and len(calls) == 1


# ---------------------------------------------------------------- stage 2 and 3
BIG = (96, 96)


def _stage2(script, sam_labels, mask1, lazy=True, inflate_script=None):
    seg = FakeSegmenter(sam_labels, mask_fn=lambda b: script[b[2] - b[0] + 1],
                        features=sam_like_features(sam_labels))
    dec = BoxDecoder(seg, np.zeros(BIG), lazy=lazy)
    return run_stage2(mask1, dec, 20, CFG), seg


def _labels(side):
    lab = np.zeros(BIG, int)
    lab[48 - side // 2:48 - side // 2 + side, 48 - side // 2:48 - side // 2 + side] = 1
    return lab


def test_stage2_three_step_returns_middle_mask():
    truth = [square(BIG, 48, 48, 12, extra=k) for k in range(6)]  # 0..5 extra pixels: always < 45 apart
    widths = [18, 24, 30, 36, 42, 48]
    out, seg = _stage2(dict(zip(widths, truth)), _labels(40), square(BIG, 48, 48, 12))
    assert out.stage == 2 and out.reason == "stable three-step"
    assert np.array_equal(out.mask, truth[2]) and len(seg.decoded) == 4
    assert out.steps[-1].changed_3 == 3


def test_stage2_box_stops_first_two_step_stable():
    # mask1 rows 43..52 inside the 30x30 label (rows 33..62): boxes 16, 22, 28, 34, 36 wide, then the box repeats
    script = {16: square(BIG, 48, 48, 16), 22: square(BIG, 48, 48, 20), 28: square(BIG, 48, 48, 16, extra=20),
              34: square(BIG, 48, 48, 24), 36: square(BIG, 48, 48, 28)}
    out, seg = _stage2(script, _labels(30), square(BIG, 48, 48, 10))
    assert out.stage == 2 and out.reason == "box stopped, stable two-step"
    assert np.array_equal(out.mask, script[28])  # first two-step-stable index (2), not a later one
    assert len(seg.decoded) == 5 and [s.stage for s in out.steps] == [2] * 5


def test_stage3_inflates_until_stable():
    script = {w: square(BIG, 48, 48, s) for w, s in ((16, 16), (22, 22), (28, 28), (34, 32), (36, 36), (40, 40))}
    script[44] = square(BIG, 48, 48, 40, extra=3)  # stage 3, step 1: one-step stable (3 px)
    out, seg = _stage2(script, _labels(30), square(BIG, 48, 48, 10))
    assert out.stage == 3 and out.reason == "stable one-step" and np.array_equal(out.mask, script[44])
    assert [s.stage for s in out.steps] == [2] * 5 + [3, 3]
    assert seg.decoded[-2:] == [(28, 28, 67, 67), (26, 26, 69, 69)]  # the stalled box (30..65) + 2 px, + 4 px


def test_stage3_failure_keeps_stage1_mask_in_refine_slice():
    # whole pipeline: stage 1 stabilises, stage 2 never does, stage 3 neither -> stage-1 mask kept
    lab = _labels(30)
    probs = np.zeros((2,) + BIG, np.float32)
    probs[1] = np.where(lab > 0, 0.9, 0.1)
    probs[1, 46:50, 46:50] = 0.99
    probs[0] = 1 - probs[1]
    stage1_mask = square(BIG, 48, 48, 26)

    def mask_fn(b):
        w = b[2] - b[0] + 1
        return stage1_mask if w < 30 else square(BIG, 48, 48, min(w - 8, 90) - 2 * (w % 3))

    seg = FakeSegmenter(lab, mask_fn=mask_fn)
    feats = np.stack([lab, 1 - lab]).astype(np.float32)
    res = refine_slice(np.zeros(BIG), probs, feats, seg)
    tr = res.traces[1]
    assert tr.stage == 1 and "stage-1 mask kept" in tr.reason and "no stable box" in tr.reason
    assert np.array_equal(res.refined[1], stage1_mask) and 3 in {s.stage for s in tr.steps}


# ---------------------------------------------------------------- whole slice
def test_lazy_cached_search_equals_plain_with_fewer_decodes():
    truth, probs, feats = two_organ_slice()
    lazy_seg, plain_seg = FakeSegmenter(truth), FakeSegmenter(truth)
    fast = refine_slice(np.zeros(SHAPE), probs, feats, lazy_seg)
    plain = refine_slice(np.zeros(SHAPE), probs, feats, plain_seg, lazy=False)
    assert np.array_equal(fast.label, plain.label) and fast.refined.keys() == plain.refined.keys() == {1, 2}
    for c in fast.refined:
        assert np.array_equal(fast.refined[c], plain.refined[c])
        assert fast.traces[c].steps == plain.traces[c].steps and fast.traces[c].reason == plain.traces[c].reason
    assert fast.decoder_calls == len(lazy_seg.decoded) < plain.decoder_calls == len(plain_seg.decoded)
    assert len(set(lazy_seg.decoded)) == len(lazy_seg.decoded)  # never the same box twice in one slice
    assert len(set(plain_seg.decoded)) < len(plain_seg.decoded)  # the plain search does repeat boxes
    assert fast.encoder_calls == 1 and lazy_seg.embed_calls == 1
    assert (fast.label == truth).mean() > 0.97


def test_embedding_only_when_a_class_is_present_and_reused():
    truth, probs, feats = two_organ_slice()
    flat = np.full_like(probs, 1 / 3)  # nothing confident
    seg = FakeSegmenter(truth)
    res = refine_slice(np.zeros(SHAPE), flat, feats, seg)
    assert seg.embed_calls == 0 and res.decoder_calls == 0 and not res.refined
    assert all(not t.present and t.reason == "absent" for t in res.traces.values())
    seg2 = FakeSegmenter(truth)
    emb = seg2.embed(np.zeros(SHAPE))
    res2 = refine_slice(np.zeros(SHAPE), probs, feats, seg2, embedding=emb)
    assert seg2.embed_calls == 1 and res2.encoder_calls == 0 and len(res2.refined) == 2


def test_unrefined_class_keeps_model_prediction():
    truth, probs, feats = two_organ_slice()
    cfg = DFGConfig(max_steps={1: 1, 2: 20})  # one step can never be stable
    res = refine_slice(np.zeros(SHAPE), probs, feats, FakeSegmenter(truth), config=cfg)
    assert 1 not in res.refined and res.traces[1].stage == 0 and "max steps" in res.traces[1].reason
    pred = probs.argmax(0)
    assert np.array_equal(res.label == 1, (pred == 1) & ~res.refined[2])


def test_growth_bound_discards_leaking_masks():
    truth, probs, feats = two_organ_slice()
    leak = square(SHAPE, 32, 32, 40)  # every box answered with most of the slice: constant, hence "stable"
    shipped = refine_slice(np.zeros(SHAPE), probs, feats, FakeSegmenter(truth, mask_fn=lambda b: leak))
    assert shipped.refined.keys() == {1, 2} and (shipped.label[leak] == 1).all()  # the reference keeps the leak
    bounded = refine_slice(np.zeros(SHAPE), probs, feats, FakeSegmenter(truth, mask_fn=lambda b: leak),
                           config=DFGConfig(max_growth=2.0))
    assert not bounded.refined and np.array_equal(bounded.label, probs.argmax(0))
    assert all(t.stage == 0 and t.discarded_area == 1600 and "model prediction kept" in t.reason
               for t in bounded.traces.values())
    for bad in (-1.0, 0.5, float("nan")):  # a bound under 1x would discard masks smaller than the model's own
        for name in ("max_growth", "max_shrink"):
            with pytest.raises(ValueError, match=name):
                DFGConfig(**{name: bad})


def test_shrink_bound_discards_masks_that_never_grew():
    truth, probs, feats = two_organ_slice()
    speck = square(SHAPE, 32, 32, 3)  # every box answered with a 9-pixel speck: constant, hence "stable"
    shipped = refine_slice(np.zeros(SHAPE), probs, feats, FakeSegmenter(truth, mask_fn=lambda b: speck),
                           config=DFGConfig(stage1_min_mask=5))
    assert shipped.refined.keys() == {1, 2}
    bounded = refine_slice(np.zeros(SHAPE), probs, feats, FakeSegmenter(truth, mask_fn=lambda b: speck),
                           config=DFGConfig(stage1_min_mask=5, max_shrink=2.0))
    assert not bounded.refined and np.array_equal(bounded.label, probs.argmax(0))
    assert all(t.stage == 0 and t.discarded_area == 9 and "< 1/2 of the model's" in t.reason
               for t in bounded.traces.values())


def test_merge_scores_and_ties():
    pred = np.array([[1, 1, 3, 0], [2, 2, 3, 3]])
    r1 = np.array([[0, 1, 1, 0], [0, 1, 0, 0]], bool)
    r2 = np.array([[0, 1, 0, 0], [0, 1, 1, 0]], bool)
    out = merge_labels(pred, {1: r1, 2: r2}, 4)
    # (0,0): class 1 refined elsewhere -> its model pixel falls to background; (0,1),(1,1): refined tie -> 1;
    # (0,2): refined 1 beats unrefined 3; (1,3): unrefined 3 kept; (1,0): class 2 refined, not here -> 0
    assert out.tolist() == [[0, 1, 1, 0], [0, 1, 2, 3]] and out.dtype == np.uint8
    # overlap_by_probability: the refined tie at (1,1) goes to class 2, likelier there; nothing else moves
    probs = np.full((4, 2, 4), 0.25, np.float32)
    probs[2, 1, 1], probs[1, 1, 1] = 0.6, 0.1
    by_prob = merge_labels(pred, {1: r1, 2: r2}, 4, overlap_probs=probs)
    assert by_prob.tolist() == [[0, 1, 1, 0], [0, 2, 2, 3]]


def test_overlap_by_probability_in_the_search_config():
    assert DFGConfig().overlap_by_probability is False  # the reference's tie rule by default
    with pytest.raises(ValueError, match="overlap_by_probability must be true or false"):
        DFGConfig(overlap_by_probability=1)


# ---------------------------------------------------------------- SDG and plain boxes
def test_sdg_box_none_when_no_foreground():
    assert sdg_box(np.zeros((256, 200))) is None
    assert sdg_box(np.full((256, 200), 0.74)) is None
    assert plain_box(np.zeros((30, 30))) is None


def test_sdg_box_largest_component_scaled_back():
    p = np.zeros((256, 192), np.float32)
    p[40:100, 60:140] = 0.95   # blob
    p[180:200, 10:30] = 0.95   # smaller distractor
    box = sdg_box(p)
    x0, y0, x1, y1 = box
    assert abs(x0 - 60) <= 2 and abs(y0 - 40) <= 2 and abs(x1 - 139) <= 2 and abs(y1 - 99) <= 2
    assert plain_box(p) == (10, 40, 139, 199)
    small = np.zeros((64, 64))
    small[5:9, 7:20] = 0.9  # no resize below 128 px: exact
    assert sdg_box(small) == (7, 5, 19, 8)


def _box_slice(probs, prompt, seg):
    """One slice through the volume engine (the one place box prompts meet the segmenter)."""
    return refine_volume(np.zeros((1,) + SHAPE), probs[:, None], None, seg, prompt).slices[0]


def test_box_prompts_one_launch_per_slice_and_missing_box():
    truth, probs, _ = two_organ_slice()
    probs = probs.copy()
    probs[2] = np.minimum(probs[2], 0.5)  # class 2 never confident: no SDG box
    assert class_boxes(probs, "sdg", SDGConfig()) == {1: sdg_box(probs[1])}
    seg = FakeSegmenter(truth)
    res = _box_slice(probs, "sdg", seg)
    assert res.refined.keys() == {1} and seg.launches == 1 and res.traces[2].reason == "no foreground"
    assert res.encoder_calls == res.decoder_launches == res.decoder_calls == 1
    assert np.array_equal(res.refined[1], (truth == 1) & box_mask(SHAPE, sdg_box(probs[1])))
    res_box = _box_slice(probs, "box", FakeSegmenter(truth))
    assert res_box.traces[1].steps[0].box == plain_box(probs[1]) and res_box.traces[1].reason == "plain box"
    empty = FakeSegmenter(truth)
    none = _box_slice(np.stack([np.ones(SHAPE), np.zeros(SHAPE)]), "sdg", empty)
    assert empty.embed_calls == 0 and not none.refined and not none.label.any() and none.encoder_calls == 0


def test_box_slice_result_merges_refined_over_model():
    pred = np.zeros((6, 6), np.uint8)
    pred[0:2, 0:2] = 1
    pred[4:6, 4:6] = 2
    mask = np.zeros((6, 6), bool)
    mask[1:4, 1:4] = True
    res = box_slice_result(pred, 3, "sdg", {1: (1, 1, 3, 3)}, [mask], SDGConfig())
    assert np.array_equal(res.label == 1, mask) and np.array_equal(res.label == 2, pred == 2)
    assert res.traces[1].steps[0].area == 9 and res.traces[2].reason == "no foreground"


def test_target_features_are_normalised_inside():
    truth, probs, feats = two_organ_slice()
    feats = feats + 0.3  # classes at cosine ~0.5: linked only if raw dot products were used after scaling
    scale = np.random.default_rng(4).uniform(2.0, 10.0, size=SHAPE).astype(np.float32)
    a = refine_slice(np.zeros(SHAPE), probs, feats, FakeSegmenter(truth))
    b = refine_slice(np.zeros(SHAPE), probs, feats * scale, FakeSegmenter(truth))
    assert all(a.traces[c].steps == b.traces[c].steps for c in a.traces) and np.array_equal(a.label, b.label)
