"""SDG: jittered source prompts, tiled volume refinement, mask-decoder fine-tuning and its checkpoint, and the
``sdg-predict`` command on a tiny trained nnU-Net (``NNUNET_DFG_TINY_MODEL=<root>`` reuses a built one, as in
test_refine.py; otherwise it is built here, which takes minutes). LiteMedSAM encoder passes are the cost: 7 here.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import tiny_copy
from _tiny_model import ThresholdSegmenter, TinyModel
from nnunet_dfg.errors import UserError
from nnunet_dfg.prompt_search import SDGConfig
from nnunet_dfg.prompt_search import class_boxes, volume_boxes, whole_slice_box
from nnunet_dfg.sdg import (FinetuneOptions, PredictOptions, TrainingSlice, dice_bce_batch, dice_bce_loss,
                            epoch_batches, finetune_sam, foreground_slices, jitter_box, resolve_tile, sdg_predict,
                            slice_prompts, tile_groups, training_prompts)
from nnunet_dfg.volume import refine_volume

# ---------------------------------------------------------------- pure pieces


def test_jitter_moves_each_side_outward_by_at_most_nine():
    mask = np.zeros((40, 50), bool)
    mask[10:20, 15:31] = True  # tight box (15, 10, 30, 19)
    rng = np.random.default_rng(0)
    boxes = np.array([jitter_box(mask, rng) for _ in range(400)])
    grow = np.stack([15 - boxes[:, 0], 10 - boxes[:, 1], boxes[:, 2] - 30, boxes[:, 3] - 19], 1)
    assert grow.min() == 0 and grow.max() == 9  # 0..9 per side, every value reached
    assert len({tuple(b) for b in boxes}) > 300  # sides drawn independently
    edge = np.zeros((40, 50), bool)
    edge[0:5, 45:50] = True
    assert all(b[1] == 0 and b[2] == 49 for b in (jitter_box(edge, rng) for _ in range(20)))  # clipped
    with pytest.raises(ValueError):
        jitter_box(np.zeros((4, 4), bool), rng)


@pytest.mark.slow  # LiteMedSAM fine-tuning steps
def test_finetune_jitter_is_scaled_to_the_slice_side(monkeypatch):
    """The reference jitters 0..9 px per side on 512 px slices; a 64 px slice gets 0..1 px (not a jitter as wide
    as its organs), and the training loop draws each slice's jitter with its own slice's bound."""
    from nnunet_dfg.sam import load_segmenter
    from nnunet_dfg.sdg import finetune as finetune_module
    config = finetune_module.FinetuneConfig()
    assert [config.shift_for((s, s)) for s in (64, 256, 512, 1024)] == [1, 5, 9, 18]
    assert dataclasses.replace(config, reference_side=0).shift_for((64, 64)) == 9
    seen, real = [], finetune_module.item_prompts

    def recording(item, rng, max_shift, min_pixels):
        seen.append((item.image.shape, max_shift))
        return real(item, rng, max_shift, min_pixels)
    monkeypatch.setattr(finetune_module, "item_prompts", recording)
    pool = []
    for side in (64, 128):
        image, label = np.zeros((side, side), np.float32), np.zeros((side, side), np.int16)
        image[side // 4:side // 2, side // 4:side // 2], label[side // 4:side // 2, side // 4:side // 2] = 200.0, 1
        pool.append(TrainingSlice(image, label, f"case_{side}/0"))
    finetune_module.finetune_mask_decoder(load_segmenter("litemedsam"), pool,
                                          finetune_module.FinetuneConfig(epochs=1))
    assert sorted(seen) == [((64, 64), 1), ((128, 128), 2)]


def test_slice_prompts_and_foreground_slices():
    label = np.zeros((3, 20, 20), np.int16)
    label[1, 2:5, 2:5] = 1
    label[1, 10:15, 12:18] = 3
    label[2, 0, 0] = -1  # nnU-Net's "outside the crop" is not foreground
    assert foreground_slices(label) == [1]
    classes, boxes, targets = slice_prompts(label[1], np.random.default_rng(0), max_shift=0)
    assert classes == [1, 3] and boxes.tolist() == [[2, 2, 4, 4], [12, 10, 17, 14]]
    assert targets.shape == (2, 20, 20) and np.array_equal(targets[1], label[1] == 3)
    assert slice_prompts(label[0], np.random.default_rng(0))[1].shape == (0, 4)


def test_every_pass_visits_every_canvas_once_in_a_new_order():
    """The reference's schedule: each pass (epoch) is a reshuffled pass over all canvases, in batches."""
    rng = np.random.default_rng(0)
    passes = [epoch_batches(10, 4, rng) for _ in range(3)]
    for batches in passes:
        assert [len(b) for b in batches] == [4, 4, 2]  # the last batch is smaller, not dropped
        assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    orders = {tuple(np.concatenate(b).tolist()) for b in passes}
    assert len(orders) == 3  # reshuffled every pass
    assert [len(b) for b in epoch_batches(3, 16, rng)] == [3]
    with pytest.raises(ValueError):
        epoch_batches(0, 4, rng)


