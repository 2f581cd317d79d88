"""3D Dice and average symmetric surface distance (ASSD) for label maps.

Empty-mask convention (chosen so that means are always finite, never NaN):

* both prediction and reference empty: Dice 1.0, ASSD 0.0 (nothing to find, nothing found);
* exactly one empty: Dice 0.0, ASSD = diagonal of the image extent in mm, a finite
  worst case that still penalises a missed or hallucinated organ.

ASSD pools both surfaces (Heimann et al., 2009): the sum of distances from every
prediction surface voxel to the reference surface and vice versa, divided by the
total number of surface voxels. Surface voxels are foreground voxels with at least
one 6-connected background neighbour (the image border counts as background);
distances are between voxel centres, in mm.
"""
from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two binary masks; 1.0 when both are empty."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {ref.shape}")
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def assd(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Average symmetric surface distance in mm (see module docstring for conventions)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {ref.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not match {pred.ndim}D masks")
    has_p, has_r = bool(pred.any()), bool(ref.any())
    if not has_p and not has_r:
        return 0.0
    if has_p != has_r:
        return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))
    # All surface points lie in the union's bounding box, so cropping to it (plus one
    # voxel, which is background or the image border) gives exact distances, cheaper.
    idx = np.nonzero(pred | ref)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    sp, sr = _surface(pred[box]), _surface(ref[box])
    d_to_r = ndimage.distance_transform_edt(~sr, sampling=spacing)
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return float((d_to_r[sp].sum() + d_to_p[sr].sum()) / (sp.sum() + sr.sum()))


def evaluate_case(pred_lab: np.ndarray, ref_lab: np.ndarray, spacing: tuple[float, ...],
                  labels: dict[str, int]) -> dict:
    """Per-class {"dice", "assd"} for every foreground entry of ``labels``."""
    if pred_lab.shape != ref_lab.shape:
        raise ValueError(f"shape mismatch: {pred_lab.shape} vs {ref_lab.shape}")
    out = {}
    for name, value in labels.items():
        if value == 0:
            continue
        p, r = pred_lab == value, ref_lab == value
        out[name] = {"dice": dice(p, r), "assd": assd(p, r, spacing)}
    return out


def _labels_from_json(pred_dir: str) -> dict[str, int] | None:
    """nnU-Net copies dataset.json into prediction folders; fall back to the parent."""
    for d in (pred_dir, os.path.dirname(os.path.abspath(pred_dir))):
        path = os.path.join(d, "dataset.json")
        if os.path.isfile(path):
            with open(path) as f:
                labels = json.load(f)["labels"]
            if any(not isinstance(v, int) for v in labels.values()):
                raise ValueError(f"{path}: region-based labels are not supported")
            return {k: v for k, v in labels.items() if v != 0}
    return None


def _read(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    img = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(img), tuple(img.GetSpacing())[::-1]


def evaluate_folders(pred_dir: str, ref_dir: str, labels: dict[str, int] | None = None,
                     file_ending: str = ".nii.gz", only_predicted: bool = False) -> dict:
    """Evaluate every reference case in ``ref_dir`` against the same-named prediction.

    ``only_predicted`` restricts the cases to those with a prediction (e.g. nnU-Net's validation folder of one
    fold against the dataset's whole ``labelsTr``).

    Spacing comes from the reference image. Without ``labels`` and without a
    dataset.json, classes are the non-zero values found in any reference; a class
    absent from both files of a case then scores Dice 1 / ASSD 0 there, by convention.
    """
    cases = sorted(f[: -len(file_ending)] for f in os.listdir(ref_dir) if f.endswith(file_ending))
    if not cases:
        raise FileNotFoundError(f"no *{file_ending} reference files in {ref_dir}")
    if not any(f.endswith(file_ending) for f in os.listdir(pred_dir)):
        raise FileNotFoundError(f"no *{file_ending} predictions in {pred_dir}")
    if only_predicted:
        cases = [c for c in cases if os.path.isfile(os.path.join(pred_dir, c + file_ending))]
    missing = [c for c in cases if not os.path.isfile(os.path.join(pred_dir, c + file_ending))]
    if missing:
        raise FileNotFoundError(f"prediction missing for case(s) {', '.join(missing)} in {pred_dir}")
    if labels is None:
        labels = _labels_from_json(pred_dir)
    per_case: dict[str, dict] = {}
    found: set[int] = set()
    for case in cases:
        ref, spacing = _read(os.path.join(ref_dir, case + file_ending))
        pred, _ = _read(os.path.join(pred_dir, case + file_ending))
        if labels is not None:
            per_case[case] = evaluate_case(pred, ref, spacing, labels)
            continue
        present = {int(v) for v in np.unique(ref) if v != 0}
        found |= present
        both = present | {int(v) for v in np.unique(pred) if v != 0}
        per_case[case] = evaluate_case(pred, ref, spacing, {f"label_{v}": v for v in both})
    if labels is None:
        labels = {f"label_{v}": v for v in sorted(found)}
        for case in cases:
            res = per_case[case]
            per_case[case] = {n: res.get(n, {"dice": 1.0, "assd": 0.0}) for n in labels}
    names = [n for n, v in labels.items() if v != 0]
    if not names:
        raise ValueError("no foreground classes to evaluate")
    per_class = {n: {m: float(np.mean([per_case[c][n][m] for c in cases])) for m in ("dice", "assd")}
                 for n in names}
    mean = {m: float(np.mean([per_class[n][m] for n in names])) for m in ("dice", "assd")}
    return {"per_case": per_case, "per_class": per_class, "mean_dice": mean["dice"], "mean_assd": mean["assd"]}


def format_table(result: dict) -> str:
    """Aligned text table of per-class means, for logs and reports."""
    rows = [(n, v["dice"], v["assd"]) for n, v in result["per_class"].items()]
    rows.append(("mean", result["mean_dice"], result["mean_assd"]))
    width = max(len("class"), *(len(r[0]) for r in rows))
    lines = [f"{'class':<{width}}  {'Dice':>6}  {'ASSD (mm)':>9}"]
    lines += [f"{n:<{width}}  {d:>6.4f}  {a:>9.2f}" for n, d, a in rows]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)
