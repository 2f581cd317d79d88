"""The per-case JSON report of a refinement: how every slice and class ended, and what it cost.

Pure conversion of search results to plain JSON types, so a pseudo-label can be explained (and a stage of the
method evaluated) without re-running anything.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Mapping

import numpy as np

from ..prompt_search import ClassTrace, SliceResult
from ..volume import VolumeResult


def voxel_counts(label: np.ndarray, labels: Mapping[str, int]) -> dict[str, int]:
    """Voxels per foreground class name (absent classes included, as 0)."""
    counts = np.bincount(np.asarray(label, dtype=np.int64).ravel(), minlength=max(labels.values()) + 1)
    return {name: int(counts[value]) for name, value in labels.items() if value != 0}


def class_record(trace: ClassTrace) -> dict:
    return {
        "present": bool(trace.present),
        "confident_pixels": int(trace.confident_pixels),
        "stage": int(trace.stage),
        "refined": bool(trace.refined),
        "reason": trace.reason,
        "box": None if trace.box is None else list(trace.box),  # the box whose SAM mask was kept
        "sam_iou": trace.iou,  # SAM's predicted IoU of that mask (None: not exposed by the segmenter)
        "n_steps": len(trace.steps),
        "steps": [{k: (list(v) if k == "box" else v) for k, v in asdict(s).items()} for s in trace.steps],
    }


def slice_record(result: SliceResult) -> dict:
    return {
        "encoder_calls": int(result.encoder_calls),
        "decoder_calls": int(result.decoder_calls),
        "decoder_launches": int(result.decoder_launches),
        "classes": {str(c): class_record(t) for c, t in sorted(result.traces.items())},
    }


def stage_summary(volume: VolumeResult) -> dict[str, dict[str, int]]:
    """Per class: on how many searched slices it ended in each stage ("0" = model prediction kept, "absent",
    "bound" = model prediction kept because the refined mask was outside the area bounds)."""
    out: dict[str, Counter] = {}
    for result in volume.slices.values():
        for cls, trace in result.traces.items():
            key = "absent" if not trace.present else "bound" if trace.discarded_area else str(trace.stage)
            out.setdefault(str(cls), Counter())[key] += 1
    return {c: dict(sorted(v.items())) for c, v in sorted(out.items(), key=lambda kv: int(kv[0]))}


def case_report(case: str, volume: VolumeResult, labels: Mapping[str, int], voxels: Mapping[str, dict],
                timings: Mapping[str, float], settings: Mapping) -> dict:
    """Everything known about one case; ``voxels`` maps a stage name to :func:`voxel_counts` output."""
    n = max(1, len(volume.slices))
    return {
        "case": case,
        "settings": dict(settings),
        "labels": dict(labels),
        "slices_searched": sorted(volume.slices),
        "slices_skipped": list(volume.skipped),
        "calls": {
            "encoder": volume.total("encoder_calls"),
            "decoder": volume.total("decoder_calls"),
            "decoder_launches": volume.total("decoder_launches"),
            "encoder_per_slice": volume.total("encoder_calls") / n,
            "decoder_per_slice": volume.total("decoder_calls") / n,
        },
        "voxels": {k: dict(v) for k, v in voxels.items()},
        "timings_s": {k: round(float(v), 3) for k, v in timings.items()},
        "stages": stage_summary(volume),
        "slices": {str(z): slice_record(r) for z, r in sorted(volume.slices.items())},
    }
