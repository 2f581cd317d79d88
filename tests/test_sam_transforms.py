"""Pure-function tests for nnunet_dfg.sam.transforms / parse_spec (no model weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_dfg.sam.build import parse_spec
from nnunet_dfg.sam.transforms import (
    LITEMEDSAM_PREPROCESS,
    MEDSAM_PREPROCESS,
    SAM_PREPROCESS,
    boxes_from_frame,
    boxes_to_frame,
    check_slice,
    embedding_to_slice,
    frame_geometry,
    postprocess_logits,
    preprocess_slice,
    validate_boxes,
)

SIZES = [(217, 181), (181, 217), (64, 64), (7, 300), (1000, 1100)]


@pytest.mark.parametrize("size", SIZES)
def test_geometry_matches_sam_resize_longest_side(size):
    from segment_anything.utils.transforms import ResizeLongestSide

    for frame in (256, 1024):
        geom = frame_geometry(size, frame)
        assert geom.resized_size == ResizeLongestSide.get_preprocess_shape(size[0], size[1], frame)
        assert max(geom.resized_size) == frame
    assert frame_geometry(size, 1024, keep_aspect=False).resized_size == (1024, 1024)


@pytest.mark.parametrize("size", SIZES)
def test_box_mapping_matches_references_and_round_trips(size):
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(0)
    h, w = size
    x = np.sort(rng.uniform(0, w - 1, (5, 2)), axis=1)
    y = np.sort(rng.uniform(0, h - 1, (5, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    # SAM: same numbers as SamPredictor's ResizeLongestSide.apply_boxes.
    sam_geom = frame_geometry(size, 1024)
    expected = ResizeLongestSide(1024).apply_boxes(boxes.copy(), size)
    np.testing.assert_allclose(boxes_to_frame(boxes, sam_geom), expected, rtol=1e-12)
    # MedSAM reference: box / [W, H, W, H] * 1024.
    med_geom = frame_geometry(size, 1024, keep_aspect=False)
    np.testing.assert_allclose(boxes_to_frame(boxes, med_geom), boxes / [w, h, w, h] * 1024, rtol=1e-12)
    for geom in (sam_geom, med_geom, frame_geometry(size, 256)):
        np.testing.assert_allclose(boxes_from_frame(boxes_to_frame(boxes, geom), geom), boxes, rtol=1e-12)


def test_inclusive_coordinates_and_clipping():
    h, w = 40, 30
    full = validate_boxes([0, 0, w - 1, h - 1], (h, w))
    np.testing.assert_array_equal(full, [[0, 0, w - 1, h - 1]])  # last pixel index is inside
    clipped = validate_boxes([[-5, -7, w + 10, h + 3], [3, 4, 5, 6], [50, 60, 70, 80]], (h, w))
    np.testing.assert_array_equal(clipped[0], [0, 0, w - 1, h - 1])
    np.testing.assert_array_equal(clipped[1], [3, 4, 5, 6])
    np.testing.assert_array_equal(clipped[2], [w - 1, h - 1, w - 1, h - 1])  # fully outside: degenerate corner
    # A full-slice box maps to the resized block's last pixel centre region, never into padding.
    geom = frame_geometry((h, w), 256)
    framed = boxes_to_frame(full, geom)[0]
    assert framed[2] < geom.resized_size[1] and framed[3] < geom.resized_size[0]
    assert validate_boxes(np.zeros((0, 4)), (h, w)).shape == (0, 4)


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([10, 5, 4, 8], "x1 < x0"),
        ([1, 9, 4, 8], "x1 < x0 or y1 < y0"),
        ([0, 0, np.nan, 3], "NaN"),
        ([[0, 1, 2]], r"\(N, 4\)"),
    ],
)
def test_bad_boxes(boxes, match):
    with pytest.raises(ValueError, match=match):
        validate_boxes(boxes, (20, 20))


def test_check_slice_rejects_bad_slices():
    img = np.zeros((8, 8), np.float32)
    img[2, 3] = np.nan
    with pytest.raises(ValueError, match="^slice contains NaN or inf$"):
        check_slice(img)
    img[2, 3] = -np.inf
    with pytest.raises(ValueError, match="^slice contains NaN or inf$"):
        check_slice(img)
    with pytest.raises(ValueError, match="2D"):
        check_slice(np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="non-empty"):
        check_slice(np.zeros((0, 8)))


def test_preprocess_litemedsam_range_padding_and_affine_invariance():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(60, 40))
    x, geom = preprocess_slice(img, LITEMEDSAM_PREPROCESS)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    h, w = geom.resized_size
    assert (h, w) == (256, 171)
    assert torch.all(x[..., h:, :] == 0) and torch.all(x[..., :, w:] == 0)
    block = x[0, :, :h, :w]
    assert float(block.min()) == 0.0 and abs(float(block.max()) - 1.0) < 1e-6
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])
    # Intensity range does not matter (CT in HU, negative floats, huge values).
    y, _ = preprocess_slice(-1000.0 + 3e6 * img, LITEMEDSAM_PREPROCESS)
    torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_preprocess_constant_slice_gives_zeros():
    for spec in (LITEMEDSAM_PREPROCESS, MEDSAM_PREPROCESS):
        x, _ = preprocess_slice(np.full((30, 50), 7.5), spec)
        assert torch.count_nonzero(x) == 0
    x, _ = preprocess_slice(np.full((30, 50), -3), SAM_PREPROCESS)
    assert torch.isfinite(x).all()


def test_preprocess_sam_matches_sam_pipeline_on_uint8():
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(48, 64)).astype(np.uint8)
    img[0, 0], img[0, 1] = 0, 255  # min-max to 0..255 is then the identity
    x, geom = preprocess_slice(img, SAM_PREPROCESS)
    ref = ResizeLongestSide(1024).apply_image(np.repeat(img[..., None], 3, axis=2)).astype(np.float32)
    assert ref.shape[:2] == geom.resized_size
    mean = np.array(SAM_PREPROCESS.mean, np.float32)
    std = np.array(SAM_PREPROCESS.std, np.float32)
    ref = ((ref - mean) / std).transpose(2, 0, 1)
    h, w = geom.resized_size
    ours = x[0, :, :h, :w].numpy()
    # PIL works in uint8 and rounds; one grey level is 1/57 in normalised units.
    assert np.abs(ours - ref).max() < 2.0 / 57.0
    assert torch.all(x[..., h:, :] == 0)


def test_preprocess_medsam_squashes_to_full_frame():
    x, geom = preprocess_slice(np.arange(20 * 10, dtype=float).reshape(20, 10), MEDSAM_PREPROCESS)
    assert x.shape == (1, 3, 1024, 1024) and geom.resized_size == (1024, 1024)
    assert float(x.min()) == 0.0 and abs(float(x.max()) - 1.0) < 1e-6


def test_postprocess_crops_padding_before_resizing():
    geom = frame_geometry((50, 20), 256)
    h, w = geom.resized_size
    frame = torch.full((2, 1, 256, 256), -5.0)
    frame[:, :, :h, :w] = 3.0  # positive exactly over the image, negative over padding
    low_res = F.interpolate(frame, size=(64, 64), mode="area")
    out = postprocess_logits(low_res, geom)
    assert out.shape == (2, 50, 20) and out.dtype == torch.float32
    assert torch.all(out > 0)  # no padding leaked into the slice
    with pytest.raises(ValueError):
        postprocess_logits(torch.zeros(2, 64, 64), geom)


def test_embedding_to_slice_covers_image_only():
    geom = frame_geometry((217, 181), 256)
    h, w = geom.resized_size
    assert (h, w) == (256, 214)  # frame columns 214..255 are padding
    e = 64
    centres = torch.arange(e, dtype=torch.float32) + 0.5  # embedding cell centres, edge units
    emb = torch.stack([centres[None, :].expand(e, e), centres[:, None].expand(e, e)])
    feat = embedding_to_slice(emb, geom)
    assert feat.shape == (2, 217, 181) and feat.dtype == torch.float32
    # Each slice pixel centre lands where the frame mapping says (interior, away from borders).
    xs = (torch.arange(181) + 0.5) * (w / 181) * (e / 256)
    ys = (torch.arange(217) + 0.5) * (h / 217) * (e / 256)
    inner_x, inner_y = (xs > 0.5) & (xs < e - 0.5), (ys > 0.5) & (ys < e - 0.5)
    torch.testing.assert_close(feat[0, 0, inner_x], xs[inner_x], atol=1e-4, rtol=0)
    torch.testing.assert_close(feat[1, inner_y, 0], ys[inner_y], atol=1e-4, rtol=0)
    assert float(feat[0].max()) < w * e / 256  # the padding (x >= 53.5 cells) is never sampled
    # Agrees with the naive path (upsample to frame, crop, resize), which allocates more.
    naive = F.interpolate(emb[None], size=(256, 256), mode="bilinear", align_corners=False)[..., :h, :w]
    naive = F.interpolate(naive, size=(217, 181), mode="bilinear", align_corners=False)[0]
    assert float((naive - feat).abs()[:, 4:-4, 4:-4].max()) < 0.15


@pytest.mark.parametrize(
    "spec, mode, expected",
    [
        ("litemedsam", None, ("litemedsam", None, None)),
        ("LiteMedSAM", "litemedsam", ("litemedsam", None, None)),
        ("/w/sam_vit_b_01ec64.pth", None, ("sam", "vit_b", "/w/sam_vit_b_01ec64.pth")),
        ("/w/sam_vit_h_4b8939.pth", "medsam", ("medsam", "vit_h", "/w/sam_vit_h_4b8939.pth")),
        ("/w/medsam_vit_b.pth", None, ("medsam", "vit_b", "/w/medsam_vit_b.pth")),
        ("vit_l:/w/weights.pth", "sam", ("sam", "vit_l", "/w/weights.pth")),
    ],
)
def test_parse_spec(spec, mode, expected):
    backend, model_type, path = parse_spec(spec, mode)
    assert (backend, model_type, None if path is None else str(path)) == expected


@pytest.mark.parametrize(
    "spec, mode",
    [("/w/weights.pth", None), ("/w/vit_b_vit_l.pth", None), ("/w/sam_vit_b.pth", "lite"), ("litemedsam", "sam")],
)
def test_parse_spec_rejects(spec, mode):
    with pytest.raises(ValueError):
        parse_spec(spec, mode)
