"""The reliability rule of ``refine --pseudo-ignore`` (prompt_search.reliability) on constructed slices, SAM's IoU
estimate that feeds it, and nnU-Net's own handling of the ignore label that the pseudo-labels then rely on: the
self-training loss (no gradient from ignored pixels), the 2d data loader (nnU-Net issue 2567), prepare-target's
labels and the evaluation of an ignore-labelled dataset."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from fake_segmenter import FakeSegmenter, two_organ_slice
from nnunet_dfg.errors import UserError
from nnunet_dfg.evaluation import evaluate_case, evaluate_folders, format_table
from nnunet_dfg.prepare_target import ignore_entry
from nnunet_dfg.prompt_search import DFGConfig, SliceResult, refine_slice
from nnunet_dfg.prompt_search.masks import largest_component
from nnunet_dfg.prompt_search.merge import merge_labels
from nnunet_dfg.prompt_search.reliability import (CONFIDENT_MODEL, CONTESTED, LOW_IOU, NO_RULE, RULES,
                                                  SWALLOWING_MASK, ReliabilityRule, rule_named, slice_reasons,
                                                  swallowing_classes, volume_reasons, with_ignore)

RULE = RULES["evidence"]
SHAPE = (48, 48)
YY, XX = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]


def _disc(cy: int, cx: int, r: float) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 < r * r


def _probs(model: np.ndarray, n_classes: int, p: float | np.ndarray) -> np.ndarray:
    """A softmax whose argmax is ``model``, giving it probability ``p`` and the rest evenly to the others."""
    p = np.broadcast_to(np.asarray(p, dtype=np.float32), model.shape)
    out = np.repeat(((1 - p) / (n_classes - 1))[None], n_classes, axis=0).astype(np.float32)
    np.put_along_axis(out, model[None].astype(np.int64), p[None], axis=0)
    return out


def _merged(model, refined, n_classes):
    return merge_labels(model, refined, n_classes)  # the reference's scores and tie rule, as the search merges


# ---------------------------------------------------------------- the rule on constructed slices

DISC, RING = _disc(24, 24, 7), _disc(24, 24, 14) & ~_disc(24, 24, 7)
GLAND = DISC | RING  # what SAM answers for a box that holds the ring, hence the disc as well


@pytest.mark.parametrize("inner, fa_prob, ring_refined, iou", [
    (1, 0.95, True, None),      # inner class first: the tie rule hands the ring to it
    (1, 0.6, True, 0.97),       # FA unsure, SAM sure of its masks: still the ring's class lost the ring
    (1, 0.6, False, 0.97),      # the ring's own search failed: its model label is outscored by the inner mask
    (2, 0.6, True, 0.97),       # inner class second: the ring class takes the disc
])
def test_ring_around_a_disc_is_not_handed_over_as_reliable(inner, fa_prob, ring_refined, iou):
    ring = 3 - inner
    model = np.where(DISC, inner, np.where(RING, ring, 0))
    probs = _probs(model, 3, fa_prob)
    refined = {inner: GLAND, **({ring: GLAND} if ring_refined else {})}
    label = _merged(model, refined, 3)
    reasons = slice_reasons(label, probs, refined, {c: iou for c in refined}, RULE)
    handed_over = (label != model) & (model > 0) & (label > 0)
    assert handed_over.sum() > 100, "the constructed merge gives one structure's pixels to the other"
    assert np.all(reasons[handed_over] != 0), "no pixel moved between the ring and the disc stays reliable"
    assert np.all(reasons[label == model] == 0), "where the search kept the FA label, the pixel is learned"
    if inner == 1:  # the inner class's mask took the whole ring: it swallowed the ring's model mask
        assert np.all(reasons[handed_over] & SWALLOWING_MASK)


def test_swallowing_alone_flags_a_mask_holding_its_neighbour():
    """The ring's own refined mask keeps to its right half, so the left half handed to the inner class is not
    contested; FA is unsure and SAM sure: only the swallowing test speaks against the change."""
    model = np.where(DISC, 1, np.where(RING, 2, 0))
    refined = {1: GLAND, 2: RING & (XX >= 24)}
    label = _merged(model, refined, 3)
    reasons = slice_reasons(label, _probs(model, 3, 0.6), refined, {1: 0.97, 2: 0.97}, RULE)
    lost = RING & (XX < 24)
    assert np.all(label[lost] == 1) and np.all(reasons[lost] == SWALLOWING_MASK)
    assert swallowing_classes(refined, model, 0.5) == {1}
    assert swallowing_classes(refined, model, 0.99) == {1} and swallowing_classes({1: DISC}, model, 0.5) == set()


def test_kidney_swallowed_by_the_spleens_mask():
    """ANALYSIS.md: the spleen's box grows over the left kidney and the merge gives the spleen (lower index) the
    pixels both refined masks claim. Those kidney pixels are unreliable; the rest of both organs is learned."""
    spleen, kidney = _disc(16, 16, 9), _disc(30, 30, 6)
    model = np.where(spleen, 1, np.where(kidney, 3, 0))
    grown = spleen | (kidney & (YY < 33))  # the spleen's stable mask, over most of the kidney
    for kidney_refined in ({3: kidney}, {}):  # the kidney's own search kept a mask, or kept its model label
        refined = {1: grown, **kidney_refined}
        label = _merged(model, refined, 5)
        reasons = slice_reasons(label, _probs(model, 5, 0.7), refined, {1: 0.95, 3: 0.95}, RULE)
        taken = kidney & (label == 1)
        assert taken.sum() == (kidney & (YY < 33)).sum() > 50
        assert np.all(reasons[taken] & CONTESTED) and np.all(reasons[taken] & SWALLOWING_MASK)
        assert np.all(reasons[spleen] == 0) and np.all(reasons[kidney & ~taken] == 0)


def test_a_supported_change_is_kept_and_weak_ones_are_not():
    """SAM widens an organ the FA model was unsure about: kept when SAM's mask is trusted, flagged when its
    predicted IoU is low or when the FA model was confident; pixels SAM drops are judged the same way."""
    organ = _disc(24, 24, 8)
    sam = _disc(24, 24, 10) & ~(XX > 30)  # adds a rim, drops the organ's right cap
    added, dropped = sam & ~organ, organ & ~sam
    assert added.any() and dropped.any()
    unsure = _probs(organ.astype(int), 2, 0.6)
    label = _merged(organ.astype(int), {1: sam}, 2)
    for iou, expected in ((0.95, 0), (0.5, LOW_IOU), (None, 0)):
        reasons = slice_reasons(label, unsure, {1: sam}, {1: iou}, RULE)
        assert np.all(reasons[added | dropped] == expected) and np.all(reasons[~(added | dropped)] == 0)
    confident = _probs(organ.astype(int), 2, np.where(organ, 0.6, 0.9))  # sure of the background it had
    reasons = slice_reasons(label, confident, {1: sam}, {1: 0.95}, RULE)
    assert np.all(reasons[added] == CONFIDENT_MODEL) and np.all(reasons[dropped] == 0)
    stricter = ReliabilityRule(confident_prob=0.55)
    assert np.all(slice_reasons(label, unsure, {1: sam}, {1: 0.95}, stricter)[added | dropped] == CONFIDENT_MODEL)


def test_a_contested_pixel_whose_winner_is_the_fa_label_is_kept():
    a, b = _disc(20, 20, 8), _disc(26, 26, 8)
    model = np.where(a, 1, np.where(b, 2, 0))
    refined = {1: a | b, 2: b}  # both claim b's pixels, the lower index wins them
    label = _merged(model, refined, 3)
    reasons = slice_reasons(label, _probs(model, 3, 0.6), refined, {}, RULE)
    both = (a | b) & b
    assert np.all(label[both] == 1)
    assert np.all(reasons[both & (model == 1)] == 0) and np.all(reasons[both & (model == 2)] & CONTESTED)


def test_volume_reasons_post_processing_and_rule_names():
    model = np.where(_disc(24, 24, 8), 1, 0)
    sam = _disc(24, 24, 11)
    probs = np.stack([_probs(model, 2, 0.9)] * 3, axis=1)  # (K, Z, H, W)
    label = _merged(model, {1: sam}, 2)
    searched = {1: SliceResult(label, {1: sam}, {})}
    reasons = volume_reasons(searched, probs, RULE)
    assert reasons.shape == (3,) + SHAPE and not reasons[0].any() and not reasons[2].any()
    assert np.all(reasons[1][sam & (model == 0)] == CONFIDENT_MODEL)

    raw = np.stack([model, label, np.zeros(SHAPE, int)]).astype(np.uint8)
    raw[2, 0:3, 0:3] = 1  # a stray island the post-processing removes
    final = raw.copy()
    final[2] = 0
    out = with_ignore(final, raw, reasons != 0, 2)
    assert np.all(out[reasons != 0] == 2) and np.all(out[2, 0:3, 0:3] == 2)
    keep = (reasons == 0) & (raw == final)
    assert np.array_equal(out[keep], final[keep])
    with pytest.raises(ValueError, match="must exceed"):
        with_ignore(final, raw, reasons != 0, 1)
    assert rule_named(NO_RULE) is None and rule_named("evidence") == RULE
    with pytest.raises(ValueError, match="unknown pseudo-ignore rule"):
        rule_named("strict")


# ---------------------------------------------------------------- the search records the kept box and its IoU

class _ScoringSegmenter(FakeSegmenter):
    """The fake segmenter with an IoU head: a deterministic score per box."""

    @staticmethod
    def score(box) -> float:
        x0, y0, x1, y1 = box
        return 0.5 + ((7 * x0 + 13 * y0 + 3 * x1 + y1) % 50) / 100

    def segment_with_iou(self, emb, boxes):
        return self.segment(emb, boxes), np.array([self.score(tuple(b)) for b in np.asarray(boxes)], np.float32)


@pytest.mark.parametrize("lazy", [True, False])
def test_each_kept_mask_comes_with_its_box_and_sam_iou(lazy):
    truth, probs, feats = two_organ_slice()
    seg = _ScoringSegmenter(truth)
    result = refine_slice(np.zeros(truth.shape), probs, feats, seg, lazy=lazy)
    assert result.refined
    for cls, mask in result.refined.items():
        trace = result.traces[cls]
        assert trace.box in trace.boxes(trace.stage)
        assert np.array_equal(largest_component(seg.mask_fn(trace.box)), mask)
        assert trace.iou == pytest.approx(seg.score(trace.box))
    plain = refine_slice(np.zeros(truth.shape), probs, feats, FakeSegmenter(truth), lazy=lazy)
    assert np.array_equal(plain.label, result.label) and all(t.iou is None for t in plain.traces.values())
    bounded = refine_slice(np.zeros(truth.shape), probs, feats, seg, DFGConfig(max_growth=1.0, max_shrink=1.0),
                           lazy=lazy)
    dropped = [t for t in bounded.traces.values() if t.discarded_area]
    assert dropped and all(t.box is None and t.iou is None for t in dropped)


@pytest.mark.slow  # LiteMedSAM in two runtimes
def test_litemedsam_exposes_its_iou_head_without_changing_masks():
    """SAM's quality estimate: the split decoder's IoU output equals what SAM's own MaskDecoder predicts for the
    single mask, the masks of segment() are unchanged, and the ONNX path gives the same estimate."""
    from nnunet_dfg.sam import load_segmenter
    from nnunet_dfg.sam.segmenter import Segmenter
    from nnunet_dfg.sam.transforms import boxes_to_frame, validate_boxes

    image = np.where(_disc(24, 30, 10), 200.0, 40.0) + np.where(_disc(34, 14, 5), 90.0, 0.0)
    boxes = np.array([[19, 13, 41, 35], [8, 28, 20, 40], [0, 0, 47, 47]])
    default = load_segmenter("litemedsam", runtime="torch")
    torch_seg = Segmenter(default.parts, runtime="torch")
    emb = torch_seg.embed(image)
    masks, iou = torch_seg.segment_with_iou(emb, boxes)
    assert np.array_equal(masks, torch_seg.segment(emb, boxes)) and iou.shape == (3,) and iou.dtype == np.float32
    framed = torch.as_tensor(boxes_to_frame(validate_boxes(boxes, emb.image_size), emb.geometry), dtype=torch.float32)
    with torch.inference_mode():
        sparse, dense = default.parts.prompt_encoder(points=None, boxes=framed, masks=None)
        _, stock = default.parts.mask_decoder(image_embeddings=emb.tensor,
                                              image_pe=default.parts.prompt_encoder.get_dense_pe(),
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=False)
    np.testing.assert_allclose(iou, stock[:, 0].numpy(), atol=1e-3)
    assert iou[0] > iou[2], "a box around the bright disc is SAM's surer answer than the whole slice"
    onnx_masks, onnx_iou = Segmenter(default.parts, runtime="onnx").segment_with_iou(emb, boxes)  # exported decoder
    np.testing.assert_allclose(onnx_iou, iou, atol=1e-3)
    assert all((a == b).mean() > 0.99 for a, b in zip(onnx_masks, masks))


# ---------------------------------------------------------------- nnU-Net's ignore label: loss, loader, labels

def _label_manager(ignore: bool):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    labels = {"background": 0, "a": 1, "b": 2, **({"ignore": 3} if ignore else {})}
    return LabelManager(labels, regions_class_order=None)


def test_self_training_loss_takes_no_gradient_from_ignored_pixels():
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1

    from nnunet_dfg.trainers.self_training import soft_dice_loss

    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 3, (2, 1, 16, 16)))
    ignored = torch.zeros_like(target, dtype=torch.bool)
    ignored[:, :, 4:10, 2:12] = True
    logits = torch.from_numpy(rng.normal(size=(2, 3, 16, 16)).astype(np.float32)).requires_grad_(True)
    for batch_dice in (False, True):
        plain = soft_dice_loss(_label_manager(False), batch_dice, False)
        stock = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice, do_bg=False,
                                            smooth=1e-5, ddp=False)
        assert torch.equal(plain(logits, target), stock(logits, target))  # without ignore: the reference loss
        masked = soft_dice_loss(_label_manager(True), batch_dice, False)
        loss = masked(logits, torch.where(ignored, 3, target))
        grad, = torch.autograd.grad(loss, logits)
        assert grad[ignored.expand_as(grad)].abs().max() == 0 and grad[~ignored.expand_as(grad)].abs().max() > 0
        assert torch.allclose(loss, stock(logits, target, loss_mask=~ignored))
        other = logits.detach().clone()
        other[ignored.expand_as(other)] += 5.0  # whatever the network says on ignored pixels
        assert torch.allclose(masked(other, torch.where(ignored, 3, target)), loss)


def test_nnunet_2d_loader_samples_annotated_pixels_with_an_ignore_label():
    """nnU-Net issue 2567 (2d + ignore label crashed its old 2d loader): 2.8.1's one loader takes 2d patches as
    (1, H, W) and, without forced foreground, centres them on annotated voxels only."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    manager = _label_manager(True)
    seg = np.full((1, 6, 32, 32), 3, dtype=np.int16)  # everything ignored ...
    seg[0, 2, 8:24, 8:24] = 0
    seg[0, 2, 12:20, 12:20] = 1  # ... except part of slice 2
    locations = DefaultPreprocessor._sample_foreground_locations(
        seg, list(manager.foreground_labels) + [[-1] + list(manager.all_labels)])

    class _OneCase:
        identifiers = ["case"]

        def load_case(self, identifier):
            return np.zeros((1, 6, 32, 32), np.float32), seg.copy(), None, {"class_locations": locations}

    np.random.seed(0)
    loader = nnUNetDataLoader(_OneCase(), 4, (16, 16), (16, 16), manager, oversample_foreground_percent=0.0)
    for _ in range(5):
        target = loader.generate_train_batch()["target"]
        assert target.shape == (4, 1, 16, 16)
        assert all(bool((t != 3).any()) for t in target), "every patch holds annotated pixels"


