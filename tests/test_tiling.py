"""2x2 encoder tiling (SDG's merging strategy): layout and offsets, exact equivalence with a stand-in segmenter, and
closeness on the real LiteMedSAM with four times fewer encoder passes (5 LiteMedSAM passes in this file)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from _tiny_model import ThresholdSegmenter
from nnunet_dfg.sam.tiling import boxes_to_canvas, compose_canvas, crop_from_canvas, plan_layout, segment_tiled


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def test_offsets_follow_row_and_column():
    layout = plan_layout([(40, 60)] * 4, 2)
    assert layout.canvas_size == (80, 120)
    assert [layout.offset(i) for i in range(4)] == [(0, 0), (0, 60), (40, 0), (40, 60)]  # (y, x)
    box = np.array([[5, 10, 20, 30]])  # x0, y0, x1, y1
    top_right = boxes_to_canvas(box, layout, 1)[0]
    assert top_right.tolist() == [65, 10, 80, 30]  # x moved by one tile width, y unchanged: top-right quadrant
    assert boxes_to_canvas(box, layout, 2)[0].tolist() == [5, 50, 20, 70]  # bottom-left: y moved only
    assert boxes_to_canvas(box, layout, 3)[0].tolist() == [65, 50, 80, 70]


def test_boxes_are_clipped_to_their_slice_not_the_canvas():
    layout = plan_layout([(10, 10), (10, 10)], 2)
    assert boxes_to_canvas(np.array([[-5, -5, 50, 50]]), layout, 1)[0].tolist() == [10, 0, 19, 9]
    with pytest.raises(ValueError, match="x1 < x0"):
        boxes_to_canvas(np.array([[5, 0, 2, 3]]), layout, 0)
    with pytest.raises(IndexError):
        layout.offset(2)  # only two slices in this layout


def test_canvas_pads_mixed_sizes_and_scales_each_slice():
    a = np.full((3, 5), 7.0)
    a[0, 0] = 9.0
    b = np.arange(12, dtype=float).reshape(4, 3) * 100
    canvas, layout = compose_canvas([a, b], 2)
    assert layout.tile_size == (4, 5) and canvas.shape == (8, 10) and canvas.dtype == np.float32
    assert canvas[0, 0] == 1.0 and canvas[0, 1] == 0.0  # a min-max scaled on its own
    assert np.allclose(canvas[0:4, 5:8], b / b.max()) and np.all(canvas[3, 0:5] == 0)  # padding
    assert np.all(canvas[4:, :] == 0)  # unused tiles stay empty: the grid is always 2x2
    masks = np.zeros((1, 8, 10), bool)
    masks[0, 0:4, 5:8] = True
    assert crop_from_canvas(masks, layout, 1).shape == (1, 4, 3) and crop_from_canvas(masks, layout, 1).all()
    assert not crop_from_canvas(masks, layout, 0).any()
    with pytest.raises(ValueError):
        plan_layout([(2, 2)] * 5, 2)


def test_tiled_equals_untiled_with_a_local_segmenter():
    """The stand-in thresholds each box at its median, which per-slice min-max scaling does not change: any offset
    error (e.g. x/y swapped between tiles (0, 1) and (1, 0)) would show up as a different mask."""
    rng = np.random.default_rng(1)
    images = [rng.normal(size=(20, 30)) * (k + 1) + 10 * k for k in range(6)]
    boxes = [np.array([[2, 3, 12, 15], [10, 0, 29, 19]]), np.zeros((0, 4)), np.array([[0, 0, 5, 5]]),
             np.array([[7, 4, 25, 11]]), np.array([[1, 1, 28, 18]]), np.array([[3, 9, 16, 19]])]
    untiled, tiled = ThresholdSegmenter(), ThresholdSegmenter()
    ref = segment_tiled(untiled, images, boxes, 1)
    out = segment_tiled(tiled, images, boxes, 2)
    assert untiled.embed_calls == 5 and tiled.embed_calls == 2  # 5 slices with boxes: a full canvas, then 1 slice
    for r, o, b, im in zip(ref, out, boxes, images):
        assert o.shape == r.shape == (len(b),) + im.shape
        assert np.array_equal(o, r)


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """Four 128x128 source slices with organs, and their ground-truth boxes (3 px jitter) per class."""
    from nnunet_dfg.sdg.slices import foreground_slices, slice_prompts
    from nnunet_dfg.synthetic import write_benchmark
    root = tmp_path_factory.mktemp("tiling")
    info = write_benchmark(str(root), n_source=1, n_target=1, n_target_test=0, shape=(6, 128, 128))
    image = sitk.GetArrayFromImage(sitk.ReadImage(f"{info['source_dir']}/imagesTr/case_0000_0000.nii.gz"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(f"{info['source_dir']}/labelsTr/case_0000.nii.gz"))
    zs = foreground_slices(label)[:4]
    assert len(zs) == 4
    rng = np.random.default_rng(0)
    prompts = [slice_prompts(label[z], rng, 3) for z in zs]
    return [image[z].astype(np.float32) for z in zs], [p[1] for p in prompts], [p[2] for p in prompts]


@pytest.mark.slow  # five LiteMedSAM encoder passes
def test_tiled_litemedsam_agrees_with_untiled_at_a_quarter_of_the_encoder_passes(slices):
    from nnunet_dfg.sam import load_segmenter
    images, boxes, truth = slices
    seg = load_segmenter("litemedsam")
    untiled = segment_tiled(seg, images, boxes, 1)
    assert seg.n_encoder_calls == 4
    seg.reset_counters()
    tiled = segment_tiled(seg, images, boxes, 2)
    assert seg.n_encoder_calls == 1 and seg.n_decoder_calls == sum(len(b) for b in boxes)
    agree, gt_untiled, gt_tiled = [], [], []
    for u_masks, t_masks, g_masks in zip(untiled, tiled, truth):
        for u, t, g in zip(u_masks, t_masks, g_masks):
            if g.sum() < 200:  # tiny organs are resolution-limited in a half-size tile
                continue
            agree.append(_dice(u, t))
            gt_untiled.append(_dice(u, g))
            gt_tiled.append(_dice(t, g))
    print(f"\ntiled vs untiled Dice per mask: {np.round(agree, 3).tolist()} (mean {np.mean(agree):.3f}, median "
          f"{np.median(agree):.3f}); vs ground truth: untiled {np.mean(gt_untiled):.3f}, tiled {np.mean(gt_tiled):.3f}")
    assert len(agree) >= 6
    assert np.median(agree) > 0.85 and np.mean(agree) > 0.75
    assert np.mean(gt_tiled) > np.mean(gt_untiled) - 0.15


@pytest.mark.slow  # LiteMedSAM on tiled canvases in two code paths
def test_fine_tuning_canvases_decode_as_inference_does(slices):
    """finetune-sam --tile 2 trains on what sdg-predict --tile 2 decodes: the same canvas, boxes shifted into the
    same tiles, logits cropped back to the same slices (one encoder pass each)."""
    import torch

    from nnunet_dfg.sam import load_segmenter
    from nnunet_dfg.sam.box_decoder import BoxDecoder
    from nnunet_dfg.sdg.finetune import EmbeddingCache, canvas_logits
    images, boxes, _ = slices
    seg = load_segmenter("litemedsam", runtime="torch")
    inference = segment_tiled(seg, images, boxes, 2, logits=True)
    embedding, geometry, layout = EmbeddingCache(seg).get(0, images, 2)
    decoder = BoxDecoder(seg.parts.prompt_encoder, seg.parts.mask_decoder).eval()
    with torch.no_grad():
        training = canvas_logits(decoder, embedding, geometry, layout, boxes)
    assert seg.n_encoder_calls == 2 and len(training) == len(inference) == 4
    for t, i in zip(training, inference):
        assert t.shape == i.shape and np.abs(t.numpy() - i).max() < 1e-3
