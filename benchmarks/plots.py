"""The PNG figures of BENCHMARKS.md (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PLOTTED = ("source_only", "fa", "pseudo_fa", "pseudo_dfg_post", "self_trained", "oracle")


def dice_by_severity(summary: dict, configurations: list[str], severities: list[float], path: Path) -> None:
    """Mean Dice (error bars: spread over seeds) of the main stages against the shift severity, one panel per
    configuration. ``summary[config][stage][severity] = (mean, sd)``."""
    fig, axes = plt.subplots(1, len(configurations), figsize=(5.5 * len(configurations), 4), sharey=True,
                             squeeze=False)
    for ax, config in zip(axes[0], configurations):
        for stage in PLOTTED:
            rows = summary.get(config, {}).get(stage)
            if not rows:
                continue
            xs = [s for s in severities if s in rows]
            ax.errorbar(xs, [rows[s][0] for s in xs], yerr=[rows[s][1] for s in xs], marker="o", capsize=3,
                        label=stage)
        ax.set_title(config)
        ax.set_xlabel("shift severity")
        ax.set_xticks(severities)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean Dice (target)")
    axes[0][0].set_ylim(0, 1)
    axes[0][-1].legend(fontsize=8, loc="upper right")
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


def mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0
