"""What SAM sees: the raw target intensities of a volume, windowed by modality (pure functions, no I/O).

Why not the network's input: nnU-Net's normalisation is the *source's* (a z-scored or CT-normalised channel), and
an unwindowed CT spans -1000..3000 HU, so per-slice min-max would leave soft tissue in a few grey levels. The DFG
and MedSAM references window the raw image before SAM: CT to a soft-tissue window ([-125, 275] HU), MR to the
0.5-99.5 percentiles of its non-zero voxels (MedSAM's ``pre_CT_MR.py``). The result lies in [0, 1]; every backend
then min-max scales each slice to 0..255 as before (``transforms.preprocess_slice``), as the references do.

``equalize`` is the SDG reference's input instead (``utils/prostate_resnet_bbox.py``): every slice on its own
min-max scaled, rounded to 8 bits, histogram-equalised with torchvision's ``equalize`` (PIL's ``ImageOps.equalize``
rule, reproduced exactly by :func:`equalize_uint8`; ``skimage.exposure.equalize_hist`` is a different rule) and
divided by 255. It needs no modality: it is the reference's answer to intensity shift between sites.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["SAM_INTENSITIES", "DEFAULT_CT_WINDOW", "MR_PERCENTILES", "parse_window", "check_intensity",
           "modality_from_channel", "resolve_modality", "ct_window", "mr_window", "equalize_uint8",
           "equalize_slices", "sam_image"]

SAM_INTENSITIES = ("auto", "ct", "mr", "equalize")
DEFAULT_CT_WINDOW = (-125.0, 275.0)  # HU, the DFG reference's soft-tissue window (level 75, width 400)
MR_PERCENTILES = (0.5, 99.5)


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``"LOW,HIGH"`` (HU) -> (low, high); None stays None (the default window). ValueError on anything else."""
    if text is None:
        return None
    parts = str(text).split(",")
    try:
        low, high = (float(p) for p in parts) if len(parts) == 2 else (float("nan"), float("nan"))
    except ValueError:
        low = high = float("nan")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"--sam-window must be LOW,HIGH with finite LOW < HIGH (HU), got {text!r}")
    return low, high


def check_intensity(value: str) -> str:
    """``--sam-intensity`` value, lower-cased; ValueError names the choices."""
    v = str(value).strip().lower()
    if v not in SAM_INTENSITIES:
        raise ValueError(f"--sam-intensity must be one of {', '.join(SAM_INTENSITIES)}, got {value!r}")
    return v


def modality_from_channel(name: str) -> str:
    """nnU-Net's convention: a channel named "CT" (any case) is CT; every other name is treated as MR-like
    (nnU-Net z-scores it; a percentile window suits any modality without calibrated units)."""
    return "ct" if str(name).strip().casefold() == "ct" else "mr"


def resolve_modality(intensity: str, dataset_json: Mapping | None) -> str:
    """``ct``/``mr``/``equalize`` as given, or with ``auto`` from channel 0 of ``dataset_json`` (MR-like without
    one)."""
    intensity = check_intensity(intensity)
    if intensity != "auto":
        return intensity
    channels = (dataset_json or {}).get("channel_names", (dataset_json or {}).get("modality", {}))
    return modality_from_channel(channels.get("0", channels.get(0, ""))) if channels else "mr"


def ct_window(image: np.ndarray, window: tuple[float, float] = DEFAULT_CT_WINDOW) -> np.ndarray:
    """Clip to ``window`` (HU) and scale it to [0, 1], float32: the same HU give the same grey in every slice."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"window must have low < high, got {window}")
    out = (np.asarray(image, dtype=np.float64) - low) / (high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def mr_window(image: np.ndarray, percentiles: tuple[float, float] = MR_PERCENTILES) -> np.ndarray:
    """Clip to the percentiles of the volume's non-zero voxels (all voxels if none is non-zero; zero is an MR
    scanner's background) and scale to [0, 1], float32. A constant volume maps to zeros."""
    arr = np.asarray(image, dtype=np.float64)
    values = arr[arr != 0]
    if values.size == 0:
        values = arr.ravel()
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if not high > low:
        return np.zeros(arr.shape, np.float32)
    return np.clip((arr - low) / (high - low), 0.0, 1.0).astype(np.float32)


def equalize_uint8(slice8: np.ndarray) -> np.ndarray:
    """256-bin histogram equalisation of one uint8 image, bit for bit torchvision's ``equalize`` of one channel
    (PIL's rule): step = floor(pixels outside the highest occupied bin / 255); grey g maps to
    floor((pixels below g + floor(step / 2)) / step), clipped to 255; step 0 (at most one other grey) leaves the
    image as it is."""
    slice8 = np.asarray(slice8)
    if slice8.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {slice8.dtype}")
    hist = np.bincount(slice8.ravel(), minlength=256).astype(np.int64)
    step = int(hist[hist != 0][:-1].sum()) // 255
    if step == 0:
        return slice8.copy()
    below = np.concatenate([[0], np.cumsum(hist)[:-1]])
    lut = np.minimum((below + step // 2) // step, 255).astype(np.uint8)
    return lut[slice8]


def equalize_slices(image: np.ndarray) -> np.ndarray:
    """The SDG reference's SAM input, per 2D slice (axis 0 of a volume, the axis SAM's slices are cut along; a 2D
    array is one slice): min-max to [0, 1], ``round(x * 255)`` to uint8, :func:`equalize_uint8`, / 255 -> float32
    in [0, 1]. Each slice is scaled on its own, so one slice's result does not depend on the others; a constant
    slice becomes zeros."""
    arr = np.asarray(image, dtype=np.float32)  # the reference scales in float32 (a torch float tensor)
    if arr.ndim not in (2, 3):
        raise ValueError(f"equalize needs a 2D slice or a (Z, Y, X) volume, got shape {arr.shape}")
    planes = arr.reshape((-1,) + arr.shape[-2:])
    out = np.empty(planes.shape, np.float32)
    for z, plane in enumerate(planes):
        low, high = plane.min(), plane.max()
        unit = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
        out[z] = equalize_uint8(np.round(unit * 255).astype(np.uint8)) / 255.0
    return out.reshape(arr.shape)


def sam_image(image: np.ndarray, modality: str, window: tuple[float, float] | None = None) -> np.ndarray:
    """A raw volume (any shape; ``equalize``: 2D or (Z, Y, X)) -> SAM's intensities in [0, 1]: ``ct_window``
    (``window`` or the default) for ``ct``, ``mr_window`` for ``mr``, :func:`equalize_slices` for ``equalize``."""
    if modality == "ct":
        return ct_window(image, window or DEFAULT_CT_WINDOW)
    if modality == "mr":
        return mr_window(image)
    if modality == "equalize":
        return equalize_slices(image)
    raise ValueError(f"modality must be 'ct', 'mr' or 'equalize', got {modality!r}")
