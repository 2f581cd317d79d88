"""Tests for nnunet_dfg.synthetic: case properties, domain shift and benchmark writing."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_dfg.synthetic import DEFAULT_SEVERITY, LABELS, make_case, write_benchmark

SMALL = (12, 48, 48)
TINY = dict(n_source=2, n_target=1, n_target_test=1, shape=(8, 32, 32))


def _medians(img, lab):
    return {k: float(np.median(img[lab == k])) for k in (1, 2, 3, 4)}


@pytest.mark.parametrize("domain,severity", [("source", 1.0), ("target", 0.0), ("target", 1.0), ("target", 2.0)])
def test_case_shapes_dtypes_labels(domain, severity):
    for seed in range(3):
        img, lab, spacing = make_case(np.random.default_rng(seed), domain, severity, shape=SMALL,
                                      spacing=(5.0, 2.0, 2.0))
        assert img.shape == lab.shape == SMALL
        assert img.dtype == np.float32 and lab.dtype == np.uint8
        assert spacing == (5.0, 2.0, 2.0)
        assert np.isfinite(img).all()
        assert set(np.unique(lab)) == {0, 1, 2, 3, 4}


def test_default_shape_and_spacing_cover_dome_to_lower_poles():
    """36 slices of 6 mm from the liver's dome to the kidneys' lower poles; the pixel size follows the side."""
    from nnunet_dfg.synthetic import DEFAULT_SHAPE, FOV_MM, spacing_for
    assert DEFAULT_SHAPE == (36, 64, 64) and spacing_for((36, 128, 128)) == (6.0, 2.8125, 2.8125)
    for seed in range(4):
        img, lab, spacing = make_case(np.random.default_rng(seed), "source", 1.0)
        assert img.shape == lab.shape == DEFAULT_SHAPE and spacing == (6.0, 5.625, 5.625)
        assert 4.0 <= spacing[0] <= 6.0 and img.shape[0] * spacing[0] == FOV_MM[0]
        span = {k: np.where((lab == k).any(axis=(1, 2)))[0] for k in (1, 2, 3, 4)}
        assert span[4].max() >= img.shape[0] - 4  # the liver reaches the top slices (+z cranial)
        assert min(span[2].min(), span[3].min()) <= 5  # a kidney's lower pole near the bottom
        for k, (low, high) in {1: (70, 160), 2: (80, 140), 3: (80, 140), 4: (120, 200)}.items():
            assert low <= len(span[k]) * spacing[0] <= high, (seed, k, len(span[k]))  # cranio-caudal mm


def _ring(lab: np.ndarray, value: int) -> np.ndarray:
    """Unlabelled voxels within 3 in-plane pixels of a class: what an organ must stand out from."""
    from scipy import ndimage
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    mask = lab == value
    return ndimage.binary_dilation(mask, cross, iterations=3) & ~mask & (lab == 0)


def _contrast(img: np.ndarray, lab: np.ndarray, value: int) -> float:
    """(organ median - ring median) / pooled robust spread (MAD): ribs beside the spleen are part of its ring in CT
    (900 HU) and would dominate a standard deviation, not what the eye sees."""
    organ, ring = img[lab == value], img[_ring(lab, value)]

    def spread(v):
        return 1.4826 * np.median(np.abs(v - np.median(v)))
    return float((np.median(organ) - np.median(ring)) / np.sqrt((spread(organ) ** 2 + spread(ring) ** 2) / 2))


def test_tissue_physics_t2_spir_source_and_portal_venous_ct():
    """The order of tissue means follows T2-SPIR physics and the CT table the docstring cites."""
    from nnunet_dfg import synthetic_contrast as c
    mr, ct = c.SOURCE_MEANS, c.TARGET_MEANS
    assert mr[c.FAT] < mr[c.MUSCLE] < mr[c.LIVER] < mr[c.SPLEEN] < mr[c.KIDNEY] < mr[c.FLUID]  # fat suppressed
    assert mr[c.FLUID] == mr.max() and mr[c.VESSEL] < mr[c.MUSCLE] and mr[c.BONE] <= 1.05 * mr[c.MUSCLE]
    assert 800 < mr[c.FLUID] < 1200 and mr[c.AIR] == 0
    assert ct[c.FAT] == -100 and ct[c.MUSCLE] == 50 and 100 <= ct[c.LIVER] <= 110 and 110 <= ct[c.SPLEEN] <= 125
    assert 150 <= ct[c.KIDNEY] <= 200 and 150 <= ct[c.VESSEL] <= 180 and ct[c.GAS] <= -800
    assert 300 <= ct[c.BONE] < ct[c.CORTEX] <= 1000
    # the signal equation itself: a longer T2 is brighter, fat suppression removes most of fat's signal
    assert c.t2_spin_echo_signal(0.8, 1000, 80) > c.t2_spin_echo_signal(0.8, 1000, 40)
    assert c.t2_spin_echo_signal(0.9, 343, 58, 1.0) < 0.1 * c.t2_spin_echo_signal(0.9, 343, 58, 0.0)


def test_every_organ_visible_in_both_domains_and_ct_in_hu():
    for seed in range(3):
        s_img, s_lab, _ = make_case(np.random.default_rng(seed), "source", 1.0, shape=SMALL)
        t_img, t_lab, _ = make_case(np.random.default_rng(seed + 100), "target", DEFAULT_SEVERITY, shape=SMALL)
        assert DEFAULT_SEVERITY == 1.0  # full CT appearance by default
        for organ in (1, 2, 3, 4):  # brighter than their surroundings in T2-SPIR and in portal-venous CT
            assert min(_contrast(s_img, s_lab, organ), _contrast(t_img, t_lab, organ)) > 1.0, (seed, organ)
        med = _medians(t_img, t_lab)
        assert 90 < med[4] < 120 and 100 < med[1] < 135 and min(med[2], med[3]) > 140  # HU, partial volume
        s_med = _medians(s_img, s_lab)
        assert s_med[4] < s_med[1] and s_med[4] < min(s_med[2], s_med[3])  # liver darker than spleen, kidneys
        assert s_img.min() >= 0 and np.percentile(t_img, 1) < -900  # positive units vs HU
        assert t_img.max() < 2000 and s_img.max() < 2000


def test_blended_target_is_in_hu_and_affine_to_the_blend():
    """A blend (a sweep knob, not the default) is mapped onto HU (an affine map, invisible to z-score
    normalisation) so that a CT window shows its organs inside it rather than saturated, as on real CT."""
    from nnunet_dfg.sam.intensity import DEFAULT_CT_WINDOW
    for seed in range(3):
        hu, lab, _ = make_case(np.random.default_rng(seed), "target", 0.7, shape=SMALL)
        blend, lab2, _ = make_case(np.random.default_rng(seed), "target", 0.7, shape=SMALL, hu_units=False)
        assert np.array_equal(lab, lab2)
        slope, offset = np.polyfit(blend.ravel(), hu.ravel(), 1)
        assert slope > 0 and np.abs(slope * blend + offset - hu).max() < 0.05
        low, high = DEFAULT_CT_WINDOW
        for organ in (1, 2, 3, 4):
            assert low < float(np.median(hu[lab == organ])) < high, (seed, organ)
        assert np.percentile(hu, 1) < -500  # air stays far below the window


def test_severity_zero_is_source_like_and_same_anatomy():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    s_img, s_lab, _ = make_case(rng_a, "source", 1.0, shape=SMALL)
    t_img, t_lab, _ = make_case(rng_b, "target", 0.0, shape=SMALL)
    np.testing.assert_array_equal(s_lab, t_lab)
    np.testing.assert_allclose(t_img, s_img)
    h_img, h_lab, _ = make_case(np.random.default_rng(5), "target", 2.0, shape=SMALL)
    m_img, _, _ = make_case(np.random.default_rng(5), "target", 1.0, shape=SMALL)
    # harsher shift: lower liver contrast and more noise inside the liver
    assert _contrast(h_img, h_lab, 4) < _contrast(m_img, h_lab, 4)
    assert np.std(h_img[h_lab == 4]) > np.std(m_img[h_lab == 4])


def test_invalid_arguments():
    with pytest.raises(ValueError):
        make_case(np.random.default_rng(0), "pet", 1.0, shape=SMALL)
    with pytest.raises(ValueError):
        make_case(np.random.default_rng(0), "target", 2.5, shape=SMALL)


def _all_files(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.relpath(os.path.join(d, f), root)] = fh.read()
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    roots = [tmp_path_factory.mktemp(n) for n in ("a", "b", "c")]
    res = [write_benchmark(str(r), seed=s, **TINY) for r, s in zip(roots, (0, 0, 1))]
    return roots, res


def test_layout_and_dataset_json(written):
    (root, _, _), (res, _, _) = written
    src, tgt = res["source_dir"], res["target_dir"]
    assert os.path.basename(src) == "Dataset701_DFGSynthSource"
    assert os.path.basename(tgt) == "Dataset702_DFGSynthTarget"
    assert sorted(os.listdir(os.path.join(src, "imagesTr"))) == ["case_0000_0000.nii.gz", "case_0001_0000.nii.gz"]
    assert sorted(os.listdir(os.path.join(src, "labelsTr"))) == ["case_0000.nii.gz", "case_0001.nii.gz"]
    assert sorted(os.listdir(tgt)) == ["dataset.json", "imagesTr", "imagesTs"]
    assert os.listdir(os.path.join(tgt, "imagesTr")) == ["case_0000_0000.nii.gz"]
    assert os.listdir(os.path.join(tgt, "imagesTs")) == ["case_0001_0000.nii.gz"]
    assert os.listdir(res["target_labels_tr_dir"]) == ["case_0000.nii.gz"]
    assert os.listdir(res["target_labels_ts_dir"]) == ["case_0001.nii.gz"]
    for d in (res["target_labels_tr_dir"], res["target_labels_ts_dir"]):
        assert not os.path.abspath(d).startswith(os.path.abspath(tgt) + os.sep)
        assert os.path.relpath(d, root).split(os.sep)[0] == "_hidden_labels"
    assert not [f for f in os.listdir(root) if f.startswith(".dfg_synth_tmp_")]
    for d, channel, n in ((src, "MRI", 2), (tgt, "CT", 1)):
        with open(os.path.join(d, "dataset.json")) as f:
            js = json.load(f)
        assert js["channel_names"] == {"0": channel} and js["labels"] == LABELS
        assert js["numTraining"] == n and js["file_ending"] == ".nii.gz"
    assert res["source_cases"] == ["case_0000", "case_0001"]
    assert res["target_cases"] == ["case_0000"] and res["target_test_cases"] == ["case_0001"]


def test_written_images_have_spacing_and_labels(written):
    res = written[1][0]
    img = sitk.ReadImage(os.path.join(res["source_dir"], "imagesTr", "case_0000_0000.nii.gz"))
    assert img.GetSpacing() == (11.25, 11.25, 27.0) and img.GetSize() == (32, 32, 8)  # FOV_MM / shape
    assert img.GetPixelID() == sitk.sitkFloat32
    lab = sitk.ReadImage(os.path.join(res["target_labels_ts_dir"], "case_0001.nii.gz"))
    assert lab.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(lab))) == {0, 1, 2, 3, 4}


def test_same_seed_identical_bytes_different_seed_differs(written):
    roots, _ = written
    a, b, c = (_all_files(r) for r in roots)
    assert a.keys() == b.keys() == c.keys()
    assert all(a[k] == b[k] for k in a)
    images = [k for k in a if k.endswith(".nii.gz")]
    assert all(a[k] != c[k] for k in images)


def test_refuses_to_overwrite(written, tmp_path):
    roots, res = written
    before = _all_files(roots[0])
    with pytest.raises(FileExistsError):
        write_benchmark(str(roots[0]), seed=3, **TINY)
    assert _all_files(roots[0]) == before
    (tmp_path / "Dataset702_SomethingElse").mkdir()  # same id, other name: also refused
    with pytest.raises(FileExistsError):
        write_benchmark(str(tmp_path), **TINY)
    assert sorted(os.listdir(tmp_path)) == ["Dataset702_SomethingElse"]


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    import nnunet_dfg.synthetic as synthetic

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return make_case(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_case", failing)
    with pytest.raises(RuntimeError, match="boom"):
        synthetic.write_benchmark(str(tmp_path), **TINY)
    assert os.listdir(tmp_path) == []


def test_reverse_direction_ct_source_mri_like_target(written, tmp_path):
    res = write_benchmark(str(tmp_path), direction="ct2mr", **TINY)
    for d, channel in ((res["source_dir"], "CT"), (res["target_dir"], "MRI")):
        with open(os.path.join(d, "dataset.json")) as f:
            js = json.load(f)
        assert js["channel_names"] == {"0": channel} and "direction=ct2mr" in js["description"]
    src = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(res["source_dir"], "imagesTr", "case_0000_0000.nii.gz")))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(res["source_dir"], "labelsTr", "case_0000.nii.gz")))
    tgt = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(res["target_dir"], "imagesTr", "case_0000_0000.nii.gz")))
    assert np.percentile(src, 1) < -900 and _contrast(src, lab, 4) > 1.0  # CT: HU, liver bright on dark fat
    assert tgt.min() >= 0 and np.percentile(tgt, 99.9) < 2000  # the T2-SPIR-like target: positive units
    # the same anatomy as the default direction (same seed), only the appearance differs
    default = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(written[1][0]["source_dir"], "labelsTr",
                                                                 "case_0000.nii.gz")))
    np.testing.assert_array_equal(lab, default)
    with pytest.raises(ValueError, match="direction"):
        write_benchmark(str(tmp_path / "x"), direction="pet2ct", **TINY)
