"""Where the search may start: the presence test and the seed region of one class on one slice."""
from __future__ import annotations

import numpy as np

from .masks import largest_component


def confident_pixels(prob: np.ndarray, threshold: float = 0.8) -> int:
    """Number of pixels with ``P_c > threshold``."""
    return int(np.count_nonzero(np.asarray(prob) > threshold))


def is_present(prob: np.ndarray, threshold: float = 0.8, min_pixels: float = 200) -> bool:
    """A class is searched only when at least ``min_pixels`` pixels are confident; else the model's own
    prediction is kept (small or unsure organs give boxes SAM cannot anchor)."""
    return confident_pixels(prob, threshold) >= min_pixels


def seed_region(prob: np.ndarray, tolerance: float = 0.005) -> np.ndarray:
    """Largest filled 8-connected region of ``{P_c > max(P_c) - tolerance}``: the most certain core of the class,
    from which the feature-guided growth starts. Never empty (the maximum pixel always qualifies)."""
    prob = np.asarray(prob, dtype=np.float64)
    return largest_component(prob > prob.max() - tolerance, fill_holes=True)
