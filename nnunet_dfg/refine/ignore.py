"""``refine --pseudo-ignore``: the option's parsing, the ignore-labelled dataset's labels and its report section.

The rule itself is ``prompt_search.reliability`` (pure); this module turns it into nnU-Net's ignore label: the
dataset's ``"ignore"`` entry (nnU-Net 2.8.1 requires it to be the highest label value, one above the classes) and
that value on every unreliable voxel of ``labelsTr``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Mapping

import numpy as np

from ..command_base import RELIABLE_ID_OFFSET
from ..errors import UserError
from ..prompt_search.reliability import NO_RULE, PSEUDO_IGNORE, REASONS, rule_named

# values of dfg_refine/reliability/CASE: why a voxel is ignore in labelsTr (0: kept)
MAP_KEPT, MAP_SEARCH, MAP_POSTPROCESSING = 0, 1, 2


def parse_pseudo_ignore(text: str, prompts: list[str]) -> list[str]:
    """``--pseudo-ignore none``, ``evidence`` or ``none,evidence`` (one dataset each) -> the names in order.

    A rule applies to the DFG search's dataset (its evidence includes the search's per-mask SAM IoU); the other
    prompts always write their reference dataset."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names or any(n not in PSEUDO_IGNORE for n in names) or len(set(names)) != len(names):
        raise UserError(f"--pseudo-ignore must name one or more of {', '.join(PSEUDO_IGNORE)} (comma-separated, "
                        f"each once), got {text!r}")
    if names != [NO_RULE] and "dfg" not in prompts:
        raise UserError("--pseudo-ignore RULE is for --prompt dfg (the rule reads the DFG search's evidence)")
    return names


def rules_for(prompt: str, names: list[str]) -> list[str]:
    """The ``--pseudo-ignore`` names whose dataset ``prompt`` writes (the reference only, except for dfg)."""
    return names if prompt == "dfg" else [NO_RULE]


def output_id_offset(base: int, rule: str) -> int:
    """Default output id offset of a rule's dataset: the prompt's (``base``) plus ``RELIABLE_ID_OFFSET``."""
    return base if rule == NO_RULE else base + RELIABLE_ID_OFFSET


def name_suffix(rule: str) -> str:
    """``PseudoDFG`` + this: nothing for the reference, the rule's name capitalised otherwise (``Evidence``)."""
    return "" if rule == NO_RULE else rule.capitalize()


def ignore_value(labels: Mapping[str, int]) -> int:
    """nnU-Net's ignore label: one above the highest class value (LabelManager asserts exactly that)."""
    return max(int(v) for v in labels.values()) + 1


def with_ignore_entry(dataset: dict) -> dict:
    """A dataset.json dict whose ``labels`` gain ``"ignore"``; regions are refused (the search works on classes)."""
    labels = dict(dataset["labels"])
    if any(not isinstance(v, int) for v in labels.values()):
        raise UserError("--pseudo-ignore needs a model with plain labels (no regions)")
    labels.pop("ignore", None)
    return {**dataset, "labels": {**labels, "ignore": ignore_value(labels)}}


def rule_metadata(rule: str) -> dict:
    """What a rule's dataset records in ``dfg_pseudo_labels`` (resumed runs must agree on it)."""
    return {"rule": rule, **asdict(rule_named(rule))}


def reliability_report(reasons: np.ndarray, label: np.ndarray, labels: Mapping[str, int],
                       reliability_map: np.ndarray) -> dict:
    """Counts behind one case's ignore voxels: on the network grid, per class of the merged label, its pixels and
    how many each reason flags (a pixel may have several); on the image grid, the map's kept / search / post-
    processing voxels."""
    per_class = {}
    for name, value in labels.items():
        where = label == value
        flags = reasons[where]
        per_class[name] = {"pixels": int(where.sum()), "unreliable": int(np.count_nonzero(flags)),
                           **{reason: int(np.count_nonzero(flags & bit)) for bit, reason in REASONS.items()}}
    counts = np.bincount(reliability_map.ravel(), minlength=3)
    return {"network_grid": per_class,
            "image_grid": {"kept": int(counts[MAP_KEPT]), "unreliable_search": int(counts[MAP_SEARCH]),
                           "removed_by_postprocessing": int(counts[MAP_POSTPROCESSING])}}


__all__ = ["MAP_KEPT", "MAP_POSTPROCESSING", "MAP_SEARCH", "NO_RULE", "ignore_value", "name_suffix",
           "output_id_offset", "parse_pseudo_ignore", "reliability_report", "rule_metadata", "rules_for",
           "with_ignore_entry"]
