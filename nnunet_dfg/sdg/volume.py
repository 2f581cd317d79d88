"""Former home of the tiled SDG refinement, now ``nnunet_dfg.volume.refine_volume(..., tile=n)``; kept as a thin
alias because ``benchmarks/speed_ratios.py`` imports it from here."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..volume import VolumeResult, refine_volume


def refine_volume_tiled(image: np.ndarray, probs: np.ndarray, segmenter: Any, prompt: str = "sdg", config=None,
                        tile: int = 2, slices=None, on_slice=None) -> VolumeResult:
    return refine_volume(image, probs, None, segmenter, prompt, config, slices, on_slice, tile=tile)
