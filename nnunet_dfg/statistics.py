"""Paired comparisons of pipeline stages with bootstrap intervals, so a stage table can say "not shown".

A goal such as "FA beats the source model" is judged on the mean of per-case paired differences (the same image
scored under both stages, mean Dice over classes), pooled over every seed's cases, with a percentile bootstrap
interval that resamples those (case, seed) units. A goal counts as met only when the whole interval lies on the
right side of zero: with few cases and seeds it often does not, and then the honest answer is "not shown".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (name, better stage, worse stage, factor on the worse stage, what it means). Pairs are on the same images:
# pseudo_* rows on the target training images, the others on the target test images.
GOALS = (
    ("source < FA", "fa", "source_only", 1.0, "FA beats the source model on the target test images"),
    ("FA labels < refined", "pseudo_dfg_post", "pseudo_fa", 1.0,
     "the refined pseudo-labels beat the FA model's own labels on the target training images"),
    ("FA <= self-trained", "self_trained", "fa", 1.0, "self-training on the refined labels improves the FA model"),
    ("FA <= self-trained reliable", "self_trained_reliable", "fa", 1.0,
     "self-training that ignores the unreliable pseudo-label voxels (--pseudo-ignore) improves the FA model"),
    ("self-trained <= reliable", "self_trained_reliable", "self_trained", 1.0,
     "ignoring the unreliable pseudo-label voxels beats self-training on every voxel (the reference)"),
    ("self-trained >= 0.9x oracle", "self_trained", "oracle", 0.9,
     "self-trained reaches 90% of the target-supervised oracle"),
    ("source < SDG", "sdg", "source_only", 1.0,
     "SDG (source boxes -> SAM with its mask decoder fine-tuned on the source) beats the source model on the target"),
    ("SDG without fine-tuning < SDG", "sdg", "sdg_no_finetune", 1.0,
     "SAM's mask decoder fine-tuned on the source's refined boxes beats SAM as shipped, on the target"),
)


@dataclass(frozen=True)
class Comparison:
    name: str
    mean: float
    low: float
    high: float
    n: int  # paired units (cases x seeds)

    @property
    def met(self) -> bool:
        return self.n > 0 and self.low > 0.0

    def verdict(self) -> str:
        if self.n == 0:
            return "not measured"
        return "met" if self.met else ("reversed" if self.high < 0.0 else "not shown")


def case_dice(evaluation: dict) -> dict[str, float]:
    """Case -> mean Dice over classes, from an ``evaluate_folders`` result."""
    return {case: float(np.mean([v["dice"] for v in classes.values()]))
            for case, classes in evaluation["per_case"].items()}


def paired_differences(better: dict, worse: dict, factor: float = 1.0) -> np.ndarray:
    """``better - factor * worse`` per case present in both ``case_dice`` maps."""
    common = sorted(set(better) & set(worse))
    return np.array([better[c] - factor * worse[c] for c in common], dtype=float)


def bootstrap_interval(differences: np.ndarray, level: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap of the mean over the paired units."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, (resamples, d.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def compare_goals(runs: list[dict], goals=GOALS) -> list[Comparison]:
    """``runs``: one ``{stage: evaluate_folders result}`` map per seed. Units from all runs are pooled."""
    out = []
    for name, better, worse, factor, _ in goals:
        diffs = [paired_differences(case_dice(r[better]), case_dice(r[worse]), factor)
                 for r in runs if better in r and worse in r]
        pooled = np.concatenate(diffs) if diffs else np.zeros(0)
        mean, low, high = bootstrap_interval(pooled)
        out.append(Comparison(name, mean, low, high, int(pooled.size)))
    return out


def format_comparisons(comparisons: list[Comparison]) -> str:
    lines = [f"{'goal':<30}{'mean diff':>10}  {'95% interval':<18}{'n':>4}  verdict"]
    for c in comparisons:
        interval = f"[{c.low:+.3f}, {c.high:+.3f}]" if c.n else "-"
        mean = f"{c.mean:+.3f}" if c.n else "-"
        lines.append(f"{c.name:<30}{mean:>10}  {interval:<18}{c.n:>4}  {c.verdict()}")
    return "\n".join(lines)
