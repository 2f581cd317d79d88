"""DFG step 4 (largest 3D component per class) and the 2D largest-region helper of the search (no SAM)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnunet_dfg.prompt_search import largest_component_per_class
from nnunet_dfg.prompt_search.masks import largest_component
from nnunet_dfg.prompt_search.postprocess import keep_components_per_class


def test_largest_component_per_class_and_absent_class_stays_absent():
    vol = np.zeros((6, 20, 20), np.uint8)
    vol[1:5, 2:10, 2:10] = 1   # big
    vol[2, 15:17, 15:17] = 1   # island
    vol[0:3, 12:14, 2:5] = 3
    out = largest_component_per_class(vol, classes=[1, 2, 3])
    assert not (out == 2).any()               # absent class not flooded
    assert (out[2, 15:17, 15:17] == 0).all()  # island removed to background
    assert np.array_equal(out == 1, (vol == 1) & ~((np.arange(20)[None, :, None] >= 15) & (vol == 1)))
    assert np.array_equal(out == 3, vol == 3)
    # the shared mechanism with another rule: keeping pieces of at least 4 voxels keeps the 2x2 island too
    kept = keep_components_per_class(vol, [1, 2, 3], lambda sizes: sizes >= 4)
    assert np.array_equal(kept, vol)
    dropped = keep_components_per_class(vol, [1], lambda sizes: sizes >= 5, background=9)
    assert (dropped[2, 15:17, 15:17] == 9).all() and np.array_equal(dropped == 1, out == 1)


def test_largest_component_helper_fills_and_picks_largest():
    m = np.zeros((12, 12), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False
    m[8:10, 8:12] = True
    out = largest_component(m)
    assert out.sum() == 25 and out[3, 3] and not largest_component(m, fill_holes=False)[3, 3]
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_largest_component_fill_matches_full_image_fill():
    rng = np.random.default_rng(3)
    for _ in range(20):
        m = ndimage.binary_opening(rng.random((40, 40)) < 0.6)
        labels, n = ndimage.label(m, structure=np.ones((3, 3)))
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        expect = ndimage.binary_fill_holes(labels == np.argmax(sizes))
        assert np.array_equal(largest_component(m), expect)