def test_the_reference_batch_is_sixteen_slices_whatever_the_tiling():
    from nnunet_dfg.sdg.finetune import FinetuneConfig
    assert FinetuneConfig().epochs == 200 and FinetuneConfig().lr == 1e-4 and FinetuneConfig().weight_decay == 1e-3
    assert FinetuneConfig(tile=1).canvases_per_step == 16 and FinetuneConfig(tile=2).canvases_per_step == 4
    assert FinetuneConfig(tile=2, batch_canvases=1).canvases_per_step == 1
    assert FinetuneConfig(tile=1).steps_per_epoch(33) == 3
    for bad in (dict(epochs=0), dict(batch_canvases=0)):
        with pytest.raises(ValueError, match="must be >= 1"):
            FinetuneConfig(**bad)


def test_training_prompts_are_the_refined_boxes_with_ground_truth_targets():
    """The fine-tuning data builder: the SDG box of every class the model finds (threshold + largest component),
    jittered outward 0..9 px per side by the seeded generator; target = that class's ground truth, empty for a
    class the model finds but the labels lack; a labelled class the model misses gets no prompt (no box at
    inference either)."""
    probs = np.full((4, 40, 40), 0.01, np.float32)
    probs[1, 10:20, 5:15] = 0.9     # class 1: found, and labelled (shifted a little)
    probs[1, 30:32, 30:32] = 0.9    # a smaller confident island: not the largest component, not boxed
    probs[2, 25:35, 20:30] = 0.8    # class 2: found, not labelled -> empty target
    probs[3, 2:6, 2:6] = 0.6        # class 3: below the 0.75 threshold -> no box although labelled
    label = np.zeros((40, 40), np.int16)
    label[11:21, 6:16] = 1
    label[2:6, 2:6] = 3
    classes, boxes, targets = training_prompts(probs, label, np.random.default_rng(0), max_shift=0)
    assert classes == [1, 2] and boxes.tolist() == [[5, 10, 14, 19], [20, 25, 29, 34]]
    assert np.array_equal(targets[0], label == 1) and not targets[1].any() and targets.shape == (2, 40, 40)
    jittered = [training_prompts(probs, label, np.random.default_rng(seed))[1] for seed in range(200)]
    grow = np.concatenate([np.concatenate([boxes[:, :2] - j[:, :2], j[:, 2:] - boxes[:, 2:]], 1) for j in jittered])
    assert grow.min() == 0 and grow.max() == 9  # 0..9 px outward per side, as the reference's randint(0, 10)
    again = training_prompts(probs, label, np.random.default_rng(7))
    assert np.array_equal(again[1], training_prompts(probs, label, np.random.default_rng(7))[1])  # seeded
    empty = training_prompts(np.zeros((4, 40, 40), np.float32), label, np.random.default_rng(0))
    assert empty[0] == [] and empty[1].shape == (0, 4) and empty[2].shape == (0, 40, 40)


def test_tile_groups_follow_cases_like_inference_canvases():
    def item(key, size=8):
        return TrainingSlice(np.zeros((size, size), np.float32), np.zeros((size, size), np.int16), key)
    pool = [item(f"a/{z}") for z in range(6)] + [item("b/0"), item("b/1", 9), item("c/3")]
    assert tile_groups(pool, 2) == [[0, 1, 2, 3], [4, 5], [6], [7], [8]]
    assert tile_groups(pool, 1) == [[i] for i in range(9)]


def test_tile_auto_follows_the_segmenter_input_size(tmp_path):
    assert resolve_tile("auto", "litemedsam") == 1  # 256 px input: 2x2 would leave 128 px per slice
    assert resolve_tile("auto", "vit_b:/models/medsam_vit_b.pth") == 2  # 1024 px SAM/MedSAM: SDG's 2x2 merging
    assert resolve_tile("2", "litemedsam") == 2 and resolve_tile(1, "vit_b:/m.pth") == 1
    with pytest.raises(UserError, match="--tile must be 1, 2 or auto"):
        resolve_tile("3", "litemedsam")


def test_dice_bce_loss_is_low_for_confident_correct_logits():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    good, bad = (target * 2 - 1) * 20, (1 - 2 * target) * 20
    assert float(dice_bce_loss(good, target)) < 0.01 < 1.0 < float(dice_bce_loss(bad, target))