def test_prepare_target_keeps_a_valid_ignore_label():
    source = {"labels": {"background": 0, "a": 1, "b": 2}}
    assert ignore_entry(source, {"labels": {"background": 0, "a": 1, "b": 2}}) is None
    assert ignore_entry(source, {"labels": {"background": 0, "a": 1, "b": 2, "ignore": 3}}) == 3
    for bad in ({"background": 0, "a": 1, "b": 2, "ignore": 4}, {"background": 0, "a": 1, "ignore": 3}):
        with pytest.raises(UserError, match="plus \"ignore\""):
            ignore_entry(source, {"labels": bad})


def test_evaluation_of_ignore_labelled_pseudo_labels(tmp_path):
    ref = np.zeros((2, 20, 20), np.uint8)
    ref[:, 2:10, 2:10] = 1
    ref[:, 12:18, 12:18] = 2
    pred = ref.copy()
    pred[:, 2:10, 2:6] = 3     # half of class 1 ignored: the kept half is right
    pred[:, 12:18, 12:15] = 0  # half of class 2 missed, not ignored
    labels = {"a": 1, "b": 2}
    case = evaluate_case(pred, ref, (1.0, 1.0, 1.0), labels, ignore_label=3)
    assert case["a"]["dice"] == 1.0 and case["a"]["kept"] == 0.5
    assert case["b"]["dice"] == pytest.approx(2 / 3) and case["b"]["kept"] == 1.0
    assert evaluate_case(pred, ref, (1.0, 1.0, 1.0), labels)["a"]["dice"] == pytest.approx(2 / 3)
    for folder, array in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / "c0.nii.gz"))
    # nnU-Net's convention: the dataset.json beside the predictions
    (tmp_path / "pred" / "dataset.json").write_text('{"labels": {"background": 0, "a": 1, "b": 2, "ignore": 3}}')
    result = evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "ref"))
    assert set(result["per_class"]) == {"a", "b"} and result["ignore_label"] == 3
    assert result["per_class"]["a"] == {"dice": 1.0, "assd": 0.0, "kept": 0.5}
    assert result["kept_fraction"] == pytest.approx(1 - 2 * 8 * 4 / pred.size)
    explicit = evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "ref"), labels={"a": 1, "b": 2})
    assert explicit["per_class"] == result["per_class"]
    assert "kept" in format_table(result) and "kept" not in format_table(evaluate_folders(
        str(tmp_path / "ref"), str(tmp_path / "ref"), labels={"a": 1, "b": 2}))


