"""Several slices in one image-encoder pass: the SDG "merging strategy" (METHOD.md, SDG step 4).

The image encoder is where SAM spends its time, so ``n`` x ``n`` slices (2 x 2 in SDG) are pasted into one canvas,
embedded once, and every slice's boxes are decoded against that shared embedding after being shifted into the
slice's tile; each mask is then cropped back to its slice.

Layout decisions (pure functions below, so each one is unit-tested on its own):

* **Pad, do not resize.** A slice is pasted unscaled at the top-left corner of its tile; tiles are
  max(H) x max(W) of the group and the rest is zero. Boxes and masks then map by a pure integer shift (no
  resampling error), and since a volume's slices share one size there is no padding in practice.
* **Per-slice intensity scaling.** Each slice is min-max scaled to [0, 1] before pasting (padding 0 = its
  minimum), so its contrast does not depend on its neighbours, as when it is embedded alone.
* **Always a full grid.** Fewer than n*n slices leave empty (zero) tiles instead of a smaller canvas, so every
  slice gets the same scale in the model frame whatever its group size.
* **Offsets.** Tile ``i`` sits at ``(row, col) = divmod(i, n)``; a box moves by ``x += col * tile_w``,
  ``y += row * tile_h``. (The reference code swapped x and y, giving tiles (0, 1) and (1, 0) each other's boxes.)
* ``n == 1`` passes the slice to the segmenter untouched: exactly the untiled path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .transforms import check_slice, validate_boxes

__all__ = ["CanvasLayout", "plan_layout", "compose_canvas", "boxes_to_canvas", "crop_from_canvas", "segment_tiled"]


@dataclass(frozen=True)
class CanvasLayout:
    """Where each slice of a group sits in an ``n`` x ``n`` canvas of ``tile_size`` tiles."""

    n: int
    tile_size: tuple[int, int]                  # (tile_h, tile_w)
    slice_sizes: tuple[tuple[int, int], ...]    # (H, W) of each slice, in tile order

    @property
    def canvas_size(self) -> tuple[int, int]:
        return self.n * self.tile_size[0], self.n * self.tile_size[1]

    def offset(self, i: int) -> tuple[int, int]:
        """(y, x) of the top-left pixel of tile ``i`` (row-major: 0 top-left, 1 top-right, 2 bottom-left...)."""
        if not 0 <= i < len(self.slice_sizes):
            raise IndexError(f"tile {i} is not used by this layout of {len(self.slice_sizes)} slice(s)")
        row, col = divmod(i, self.n)
        return row * self.tile_size[0], col * self.tile_size[1]


def plan_layout(sizes: Sequence[tuple[int, int]], n: int = 2) -> CanvasLayout:
    """Layout of up to ``n * n`` slices of the given (H, W) sizes."""
    if n < 1:
        raise ValueError(f"tile grid must be >= 1, got {n}")
    if not 1 <= len(sizes) <= n * n:
        raise ValueError(f"a {n}x{n} canvas holds 1..{n * n} slices, got {len(sizes)}")
    sizes = tuple((int(h), int(w)) for h, w in sizes)
    if any(h < 1 or w < 1 for h, w in sizes):
        raise ValueError(f"slices must be non-empty, got sizes {sizes}")
    return CanvasLayout(n, (max(h for h, _ in sizes), max(w for _, w in sizes)), sizes)


def _unit_range(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    return np.zeros_like(image) if hi <= lo else (image - lo) / (hi - lo)


def compose_canvas(images: Sequence[np.ndarray], n: int = 2) -> tuple[np.ndarray, CanvasLayout]:
    """Paste up to n*n 2D slices into one float32 canvas (each min-max scaled to [0, 1]) and return its layout."""
    arrays = [check_slice(im) for im in images]
    layout = plan_layout([a.shape for a in arrays], n)
    canvas = np.zeros(layout.canvas_size, dtype=np.float32)
    for i, arr in enumerate(arrays):
        y, x = layout.offset(i)
        canvas[y:y + arr.shape[0], x:x + arr.shape[1]] = _unit_range(arr)
    return canvas, layout


def boxes_to_canvas(boxes: np.ndarray, layout: CanvasLayout, i: int) -> np.ndarray:
    """Inclusive (x0, y0, x1, y1) slice boxes of slice ``i`` -> canvas boxes, clipped to the slice first so a box
    never reaches into a neighbouring tile."""
    clipped = validate_boxes(boxes, layout.slice_sizes[i])
    y, x = layout.offset(i)
    return clipped + np.array([x, y, x, y], dtype=np.float64)


def crop_from_canvas(masks: np.ndarray, layout: CanvasLayout, i: int) -> np.ndarray:
    """(N, canvas_h, canvas_w) masks or logits -> (N, H, W) on slice ``i``."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or tuple(masks.shape[1:]) != layout.canvas_size:
        raise ValueError(f"expected (N, {layout.canvas_size[0]}, {layout.canvas_size[1]}) masks, got {masks.shape}")
    y, x = layout.offset(i)
    h, w = layout.slice_sizes[i]
    return masks[:, y:y + h, x:x + w]


def segment_tiled(segmenter: Any, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], n: int = 2,
                  logits: bool = False) -> list[np.ndarray]:
    """Masks for ``boxes[k]`` (N_k, 4) on ``images[k]``, one encoder pass per group of n*n slices that have boxes.

    Returns, per slice, (N_k, H_k, W_k) bool masks (``logits=True``: float32 logits, needs ``segment_logits``).
    Slices without boxes take no tile and get (0, H, W). Groups are consecutive in input order, so a slice's
    neighbours (and hence its result, which depends a little on them through the encoder's attention) are fixed by
    the order the caller passes.
    """
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} box arrays")
    wanted = [np.asarray(b).reshape(-1, 4) for b in boxes]  # dtype kept: n == 1 passes them on untouched
    out: list[np.ndarray] = [np.zeros((0,) + np.shape(im), dtype=np.float32 if logits else bool) for im in images]
    busy = [k for k, b in enumerate(wanted) if len(b)]
    decode = segmenter.segment_logits if logits else segmenter.segment
    for start in range(0, len(busy), n * n):
        group = busy[start:start + n * n]
        if n == 1:
            k = group[0]
            out[k] = np.asarray(decode(segmenter.embed(images[k]), wanted[k]))
            continue
        canvas, layout = compose_canvas([images[k] for k in group], n)
        shifted = [boxes_to_canvas(wanted[k], layout, i) for i, k in enumerate(group)]
        decoded = np.asarray(decode(segmenter.embed(canvas), np.concatenate(shifted)))
        first = 0
        for i, k in enumerate(group):
            count = len(wanted[k])
            out[k] = np.ascontiguousarray(crop_from_canvas(decoded[first:first + count], layout, i))
            first += count
    return out
