"""Box-prompt search for SAM/MedSAM pseudo-label refinement: DFG (dual-feature-guided), SDG and plain boxes.

Pure numpy/scipy, no file I/O; the segmenter is any object with ``embed(image2d)`` and
``segment(embedding, boxes) -> (N, H, W) bool`` whose embedding has ``features() -> (C, H, W)``.
"""
from .config import DFGConfig, SDGConfig
from .postprocess import largest_component_per_class
from .sdg import BOX_PROMPTS, box_slice_result, class_boxes, plain_box, sdg_box, volume_boxes, whole_slice_box
from .search import refine_slice
from .trace import ClassTrace, SliceResult, StepRecord

__all__ = [
    "BOX_PROMPTS",
    "ClassTrace",
    "DFGConfig",
    "SDGConfig",
    "SliceResult",
    "StepRecord",
    "box_slice_result",
    "class_boxes",
    "largest_component_per_class",
    "plain_box",
    "refine_slice",
    "sdg_box",
    "volume_boxes",
    "whole_slice_box",
]