# ---------------------------------------------------------------- the pipeline's reliable chain

def test_the_pipeline_runs_the_reliable_chain_from_the_same_search(tmp_path):
    from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig
    from nnunet_dfg.pipeline.runner import Runner

    def steps_of(**kw):
        cfg = PipelineConfig(source_id=701, target_id=702, variant="_demo", target_labels_tr=tmp_path / "labelsTr",
                             target_labels_ts=tmp_path / "labelsTs", **kw)
        return cfg, {s.name: s for s in DFGPipeline(cfg, Runner(tmp_path / "work", {}), tmp_path / "raw",
                                                     tmp_path / "res").steps()}

    reference_cfg, reference = steps_of()
    assert "--pseudo-ignore" not in reference["refine"].command and not any("reliable" in n for n in reference)
    cfg, steps = steps_of(pseudo_ignore="evidence")
    refine = steps["refine"].command
    assert refine[refine.index("--pseudo-ignore") + 1] == "none,evidence"  # one refine: both datasets
    assert not any(n.startswith("refine_") for n in steps) and cfg.reliable_id == 807
    assert set(steps) - set(reference) == {"prepare_self_training_reliable", "train_self_training_reliable",
                                           "predict_self_trained_reliable", "evaluate_self_trained_reliable",
                                           "evaluate_pseudo_dfg_reliable"}
    train = steps["train_self_training_reliable"].retry_command
    assert train[1] == "807" and train[train.index("-tr") + 1] == "nnUNetTrainerDFG_ST_demo"
    fa = tmp_path / "res" / "Dataset702_T"
    fa.mkdir(parents=True)
    first = steps["train_self_training_reliable"].command()
    assert first[first.index("-pretrained_weights") + 1] == \
        str(fa / "nnUNetTrainerDFG_FA_demo__nnUNetPlans__2d" / "fold_all" / "checkpoint_final.pth")
    prepare = steps["prepare_self_training_reliable"].command()
    assert prepare[prepare.index("-d") + 1] == "807" and "--labels" in prepare


