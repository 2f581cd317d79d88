"""The PNG figures of BENCHMARKS.md (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PLOTTED = ("source_in_domain", "source_only", "fa", "pseudo_fa", "pseudo_dfg_post", "self_trained", "sdg", "oracle")


def dice_by_stage(summary: dict, configurations: list[str], path: Path) -> None:
    """Mean Dice of the main stages with their 95% intervals, one panel per configuration.
    ``summary[config][stage] = {mean, low, high, ...}`` (``report.stage_summary``)."""
    fig, axes = plt.subplots(1, len(configurations), figsize=(5.5 * len(configurations), 4), sharey=True,
                             squeeze=False)
    for ax, config in zip(axes[0], configurations):
        rows = summary.get(config, {})
        stages = [s for s in PLOTTED if s in rows]
        means = [rows[s]["mean"] for s in stages]
        errors = [[rows[s]["mean"] - rows[s]["low"] for s in stages], [rows[s]["high"] - rows[s]["mean"] for s in stages]]
        ax.bar(range(len(stages)), means, yerr=errors, capsize=3, color=[f"C{i}" for i in range(len(stages))])
        ax.set_xticks(range(len(stages)))
        ax.set_xticklabels(stages, rotation=35, ha="right", fontsize=8)
        ax.set_title(config)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("mean Dice (95% interval)")
    axes[0][0].set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def time_per_slice(refine: dict, memory: list[dict], path: Path) -> None:
    """Seconds per searched slice (encoder only vs the DFG search) and refine's peak memory against cases."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    n = max(refine["slices_searched"], 1)
    bars = {"encoder only": refine["encoder_only_s"] / n, "DFG search (fast)": refine["fast_search_s"] / n}
    if "plain_search_s" in refine:
        bars["DFG search (plain)"] = refine["plain_search_s"] / n
    a.bar(list(bars), list(bars.values()), color=["#888", "#2a7", "#a72"][: len(bars)])
    a.set_ylabel("seconds per searched slice")
    a.set_title(f"{refine['sam']} on {refine['runtime']}")
    if memory:
        cases = [r["cases"] for r in memory]
        b.plot(cases, [r["peak_rss_mb"] for r in memory], marker="o", label="peak RSS (MiB)")
        b.set_xlabel("cases in one refine run")
        b.set_ylabel("peak RSS (MiB)")
        b.set_ylim(0, max(r["peak_rss_mb"] for r in memory) * 1.3)
        b.set_xticks(cases)
        b2 = b.twinx()
        b2.plot(cases, [r["s_per_slice"] for r in memory], marker="s", color="C1", label="s per slice")
        b2.set_ylabel("wall seconds per slice", color="C1")
        b.set_title("refine: memory and time against cases")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
