"""Changed-pixel counts and the stability rules that decide when a box prompt has converged.

A box is "stable" when growing it further no longer changes SAM's answer much; every rule compares a mask with
an earlier one in the same stage's history (a list of masks, oldest first, current last).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    """Number of pixels where two masks disagree."""
    return int(np.count_nonzero(a != b))


def back_changes(history: Sequence[np.ndarray], back: int) -> int | None:
    """Changed pixels between the last mask and the one ``back`` steps earlier; None when there is none."""
    if len(history) <= back:
        return None
    return changed_pixels(history[-1], history[-1 - back])


def stage1_rule(area: int, one_step: int | None, two_step: int | None, min_area: float,
                tol_one: float, tol_two: float) -> str | None:
    """Stage-1 test on the newest non-empty mask: big enough and close to the mask two steps back or the previous
    one. Returns the reason (two-step checked first, as in the reference) or None when not stable."""
    if area <= min_area:
        return None
    if two_step is not None and two_step < tol_two:
        return "stable two-step"
    if one_step is not None and one_step < tol_one:
        return "stable one-step"
    return None


def first_stable(history: Sequence[np.ndarray], back: int, tol: float) -> int | None:
    """Index of the first mask that differs from the one ``back`` steps earlier by fewer than ``tol`` pixels."""
    for i in range(back, len(history)):
        if changed_pixels(history[i], history[i - back]) < tol:
            return i
    return None


def stage3_rule(history: Sequence[np.ndarray], tol_two: float, tol_one: float) -> str | None:
    """Stage-3 test on the newest mask (history continues stage 2's): two-step or one-step stability."""
    two = back_changes(history, 2)
    if two is not None and two < tol_two:
        return "stable two-step"
    one = back_changes(history, 1)
    if one is not None and one < tol_one:
        return "stable one-step"
    return None
