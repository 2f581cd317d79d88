"""Binary-mask helpers shared by the search stages: largest region and boxes.

Boxes are ``(x0, y0, x1, y1)`` tuples of inclusive slice pixel coordinates (x = column, y = row), the format the
segmenter takes; tuples (not arrays) so that they can key the per-slice decoder cache.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

Box = tuple[int, int, int, int]

_EIGHT = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray, fill_holes: bool = True) -> np.ndarray:
    """Largest 8-connected region of a 2D mask, optionally hole-filled; empty in -> empty out.

    8-connectivity and hole filling mirror the reference ``KeepMaxContour`` (outer cv2 contour, polygon-filled),
    which is what both the seed and every SAM mask go through. Ties go to the first region in raster order.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return np.zeros_like(mask)
    if n == 1:
        out = labels == 1
    else:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        out = labels == int(np.argmax(sizes))
    if fill_holes:  # holes lie inside the bbox: fill there, much cheaper than on the whole slice
        x0, y0, x1, y1 = bbox(out)
        window = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        out[window] = ndimage.binary_fill_holes(out[window])
    return out


def bbox(mask: np.ndarray) -> Box | None:
    """Tight inclusive box of the True pixels, None for an empty mask."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask, axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def expand_box(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    """Grow a box by ``margin`` pixels per side and clip it to a (H, W) slice."""
    height, width = shape
    x0, y0, x1, y1 = box
    return (max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, width - 1), min(y1 + margin, height - 1))


def region_box(region: np.ndarray, margin: int) -> Box:
    """The prompt box of a non-empty region: its bbox plus ``margin``, clipped (reference ``bbox_margin``)."""
    tight = bbox(region)
    if tight is None:
        raise ValueError("a search region is never empty")
    return expand_box(tight, margin, region.shape)