def test_stage_rows_and_goals_of_the_reliable_chain(tmp_path):
    import json

    from nnunet_dfg.pipeline.stage_table import format_stage_table, stage_table
    from nnunet_dfg.statistics import compare_goals

    def evaluation(dice: dict, kept: float | None = None) -> dict:
        per_case = {c: {"spleen": {"dice": d, "assd": 1.0, **({} if kept is None else {"kept": kept})}}
                    for c, d in dice.items()}
        per_class = {"spleen": {"dice": float(np.mean(list(dice.values()))), "assd": 1.0,
                                **({} if kept is None else {"kept": kept})}}
        out = {"per_case": per_case, "per_class": per_class, "mean_dice": per_class["spleen"]["dice"],
               "mean_assd": 1.0}
        return out if kept is None else {**out, "ignore_label": 2, "kept_fraction": 0.9}

    cases = [f"c{i}" for i in range(6)]
    runs = {"fa": evaluation({c: 0.5 for c in cases}), "self_trained": evaluation({c: 0.55 for c in cases}),
            "self_trained_reliable": evaluation({c: 0.6 + 0.01 * i for i, c in enumerate(cases)}),
            "pseudo_dfg_reliable": evaluation({c: 0.8 for c in cases}, kept=0.75)}
    (tmp_path / "eval").mkdir()
    for stage, result in runs.items():
        (tmp_path / "eval" / f"{stage}.json").write_text(json.dumps(result))
    table = stage_table(tmp_path / "eval")
    assert list(table) == ["fa", "pseudo_dfg_reliable", "self_trained", "self_trained_reliable"]
    assert table["pseudo_dfg_reliable"]["kept_fraction"] == 0.9 and "kept_fraction" not in table["fa"]
    text = format_stage_table(table).splitlines()
    kept = [line for line in text if line.strip().startswith("kept")]
    assert len(kept) == 1 and "0.750" in kept[0] and "0.900" in kept[0]
    assert text.index(kept[0]) == 1 + next(i for i, line in enumerate(text) if line.startswith("pseudo_dfg_reliable"))
    by_name = {c.name: c for c in compare_goals([runs])}
    assert by_name["FA <= self-trained reliable"].met and by_name["FA <= self-trained reliable"].n == 6
    assert by_name["self-trained <= reliable"].mean == pytest.approx(0.075)


def test_pipeline_and_demo_refuse_an_unknown_rule(tmp_path, monkeypatch, capsys):
    from cli_env import assert_one_error_line, cli_main, snapshot

    for args in (["demo", "-o", str(tmp_path / "demo"), "--pseudo-ignore", "strict"],
                 ["pipeline", "-s", "1", "-t", "2", "-o", str(tmp_path / "work"), "--pseudo-ignore", "strict"]):
        before = snapshot(tmp_path)
        proc = cli_main(args, tmp_path, monkeypatch, capsys)
        assert_one_error_line(proc, "--pseudo-ignore must be one of none, evidence")
        assert snapshot(tmp_path) == before
