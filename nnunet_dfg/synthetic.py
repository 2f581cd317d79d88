"""Synthetic two-domain abdominal benchmark: T2-SPIR-like MRI source, portal-venous CT target.

Why it exists: adaptation code needs a labelled source and a shifted, unlabelled target whose ground truth is known
but kept out of reach, small enough to train on a CPU. It poses the DFG paper's problem (CHAOS T2-SPIR -> BTCV CT):
both domains' tissue intensities come from physics (``synthetic_contrast``: a fat-suppressed spin-echo signal
equation with published relaxation times; textbook portal-venous HU), never from a pipeline result, so whatever
Dice the source model keeps on the target is what the benchmark reports.

Anatomy is defined in coordinates normalised to the field of view, with the label convention of the DFG paper:
1 spleen, 2 right kidney, 3 left kidney, 4 liver. Image axes are (z, y, x) with +z cranial, +y posterior and +x the
patient's left (radiological display). The volume spans the liver's dome to the kidneys' lower poles (``FOV_MM``:
216 mm cranio-caudal, 360 mm in-plane), so the default 36 slices are 6 mm thick and a slice's pixel size follows
from its side (64 px: 5.6 mm, 128 px: 2.8 mm, 256 px: 1.4 mm). Unlabelled structures every abdominal scan has, and
which differ between the domains, sit between and inside the organs: intrahepatic vessels (part of the liver label;
flow voids in MRI, enhanced in CT), the gallbladder (fluid, outside the liver label), aorta and IVC, ribs, spine
with discs and canal, bowel with gas, and mesenteric fat.

``severity`` 1 (the default) is the CT; values between 0 and 1 blend the two appearances (a knob for sweeps,
expressed in HU by an affine map so that a CT window sees it as it would a CT); above 1 the organ contrast shrinks
and noise grows. ``direction="ct2mr"`` writes the reverse with the same physics: a CT source (channel "CT", so
nnU-Net plans CTNormalization) and the T2-SPIR-like target (channel "MRI") at the blend ``1 - severity``.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .nnunet_io import datasets_with_id
from .synthetic_contrast import (AIR, BONE, BOWEL, CORTEX, CT_NOISE_HU, CT_PSF_MM, FAT, FLUID, GAS, KIDNEY, LIVER,
                                 MR_BIAS_RANGE, MR_RICIAN_SIGMA, MUSCLE, ORGANS, SOURCE_MEANS, SPLEEN, TARGET_MEANS,
                                 VESSEL, VISC)

LABELS = {"background": 0, "spleen": 1, "right_kidney": 2, "left_kidney": 3, "liver": 4}
DEFAULT_SEVERITY = 1.0
FOV_MM = (216.0, 360.0, 360.0)  # (z, y, x): liver dome to the kidneys' lower poles; an adult abdomen's width
DEFAULT_SHAPE = (36, 64, 64)
DIRECTIONS = ("mr2ct", "ct2mr")  # source -> target modality of write_benchmark


def spacing_for(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """(z, y, x) mm of a volume of ``shape`` covering ``FOV_MM``: the anatomy is fixed, the sampling varies."""
    return tuple(float(f) / int(n) for f, n in zip(FOV_MM, shape))


DEFAULT_SPACING = spacing_for(DEFAULT_SHAPE)


def _waves(rng: np.random.Generator, k: int, freq: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw a random sum-of-sinusoids field: smooth, resolution independent, cheap."""
    return rng.normal(0.0, freq, (k, 3)), rng.uniform(0.0, 2 * np.pi, k)


def _field(w: tuple[np.ndarray, np.ndarray], q: tuple[np.ndarray, ...]) -> np.ndarray:
    """Evaluate a wave field at coordinates ``q``; roughly unit variance."""
    om, ph = w
    out = 0.0
    for (a, b, c), p in zip(om.tolist(), ph.tolist()):  # python floats keep float32 grids float32
        out = out + np.sin(a * q[0] + b * q[1] + c * q[2] + p)
    return out * (2.0 / len(ph)) ** 0.5


def _ellipsoid(q, c, r, angle: float = 0.0) -> np.ndarray:
    """Squared normalised radius (< 1 inside); rotation is in-plane only."""
    c, r = [float(v) for v in c], [float(v) for v in r]
    z, y, x = q[0] - c[0], q[1] - c[1], q[2] - c[2]
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    yr, xr = ca * y - sa * x, sa * y + ca * x
    return (z / r[0]) ** 2 + (yr / r[1]) ** 2 + (xr / r[2]) ** 2


