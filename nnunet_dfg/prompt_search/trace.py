"""Result and trace records of the per-slice searches, so every refined (or kept) mask can be explained."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .masks import Box

# stage codes of ClassTrace.stage
STAGE_NONE = 0


@dataclass(frozen=True)
class StepRecord:
    """One decoded step: which stage, the box, the (post-processed) SAM mask area and the changed-pixel counts
    against 1, 2 and 3 masks back in that stage's history (None where not defined or not used)."""

    stage: int
    step: int
    box: Box
    area: int
    changed_1: int | None = None
    changed_2: int | None = None
    changed_3: int | None = None


@dataclass
class ClassTrace:
    """How one class ended on one slice.

    ``stage`` is the stage whose mask was kept (1, 2 or 3) or 0 when the model's prediction was kept; ``reason``
    says why (e.g. "absent", "stable two-step", "max steps", "no stable box", a mask outside the area bounds).
    """

    cls: int
    present: bool
    confident_pixels: int = 0
    stage: int = STAGE_NONE
    reason: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    discarded_area: int = 0  # a refined mask of this many pixels was outside max_growth/max_shrink (0: none)
    box: Box | None = None   # the prompt box whose SAM mask was kept (None: the model's prediction was kept)
    iou: float | None = None  # SAM's predicted IoU of that mask, where the segmenter exposes it

    @property
    def refined(self) -> bool:
        return self.stage != STAGE_NONE

    def boxes(self, stage: int | None = None) -> list[Box]:
        return [s.box for s in self.steps if stage is None or s.stage == stage]

    def changes(self, stage: int | None = None) -> list[tuple[int | None, int | None, int | None]]:
        return [(s.changed_1, s.changed_2, s.changed_3) for s in self.steps if stage is None or s.stage == stage]


@dataclass
class SliceResult:
    """Merged (H, W) uint8 label map, the refined masks by class, one trace per foreground class, and the decoder
    work spent (boxes actually decoded, segmenter launches, image-encoder passes)."""

    label: np.ndarray
    refined: dict[int, np.ndarray]
    traces: dict[int, ClassTrace]
    decoder_calls: int = 0
    decoder_launches: int = 0
    encoder_calls: int = 0
