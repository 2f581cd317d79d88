"""Run a per-slice prompt search over a whole volume (pure: arrays in, label map and traces out).

The searches are 2D (the DFG/SDG references work on axial slices), so a 3D prediction is refined slice by slice
along axis 0 of nnU-Net's network grid, which is the axis its 2d configuration slices along too. Slices are
independent: a volume's result does not depend on which other cases or slices were processed before it, which is
what makes resumed runs reproduce uninterrupted ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ..prompt_search import (DFGConfig, SDGConfig, SliceResult, refine_slice, refine_slice_box,
                             refine_slice_sdg)

Prompt = Literal["dfg", "sdg", "box"]
PROMPTS: tuple[str, ...] = ("dfg", "sdg", "box")


@dataclass
class VolumeResult:
    """Merged (Z, H, W) uint8 labels; the result of every searched slice; the slices left to the model."""

    label: np.ndarray
    slices: dict[int, SliceResult] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)

    def total(self, counter: str) -> int:
        """Sum of a SliceResult counter (``encoder_calls``, ``decoder_calls``, ``decoder_launches``)."""
        return int(sum(getattr(r, counter) for r in self.slices.values()))


def default_config(prompt: str) -> DFGConfig | SDGConfig:
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    return DFGConfig() if prompt == "dfg" else SDGConfig()


def select_slices(probs: np.ndarray, max_slices: int | None, threshold: float = 0.5) -> list[int]:
    """All slices, or the ``max_slices`` with the most foreground pixels above ``threshold`` (ties: lower index).

    A debugging/testing budget: the search costs seconds per slice on a CPU, and the slices with most foreground
    are the ones whose search is worth looking at. Returned in slice order.
    """
    n = probs.shape[1]
    if max_slices is None or max_slices >= n:
        return list(range(n))
    counts = (probs[1:] > threshold).sum(axis=(0, 2, 3))
    order = sorted(range(n), key=lambda z: (-int(counts[z]), z))
    return sorted(order[:max(0, max_slices)])


def refine_volume(image: np.ndarray, probs: np.ndarray, features: np.ndarray | None, segmenter: Any,
                  prompt: str = "dfg", config: DFGConfig | SDGConfig | None = None,
                  slices: Sequence[int] | None = None,
                  on_slice: Callable[[int, SliceResult], None] | None = None) -> VolumeResult:
    """Refine ``probs`` (K, Z, H, W) slice by slice; ``image`` (Z, H, W) is what the segmenter sees.

    ``features`` (C, Z, H, W) are the target model's decoder features (needed by ``dfg`` only). Slices not in
    ``slices`` keep the model's argmax. ``on_slice`` is called after every searched slice (progress bars).
    """
    config = config or default_config(prompt)
    if prompt == "dfg" and not isinstance(config, DFGConfig):
        raise TypeError("prompt 'dfg' needs a DFGConfig")
    if prompt in ("sdg", "box") and not isinstance(config, SDGConfig):
        raise TypeError(f"prompt {prompt!r} needs an SDGConfig")
    if probs.ndim != 4 or image.shape != probs.shape[1:]:
        raise ValueError(f"image {image.shape} and probabilities {probs.shape} do not match")
    if prompt == "dfg" and (features is None or features.shape[1:] != probs.shape[1:]):
        raise ValueError("prompt 'dfg' needs features on the probability grid")
    label = np.argmax(probs, axis=0).astype(np.uint8)
    wanted = list(range(probs.shape[1])) if slices is None else sorted(set(int(z) for z in slices))
    result = VolumeResult(label=label, skipped=[z for z in range(probs.shape[1]) if z not in set(wanted)])
    for z in wanted:
        if prompt == "dfg":
            r = refine_slice(image[z], probs[:, z], features[:, z], segmenter, config)
        elif prompt == "sdg":
            r = refine_slice_sdg(image[z], probs[:, z], segmenter, config)
        else:
            r = refine_slice_box(image[z], probs[:, z], segmenter, config)
        label[z] = r.label
        result.slices[z] = r
        if on_slice is not None:
            on_slice(z, r)
    return result