def _organ(rng: np.random.Generator, c, r, angle: float) -> tuple:
    """Jitter one organ template so every case has its own size, pose and position."""
    c = np.asarray(c) + rng.normal(0.0, [0.05, 0.025, 0.025])
    r = np.asarray(r) * rng.uniform(0.85, 1.15, 3)
    return c, r, angle + rng.uniform(-0.2, 0.2)


def _draw_anatomy(rng: np.random.Generator) -> dict:
    """Draw all per-case shape parameters once, so z sub-samples share one patient.

    Organ templates (normalised (z, y, x) centre and radii over the 216 mm x 360 mm field): liver ~150 mm
    cranio-caudal with its dome near the top slice, spleen ~100 mm below the left dome, kidneys ~105 mm long with
    the right one lower (pushed down by the liver) and their lower poles near the bottom slice.
    """
    return {
        "rot": rng.uniform(-0.15, 0.15), "scale": rng.uniform(0.9, 1.1, 3),
        "shift": rng.normal(0.0, [0.04, 0.03, 0.03]),
        "deform": [_waves(rng, 4, 2.5) for _ in range(3)], "deform_amp": rng.uniform(0.02, 0.045),
        "fat": rng.uniform(0.70, 0.86), "wall": rng.uniform(0.08, 0.14),
        "bowel": _waves(rng, 10, 9.0), "gas": _waves(rng, 8, 12.0), "hepatic": _waves(rng, 6, 14.0),
        "disc_phase": rng.uniform(0, 2 * np.pi), "lobes": rng.uniform(0, 2 * np.pi),
        "rib_phase": rng.uniform(0, 2 * np.pi),
        "liver": _organ(rng, (0.22, -0.07, -0.35), (0.66, 0.42, 0.40), 0.0),
        "liver_left": _organ(rng, (0.42, -0.32, 0.08), (0.34, 0.17, 0.35), 0.15),
        "gallbladder": _organ(rng, (-0.22, -0.30, -0.22), (0.22, 0.09, 0.07), 0.3),
        "spleen": _organ(rng, (0.32, 0.18, 0.54), (0.46, 0.34, 0.22), -0.5),
        "rkid": _organ(rng, (-0.40, 0.34, -0.37), (0.48, 0.20, 0.15), 0.35),
        "lkid": _organ(rng, (-0.30, 0.32, 0.37), (0.48, 0.20, 0.15), -0.35),
    }