def test_a_batch_of_slices_of_two_sizes_has_one_loss():
    """Mean (1 - soft Dice) over every mask of the batch + BCE over all their pixels: for one size it is
    dice_bce_loss, for two sizes each mask counts once and each pixel once."""
    torch.manual_seed(0)
    small, large = torch.randn(2, 8, 8), torch.randn(1, 16, 12)
    t_small, t_large = torch.rand(2, 8, 8) > 0.5, torch.rand(1, 16, 12) > 0.7
    assert torch.isclose(dice_bce_batch([small[:1], small[1:]], [t_small[:1], t_small[1:]]),
                         dice_bce_loss(small, t_small), atol=1e-6)

    def soft_dice(lg, tg):  # nnU-Net's: (2 tp + 1) / (2 tp + fp + fn + 1) on sigmoid probabilities
        p, t = torch.sigmoid(lg), tg.float()
        return (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    dices = [soft_dice(small[0], t_small[0]), soft_dice(small[1], t_small[1]), soft_dice(large[0], t_large[0])]
    bce_sum = torch.nn.functional.binary_cross_entropy_with_logits
    bce = (bce_sum(small, t_small.float(), reduction="sum") + bce_sum(large, t_large.float(), reduction="sum")) \
        / (2 * 8 * 8 + 16 * 12)
    expected = 1 - torch.stack(dices).mean() + bce
    got = dice_bce_batch([small, torch.zeros(0, 8, 8), large], [t_small, torch.zeros(0, 8, 8), t_large])
    assert torch.isclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError):
        dice_bce_batch([torch.zeros(0, 4, 4)], [torch.zeros(0, 4, 4)])


def test_whole_slice_boxes_only_for_classes_the_model_boxes_somewhere_in_the_volume():
    """--empty-box full: where a class's thresholded map is empty, its box is the whole slice, but only for a
    class that has an SDG box on some slice of the volume; none keeps the per-slice boxes."""
    probs = np.full((4, 3, 20, 24), 0.01, np.float32)
    probs[1, 0, 2:8, 2:8] = 0.9      # class 1 boxed on slice 0 only
    probs[2, 1, 10:15, 10:15] = 0.9  # class 2 on slice 1 only
    probs[3, :, 5:9, 5:9] = 0.6      # class 3 never above the 0.75 threshold: never boxed
    none = volume_boxes(probs, "sdg", SDGConfig())
    assert none == {z: class_boxes(probs[:, z], "sdg", SDGConfig()) for z in range(3)} and none[2] == {}
    full = volume_boxes(probs, "sdg", SDGConfig(empty_box="full"))
    whole = whole_slice_box((20, 24))
    assert whole == (0, 0, 23, 19)
    assert full == {0: {1: none[0][1], 2: whole}, 1: {1: whole, 2: none[1][2]}, 2: {1: whole, 2: whole}}
    assert volume_boxes(probs, "sdg", SDGConfig(empty_box="full"), [2]) == {2: full[2]}  # eligibility: whole volume
    assert volume_boxes(np.full((4, 2, 8, 8), 0.01, np.float32), "sdg", SDGConfig(empty_box="full")) == {0: {}, 1: {}}
    with pytest.raises(ValueError, match="empty_box"):
        SDGConfig(empty_box="half")


def test_empty_box_full_refines_the_slices_without_a_box():
    """The volume engine prompts a whole-slice box where the map is empty: the stand-in segmenter's mask there
    replaces the model's (empty) prediction, and the slice costs an encoder pass it did not before."""
    image, probs = _toy()
    none = refine_volume(image, probs, None, ThresholdSegmenter(), "sdg", SDGConfig())
    full = refine_volume(image, probs, None, ThresholdSegmenter(), "sdg", SDGConfig(empty_box="full"))
    assert 0 not in [z for z, r in none.slices.items() if r.refined]  # slice 0: no confident pixel, no box
    assert sorted(full.slices[0].refined) == [1, 2] and full.total("encoder_calls") == none.total("encoder_calls") + 1
    assert full.slices[0].traces[1].steps[0].box == whole_slice_box(image.shape[1:])
    for z in range(1, 6):  # class 2 is boxed on slices 2-4 only; the others get its whole-slice box
        assert (2 in none.slices[z].refined) == (2 <= z <= 4) and 2 in full.slices[z].refined


def _toy(n_slices: int = 6, size: int = 24):
    rng = np.random.default_rng(3)
    image = rng.normal(0, 0.2, (n_slices, size, size)).astype(np.float32)
    image[:, 5:15, 4:12] += 2.0
    image[:, 14:20, 14:22] += 1.0
    probs = np.full((3, n_slices, size, size), 0.02, np.float32)
    probs[1, 1:, 4:16, 3:13] = 0.9
    probs[2, 2:5, 13:21, 13:23] = 0.95
    probs[0] = 1 - probs[1] - probs[2]
    return image, probs


