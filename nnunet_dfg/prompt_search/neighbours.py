"""Radius-r neighbour graph and vectorised one-step region growth for both feature spaces.

Stage 1 grows over target-model feature affinities, so the per-offset link maps ``cos(F_p, F_{p+d}) > thr`` are
computed once per slice and each growth step is then only boolean shifts. Stage 2's criterion depends on the
candidate pixel alone (1 - <G_q, c> < t), so its growth is a disc dilation intersected with an eligibility map.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .masks import bbox


def neighbour_offsets(radius: int) -> np.ndarray:
    """All non-zero ``(dy, dx)`` with ``dy^2 + dx^2 < radius^2`` (44 for radius 4), sorted, shape (M, 2).

    The reference (AffinityNet ``get_indices_of_pairs``) stores half of them and uses each pair both ways.
    """
    r = int(radius) - 1
    grid = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(grid, grid, indexing="ij")
    keep = (dy * dy + dx * dx < radius * radius) & ((dy != 0) | (dx != 0))
    return np.stack([dy[keep], dx[keep]], axis=1).astype(np.int64)


def disc(radius: int) -> np.ndarray:
    """Structuring element of the neighbour graph: the offsets above plus the centre."""
    r = int(radius) - 1
    grid = np.arange(-r, r + 1)
    return grid[:, None] ** 2 + grid[None, :] ** 2 < radius * radius


def normalise_channels(feat: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """L2-normalise a (C, H, W) map over channels so that dot products are cosines."""
    feat = np.asarray(feat, dtype=np.float32)
    norm = np.sqrt(np.einsum("chw,chw->hw", feat, feat))
    return feat / np.maximum(norm, eps)[None]


def _pair_slices(dy: int, dx: int, height: int, width: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices (src, dst) such that ``dst`` pixel = ``src`` pixel + (dy, dx), both inside the (H, W) grid."""
    src = (slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx)))
    dst = (slice(max(0, dy), height - max(0, -dy)), slice(max(0, dx), width - max(0, -dx)))
    return src, dst


def pair_similarity(feat_n: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(M, H, W) map ``S[k, p] = <F_p, F_{p+d_k}>`` of normalised features; -inf where ``p + d_k`` is outside.

    Each unordered pair is computed once: ``S[-d][p + d] = S[d][p]``.
    """
    _, height, width = feat_n.shape
    sims = np.full((len(offsets), height, width), -np.inf, dtype=np.float32)
    index = {(int(dy), int(dx)): k for k, (dy, dx) in enumerate(offsets)}
    for k, (dy, dx) in enumerate(offsets):
        dy, dx = int(dy), int(dx)
        if (dy, dx) < (0, 0):
            continue  # filled from its mirror
        src, dst = _pair_slices(dy, dx, height, width)
        dot = np.einsum("chw,chw->hw", feat_n[(slice(None),) + src], feat_n[(slice(None),) + dst])
        sims[k][src] = dot
        sims[index[(-dy, -dx)]][dst] = dot
    return sims


def pair_links(feat_n: np.ndarray, offsets: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean (M, H, W) links ``cos(F_p, F_{p+d_k}) > threshold``: all stage 1 needs from the features."""
    return pair_similarity(feat_n, offsets) > threshold


def grow_by_links(region: np.ndarray, links: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One step of stage-1 growth: the region plus every ``p + d`` with p in the region and a link along d.

    Works on the region's bbox grown by the radius, which holds every candidate, so a step costs O(M * box area).
    """
    tight = bbox(region)
    if tight is None:
        return region.copy()
    reach = int(np.abs(offsets).max()) if len(offsets) else 0
    height, width = region.shape
    y0, y1 = max(tight[1] - reach, 0), min(tight[3] + reach + 1, height)
    x0, x1 = max(tight[0] - reach, 0), min(tight[2] + reach + 1, width)
    sub = region[y0:y1, x0:x1]
    sub_links = links[:, y0:y1, x0:x1]
    grown = sub.copy()
    h, w = sub.shape
    for k, (dy, dx) in enumerate(offsets):
        src, dst = _pair_slices(int(dy), int(dx), h, w)
        np.logical_or(grown[dst], sub[src] & sub_links[k][src], out=grown[dst])
    out = region.copy()
    out[y0:y1, x0:x1] = grown
    return out


def grow_by_eligibility(region: np.ndarray, eligible: np.ndarray, radius: int) -> np.ndarray:
    """One step of stage-2 growth: the region plus its radius-r neighbours whose own criterion holds.

    The region itself is always kept (the reference's self-link has distance 0 < t whenever t > 0).
    """
    return region | (ndimage.binary_dilation(region, structure=disc(radius)) & eligible)
