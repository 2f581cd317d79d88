"""Box-prompt search for SAM/MedSAM pseudo-label refinement: DFG (dual-feature-guided), SDG and plain boxes.

Pure numpy/scipy, no file I/O; the segmenter is any object with ``embed(image2d)`` and
``segment(embedding, boxes) -> (N, H, W) bool`` whose embedding has ``features() -> (C, H, W)``.
"""
from .config import DFGConfig, SDGConfig
from .postprocess import largest_component_per_class
from .sdg import plain_box, refine_slice_box, refine_slice_sdg, sdg_box
from .search import refine_slice
from .trace import ClassTrace, SliceResult, StepRecord

__all__ = [
    "ClassTrace",
    "DFGConfig",
    "SDGConfig",
    "SliceResult",
    "StepRecord",
    "largest_component_per_class",
    "plain_box",
    "refine_slice",
    "refine_slice_box",
    "refine_slice_sdg",
    "sdg_box",
]
