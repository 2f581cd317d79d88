"""All constants of the DFG box-prompt search and of the SDG box filter, in one typed place.

Defaults are the reference values of the published code (xmed-lab/DFG ``target_adapt_SAM_trainer.py`` and the SDG
paper); every deliberate deviation is documented where it is implemented, not by changing a default here.
The DFG pixel constants are those of the reference's 256 x 256 slices; the search scales them to each slice
(``DFGConfig.for_slice``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping


def _reference_max_steps() -> Mapping[int, int]:
    # Reference: spleen 25, right kidney 20, left kidney 20, liver 35 ("estimated max area of each class").
    return MappingProxyType({1: 25, 2: 20, 3: 20, 4: 35})


# pixel counts scale with the slice area, distances with its side (the neighbour radius separately: for_slice)
AREA_FIELDS = ("presence_min_pixels", "stage1_min_mask", "stage1_tol_two_step", "stage1_tol_one_step",
               "stage2_tol_three_step", "stage2_tol_two_step", "stage2_tol_one_step")
DISTANCE_FIELDS = ("box_margin", "stage3_inflate_px")


def scale_distance(px: int, side: float) -> int:
    """A distance of ``px`` reference pixels on a slice ``side`` x larger, rounded half up, at least 1 when ``px``
    is (a 0.75 px margin still widens the box; an explicit 0 stays 0)."""
    return 0 if px <= 0 else max(1, math.floor(px * side + 0.5))


@dataclass(frozen=True)
class DFGConfig:
    """Dual-feature-guided prompt search constants (METHOD.md, DFG step 3).

    Pixel counts and distances are for ``reference_side`` x ``reference_side`` slices (the reference resized every
    slice to 256 x 256); the search uses ``for_slice(shape)``, which scales them to the slice. Overrides are given
    at that side too; ``reference_side=0`` takes them as plain pixels of every slice.
    """

    # presence and seed
    presence_prob: float = 0.8          # a pixel counts as confident when P_c > presence_prob
    presence_min_pixels: float = 200    # class present when at least this many confident pixels
    seed_tolerance: float = 0.005       # seed = {P_c > max(P_c) - seed_tolerance}
    # neighbour graph and boxes
    neighbour_radius: int = 4           # offsets with dx^2 + dy^2 < radius^2 (scaled through radius - 1)
    box_margin: int = 3                 # bbox(region) grown by this many pixels per side, clipped to the slice
    # stage 1: target-model features
    stage1_cos_threshold: float = 0.99  # neighbour joins when cos(F_p, F_q) > threshold
    max_steps: Mapping[int, int] = field(default_factory=_reference_max_steps)
    default_max_steps: int = 25         # classes without an entry in max_steps
    stage1_min_mask: float = 50         # a stage-1 mask must have more pixels than this to be stable
    stage1_tol_two_step: float = 35     # changed pixels vs the mask two steps back
    stage1_tol_one_step: float = 15     # changed pixels vs the previous mask
    # stage 2: SAM features
    stage2_factor: float = 2.5          # t = min(factor * avg distance, cap)
    stage2_cap: float = 0.35
    stage2_tol_three_step: float = 45   # mask vs three steps back -> return the middle mask
    stage2_tol_two_step: float = 30     # fallbacks once the box stops growing (also used by stage 3)
    stage2_tol_one_step: float = 15
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
    # project option, off in the reference (ties between refined masks go to the lower class index): a pixel two
    # refined masks claim goes to the class the model finds likelier there (a growing box that takes in the
    # adjacent organ, benchmarks/ANALYSIS.md)
    overlap_by_probability: bool = False
    # the slice side the pixel constants above are given for; 0 = they are pixels of every slice (not scaled)
    reference_side: int = 256

    def __post_init__(self) -> None:
        # a dict passed by the caller is frozen too (read-only view of a private copy)
        object.__setattr__(self, "max_steps", MappingProxyType({int(k): int(v) for k, v in self.max_steps.items()}))
        for name in ("max_growth", "max_shrink"):
            value = getattr(self, name)
            if not value == 0 and not value >= 1:  # NaN fails both
                raise ValueError(f"{name} must be 0 (off) or at least 1, got {value}")
        if not isinstance(self.overlap_by_probability, bool):
            raise ValueError(f"overlap_by_probability must be true or false, got {self.overlap_by_probability!r}")
        if not self.reference_side >= 0:
            raise ValueError(f"reference_side must be 0 (no scaling) or a slice side, got {self.reference_side}")

    def for_slice(self, shape: tuple[int, int]) -> DFGConfig:
        """The constants in pixels of a (H, W) slice, with ``reference_side=0`` (so applying it twice is harmless).

        ``s = sqrt(H * W) / reference_side``: the reference resized slices to a square, so one of its pixels is
        (H / reference_side) x (W / reference_side) of ours, of area s^2. Counts are multiplied by s^2 and stay
        floats: the rules compare integer counts with >=, > and <, so a slice upsampled 2x (4x every count) takes
        the same decisions, and a tolerance under 1 px means "identical masks". Distances are rounded half up, at
        least 1 px (``scale_distance``). The neighbour radius is scaled through its reach (largest axis offset,
        radius - 1 = 3 at 256 px), so that a box grows by s x the reference's 3 px per step (exactly when 3s is
        whole); a reach of at least 1 keeps the 8-neighbours (radius 2 at 64 px).
        """
        if not self.reference_side:
            return self
        height, width = shape
        area = height * width / float(self.reference_side) ** 2
        side = math.sqrt(height * width) / self.reference_side
        counts = {name: getattr(self, name) * area for name in AREA_FIELDS}
        distances = {name: scale_distance(getattr(self, name), side) for name in DISTANCE_FIELDS}
        radius = scale_distance(self.neighbour_radius - 1, side) + 1
        return replace(self, **counts, **distances, neighbour_radius=radius, reference_side=0)

    def steps_for(self, cls: int) -> int:
        """Per-class step budget of stages 1 and 2 (the reference uses the same table for both)."""
        return int(self.max_steps.get(int(cls), self.default_max_steps))

    @property
    def neighbour_radius_sq(self) -> int:
        return self.neighbour_radius * self.neighbour_radius


EMPTY_BOXES = ("none", "full")  # SDGConfig.empty_box


@dataclass(frozen=True)
class SDGConfig:
    """SDG refined-box constants (METHOD.md, SDG step 2) plus the plain-box baseline threshold."""

    threshold: float = 0.75      # theta1 on the downscaled probability map
    downscale: int = 128         # longer side of the downscaled map; maps already this small are not resized
    plain_threshold: float = 0.5  # "box" baseline: bbox of every pixel above this
    score_refined: float = 2.0
    score_unrefined: float = 1.0
    score_background: float = 0.5
    # where a class's thresholded map is empty on a slice: "none" = no box (the model's argmax is kept), "full" =
    # the whole slice as its box, as the SDG reference (only for classes boxed somewhere in the volume:
    # sdg.volume_boxes)
    empty_box: str = "none"

    def __post_init__(self) -> None:
        if self.empty_box not in EMPTY_BOXES:
            raise ValueError(f"empty_box (--empty-box) must be {' or '.join(EMPTY_BOXES)}, got {self.empty_box}")
