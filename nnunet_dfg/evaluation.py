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

Ignore label (nnU-Net's, a pseudo-label dataset written by ``refine --pseudo-ignore``): voxels whose prediction is
the ignore value are left out of both masks, so Dice and ASSD are over the kept voxels only (an ignored region
cuts the surfaces there); each class also gets ``kept``, the fraction of its reference voxels that are not ignored
(None in a case whose reference lacks the class; the class mean is over the cases that have it).
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
                  labels: dict[str, int], ignore_label: int | None = None) -> dict:
    """Per-class {"dice", "assd"} for every foreground entry of ``labels``; with ``ignore_label`` over the voxels
    the prediction does not ignore, plus "kept" (module docstring)."""
    if pred_lab.shape != ref_lab.shape:
        raise ValueError(f"shape mismatch: {pred_lab.shape} vs {ref_lab.shape}")
    kept = None if ignore_label is None else pred_lab != ignore_label
    out = {}
    for name, value in labels.items():
        if value == 0 or value == ignore_label:
            continue
        p, r = pred_lab == value, ref_lab == value
        extra = {}
        if kept is not None:
            n_ref = int(r.sum())
            p, r = p & kept, r & kept
            extra["kept"] = int(r.sum()) / n_ref if n_ref else None
        out[name] = {"dice": dice(p, r), "assd": assd(p, r, spacing), **extra}
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
            return {k: v for k, v in labels.items() if v != 0}  # "ignore" included: evaluate_folders takes it out
    return None


def _read(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    img = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(img), tuple(img.GetSpacing())[::-1]


def evaluate_folders(pred_dir: str, ref_dir: str, labels: dict[str, int] | None = None,
                     file_ending: str = ".nii.gz", only_predicted: bool = False,
                     ignore_label: int | None = None) -> dict:
    """Evaluate every reference case in ``ref_dir`` against the same-named prediction.

    ``only_predicted`` restricts the cases to those with a prediction (e.g. nnU-Net's validation folder of one
    fold against the dataset's whole ``labelsTr``). ``ignore_label`` (module docstring) defaults to the
    ``"ignore"`` entry of ``labels`` or of the dataset.json next to the predictions, where there is one; the
    result then also holds ``kept_fraction``, the share of all voxels not ignored.

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
    declared = _labels_from_json(pred_dir)
    if labels is None:
        labels = declared
    if labels is not None:
        labels = dict(labels)
        ignore_label = labels.pop("ignore", ignore_label)
    if ignore_label is None and declared is not None:
        ignore_label = declared.get("ignore")
    per_case: dict[str, dict] = {}
    found: set[int] = set()
    n_kept = n_voxels = 0
    for case in cases:
        ref, spacing = _read(os.path.join(ref_dir, case + file_ending))
        pred, _ = _read(os.path.join(pred_dir, case + file_ending))
        if ignore_label is not None:
            n_kept, n_voxels = n_kept + int(np.count_nonzero(pred != ignore_label)), n_voxels + pred.size
        if labels is not None:
            per_case[case] = evaluate_case(pred, ref, spacing, labels, ignore_label)
            continue
        present = {int(v) for v in np.unique(ref) if v != 0}
        found |= present
        both = present | {int(v) for v in np.unique(pred) if v not in (0, ignore_label)}
        per_case[case] = evaluate_case(pred, ref, spacing, {f"label_{v}": v for v in both}, ignore_label)
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
    result = {"per_case": per_case, "per_class": per_class, "mean_dice": mean["dice"], "mean_assd": mean["assd"]}
    if ignore_label is not None:
        for n in names:
            fractions = [per_case[c][n].get("kept") for c in cases]
            fractions = [f for f in fractions if f is not None]
            per_class[n]["kept"] = float(np.mean(fractions)) if fractions else None
        result["ignore_label"] = int(ignore_label)
        result["kept_fraction"] = n_kept / n_voxels if n_voxels else 1.0
    return result


def format_table(result: dict) -> str:
    """Aligned text table of per-class means, for logs and reports (with an ignore label: the kept fractions)."""
    rows = [(n, v["dice"], v["assd"]) for n, v in result["per_class"].items()]
    rows.append(("mean", result["mean_dice"], result["mean_assd"]))
    width = max(len("class"), *(len(r[0]) for r in rows))
    kept = [v.get("kept") for v in result["per_class"].values()] + [result.get("kept_fraction")]
    show_kept = "ignore_label" in result
    lines = [f"{'class':<{width}}  {'Dice':>6}  {'ASSD (mm)':>9}" + ("  kept" if show_kept else "")]
    lines += [f"{n:<{width}}  {d:>6.4f}  {a:>9.2f}" + (f"  {'-' if k is None else f'{k:.3f}'}" if show_kept else "")
              for (n, d, a), k in zip(rows, kept)]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    if show_kept:
        lines.append(f"(ignore label {result['ignore_label']}: Dice and ASSD over the kept voxels; kept = share of "
                     "each class's reference voxels not ignored, on the mean row of all voxels)")
    return "\n".join(lines)