@pytest.mark.parametrize("tile", [1, 2])
def test_tiled_volume_equals_per_slice_sdg(tile):
    """Against the per-slice path: identical labels and masks (the stand-in is invariant to the per-slice
    scaling), one encoder pass per 4 slices with boxes when tiled."""
    image, probs = _toy()
    ref = refine_volume(image, probs, None, ThresholdSegmenter(), "sdg", SDGConfig())
    seg = ThresholdSegmenter()
    out = refine_volume(image, probs, None, seg, "sdg", SDGConfig(), tile=tile)
    assert np.array_equal(out.label, ref.label)
    for z, r in ref.slices.items():
        assert sorted(out.slices[z].refined) == sorted(r.refined)
        assert all(np.array_equal(out.slices[z].refined[c], m) for c, m in r.refined.items())
    busy = 5  # slice 0 has no confident pixel: no box, no encoder pass
    assert seg.embed_calls == out.total("encoder_calls") == (busy if tile == 1 else 2)
    assert out.total("decoder_calls") == ref.total("decoder_calls") == 5 + 3


# ---------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def litemedsam():
    """One LiteMedSAM (its default runtime, as finetune-sam loads it) for the tests that reset its decoder."""
    from nnunet_dfg.sam import load_segmenter
    return load_segmenter("litemedsam")


@pytest.mark.slow  # LiteMedSAM fine-tuning steps
@pytest.mark.parametrize("tile, n_slices, canvases", [(1, 2, 2), (2, 5, 2)])
def test_cached_embeddings_train_the_same_decoder_as_embedding_every_step(litemedsam, tile, n_slices, canvases):
    """The encoder is frozen and the canvases fixed, so embedding each canvas once is exact: after two passes the
    decoder's weights are bit for bit those of a run that embeds every canvas at every visit (and differ from the
    start); the cache embeds each canvas once, the other run once per visit."""
    from nnunet_dfg.sdg.finetune import EmbeddingCache, FinetuneConfig, finetune_mask_decoder
    rng = np.random.default_rng(tile)
    pool = []
    for z in range(n_slices):  # one case: with tile 2 its slices fill a canvas of 4 and one of 1
        image = rng.normal(0.0, 0.1, (40, 40)).astype(np.float32)
        label = np.zeros((40, 40), np.int16)
        label[8 + z:20 + z, 10:24], label[26:34, 6 + z:16 + z] = 1, 2
        image[label == 1] += 1.0
        image[label == 2] += 0.5
        pool.append(TrainingSlice(image, label, f"case/{z}"))
    seg = litemedsam
    start = {k: v.clone() for k, v in seg.parts.mask_decoder.state_dict().items()}
    config = FinetuneConfig(epochs=2, batch_canvases=2, tile=tile, seed=5)  # one step per pass
    trained = {}
    try:
        for keep in (True, False):
            seg.parts.mask_decoder.load_state_dict(start)
            seg.reset_counters()
            finetune_mask_decoder(seg, pool, config, cache=EmbeddingCache(seg, keep=keep))
            trained[keep] = {k: v.clone() for k, v in seg.parts.mask_decoder.state_dict().items()}
            assert seg.n_encoder_calls == (canvases if keep else 2 * canvases)
    finally:
        seg.parts.mask_decoder.load_state_dict(start)
    assert all(torch.equal(trained[True][k], trained[False][k]) for k in start)
    assert any(not torch.equal(trained[True][k], start[k]) for k in start)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from nnunet_dfg.synthetic import write_benchmark
    raw = tmp_path_factory.mktemp("sdg_source") / "raw"
    write_benchmark(str(raw), n_source=2, n_target=1, n_target_test=1, shape=(8, 48, 48))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_raw", str(raw))
        mp.setenv("nnUNet_preprocessed", str(raw.parent / "pre"))  # no plans: -c 2d must say so
        yield raw


