"""Test double of the box-prompted segmenter (deterministic masks from a rule, a record of all work done) and the
hand-made cases of tests/test_prompt_search.py."""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from nnunet_dfg.prompt_search.neighbours import neighbour_offsets, pair_links

Box = tuple[int, int, int, int]


def box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    """Boolean mask of an inclusive (x0, y0, x1, y1) box."""
    out = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    out[y0:y1 + 1, x0:x1 + 1] = True
    return out


class FakeEmbedding:
    def __init__(self, features: np.ndarray) -> None:
        self._features = features
        self.feature_calls = 0

    def features(self) -> np.ndarray:
        self.feature_calls += 1
        return self._features


class FakeSegmenter:
    """``segment`` answers ``mask_fn(box)`` (default: the part of ``truth`` inside the box).

    ``features`` is what the embedding's ``features()`` returns (default: one-hot of ``truth`` plus a smooth
    deterministic ripple). Counts embeds, launches and decoded boxes, and keeps every decoded box in order.
    """

    def __init__(self, truth: np.ndarray, mask_fn: Callable[[Box], np.ndarray] | None = None,
                 features: np.ndarray | None = None) -> None:
        self.truth = np.asarray(truth)
        self.mask_fn = mask_fn or (lambda box: (self.truth > 0) & box_mask(self.truth.shape, box))
        if features is None:
            features = sam_like_features(self.truth)
        self.features = features
        self.embed_calls = 0
        self.launches = 0
        self.decoded: list[Box] = []

    def embed(self, image2d: np.ndarray) -> FakeEmbedding:
        assert image2d.shape == self.truth.shape
        self.embed_calls += 1
        return FakeEmbedding(self.features)

    def segment(self, emb: FakeEmbedding, boxes: np.ndarray) -> np.ndarray:
        assert isinstance(emb, FakeEmbedding)
        boxes = np.asarray(boxes)
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and np.issubdtype(boxes.dtype, np.integer)
        self.launches += 1
        out = []
        for row in boxes:
            box = tuple(int(v) for v in row)
            x0, y0, x1, y1 = box
            assert 0 <= x0 <= x1 < self.truth.shape[1] and 0 <= y0 <= y1 < self.truth.shape[0], box
            self.decoded.append(box)
            out.append(np.asarray(self.mask_fn(box), dtype=bool))
        return np.stack(out) if out else np.zeros((0,) + self.truth.shape, dtype=bool)


def sam_like_features(labels: np.ndarray, n_channels: int = 6, ripple: float = 0.05) -> np.ndarray:
    """One channel per label value plus a small checkerboard ripple, so within-label cosine distances are small,
    equal and not zero (stage 2 needs a positive spread; every pixel of a label is then eligible)."""
    labels = np.asarray(labels).astype(int)
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w]
    feats = np.zeros((n_channels, h, w), dtype=np.float32)
    for v in np.unique(labels):
        feats[int(v) % (n_channels - 1)][labels == v] = 1.0
    feats[-1] = ripple * np.where((yy + xx) % 2 == 0, 1.0, -1.0)
    return feats


def square(shape, cy, cx, side, extra=0):
    """Centred square of ``side`` px (top-left at cy - side//2), plus ``extra`` pixels on the row above it."""
    m = np.zeros(shape, dtype=bool)
    y0, x0 = cy - side // 2, cx - side // 2
    m[y0:y0 + side, x0:x0 + side] = True
    m[y0 - 1, x0:x0 + extra] = True
    return m


def naive_grow(region, f_n, thr):
    """Pixel-by-pixel stage-1 growth (radius 4) with explicit cosines: the reference for the vectorised one."""
    h, w = region.shape
    out = region.copy()
    for y, x in zip(*np.nonzero(region)):
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                qy, qx = y + dy, x + dx
                if (dy or dx) and dy * dy + dx * dx < 16 and 0 <= qy < h and 0 <= qx < w:
                    if float(f_n[:, y, x] @ f_n[:, qy, qx]) > thr:
                        out[qy, qx] = True
    return out


def two_organ_slice(noise_seed=0):
    """64x64 slice: a disc (class 1) and a rectangle (class 2); blurred noisy softmax and near one-hot features."""
    rng = np.random.default_rng(noise_seed)
    truth = np.zeros((64, 64), int)
    yy, xx = np.mgrid[0:64, 0:64]
    truth[(yy - 22) ** 2 + (xx - 20) ** 2 < 11 ** 2] = 1
    truth[36:56, 34:58] = 2
    onehot = np.stack([truth == k for k in range(3)]).astype(np.float32)
    logits = 4 * ndimage.gaussian_filter(onehot, sigma=(0, 2, 2)) + 0.3 * rng.normal(size=onehot.shape)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    feats = onehot + 0.002 * rng.normal(size=onehot.shape).astype(np.float32)
    return truth, probs.astype(np.float32), feats


def constant_links(shape):
    """Every neighbour pair linked: stage-1 growth becomes a dilation by the radius-4 offsets (3 px per axis)."""
    offsets = neighbour_offsets(4)
    return pair_links(np.ones((2,) + shape, np.float32) / np.sqrt(2), offsets, 0.99), offsets


def by_width(script, shape):
    """Segmenter answer keyed by box width; an unexpected width fails the test."""
    return FakeSegmenter(np.zeros(shape, int), mask_fn=lambda b: script[b[2] - b[0] + 1])
