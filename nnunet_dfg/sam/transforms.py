"""Pure geometry and intensity transforms between a 2D slice and a model frame.

Every backend works in a square *frame* (256 for LiteMedSAM, 1024 for SAM/MedSAM):
the slice is resized (keeping the aspect ratio or not) into its top-left corner and
the rest is zero padding.  Keeping the mapping in one small immutable object
(:class:`FrameGeometry`) lets boxes, logits and embeddings all be mapped with the
same numbers, which is what makes masks line up with the slice they came from.
Nothing here holds state or touches a model, so all of it is unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FrameGeometry",
    "PreprocessSpec",
    "LITEMEDSAM_PREPROCESS",
    "SAM_PREPROCESS",
    "MEDSAM_PREPROCESS",
    "frame_geometry",
    "check_slice",
    "validate_boxes",
    "boxes_to_frame",
    "boxes_from_frame",
    "preprocess_slice",
    "postprocess_logits",
    "embedding_to_slice",
]

_SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
_SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a backend expects its input; one instance per reference implementation.

    The slice is first min-max scaled to 0..255 (models were trained on 8-bit
    images), resized into the frame, optionally re-scaled to 0..255 (LiteMedSAM and
    MedSAM min-max *after* resizing), normalised by ``(x - mean) / std`` and padded
    with zeros at the bottom/right.
    """

    frame: int
    keep_aspect: bool
    interpolation: str
    renormalise: bool
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


LITEMEDSAM_PREPROCESS = PreprocessSpec(256, True, "bilinear", True, (0.0,) * 3, (255.0,) * 3)
SAM_PREPROCESS = PreprocessSpec(1024, True, "bilinear", False, _SAM_PIXEL_MEAN, _SAM_PIXEL_STD)
MEDSAM_PREPROCESS = PreprocessSpec(1024, False, "bicubic", True, (0.0,) * 3, (255.0,) * 3)


@dataclass(frozen=True)
class FrameGeometry:
    """Where a slice of ``original_size`` lands inside a ``frame`` x ``frame`` input.

    ``resized_size`` is the (h, w) block the slice occupies (top-left aligned); the
    remainder of the frame is padding.
    """

    original_size: Tuple[int, int]
    resized_size: Tuple[int, int]
    frame: int

    @property
    def scale_xy(self) -> Tuple[float, float]:
        """Per-axis factor from slice pixels to frame pixels (SAM's ``apply_coords``)."""
        return (self.resized_size[1] / self.original_size[1], self.resized_size[0] / self.original_size[0])


def frame_geometry(original_size: Tuple[int, int], frame: int, keep_aspect: bool = True) -> FrameGeometry:
    """Geometry with SAM's rounding (``ResizeLongestSide.get_preprocess_shape``)."""
    h, w = int(original_size[0]), int(original_size[1])
    if h < 1 or w < 1:
        raise ValueError(f"slice must be non-empty, got shape {(h, w)}")
    if not keep_aspect:
        return FrameGeometry((h, w), (frame, frame), frame)
    scale = frame / max(h, w)
    resized = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    return FrameGeometry((h, w), resized, frame)


def check_slice(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float64 (H, W), rejecting what would fail deep inside torch."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2D slice (H, W), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"slice must be non-empty, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"slice must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("slice contains NaN or inf")
    return arr


def _minmax(x: np.ndarray, top: float) -> np.ndarray:
    """Scale to ``0..top``; a constant input maps to zeros instead of dividing by 0."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 0.0:
        return np.zeros_like(x)
    return (x - lo) * (top / (hi - lo))


def validate_boxes(boxes: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """Boxes as (N, 4) float64 ``x0, y0, x1, y1`` (inclusive), clipped to the slice.

    Inverted boxes are an error rather than silently swapped: they usually mean the
    caller mixed up (x, y) and (row, col) order.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as x0, y0, x1, y1; got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("boxes contain NaN or inf")
    bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"box {i} has x1 < x0 or y1 < y0: {arr[i].tolist()}")
    h, w = image_size
    out = arr.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0.0, w - 1.0)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0.0, h - 1.0)
    return out


