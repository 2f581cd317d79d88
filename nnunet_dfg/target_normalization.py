"""The target's intensity normalisation when its modality differs from the source's (``prepare-target``).

Why: the source plans normalise for the source's modality. A CT target z-scored like an MR source has statistics
dominated by the air around the body, which squeezes soft tissue into a sliver of the range; an MR target clipped
and scaled with a CT source's HU percentiles (``CTNormalization``) saturates. So, per channel, where the target's dataset.json
names another modality than the source's scheme was planned for (nnU-Net's convention: channel "CT" ->
``CTNormalization``, anything else -> ``ZScoreNormalization``):

- CT target, z-scored source: ``CTNormalization`` with the target's own statistics, the ones nnU-Net's fingerprint
  computes (0.5/99.5 percentiles to clip to, mean and std to scale by), but over the target's *body* voxels
  (> ``BODY_MIN_HU``, -500 HU: air and lung out, fat, soft tissue and bone in) instead of the labelled foreground
  an unlabelled target lacks. A fixed soft-tissue window would saturate whatever lies above it (enhanced kidneys,
  the synthetic benchmark's blended organs) into one grey.
- MR-like target, CT source: ``ZScoreNormalization`` (per image, nnU-Net's default for non-CT channels).

Everything goes through the plans the target uses (``normalization_schemes`` of every configuration and
``foreground_intensity_properties_per_channel``), so nnU-Net's trainer and predictor apply it unchanged and copy
it into the adapted models. The network's architecture and all other plans entries stay the source's.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .sam.intensity import modality_from_channel

CT, ZSCORE = "CTNormalization", "ZScoreNormalization"
BODY_MIN_HU = -500.0  # voxels above this are the body (air about -1000 HU, lung -900..-500, fat about -100)
SAMPLES_PER_CASE = 100_000  # body voxels drawn per case for the statistics (nnU-Net's fingerprint: 10,000)


def planned_modality(scheme: str) -> str | None:
    """The modality a scheme of nnU-Net's default planning was chosen for (None: another scheme, kept as is)."""
    return {CT: "ct", ZSCORE: "mr"}.get(scheme)


def changed_channels(plans: Mapping, target_channels: Mapping | None) -> dict[str, dict]:
    """``{channel: {"source": scheme, "target": scheme, "modality": m}}`` for every channel whose target modality
    differs from what the source's scheme (first configuration that has one) was planned for."""
    if not target_channels:
        return {}
    schemes = next((c["normalization_schemes"] for c in plans["configurations"].values()
                    if "normalization_schemes" in c), [])
    out = {}
    for i, scheme in enumerate(schemes):
        name = target_channels.get(str(i))
        planned = planned_modality(scheme)
        if name is None or planned is None:
            continue
        modality = modality_from_channel(name)
        if modality != planned:
            out[str(i)] = {"source": scheme, "target": CT if modality == "ct" else ZSCORE, "modality": modality}
    return out


def ct_properties(values: np.ndarray) -> dict:
    """nnU-Net's intensity properties (the keys of its fingerprint) for ``CTNormalization`` from body voxels (HU)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or np.ptp(v) <= 0:
        raise ValueError(f"the target has no body voxels above {BODY_MIN_HU:g} HU to normalise by: is it really CT?")
    low, high = (float(x) for x in np.percentile(v, (0.5, 99.5)))
    return {"max": float(v.max()), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "percentile_00_5": low, "percentile_99_5": high, "std": float(max(v.std(), 1e-8))}


def sample_body(images: Iterable[np.ndarray], per_case: int = SAMPLES_PER_CASE, seed: int = 0) -> np.ndarray:
    """Up to ``per_case`` body voxels (> ``BODY_MIN_HU``) of each image; a fixed-seed draw, so reruns (resumed
    or other parts) write the same plans."""
    rng = np.random.default_rng(seed)
    parts = []
    for image in images:
        v = np.asarray(image).ravel()
        v = v[v > BODY_MIN_HU]
        parts.append(v if v.size <= per_case else rng.choice(v, per_case, replace=False))
    return np.concatenate(parts) if parts else np.zeros(0)


def target_plans(plans: Mapping, changes: Mapping[str, dict],
                 read_channel: Callable[[int], Iterable[np.ndarray]]) -> dict:
    """A copy of ``plans`` with ``changes`` applied to every configuration; ``read_channel(i)`` yields the target
    images' channel ``i`` (only called for channels that become CT)."""
    out = copy.deepcopy(dict(plans))
    for channel, change in changes.items():
        i = int(channel)
        for cfg in out["configurations"].values():
            if "normalization_schemes" in cfg:
                cfg["normalization_schemes"][i] = change["target"]
        if change["target"] == CT:
            out["foreground_intensity_properties_per_channel"][channel] = ct_properties(
                sample_body(read_channel(i)))
    return out


def image_channel_reader(cases: Mapping[str, Sequence[Path]], reader_class) -> Callable[[int], Iterable]:
    """``read_channel(i)`` for :func:`target_plans`: channel ``i`` of every case, one image in memory at a time,
    read with the plans' reader."""
    def read_channel(i: int) -> Iterable[np.ndarray]:
        return (reader_class().read_images([str(files[i])])[0][0] for files in cases.values())
    return read_channel