@pytest.mark.slow  # LiteMedSAM fine-tuning steps
def test_finetune_changes_only_the_mask_decoder_and_loads_as_sam(source, tmp_path):
    from nnunet_dfg.sam import load_segmenter
    seg = load_segmenter("litemedsam")
    before = {name: {k: v.clone() for k, v in getattr(seg.parts, name).state_dict().items()}
              for name in ("image_encoder", "prompt_encoder", "mask_decoder")}
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "Dataset701_DFGSynthSource" / "imagesTr" /
                                                       "case_0000_0000.nii.gz")))[4]
    box = np.array([[10, 10, 30, 30]])
    embedding = seg.embed(image)
    base_logits = seg.segment_logits(embedding, box)
    ckpt = tmp_path / "ft.pth"
    opts = FinetuneOptions(dataset="701", output=ckpt, configuration="none", epochs=4, batch_canvases=1,
                           max_slices=2, seed=0, progress=False, boxes="gt")
    meta = finetune_sam(opts, segmenter=seg)
    print(f"\nfine-tuning loss per epoch: {np.round(meta['loss_per_epoch'], 3).tolist()}")
    assert meta["n_slices"] == 2 and meta["n_slices_available"] > 10 and seg.n_encoder_calls == 1 + 2
    assert meta["epochs"] == 4 and meta["canvases_per_step"] == 1 and meta["empty_box"] == "none"
    assert np.mean(meta["loss_per_epoch"][-2:]) < np.mean(meta["loss_per_epoch"][:2])
    for name, state in before.items():
        now = getattr(seg.parts, name).state_dict()
        changed = [k for k in state if not torch.equal(state[k], now[k])]
        assert bool(changed) == (name == "mask_decoder"), f"{name}: {len(changed)} tensors changed"
    assert not any(p.requires_grad for p in seg.parts.mask_decoder.parameters())

    ft = load_segmenter(str(ckpt))  # what `--sam ft.pth` does
    assert ft.name == "litemedsam+ft"
    for k, v in ft.parts.mask_decoder.state_dict().items():
        assert torch.equal(v, seg.parts.mask_decoder.state_dict()[k])
    for k, v in ft.parts.image_encoder.state_dict().items():
        assert torch.equal(v, before["image_encoder"][k])
    # the encoder is the base's, so the base embedding is valid for the fine-tuned decoder
    ft_logits = ft.segment_logits(dataclasses.replace(embedding, model_name=ft.name), box)
    assert np.abs(ft_logits - base_logits).max() > 0.1
    assert resolve_tile("auto", str(ckpt)) == 1  # a fine-tuned checkpoint's tiling follows its LiteMedSAM base

    with pytest.raises(UserError, match="already exists"):
        finetune_sam(opts, segmenter=seg)
    with pytest.raises(UserError, match="already fine-tuned"):
        finetune_sam(FinetuneOptions(dataset="701", output=tmp_path / "x.pth", sam=str(ckpt)))
    with pytest.raises(UserError, match="no plans"):
        finetune_sam(FinetuneOptions(dataset="701", output=tmp_path / "x.pth", boxes="gt"), segmenter=seg)
    with pytest.raises(UserError, match="-c none has no source model"):
        finetune_sam(FinetuneOptions(dataset="701", output=tmp_path / "x.pth", configuration="none"), segmenter=seg)
    for bad, message in ((dict(boxes="pred"), "--boxes must be refined or gt"), (dict(tile="4"), "--tile must be"),
                         (dict(threshold=1.5), "--threshold"), (dict(empty_box="some"), "--empty-box must be"),
                         (dict(empty_box="full", boxes="gt"), "--empty-box full needs --boxes refined"),
                         (dict(epochs=0), "--epochs must be >= 1"), (dict(batch_canvases=0), "--batch-canvases"),
                         (dict(sam_intensity="hist"), "--sam-intensity must be one of")):
        with pytest.raises(UserError, match=message):
            finetune_sam(FinetuneOptions(dataset="701", output=tmp_path / "x.pth", **bad), segmenter=seg)
    assert not (tmp_path / "x.pth").exists()


# ---------------------------------------------------------------- sdg-predict on a trained nnU-Net


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_root) -> TinyModel:
    yield from tiny_copy(tmp_path_factory, tiny_model_root, "sdg_model")


def _predict(tiny: TinyModel, out: Path, **kw) -> PredictOptions:
    base = dict(images=tiny.raw / "Dataset702_DFGSynthTarget" / "imagesTr", output=out, model=tiny.model_dir,
                fold="all", disable_tta=True, progress=False)
    return PredictOptions(**{**base, **kw})