def boxes_to_frame(boxes: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Slice pixel coordinates to frame coordinates, as SAM's ``apply_boxes`` does."""
    sx, sy = geometry.scale_xy
    return np.asarray(boxes, dtype=np.float64) * np.array([sx, sy, sx, sy])


def boxes_from_frame(boxes: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Inverse of :func:`boxes_to_frame`."""
    sx, sy = geometry.scale_xy
    return np.asarray(boxes, dtype=np.float64) / np.array([sx, sy, sx, sy])


def preprocess_slice(
    image: np.ndarray, spec: PreprocessSpec, device: Optional[torch.device] = None
) -> Tuple[torch.Tensor, FrameGeometry]:
    """Slice (H, W), any range -> model input (1, 3, frame, frame) float32 and its geometry.

    Min-max happens in float64 on the slice first so that huge or negative values
    (CT in HU, raw MR) cannot overflow float32 during resizing.
    """
    arr = _minmax(check_slice(image), 255.0)
    geometry = frame_geometry(arr.shape, spec.frame, spec.keep_aspect)
    x = torch.from_numpy(arr.astype(np.float32))[None, None]
    if geometry.resized_size != geometry.original_size:
        x = F.interpolate(
            x, size=geometry.resized_size, mode=spec.interpolation, align_corners=False, antialias=True
        )
    x = x[0, 0].numpy().astype(np.float64)
    if spec.renormalise:
        x = _minmax(x, 255.0)
    mean = np.asarray(spec.mean, dtype=np.float64)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float64)[:, None, None]
    chw = ((x[None] - mean) / std).astype(np.float32)
    h, w = geometry.resized_size
    out = np.zeros((1, 3, spec.frame, spec.frame), dtype=np.float32)
    out[0, :, :h, :w] = chw
    return torch.from_numpy(out).to(device or "cpu"), geometry


def postprocess_logits(low_res: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Decoder logits (N, 1, h, w) -> (N, H, W) at slice resolution (SAM's postprocess).

    Upsample to the frame, drop the padding, then resize to the slice: the same order
    as the reference code, so thresholds learned there still apply.
    """
    if low_res.ndim != 4 or low_res.shape[1] != 1:
        raise ValueError(f"expected logits of shape (N, 1, h, w), got {tuple(low_res.shape)}")
    x = low_res.float()
    frame = geometry.frame
    if x.shape[-2:] != (frame, frame):
        x = F.interpolate(x, size=(frame, frame), mode="bilinear", align_corners=False)
    h, w = geometry.resized_size
    x = x[..., :h, :w]
    if (h, w) != geometry.original_size:
        x = F.interpolate(x, size=geometry.original_size, mode="bilinear", align_corners=False)
    return x[:, 0]


def embedding_to_slice(embedding: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Image embedding (C, e, e) -> (C, H, W): bilinear, only the part covering the slice.

    One ``grid_sample`` maps each slice pixel centre straight into embedding
    coordinates, so the padding never leaks in and no frame-sized (C, 1024, 1024)
    intermediate is ever allocated.
    """
    if embedding.ndim != 3:
        raise ValueError(f"expected an embedding of shape (C, e, e), got {tuple(embedding.shape)}")
    H, W = geometry.original_size
    h, w = geometry.resized_size
    e_h, e_w = embedding.shape[-2:]
    dev = embedding.device
    # Continuous edge coordinates (0 = left edge of pixel 0), slice -> frame -> embedding.
    ys = (torch.arange(H, device=dev, dtype=torch.float64) + 0.5) * (h / H) * (e_h / geometry.frame)
    xs = (torch.arange(W, device=dev, dtype=torch.float64) + 0.5) * (w / W) * (e_w / geometry.frame)
    gy = (2.0 * ys / e_h - 1.0).float()
    gx = (2.0 * xs / e_w - 1.0).float()
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
    out = F.grid_sample(
        embedding[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0]
