"""What SAM sees: the raw target intensities of a volume, windowed by modality (pure functions, no I/O).

Why not the network's input: nnU-Net's normalisation is the *source's* (a z-scored or CT-normalised channel), and
an unwindowed CT spans -1000..3000 HU, so per-slice min-max would leave soft tissue in a few grey levels. The DFG
and MedSAM references window the raw image before SAM: CT to a soft-tissue window ([-125, 275] HU), MR to the
0.5-99.5 percentiles of its non-zero voxels (MedSAM's ``pre_CT_MR.py``). The result lies in [0, 1]; every backend
then min-max scales each slice to 0..255 as before (``transforms.preprocess_slice``), as the references do.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["SAM_INTENSITIES", "DEFAULT_CT_WINDOW", "MR_PERCENTILES", "parse_window", "check_intensity",
           "modality_from_channel", "resolve_modality", "ct_window", "mr_window", "sam_image"]

SAM_INTENSITIES = ("auto", "ct", "mr")
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
    """``ct``/``mr`` as given, or with ``auto`` from channel 0 of ``dataset_json`` (MR-like without one)."""
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


def sam_image(image: np.ndarray, modality: str, window: tuple[float, float] | None = None) -> np.ndarray:
    """A raw volume (any shape) -> SAM's intensities in [0, 1]: ``ct_window`` (``window`` or the default) for
    ``ct``, ``mr_window`` for ``mr``."""
    if modality == "ct":
        return ct_window(image, window or DEFAULT_CT_WINDOW)
    if modality == "mr":
        return mr_window(image)
    raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
