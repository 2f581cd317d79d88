"""All constants of the DFG box-prompt search and of the SDG box filter, in one typed place.

Defaults are the reference values of the published code (xmed-lab/DFG ``target_adapt_SAM_trainer.py`` and the SDG
paper); every deliberate deviation is documented where it is implemented, not by changing a default here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


def _reference_max_steps() -> Mapping[int, int]:
    # Reference: spleen 25, right kidney 20, left kidney 20, liver 35 ("estimated max area of each class").
    return MappingProxyType({1: 25, 2: 20, 3: 20, 4: 35})


@dataclass(frozen=True)
class DFGConfig:
    """Dual-feature-guided prompt search constants (METHOD.md, DFG step 3)."""

    # presence and seed
    presence_prob: float = 0.8          # a pixel counts as confident when P_c > presence_prob
    presence_min_pixels: int = 200      # class present when at least this many confident pixels
    seed_tolerance: float = 0.005       # seed = {P_c > max(P_c) - seed_tolerance}
    # neighbour graph and boxes
    neighbour_radius: int = 4           # offsets with dx^2 + dy^2 < radius^2
    box_margin: int = 3                 # bbox(region) grown by this many pixels per side, clipped to the slice
    # stage 1: target-model features
    stage1_cos_threshold: float = 0.99  # neighbour joins when cos(F_p, F_q) > threshold
    max_steps: Mapping[int, int] = field(default_factory=_reference_max_steps)
    default_max_steps: int = 25         # classes without an entry in max_steps
    stage1_min_mask: int = 50           # a stage-1 mask must have more pixels than this to be stable
    stage1_tol_two_step: int = 35       # changed pixels vs the mask two steps back
    stage1_tol_one_step: int = 15       # changed pixels vs the previous mask
    # stage 2: SAM features
    stage2_factor: float = 2.5          # t = min(factor * avg distance, cap)
    stage2_cap: float = 0.35
    stage2_tol_three_step: int = 45     # mask vs three steps back -> return the middle mask
    stage2_tol_two_step: int = 30       # fallbacks once the box stops growing (also used by stage 3)
    stage2_tol_one_step: int = 15
    # stage 3: box inflation
    stage3_inflate_px: int = 2
    stage3_steps: int = 6
    # merge scores
    score_refined: float = 2.0
    score_unrefined: float = 1.0
    score_background: float = 0.5
    # SAM masks: keep the largest 8-connected region and fill its holes (reference KeepMaxContour fills)
    fill_mask_holes: bool = True
    # project option, off (0) in the reference: a refined mask larger than max_growth x the model's own mask of
    # the class on the slice is discarded and the model's prediction kept (leaking masks, benchmarks/ANALYSIS.md)
    max_growth: float = 0.0
    # project option, off (0): its mirror image, a refined mask smaller than the model's own by more than
    # max_shrink x (a stage-1 seed that never grows gives a tiny box, and a tiny mask is "stable" too)
    max_shrink: float = 0.0

    def __post_init__(self) -> None:
        # a dict passed by the caller is frozen too (read-only view of a private copy)
        object.__setattr__(self, "max_steps", MappingProxyType({int(k): int(v) for k, v in self.max_steps.items()}))
        for name in ("max_growth", "max_shrink"):
            value = getattr(self, name)
            if not value == 0 and not value >= 1:  # NaN fails both
                raise ValueError(f"{name} must be 0 (off) or at least 1, got {value}")

    def steps_for(self, cls: int) -> int:
        """Per-class step budget of stages 1 and 2 (the reference uses the same table for both)."""
        return int(self.max_steps.get(int(cls), self.default_max_steps))

    @property
    def neighbour_radius_sq(self) -> int:
        return self.neighbour_radius * self.neighbour_radius


@dataclass(frozen=True)
class SDGConfig:
    """SDG refined-box constants (METHOD.md, SDG step 2) plus the plain-box baseline threshold."""

    threshold: float = 0.75      # theta1 on the downscaled probability map
    downscale: int = 128         # longer side of the downscaled map; maps already this small are not resized
    plain_threshold: float = 0.5  # "box" baseline: bbox of every pixel above this
    score_refined: float = 2.0
    score_unrefined: float = 1.0
    score_background: float = 0.5
