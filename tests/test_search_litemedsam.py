"""The fast DFG search (lazy decoding + per-slice box cache) against the plain sequential search, on the real
LiteMedSAM and a real MR slice: identical masks and traces, fewer decoder calls, no box decoded twice."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_dfg.prompt_search import DFGConfig, refine_slice
from test_sam import colin, segmenter  # noqa: F401  (shared fixtures: Colin27 slice + LiteMedSAM)

LEFT = tuple(range(91, 109, 2))  # left cerebellar lobules
RIGHT = tuple(range(92, 109, 2))


class CountingSegmenter:
    """Wraps the real segmenter and records every box it decodes."""

    def __init__(self, inner, embedding):
        self.inner, self.embedding, self.boxes = inner, embedding, []

    def embed(self, image):
        return self.embedding

    def segment(self, embedding, boxes):
        self.boxes += [tuple(int(v) for v in b) for b in np.asarray(boxes)]
        return self.inner.segment(embedding, boxes)


def _imperfect_prediction(aal: np.ndarray):
    """A model-like softmax and feature map: each structure shrunk and shifted, smoothed into probabilities."""
    masks = [np.isin(aal, LEFT), np.isin(aal, RIGHT)]
    logits = [np.zeros(aal.shape)]
    for m in masks:
        m = ndimage.shift(ndimage.binary_erosion(m, iterations=3).astype(float), (2, -1), order=0)
        logits.append(6.0 * ndimage.gaussian_filter(m, 2.0) - 2.0)
    logits = np.stack(logits)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    feats = np.concatenate([ndimage.gaussian_filter(probs, (0, 1.5, 1.5)), 0.05 * np.ones((1, *aal.shape))])
    return probs.astype(np.float32), feats.astype(np.float32)


@pytest.mark.slow  # the real LiteMedSAM searching slices twice
def test_fast_search_equals_plain_search_on_litemedsam(segmenter, colin):  # noqa: F811
    t1, aal = colin
    probs, feats = _imperfect_prediction(aal)
    embedding = segmenter.embed(t1)
    config = DFGConfig(presence_min_pixels=100, max_steps={1: 10, 2: 10}, stage3_steps=3)
    fast_seg, plain_seg = CountingSegmenter(segmenter, embedding), CountingSegmenter(segmenter, embedding)
    fast = refine_slice(t1, probs, feats, fast_seg, config, embedding=embedding, lazy=True)
    plain = refine_slice(t1, probs, feats, plain_seg, config, embedding=embedding, lazy=False)

    assert all(fast.traces[c].present for c in (1, 2))
    assert any(fast.traces[c].refined for c in (1, 2)), {c: fast.traces[c].reason for c in fast.traces}
    np.testing.assert_array_equal(fast.label, plain.label)
    assert set(fast.refined) == set(plain.refined)
    for c in fast.refined:
        np.testing.assert_array_equal(fast.refined[c], plain.refined[c])
    for c in fast.traces:
        assert (fast.traces[c].stage, fast.traces[c].reason) == (plain.traces[c].stage, plain.traces[c].reason)
    assert len(fast_seg.boxes) == len(set(fast_seg.boxes)), "a box was decoded twice"
    assert fast.decoder_calls == len(fast_seg.boxes) < len(plain_seg.boxes)
