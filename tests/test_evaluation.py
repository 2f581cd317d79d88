"""Tests for nnunet_dfg.evaluation: hand-checked Dice/ASSD values and folder evaluation."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist

from nnunet_dfg.evaluation import assd, dice, evaluate_case, evaluate_folders, format_table


def test_dice_hand_computed():
    a = np.zeros((2, 3, 4), bool)
    b = np.zeros_like(a)
    a[0, :, :2] = True  # 6 voxels
    b[0, :2, :3] = True  # 6 voxels, overlap 4
    assert dice(a, b) == pytest.approx(2 * 4 / 12)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_assd_parallel_planes_anisotropic():
    spacing = (4.0, 1.5, 0.7)
    pred = np.zeros((6, 10, 12), bool)
    ref = np.zeros_like(pred)
    pred[:, 2:8, 3] = True  # planes perpendicular to x, same (z, y) extent
    ref[:, 2:8, 5] = True  # 2 voxels apart along x
    assert assd(pred, ref, spacing) == pytest.approx(2 * 0.7)
    pz, rz = np.zeros_like(pred), np.zeros_like(pred)
    pz[1, 2:8, 3:9] = True  # planes perpendicular to z, 3 slices apart
    rz[4, 2:8, 3:9] = True
    assert assd(pz, rz, spacing) == pytest.approx(3 * 4.0)


def test_assd_boxes_offset_along_slices():
    # Two full-width slabs (surface = whole slab, border counts as background) offset by
    # 2 slices: the 2-slice-thick slab faces are 0 or 1 slices from the other's faces.
    spacing = (3.0, 1.0, 1.0)
    pred = np.zeros((8, 4, 4), bool)
    ref = np.zeros_like(pred)
    pred[1:3] = True  # slices 1, 2
    ref[3:5] = True  # slices 3, 4
    # pred slice 1 -> ref slice 3: 6 mm, pred slice 2 -> 3 mm; symmetric for ref.
    assert assd(pred, ref, spacing) == pytest.approx((6.0 + 3.0) / 2)


def test_assd_matches_brute_force():
    rng = np.random.default_rng(0)
    spacing = (2.5, 0.8, 1.3)
    pred = ndimage.binary_dilation(rng.random((7, 9, 8)) > 0.93, iterations=1)
    ref = ndimage.binary_dilation(rng.random((7, 9, 8)) > 0.93, iterations=1)
    st = ndimage.generate_binary_structure(3, 1)
    sp = np.argwhere(pred & ~ndimage.binary_erosion(pred, st)) * spacing
    sr = np.argwhere(ref & ~ndimage.binary_erosion(ref, st)) * spacing
    d = cdist(sp, sr)
    expected = (d.min(1).sum() + d.min(0).sum()) / (len(sp) + len(sr))
    assert assd(pred, ref, spacing) == pytest.approx(expected)
    assert assd(pred, pred, spacing) == 0.0


def test_empty_conventions():
    spacing = (2.0, 1.0, 1.0)
    empty = np.zeros((3, 4, 12), bool)
    full = empty.copy()
    full[1, 1, 1] = True
    diag = np.sqrt(6.0 ** 2 + 4.0 ** 2 + 12.0 ** 2)
    assert dice(empty, empty) == 1.0 and assd(empty, empty, spacing) == 0.0
    assert dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    assert assd(full, empty, spacing) == pytest.approx(diag)
    assert assd(empty, full, spacing) == pytest.approx(diag)


def test_evaluate_case_skips_background():
    ref = np.zeros((2, 4, 4), np.uint8)
    ref[0, :2, :2] = 1
    res = evaluate_case(ref.copy(), ref, (1.0, 1.0, 1.0), {"background": 0, "a": 1, "b": 2})
    assert set(res) == {"a", "b"}
    assert res["a"] == {"dice": 1.0, "assd": 0.0} and res["b"] == {"dice": 1.0, "assd": 0.0}


def _write(arr, path, spacing=(2.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing[::-1])
    sitk.WriteImage(img, path)


@pytest.fixture
def folders(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    ref = np.zeros((4, 6, 6), np.uint8)
    ref[1, 1:3, 1:3] = 1
    ref[2, 3:5, 3:5] = 2
    pred = ref.copy()
    pred[2, 3:5, 3:5] = 0  # class 2 missed entirely in case_a
    for case, p in (("case_a", pred), ("case_b", ref)):
        _write(ref, str(ref_dir / f"{case}.nii.gz"))
        _write(p, str(pred_dir / f"{case}.nii.gz"))
    return pred_dir, ref_dir, ref.shape


def test_evaluate_folders_from_references(folders):
    pred_dir, ref_dir, shape = folders
    res = evaluate_folders(str(pred_dir), str(ref_dir))
    diag = np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, (2.0, 1.0, 1.0))))
    assert set(res["per_case"]) == {"case_a", "case_b"}
    assert res["per_case"]["case_a"]["label_2"] == {"dice": 0.0, "assd": pytest.approx(diag)}
    assert res["per_class"]["label_1"] == {"dice": 1.0, "assd": 0.0}
    assert res["per_class"]["label_2"]["dice"] == pytest.approx(0.5)
    assert res["mean_dice"] == pytest.approx(0.75)
    assert res["mean_assd"] == pytest.approx(diag / 4)
    table = format_table(res)
    assert "label_2" in table and "mean" in table and "0.7500" in table
    assert len({len(line) for line in table.splitlines()}) == 1  # aligned


def test_evaluate_folders_labels_from_dataset_json(folders):
    pred_dir, ref_dir, _ = folders
    with open(pred_dir / "dataset.json", "w") as f:
        json.dump({"labels": {"background": 0, "spleen": 1, "kidney": 2, "liver": 4}}, f)
    res = evaluate_folders(str(pred_dir), str(ref_dir))
    assert list(res["per_class"]) == ["spleen", "kidney", "liver"]
    assert res["per_class"]["liver"] == {"dice": 1.0, "assd": 0.0}  # absent everywhere


def test_evaluate_folders_missing_prediction(folders):
    pred_dir, ref_dir, _ = folders
    os.remove(pred_dir / "case_b.nii.gz")
    with pytest.raises(FileNotFoundError, match="case_b"):
        evaluate_folders(str(pred_dir), str(ref_dir))


def test_evaluate_folders_only_predicted_cases(folders):
    """nnU-Net's validation folder of one fold against a dataset's whole labelsTr."""
    pred_dir, ref_dir, _ = folders
    os.remove(pred_dir / "case_b.nii.gz")
    res = evaluate_folders(str(pred_dir), str(ref_dir), only_predicted=True)
    assert set(res["per_case"]) == {"case_a"} and res["per_class"]["label_2"]["dice"] == 0.0
