"""Which pixels of a DFG pseudo-label the search's own evidence supports (``refine --pseudo-ignore RULE``).

Self-training learns whatever the pseudo-labels say, errors included (benchmarks/ANALYSIS.md: a neighbour's refined
mask merged over a kidney the search had kept, a false 3D component kept and the true kidney deleted, a ring-shaped
structure whose box contains its neighbour so that SAM answers with both). nnU-Net can leave pixels out of the loss
(its ignore label); this module decides which, from what the search already knows, before any confirmation run.

A pixel's evidence is the final (merged) label L, the FA model's argmax M and softmax P, the refined masks that
entered the merge, and SAM's predicted IoU of each kept mask. Where L == M, two independent sources agree: the pixel
is reliable. Where L != M the search changed the FA model's label, and the change is kept only if nothing speaks
against it. It is unreliable (a bit of the returned reason map each) when:

* ``CONFIDENT_MODEL``: the FA model gave its own class M a probability of at least ``confident_prob``. Default 0.8,
  the search's own presence threshold (METHOD.md, DFG step 3): the reference itself calls such a pixel confident,
  so the change sets one confident source against another and neither can be preferred without ground truth.
* ``LOW_IOU``: a SAM mask responsible for the change (the mask of L that took the pixel in, or the mask of M that
  left it out) has a predicted IoU below ``min_iou``. Default 0.88, the threshold under which SAM's own automatic
  mask generator (``pred_iou_thresh``) discards a mask: SAM's authors do not trust such a mask themselves. Not
  applied where the segmenter does not expose its IoU head (stand-ins, the box prompts' tiled decoding).
* ``SWALLOWING_MASK``: the mask of L that took the pixel in covers more than ``swallow_fraction`` of another
  foreground class's model mask on the slice. Default 0.5, i.e. "most" of it: a box around a ring-shaped or
  enclosing structure contains its neighbour and SAM answers with the union, so that mask's additions cannot be
  told apart from the neighbour.
* ``CONTESTED``: L is foreground and another foreground class claimed the pixel in the merge too (its refined mask,
  or for an unrefined class its model label): the merge settled it by the reference's scores (refined over unrefined,
  then the lower class index), which is an order, not evidence. Where the winner is M itself the FA model backs it
  and nothing was moved, so the pixel stays reliable.

Post-processing is 3D and runs after the slices are exported: every voxel the largest-component rule removes is
unreliable too (:func:`with_ignore`), so that under the option it becomes ignore, not background.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from .trace import SliceResult

CONFIDENT_MODEL = 1
LOW_IOU = 2
SWALLOWING_MASK = 4
CONTESTED = 8
REASONS: Mapping[int, str] = MappingProxyType({CONFIDENT_MODEL: "confident_model", LOW_IOU: "low_sam_iou",
                                               SWALLOWING_MASK: "swallowing_mask", CONTESTED: "contested"})


@dataclass(frozen=True)
class ReliabilityRule:
    """The constants of the rule (module docstring: why each default)."""

    confident_prob: float = 0.8
    min_iou: float = 0.88
    swallow_fraction: float = 0.5


NO_RULE = "none"  # the reference: every pixel of the pseudo-label is learned
RULES: Mapping[str, ReliabilityRule] = MappingProxyType({"evidence": ReliabilityRule()})
PSEUDO_IGNORE: tuple[str, ...] = (NO_RULE, *RULES)


def rule_named(name: str) -> ReliabilityRule | None:
    """The rule of a ``--pseudo-ignore`` name (None for ``none``); ValueError for an unknown name."""
    if name == NO_RULE:
        return None
    if name not in RULES:
        raise ValueError(f"unknown pseudo-ignore rule {name!r}; known: {', '.join(PSEUDO_IGNORE)}")
    return RULES[name]


def swallowing_classes(refined: Mapping[int, np.ndarray], model: np.ndarray, fraction: float) -> set[int]:
    """Refined classes whose mask covers more than ``fraction`` of some other foreground class's model mask."""
    model = np.asarray(model)
    out = set()
    for cls, mask in refined.items():
        for other in np.unique(model):
            if other == 0 or other == cls:
                continue
            own = model == other
            if np.count_nonzero(mask & own) > fraction * np.count_nonzero(own):
                out.add(int(cls))
                break
    return out


