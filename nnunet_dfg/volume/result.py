"""What the volume engine returns, the prompt modes it knows, and the slice budget (pure)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..prompt_search import DFGConfig, SDGConfig, SliceResult

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