def test_sdg_predict_writes_labels_like_nnunet_and_resumes(tiny, tmp_path):
    out = tmp_path / "pred"
    first = sdg_predict(_predict(tiny, out, num_parts=2, part_id=1), ThresholdSegmenter())  # "killed" halfway
    assert first["cases_done"] == ["case_0001"]
    rest = sdg_predict(_predict(tiny, out), ThresholdSegmenter())
    assert rest["cases_done"] == ["case_0000", "case_0002"] and rest["cases_skipped"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["case_0000.nii.gz", "case_0001.nii.gz", "case_0002.nii.gz",
                                                     "dataset.json", "plans.json", "sdg_predict.json"]
    for case in ("case_0000", "case_0001", "case_0002"):
        image = sitk.ReadImage(str(tiny.raw / "Dataset702_DFGSynthTarget" / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert label.GetSize() == image.GetSize() and np.allclose(label.GetOrigin(), image.GetOrigin())
        assert np.allclose(label.GetSpacing(), image.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2, 3, 4}
    again = sdg_predict(_predict(tiny, out), ThresholdSegmenter())
    assert again["cases_done"] == [] and again["cases_skipped"] == 3
    assert json.loads((out / "sdg_predict.json").read_text())["tile"] == 1  # auto: LiteMedSAM is not tiled
    with pytest.raises(UserError, match="other settings"):
        sdg_predict(_predict(tiny, out, tile=2), ThresholdSegmenter())
    with pytest.raises(UserError, match="--tile must be 1, 2 or auto"):
        sdg_predict(_predict(tiny, tmp_path / "p2", tile=3), ThresholdSegmenter())
    with pytest.raises(UserError, match="checkpoint not found"):
        sdg_predict(_predict(tiny, tmp_path / "p3", fold="4"), ThresholdSegmenter())
    assert not (tmp_path / "p2").exists() and not (tmp_path / "p3").exists()


def test_finetune_on_refined_boxes_untiled(tiny, tmp_path):
    """The default: the source model's SDG boxes on its own training slices (its 2d preprocessing), tile auto = 1
    for LiteMedSAM, one encoder pass per slice."""
    from nnunet_dfg.sam import load_segmenter
    seg = load_segmenter("litemedsam")
    meta = finetune_sam(FinetuneOptions(dataset="701", output=tmp_path / "ft.pth", model=tiny.model_dir, fold="all",
                                        disable_tta=True, epochs=2, max_slices=2, progress=False), segmenter=seg)
    assert meta["boxes"] == "refined" and meta["tile"] == 1 and meta["threshold"] == 0.75
    assert meta["n_slices"] == meta["n_canvases"] == 2 and meta["n_slices_available"] >= 2
    assert seg.n_encoder_calls == 2 and len(meta["loss_per_epoch"]) == 2 and meta["canvases_per_step"] == 16
    assert meta["model"].startswith("$nnUNet_results/") and not meta["mirroring"]


def test_finetune_with_whole_slice_boxes_and_equalised_slices(tiny, tmp_path):
    """--empty-box full trains on every slice of the source volumes (a class boxed on some slice of a volume gets
    the whole slice where it has no box), --sam-intensity equalize on the reference's equalised slices; both
    recorded in the checkpoint."""
    from nnunet_dfg.sam import load_segmenter
    from nnunet_dfg.sam.finetuned import checkpoint_meta
    seg = load_segmenter("litemedsam")
    seen = []
    embed = seg.embed
    seg.embed = lambda image: seen.append(np.array(image)) or embed(image)
    base = dict(dataset="701", model=tiny.model_dir, fold="all", disable_tta=True, epochs=1, max_slices=1,
                progress=False)
    none = finetune_sam(FinetuneOptions(output=tmp_path / "none.pth", **base), segmenter=seg)
    full = finetune_sam(FinetuneOptions(output=tmp_path / "full.pth", empty_box="full", sam_intensity="equalize",
                                        **base), segmenter=seg)
    assert none["n_whole_slice_boxes_available"] == 0 < full["n_whole_slice_boxes_available"]
    # the refined boxes are the same; full adds whole-slice ones, and every slice of the source volumes
    assert full["n_boxes_available"] - full["n_whole_slice_boxes_available"] == none["n_boxes_available"]
    assert none["n_slices_available"] <= full["n_slices_available"] == 4 * 12  # 4 volumes of 12 slices
    assert checkpoint_meta(tmp_path / "full.pth")["empty_box"] == "full" and full["sam_intensity"] == "equalize"
    assert full["sam_modality"] == "equalize" and none["sam_modality"] == "mr"
    assert len(seen) == 2 and seen[-1].min() == 0.0  # SAM saw 8-bit grey levels, equalised...
    assert np.allclose(seen[-1] * 255, np.round(seen[-1] * 255), atol=1e-4)
    assert not np.allclose(seen[0] * 255, np.round(seen[0] * 255), atol=1e-4)  # ...not the window's continuous ones


def test_source_prediction_from_the_labelled_preprocessing_equals_predict_case(tiny):
    """refined_slices preprocesses images and label once and hands the images to the predictor: the prediction
    must be the one ``predict_case`` makes from the files alone, and the label lie on the same grid."""
    from nnunet_dfg.volume.predictor import FeaturePredictor
    fp = FeaturePredictor(tiny.model_dir, "all", use_mirroring=False)
    images = sorted((tiny.raw / "Dataset701_DFGSynthSource" / "imagesTr").glob("*.nii.gz"))[:1]
    label = tiny.raw / "Dataset701_DFGSynthSource" / "labelsTr" / (images[0].name[:-len("_0000.nii.gz")] + ".nii.gz")
    cm = fp.configuration_manager
    data, seg, properties = cm.preprocessor_class(verbose=False).run_case(
        [str(images[0])], str(label), fp.plans_manager, cm, fp.dataset_json)
    reused = fp.predict_case(images, with_features=False, preprocessed=(data.astype(np.float32), properties))
    plain = fp.predict_case(images, with_features=False)
    assert np.array_equal(reused.probs, plain.probs) and seg.shape[1:] == plain.probs.shape[1:]


def test_finetune_tiled_on_refined_boxes_then_sdg_predict_with_it(tiny, tmp_path):
    """The whole SDG chain with real models: fine-tune on 2x2 canvases of the source model's refined boxes (one
    step: four slices of a case, one encoder pass), then predict one case with the fine-tuned LiteMedSAM, 2x2
    tiled as trained (12 slices -> at most 3 encoder passes)."""
    ckpt = tmp_path / "sdg_decoder.pth"
    meta = finetune_sam(FinetuneOptions(dataset="701", output=ckpt, model=tiny.model_dir, fold="all",
                                        disable_tta=True, epochs=1, max_slices=4, tile="2", progress=False))
    assert meta["configuration"] == "2d" and meta["tile"] == 2 and meta["canvases_per_step"] == 4
    assert meta["n_slices"] == 4 and meta["encoder_calls"] == meta["n_canvases"] <= 4  # one pass per canvas
    summary = sdg_predict(_predict(tiny, tmp_path / "pred", sam=str(ckpt), num_parts=3, part_id=0, tile=2))
    assert summary["cases_done"] == ["case_0000"] and 1 <= summary["encoder_calls"] <= 3
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / "case_0000.nii.gz")))
    image = sitk.ReadImage(str(tiny.raw / "Dataset702_DFGSynthTarget" / "imagesTr" / "case_0000_0000.nii.gz"))
    assert label.shape == sitk.GetArrayFromImage(image).shape and set(np.unique(label)) <= {0, 1, 2, 3, 4}
    print(f"\nfine-tuned SDG, case_0000: encoder passes {summary['encoder_calls']}, "
          f"voxels per class {np.bincount(label.ravel(), minlength=5).tolist()}")