def slice_reasons(label: np.ndarray, probs: np.ndarray, refined: Mapping[int, np.ndarray],
                  iou: Mapping[int, float | None], rule: ReliabilityRule) -> np.ndarray:
    """(H, W) uint8 reason bits of one slice (0 = reliable; module docstring for the rule).

    ``label`` is the merged label, ``probs`` the FA model's (K, H, W) softmax, ``refined`` the masks that entered
    the merge by class, ``iou`` SAM's predicted IoU of each refined mask (None or absent: not known).
    """
    label = np.asarray(label)
    probs = np.asarray(probs)
    model = np.argmax(probs, axis=0)
    changed = label != model
    reasons = np.zeros(label.shape, dtype=np.uint8)
    own = np.take_along_axis(probs, model[None], axis=0)[0]
    reasons[changed & (own >= rule.confident_prob)] |= CONFIDENT_MODEL
    masks = {int(c): np.asarray(m, dtype=bool) for c, m in refined.items()}
    for cls, mask in masks.items():
        quality = iou.get(cls)
        if quality is not None and quality < rule.min_iou:
            added, dropped = mask & (label == cls), ~mask & (model == cls)
            reasons[changed & (added | dropped)] |= LOW_IOU
    for cls in swallowing_classes(masks, model, rule.swallow_fraction):
        reasons[changed & masks[cls] & (label == cls)] |= SWALLOWING_MASK
    other_claim = np.zeros(label.shape, dtype=bool)
    for cls in range(1, probs.shape[0]):
        claim = masks[cls] if cls in masks else model == cls
        other_claim |= claim & (label != cls)
    reasons[changed & (label > 0) & other_claim] |= CONTESTED
    return reasons


def result_reasons(result: SliceResult, probs: np.ndarray, rule: ReliabilityRule) -> np.ndarray:
    """:func:`slice_reasons` of a search result, with the IoUs its traces recorded."""
    iou = {cls: trace.iou for cls, trace in result.traces.items()}
    return slice_reasons(result.label, probs, result.refined, iou, rule)


def volume_reasons(slices: Mapping[int, SliceResult], probs: np.ndarray, rule: ReliabilityRule) -> np.ndarray:
    """(Z, H, W) reason bits of a refined volume: ``slices`` are the searched slices' results, ``probs`` the
    (K, Z, H, W) softmax (read one slice at a time: it may be memory-mapped). Unsearched slices keep the model's
    labels, so they are reliable."""
    reasons = np.zeros(probs.shape[1:], dtype=np.uint8)
    for z, result in slices.items():
        reasons[z] = result_reasons(result, np.asarray(probs[:, z]), rule)
    return reasons


def with_ignore(final: np.ndarray, before_postprocessing: np.ndarray, unreliable: np.ndarray,
                ignore: int) -> np.ndarray:
    """The post-processed label with ``ignore`` on unreliable voxels and on every voxel the post-processing
    removed (it only ever turns a voxel to background, so those are the voxels where the two labels differ)."""
    final = np.asarray(final)
    if not final.shape == np.shape(before_postprocessing) == np.shape(unreliable):
        raise ValueError("labels and reliability map must be on one grid")
    if ignore <= int(final.max(initial=0)):
        raise ValueError(f"the ignore value {ignore} must exceed every label value")
    dtype = np.uint8 if ignore < 256 else np.uint16
    out = final.astype(dtype, copy=True)
    out[np.asarray(unreliable, dtype=bool) | (final != np.asarray(before_postprocessing))] = ignore
    return out
