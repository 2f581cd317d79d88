"""One interface for box-prompted segmenters (LiteMedSAM, SAM, MedSAM).

``load_segmenter`` -> :class:`Segmenter`; ``Segmenter.embed`` a 2D slice once, then
``Segmenter.segment`` any number of (x0, y0, x1, y1) boxes on the :class:`Embedding`.
"""

from .build import SamParts
from .finetuned import build_parts
from .segmenter import Embedding, Segmenter, load_segmenter
from .transforms import FrameGeometry, PreprocessSpec

__all__ = [
    "Embedding",
    "FrameGeometry",
    "PreprocessSpec",
    "SamParts",
    "Segmenter",
    "build_parts",
    "load_segmenter",
]