def _anatomy(p: dict, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise tissue codes and labels at normalised image coordinates."""
    ca, sa = float(np.cos(p["rot"])), float(np.sin(p["rot"]))
    (tz, ty, tx), (sz, sy, sx) = p["shift"].tolist(), p["scale"].tolist()
    yy, xx = y - ty, x - tx
    q = [np.broadcast_to((z - tz) / sz, np.broadcast_shapes(z.shape, y.shape, x.shape)),
         (ca * yy + sa * xx) / sy, (-sa * yy + ca * xx) / sx]
    q = tuple(qi + p["deform_amp"] * _field(w, q) for qi, w in zip(q, p["deform"]))
    qz, qy, qx = q

    body = (qy / np.where(qy > 0, 0.62, 0.68)) ** 2 + (qx / 0.86) ** 2
    inner = p["fat"] - p["wall"]
    tissue = np.full(qz.shape, AIR, np.int8)
    tissue[body < 1] = FAT
    wall = (body < p["fat"]) & (body >= inner)
    tissue[body < p["fat"]] = MUSCLE
    interior = body < inner
    tissue[interior] = VISC
    tissue[interior & (_field(p["bowel"], q) > 0.3)] = BOWEL
    tissue[interior & (_field(p["gas"], q) > 1.6) & (qy < 0.0)] = GAS
    # ribs: short oblique segments in the body wall above the kidneys' lower halves
    theta = np.arctan2(qy, qx)
    ribs = wall & (np.cos(9.0 * theta + 7.0 * qz + p["rib_phase"]) > 0.75) & (qz > -0.3) & (qy < 0.5)
    tissue[ribs] = CORTEX

    label = np.zeros(qz.shape, np.uint8)
    c, r, a = p["liver"]
    lobed = 1.0 + 0.1 * np.sin(3.0 * np.arctan2(qy - float(c[1]), qx - float(c[2])) + p["lobes"])
    liver = (np.minimum(_ellipsoid(q, c, r, a) * lobed, _ellipsoid(q, *p["liver_left"])) < 1) & interior
    gallbladder = (_ellipsoid(q, *p["gallbladder"]) < 1) & interior
    liver &= ~gallbladder
    c, r, a = p["spleen"]
    notch = (c[0], c[1] - 0.02, c[2] - 0.85 * r[2])
    spleen = (_ellipsoid(q, c, r, a) < 1) & (_ellipsoid(q, notch, (r[0] * 1.1, r[1] * 0.7, r[2] * 0.5), a) > 1)
    spleen &= interior
    label[liver], tissue[liver] = 4, LIVER
    # intrahepatic portal and hepatic veins: thin branching sheets of one wave field, part of the liver label
    tissue[liver & (np.abs(_field(p["hepatic"], q)) < 0.07)] = VESSEL
    tissue[gallbladder] = FLUID
    label[spleen], tissue[spleen] = 1, SPLEEN
    for key, lab, medial in (("rkid", 2, 1.0), ("lkid", 3, -1.0)):
        c, r, a = p[key]  # (z, y, x) centre, radii, in-plane angle
        hilum = (c[0], c[1] - 0.03, c[2] + medial * 0.9 * r[2])
        mask = interior & (_ellipsoid(q, c, r, a) < 1)
        mask &= _ellipsoid(q, hilum, (r[0] * 0.4, r[1] * 0.4, r[2] * 0.55), a) > 1
        label[mask], tissue[mask] = lab, KIDNEY

    # Unlabelled distractors: paraspinal muscle yields to organs; spine and vessels cut through.
    para = (((qy - 0.58) / 0.10) ** 2 + ((np.abs(qx) - 0.2) / 0.13) ** 2 < 1) & (label == 0) & (body < 1)
    tissue[para] = MUSCLE
    vert_r = ((qy - 0.46) / 0.12) ** 2 + (qx / 0.12) ** 2
    vert = vert_r < 1
    disc = np.cos(2 * np.pi * qz / 0.3 + p["disc_phase"]) > 0.8  # ~30 mm vertebral period
    canal = ((qy - 0.62) / 0.05) ** 2 + (qx / 0.05) ** 2 < 1
    cortex = (vert & ~disc & (vert_r > 0.72)) | (((qy - 0.71) / 0.05) ** 2 + (qx / 0.03) ** 2 < 1)
    marrow = vert & ~disc & ~cortex
    vessel = (((qy - 0.27) / 0.065) ** 2 + ((qx - 0.1) / 0.065) ** 2 < 1) | \
             (((qy - 0.24) / 0.06) ** 2 + ((qx + 0.13) / 0.08) ** 2 < 1)
    # discs drawn as fibrous tissue (annulus), close to muscle in both modalities
    for mask, tis in ((marrow, BONE), (cortex, CORTEX), (vert & disc, MUSCLE), (canal, FLUID), (vessel, VESSEL)):
        tissue[mask], label[mask] = tis, 0
    return tissue, label


def _appearance(rng: np.random.Generator, domain: str, severity: float, hu_units: bool = True) -> dict:
    """Per-case intensity model; severity 0 reproduces the source, 1 is CT, 2 is harsher.

    Per case: a scanner gain in MRI (0.8-1.25) and +-4 % per tissue (physiology); +-5 HU per tissue in CT
    (contrast timing).
    """
    t, h = min(severity, 1.0), max(severity - 1.0, 0.0)
    if domain == "source":
        t = h = 0.0
    gain = rng.uniform(0.8, 1.25)
    src = SOURCE_MEANS * gain * (1.0 + rng.normal(0.0, 0.04, SOURCE_MEANS.size))
    tgt = TARGET_MEANS + np.r_[0.0, rng.normal(0.0, 5.0, TARGET_MEANS.size - 1)]
    means = (1 - t) * src + t * tgt
    org = list(ORGANS)
    means[org] = means[MUSCLE] + (means[org] - means[MUSCLE]) * (1.0 - 0.3 * h)
    # A blend is in neither unit; a scanner is calibrated in HU, so map the blended target linearly onto HU with
    # fat and kidney at their CT values. Affine, so the networks' z-score / CT normalisation sees the same image.
    hu = 0.0 < t < 1.0 and hu_units and domain == "target"
    scale = (tgt[KIDNEY] - tgt[FAT]) / (means[KIDNEY] - means[FAT]) if hu else 1.0
    return {
        "hu": (scale, tgt[FAT] - scale * means[FAT] if hu else 0.0),
        "means": means, "lo": means[AIR], "texture": (1 - t) * 15.0 * gain + t * 6.0,
        "tex_waves": _waves(rng, 6, 12.0), "bias_waves": _waves(rng, 3, 1.8),
        "bias": (1 - t) * rng.uniform(*MR_BIAS_RANGE), "blur_mm": t * CT_PSF_MM * (1 + 0.5 * h),
        "rician": (1 - t) * MR_RICIAN_SIGMA * gain, "gauss": t * CT_NOISE_HU * (1 + 0.8 * h),
    }


def make_case(rng: np.random.Generator, domain: str, severity: float,
              shape: tuple[int, int, int] = DEFAULT_SHAPE,
              spacing: tuple[float, float, float] | None = None, hu_units: bool = True,
              ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Generate one (image float32, label uint8, spacing) case in (z, y, x) order.

    ``severity`` only affects ``domain="target"``; thick slices are simulated by averaging three sub-slice samples
    (partial volume) while labels use the centre. ``spacing`` defaults to ``spacing_for(shape)`` (the anatomy covers
    ``FOV_MM`` whatever the shape). A target blend (0 < severity < 1) is expressed in HU unless ``hu_units`` is False
    (the MRI-like target of ``ct2mr``).
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    if not 0.0 <= severity <= 2.0:
        raise ValueError(f"severity must lie in [0, 2], got {severity}")
    spacing = spacing_for(shape) if spacing is None else spacing
    nz = shape[0]
    anat = _draw_anatomy(rng)
    app = _appearance(rng, domain, severity, hu_units)
    axis = [((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1) for n in shape]
    y, x = axis[1][None, :, None], axis[2][None, None, :]
    grid = np.broadcast_arrays(axis[0][:, None, None], y, x)
    tex = app["texture"] * _field(app["tex_waves"], grid)
    img = np.zeros(shape, np.float64)
    label = None
    for dz in (0.0, -2.0 / (3 * nz), 2.0 / (3 * nz)):
        tissue, lab = _anatomy(anat, (axis[0] + dz)[:, None, None], y, x)
        label = lab if label is None else label
        img += app["means"][tissue] + tex * (tissue != AIR)
    img /= 3.0
    lo = app["lo"]
    bias = np.exp(app["bias"] * _field(app["bias_waves"], grid))
    img = lo + (img - lo) * bias
    if app["blur_mm"] > 0:
        img = ndimage.gaussian_filter(img, (0.0, app["blur_mm"] / spacing[1], app["blur_mm"] / spacing[2]))
    if app["rician"] > 0:
        n1, n2 = rng.normal(0.0, app["rician"], (2,) + tuple(shape))
        img = lo + np.sqrt((img - lo + n1) ** 2 + n2 ** 2)
    if app["gauss"] > 0:
        white = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), (0.0, 0.8, 0.8))
        img += app["gauss"] * white / white.std()
        img = np.maximum(img, lo - 24.0)
    scale, offset = app["hu"]
    return (img * scale + offset).astype(np.float32), label, tuple(float(s) for s in spacing)


def write_nifti(arr: np.ndarray, spacing: tuple[float, float, float], path: str) -> None:
    """Write .nii.gz byte-reproducibly: ITK writes plain .nii, we gzip with mtime=0."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    plain = path[: -len(".gz")]
    sitk.WriteImage(img, plain, useCompression=False)
    with open(plain, "rb") as f:
        data = f.read()
    os.remove(plain)
    with open(path, "wb") as f:
        f.write(gzip.compress(data, compresslevel=6, mtime=0))


def _dataset_json(channel: str, n_training: int, description: str) -> dict:
    """Minimal nnU-Net v2 dataset.json; both domains share labels so one model serves both."""
    return {"channel_names": {"0": channel}, "labels": dict(LABELS), "numTraining": n_training,
            "file_ending": ".nii.gz", "description": description}


def _check_free(raw_root: str, dataset_id: int) -> None:
    """Refuse any existing DatasetXXX_* folder: overwriting, or a second folder with
    the same id (which makes nnU-Net's id lookup ambiguous), would hurt user data."""
    taken = datasets_with_id(Path(raw_root), dataset_id)
    if taken:
        raise FileExistsError(f"{taken[0]} already exists; refusing to overwrite it")


def write_benchmark(raw_root: str, source_id: int = 701, target_id: int = 702, n_source: int = 16,
                    n_target: int = 16, n_target_test: int = 16, severity: float = DEFAULT_SEVERITY, seed: int = 0,
                    shape: tuple[int, int, int] = DEFAULT_SHAPE, direction: str = "mr2ct") -> dict:
    """Write the source dataset, the unlabelled target dataset and hidden target labels.

    Everything is built in a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half-written dataset that nnU-Net would pick up.
    Per-case generators are spawned from one ``default_rng(seed)``, so the same seed
    gives byte-identical files. ``direction`` (``DIRECTIONS``) picks which domain is MRI-like and which CT.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if direction == "ct2mr" and not 0.0 <= severity <= 1.0:
        raise ValueError(f"direction 'ct2mr' needs severity in [0, 1], got {severity}")
    if source_id == target_id:
        raise ValueError("source_id and target_id must differ")
    src_name, tgt_name = f"Dataset{source_id:03d}_DFGSynthSource", f"Dataset{target_id:03d}_DFGSynthTarget"
    hidden_root = os.path.join(raw_root, "_hidden_labels")
    _check_free(raw_root, source_id)
    _check_free(raw_root, target_id)
    if os.path.exists(os.path.join(hidden_root, tgt_name)):
        raise FileExistsError(f"{os.path.join(hidden_root, tgt_name)} already exists; refusing to overwrite it")
    os.makedirs(raw_root, exist_ok=True)

    rngs = np.random.default_rng(seed).spawn(n_source + n_target + n_target_test)
    src_cases = [f"case_{i:04d}" for i in range(n_source)]
    tgt_cases = [f"case_{i:04d}" for i in range(n_target)]
    test_cases = [f"case_{i:04d}" for i in range(n_target, n_target + n_target_test)]
    # not nnunet_io.atomic_folder: three folders (source, target, hidden labels) are published, or rolled back, together
    tmp = tempfile.mkdtemp(prefix=".dfg_synth_tmp_", dir=raw_root)
    moved: list[tuple[str, str]] = []
    try:
        src, tgt, hid = (os.path.join(tmp, src_name), os.path.join(tmp, tgt_name),
                         os.path.join(tmp, "_hidden_labels", tgt_name))
        for d in ("imagesTr", "labelsTr"):
            os.makedirs(os.path.join(src, d))
            os.makedirs(os.path.join(hid, d))
        os.makedirs(os.path.join(hid, "labelsTs"))
        for d in ("imagesTr", "imagesTs"):
            os.makedirs(os.path.join(tgt, d))
        jobs = [(src, "imagesTr", "labelsTr", c, "source") for c in src_cases]
        jobs += [(tgt, "imagesTr", "labelsTr", c, "target") for c in tgt_cases]
        jobs += [(tgt, "imagesTs", "labelsTs", c, "target") for c in test_cases]
        for rng, (root, img_dir, lab_dir, case, domain) in zip(rngs, jobs):
            if direction == "mr2ct":
                img, lab, spacing = make_case(rng, domain, severity, shape)
            else:  # CT source (severity 1), target blended back towards the MRI appearance
                img, lab, spacing = make_case(rng, "target", 1.0 if domain == "source" else 1.0 - severity, shape,
                                              hu_units=False)
            write_nifti(img, spacing, os.path.join(root, img_dir, f"{case}_0000.nii.gz"))
            lab_root = src if domain == "source" else hid
            write_nifti(lab, spacing, os.path.join(lab_root, lab_dir, f"{case}.nii.gz"))
        meta = f"DFG synthetic benchmark, seed={seed}, severity={severity}, shape={list(shape)}"
        if direction != "mr2ct":  # the default's description (and so its files) stays as it was
            meta += f", direction={direction}"
        channels = ("MRI", "CT") if direction == "mr2ct" else ("CT", "MRI")
        for root, channel, n in ((src, channels[0], n_source), (tgt, channels[1], n_target)):
            with open(os.path.join(root, "dataset.json"), "w") as f:
                json.dump(_dataset_json(channel, n, meta), f, indent=2)

        os.makedirs(hidden_root, exist_ok=True)
        for a, b in ((hid, os.path.join(hidden_root, tgt_name)), (src, os.path.join(raw_root, src_name)),
                     (tgt, os.path.join(raw_root, tgt_name))):
            if os.path.exists(b):
                raise FileExistsError(f"{b} appeared while writing; refusing to overwrite it")
            os.rename(a, b)
            moved.append((a, b))
    except BaseException:
        for a, b in reversed(moved):  # undo partial publication
            os.rename(b, a)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "source_dir": os.path.join(raw_root, src_name), "target_dir": os.path.join(raw_root, tgt_name),
        "target_labels_tr_dir": os.path.join(hidden_root, tgt_name, "labelsTr"),
        "target_labels_ts_dir": os.path.join(hidden_root, tgt_name, "labelsTs"),
        "source_cases": src_cases, "target_cases": tgt_cases, "target_test_cases": test_cases,
    }