def test_sdg_predict_resumes_after_moving_the_nnunet_tree(tiny, tmp_path, monkeypatch):
    """Settings are stored relative to nnUNet_results / nnUNet_raw (the shared command layer), as refine's are."""
    out = tmp_path / "pred"
    sdg_predict(_predict(tiny, out, num_parts=3, part_id=0), ThresholdSegmenter())
    stored = json.loads((out / "sdg_predict.json").read_text())
    assert stored["model"].startswith("$nnUNet_results/") and stored["images"].startswith("$nnUNet_raw/")
    moved = TinyModel(tmp_path / "moved")
    for part in ("raw", "res"):
        shutil.copytree(tiny.root / part, moved.root / part, symlinks=True)
    for key, value in moved.env.items():
        monkeypatch.setenv(key, value)
    rest = sdg_predict(_predict(moved, out), ThresholdSegmenter())
    assert rest["cases_done"] == ["case_0001", "case_0002"] and rest["cases_skipped"] == 1


def test_sdg_predict_refuses_a_nan_image_before_writing(tiny, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny.raw / "Dataset702_DFGSynthTarget" / "imagesTr", images)
    bad = images / "case_0001_0000.nii.gz"
    image = sitk.ReadImage(str(bad), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[2, 3, 4] = np.nan
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    sitk.WriteImage(nan_image, str(bad))
    with pytest.raises(UserError, match="case_0001: image contains NaN"):
        sdg_predict(_predict(tiny, tmp_path / "pred", images=images), ThresholdSegmenter())
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("intensity, empty_box", [("auto", "none"), ("equalize", "full")])
def test_pipeline_fine_tunes_on_refined_boxes_with_sdg_predicts_tiling(tmp_path, intensity, empty_box):
    """The sdg row is SDG with the decoder fine-tuned at the reference's budget (200 passes over every boxed source
    slice, 16 per step), trained and predicted with the same tiling, --empty-box and equalisation (a CT window is
    the target's, so it is not given to the fine-tuning on the source); sdg_no_finetune is the ablation."""
    from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig
    from nnunet_dfg.pipeline.runner import Runner

    cfg = PipelineConfig(source_id=701, target_id=702, source_fold="all", sam_intensity=intensity,
                         sdg_empty_box=empty_box)
    pipeline = DFGPipeline(cfg, Runner(tmp_path / "work", {}), tmp_path / "raw", tmp_path / "res")
    steps = {s.name: s for s in pipeline.sdg_steps()}  # built before the source model exists
    assert list(steps) == ["predict_sdg_no_finetune", "finetune_sam", "predict_sdg"]
    (tmp_path / "res" / "Dataset701_Src").mkdir(parents=True)
    (tmp_path / "raw" / "Dataset702_Tgt").mkdir(parents=True)
    finetune, predict = steps["finetune_sam"].command(), steps["predict_sdg"].command()
    ablation = steps["predict_sdg_no_finetune"].command()
    for cmd in (finetune, predict, ablation):
        assert cmd[cmd.index("--tile") + 1] == "auto" and cmd[cmd.index("-f") + 1] == "all"
        assert cmd[cmd.index("-m") + 1] == str(pipeline.model(701, "Source")) and "--disable-tta" in cmd
        assert cmd[cmd.index("--empty-box") + 1] == empty_box
    assert finetune[finetune.index("--boxes") + 1] == "refined" and finetune[finetune.index("--epochs") + 1] == "200"
    assert "--max-slices" not in finetune and "--batch-canvases" not in finetune
    assert predict[predict.index("--sam") + 1] == finetune[finetune.index("-o") + 1]
    assert ablation[ablation.index("--sam") + 1] == "litemedsam"
    for cmd in (predict, ablation):
        assert cmd[cmd.index("--sam-intensity") + 1] == intensity
    assert ("--sam-intensity" in finetune) == (intensity == "equalize")
    from nnunet_dfg.cli import build_parser
    for cmd in (finetune, predict, ablation):  # the commands parse
        assert build_parser().parse_args(cmd[1:]).command == cmd[1]


def test_bad_sdg_options_are_one_error_line(tmp_path, cli_here):
    from cli_env import assert_one_error_line
    assert_one_error_line(cli_here(["finetune-sam", "-d", "701", "-o", str(tmp_path / "ft.pth"), "--boxes", "pred"],
                                   tmp_path), "--boxes must be refined or gt, got pred")
    assert_one_error_line(cli_here(["finetune-sam", "-d", "701", "-o", str(tmp_path / "ft.pth"), "--tile", "3"],
                                   tmp_path), "--tile must be 1, 2 or auto, got 3")
    assert_one_error_line(cli_here(["sdg-predict", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", "701",
                                    "--tile", "x"], tmp_path), "--tile must be 1, 2 or auto, got x")
    assert not (tmp_path / "ft.pth").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["finetune-sam", "-d", "701", "--empty-box", "half"], "--empty-box must be none or full, got half"),
    (["finetune-sam", "-d", "701", "--empty-box", "full", "--boxes", "gt"], "--empty-box full needs --boxes refined"),
    (["finetune-sam", "-d", "701", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["finetune-sam", "-d", "701", "--batch-canvases", "-2"], "--batch-canvases must be >= 1, got -2"),
    (["finetune-sam", "-d", "701", "--sam-intensity", "hist"], "--sam-intensity must be one of auto, ct, mr, equalize"),
    (["sdg-predict", "-d", "701", "-i", "IN", "--empty-box", "all"], "--empty-box must be none or full, got all"),
    (["sdg-predict", "-d", "701", "-i", "IN", "--sam-intensity", "EQ"], "--sam-intensity must be one of"),
    (["refine", "-d", "702", "--sam-intensity", "histeq"], "--sam-intensity must be one of"),
])
def test_bad_values_of_the_new_options_are_one_error_line(tmp_path, monkeypatch, capsys, args, message):
    """In-process CLI calls: exit status 2, exactly one ``ERROR:`` line on stderr, nothing written."""
    from cli_env import snapshot
    from nnunet_dfg import cli
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    (tmp_path / "IN").mkdir()
    out = ["-o", str(tmp_path / ("ft.pth" if args[0] == "finetune-sam" else "out"))] if args[0] != "refine" else []
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli.main([a.replace("IN", str(tmp_path / "IN")) for a in args] + out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ERROR: ") and message in err[0], err
    assert snapshot(tmp_path) == before


def test_finetune_mismatches_name_every_setting_the_decoder_was_not_trained_with():
    from nnunet_dfg.sdg.command import finetune_mismatches
    meta = {"empty_box": "full", "sam_intensity": "equalize", "tile": 1, "epochs": 200}
    same = {"empty_box": "full", "sam_intensity": "equalize", "tile": 1}
    assert finetune_mismatches(meta, same) == []
    differ = finetune_mismatches(meta, {"empty_box": "none", "sam_intensity": "auto", "tile": 1})
    assert differ == ["empty_box 'full' when fine-tuned, 'none' here",
                      "sam_intensity 'equalize' when fine-tuned, 'auto' here"]
    assert finetune_mismatches({}, same) == []  # a checkpoint from before these settings were recorded
