"""Modality-aware intensities: SAM's window (nnunet_dfg.sam.intensity) and the target's normalisation
(nnunet_dfg.target_normalization), as pure functions; and the one-line errors of the options."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cli_env import assert_one_error_line, snapshot
from nnunet_dfg.sam.intensity import (DEFAULT_CT_WINDOW, check_intensity, ct_window, equalize_slices,
                                      equalize_uint8, modality_from_channel, mr_window, parse_window,
                                      resolve_modality, sam_image)
from nnunet_dfg.target_normalization import (CT, ZSCORE, changed_channels, ct_properties, sample_body,
                                              target_plans)


def test_ct_window_clips_to_soft_tissue_and_keeps_hu_fixed_across_slices():
    hu = np.array([[-1000.0, -125.0, 75.0], [275.0, 1200.0, 0.0]])
    out = ct_window(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5], [1.0, 1.0, 125 / 400]], atol=1e-6)
    np.testing.assert_allclose(ct_window(hu, (0.0, 100.0))[1, 2], 0.0)
    with pytest.raises(ValueError):
        ct_window(hu, (10.0, 10.0))


def test_mr_window_uses_percentiles_of_the_nonzero_voxels():
    rng = np.random.default_rng(0)
    img = np.zeros((4, 50, 50))
    img[:, 10:40, 10:40] = rng.normal(500.0, 50.0, (4, 30, 30))
    img[0, 20, 20] = 1e6  # one hot voxel must not squash the rest
    out = mr_window(img)
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32
    body = out[:, 10:40, 10:40]
    assert 0.3 < float(np.median(body)) < 0.7  # the tissue spreads over the range
    assert np.all(out[img == 0] == 0.0)
    assert not mr_window(np.full((3, 3), 7.0)).any()  # constant -> zeros
    np.testing.assert_allclose(mr_window(np.zeros((2, 2))), 0.0)
    # affine-invariant: any units, any offset
    np.testing.assert_allclose(mr_window(img * 3.0 + 0.0), out, atol=1e-6)


def test_modality_from_nnunet_channel_names_and_overrides():
    assert modality_from_channel("CT") == modality_from_channel(" ct ") == "ct"
    assert {modality_from_channel(n) for n in ("MRI", "T2", "channel0", "noNorm")} == {"mr"}
    ct_json = {"channel_names": {"0": "CT"}}
    assert resolve_modality("auto", ct_json) == "ct"
    assert resolve_modality("auto", {"modality": {"0": "CT"}}) == "ct"  # nnU-Net v1 key
    assert resolve_modality("auto", {"channel_names": {"0": "T1"}}) == "mr"
    assert resolve_modality("auto", None) == "mr"
    assert resolve_modality("MR", ct_json) == "mr" and resolve_modality("ct", None) == "ct"
    np.testing.assert_allclose(sam_image(np.array([75.0]), "ct"), [0.5])
    np.testing.assert_allclose(sam_image(np.array([75.0]), "ct", (75.0, 175.0)), [0.0])
    with pytest.raises(ValueError):
        sam_image(np.zeros(3), "pet")


@pytest.mark.parametrize("text", ["", "1", "a,b", "300,-100", "5,5", "nan,1", "1,2,3", "-inf,0"])
def test_bad_windows_and_intensities_are_refused(text):
    with pytest.raises(ValueError, match="--sam-window"):
        parse_window(text)
    with pytest.raises(ValueError, match="--sam-intensity"):
        check_intensity("pet")


def test_window_parsing():
    assert parse_window(None) is None
    assert parse_window("-125,275") == DEFAULT_CT_WINDOW and parse_window(" -160 , 240 ") == (-160.0, 240.0)


def test_equalisation_is_torchvisions_bit_for_bit():
    """The SDG reference equalises with torchvision's ``equalize`` (PIL's rule): same uint8 output on spread,
    narrow (few grey levels), skewed and constant images."""
    import torch
    from torchvision.transforms.functional import equalize
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (37, 53)), rng.integers(100, 103, (20, 20)), rng.gamma(2.0, 20.0, (64, 48)),
              np.full((9, 9), 77), np.array([[0, 255]]), rng.integers(0, 256, (1, 1))]
    for image in images:
        image = np.clip(image, 0, 255).astype(np.uint8)
        expected = equalize(torch.from_numpy(image)[None]).numpy()[0]
        assert np.array_equal(equalize_uint8(image), expected)
    flat = equalize_uint8(rng.gamma(2.0, 20.0, (64, 64)).clip(0, 255).astype(np.uint8))
    assert np.histogram(flat, bins=4, range=(0, 256))[0].min() > 0.15 * flat.size  # spread over the grey range
    with pytest.raises(ValueError, match="uint8"):
        equalize_uint8(np.zeros((2, 2), np.float32))


def test_equalize_feeds_sam_each_slice_as_the_sdg_reference_does():
    """Per slice (axis 0): min-max -> round to uint8 -> equalise -> / 255, in float32 as the reference's torch
    loader; each slice on its own, so changing one slice leaves the others as they were."""
    import torch
    from torchvision.transforms.functional import equalize
    rng = np.random.default_rng(1)
    volume = rng.normal(300.0, 80.0, (3, 30, 40))
    volume[1] = 5.0  # a constant slice
    out = sam_image(volume, "equalize")
    assert out.dtype == np.float32 and out.shape == volume.shape and not out[1].any()
    for z in (0, 2):
        img = torch.from_numpy(volume[z]).float()[None]  # the reference's loader, step by step
        img = torch.round((img - img.min()) / (img.max() - img.min()) * 255).to(torch.uint8)
        assert np.array_equal(out[z], (equalize(img) / 255)[0].numpy())
    changed = volume.copy()
    changed[2] *= 40.0
    again = equalize_slices(changed)
    assert np.array_equal(again[:2], out[:2])
    assert np.array_equal(equalize_slices(volume[0]), out[0])  # a 2D slice is one slice
    assert np.array_equal(equalize_slices(3.0 * volume[0] - 7.0), out[0])  # any units: affine-invariant
    assert check_intensity(" Equalize ") == "equalize"
    assert resolve_modality("equalize", {"channel_names": {"0": "CT"}}) == "equalize"
    with pytest.raises(ValueError, match="2D slice or a"):
        equalize_slices(np.zeros(5))


def _plans(scheme: str) -> dict:
    props = {"0": {"mean": 1.0, "std": 2.0, "percentile_00_5": -900.0, "percentile_99_5": 900.0}}
    return {"configurations": {"2d": {"normalization_schemes": [scheme], "use_mask_for_norm": [False]},
                               "3d_lowres": {"inherits_from": "2d"},
                               "3d_fullres": {"normalization_schemes": [scheme], "use_mask_for_norm": [False]}},
            "foreground_intensity_properties_per_channel": props}


def test_ct_target_of_a_zscore_source_gets_ct_normalisation_with_its_own_body_statistics():
    plans = _plans(ZSCORE)
    changes = changed_channels(plans, {"0": "CT"})
    assert changes == {"0": {"source": ZSCORE, "target": CT, "modality": "ct"}}
    rng = np.random.default_rng(1)
    images = [np.concatenate([np.full(5000, -1000.0), rng.normal(60.0, 30.0, 2000)]) for _ in range(3)]
    out = target_plans(plans, changes, lambda i: iter(images))
    assert [c.get("normalization_schemes") for c in out["configurations"].values()] == [[CT], None, [CT]]
    props = out["foreground_intensity_properties_per_channel"]["0"]
    assert abs(props["mean"] - 60.0) < 3.0 and abs(props["std"] - 30.0) < 3.0  # the air left out
    assert -40.0 < props["percentile_00_5"] < 0.0 and 120.0 < props["percentile_99_5"] < 160.0
    assert set(props) == {"max", "mean", "median", "min", "percentile_00_5", "percentile_99_5", "std"}
    assert plans["configurations"]["2d"]["normalization_schemes"] == [ZSCORE]  # the source's plans untouched
    assert target_plans(plans, changes, lambda i: iter(images)) == out  # reruns write the same plans
    with pytest.raises(ValueError, match="no body voxels"):
        ct_properties(sample_body([np.full(10, -1000.0)]))


def test_mr_target_of_a_ct_source_gets_zscore_and_same_modality_keeps_the_source_plans():
    plans = _plans(CT)
    changes = changed_channels(plans, {"0": "MRI"})
    assert changes == {"0": {"source": CT, "target": ZSCORE, "modality": "mr"}}
    out = target_plans(plans, changes, lambda i: pytest.fail("z-score needs no statistics"))
    assert out["configurations"]["3d_fullres"]["normalization_schemes"] == [ZSCORE]
    assert changed_channels(_plans(CT), {"0": "CT"}) == {} and changed_channels(_plans(ZSCORE), {"0": "T2"}) == {}
    assert changed_channels(_plans("NoNormalization"), {"0": "CT"}) == {}  # not nnU-Net's default: kept
    assert changed_channels(_plans(ZSCORE), None) == {}


@pytest.fixture
def root(tmp_path):
    model = tmp_path / "res/Dataset701_Src/nnUNetTrainerDFG_Source__nnUNetPlans__2d"
    model.mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {"2d": {}}}))
    (model / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0},
                                                    "numTraining": 1, "file_ending": ".nii.gz"}))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "pre").mkdir()
    return tmp_path


@pytest.mark.parametrize("args, fragment", [
    (["refine", "-d", "701", "--sam-intensity", "pet"], "--sam-intensity must be one of auto, ct, mr"),
    (["refine", "-d", "701", "--sam-window", "275,-125"], "--sam-window must be LOW,HIGH"),
    (["sdg-predict", "-i", "{root}/imgs", "-o", "{root}/out", "-d", "701", "--sam-window", "x"], "--sam-window"),
    (["pipeline", "-s", "701", "-t", "702", "-o", "{root}/work", "--sam-intensity", "xray"], "--sam-intensity"),
    (["demo", "-o", "{root}/demo", "--sam-window", "1"], "--sam-window must be LOW,HIGH"),
    (["demo", "-o", "{root}/demo", "--direction", "pet2ct"], "--direction must be one of mr2ct, ct2mr"),
    (["synthetic", "--direction", "ct2mr", "--severity", "1.5"], "needs severity in [0, 1]"),
])
def test_bad_intensity_options_are_one_error_line(root, cli_here, args, fragment):
    before = snapshot(root)
    assert_one_error_line(cli_here([a.format(root=root) for a in args], root), fragment)
    assert snapshot(root) == before
