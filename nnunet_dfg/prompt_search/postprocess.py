"""Connectivity post-processing of a refined pseudo-label volume (METHOD.md, DFG step 4)."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
from scipy import ndimage


def keep_components_per_class(label3d: np.ndarray, classes: Iterable[int],
                              keep: Callable[[np.ndarray], np.ndarray], connectivity: int = 1,
                              background: int = 0) -> np.ndarray:
    """Per class, keep the 3D connected components whose sizes ``keep`` accepts; removed voxels -> ``background``.

    ``keep`` maps the component sizes (index 0, the background, set to 0) to a boolean array of the same length.
    A class in one piece or absent is left as it is. ``connectivity`` is that of
    ``scipy.ndimage.generate_binary_structure`` (1 = faces, the reference ``ndimage.label`` default).
    """
    label3d = np.asarray(label3d)
    out = label3d.copy()
    structure = ndimage.generate_binary_structure(label3d.ndim, connectivity)
    for cls in classes:
        mask = label3d == cls
        components, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue  # absent or already one piece
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        sizes[0] = 0
        out[mask & ~np.asarray(keep(sizes), dtype=bool)[components]] = background
    return out


def largest_component_per_class(label3d: np.ndarray, classes: Iterable[int], connectivity: int = 1,
                                background: int = 0) -> np.ndarray:
    """Keep, per class, only its largest 3D connected component; removed voxels become ``background``.

    Slice-wise refinement leaves stray islands; organs are single connected bodies. A class absent from the
    volume stays absent: the reference (``connectivity_region_analysis``) took the argmax of the component sizes
    including the zero-sized background entry and so relabelled the WHOLE volume with an absent class.
    Not nnU-Net's ``remove_all_but_largest_component_from_segmentation``: it labels with full (26-) connectivity
    and keeps every component tied for largest; the reference labels with faces and keeps one.
    """
    return keep_components_per_class(label3d, classes, lambda sizes: np.arange(len(sizes)) == np.argmax(sizes),
                                     connectivity, background)
