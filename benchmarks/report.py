"""BENCHMARKS.md from the figures of one run (``run_all.py``): tables, goal checks and the PNG links.

Everything here is derived from the JSON the run wrote, so the file can be re-rendered without re-running
(``run_all.py --report-only``). Hand-written analysis lives in ``benchmarks/ANALYSIS.md`` and is appended as is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_dfg.pipeline.stage_table import STAGES
from plots import mean_sd

GOAL_CHAIN = ("source_only", "fa", "pseudo_dfg_post", "self_trained")


def summarise(records: list[dict]) -> dict:
    """config -> stage -> severity -> (mean, sd) of the mean Dice over seeds."""
    values: dict = {}
    for r in records:
        for stage, row in r["table"].items():
            values.setdefault(r["configuration"], {}).setdefault(stage, {}).setdefault(r["severity"], []).append(
                row["mean_dice"])
    return {c: {s: {sev: mean_sd(v) for sev, v in sorted(by.items())} for s, by in stages.items()}
            for c, stages in values.items()}


def _cell(pair) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}" if pair else "–"


def stage_tables(summary: dict, severities: list[float]) -> list[str]:
    lines = []
    for config, stages in summary.items():
        lines += [f"### `{config}`", "", "| stage | " + " | ".join(f"severity {s:g}" for s in severities) + " |",
                  "|---|" + "---|" * len(severities)]
        for stage in STAGES:
            if stage in stages:
                lines.append(f"| {stage} | " + " | ".join(_cell(stages[stage].get(s)) for s in severities) + " |")
        lines.append("")
    return lines


def goal_checks(records: list[dict]) -> tuple[list[str], dict]:
    """Per run: does each DFG stage beat the one before it, and does self-training reach 0.9x the oracle?"""
    lines = ["| config | seed | severity | source < FA | FA labels < pseudo (DFG+post) | pseudo <= self-trained | "
             "self-trained / oracle |", "|---|---|---|---|---|---|---|"]
    counts = {"source<fa": 0, "fa<pseudo": 0, "pseudo<=st": 0, "st>=0.9oracle": 0, "runs": 0}
    for r in sorted(records, key=lambda r: (r["configuration"], r["severity"], r["seed"])):
        d = {s: r["table"][s]["mean_dice"] for s in GOAL_CHAIN + ("oracle",) if s in r["table"]}
        if any(s not in d for s in GOAL_CHAIN):
            continue
        # refined vs unrefined labels on the same (training) images when the run has them, else FA on the test set
        base = r["table"].get("pseudo_fa", r["table"]["fa"])["mean_dice"]
        checks = [d["source_only"] < d["fa"], base < d["pseudo_dfg_post"], d["pseudo_dfg_post"] <= d["self_trained"]]
        ratio = d["self_trained"] / d["oracle"] if d.get("oracle") else float("nan")
        counts["runs"] += 1
        for key, ok in zip(("source<fa", "fa<pseudo", "pseudo<=st"), checks):
            counts[key] += int(ok)
        counts["st>=0.9oracle"] += int(ratio >= 0.9)
        mark = lambda ok, a, b: f"{'yes' if ok else '**no**'} ({a:.2f} → {b:.2f})"  # noqa: E731
        lines.append(f"| {r['configuration']} | {r['seed']} | {r['severity']:g} | "
                     f"{mark(checks[0], d['source_only'], d['fa'])} | {mark(checks[1], base, d['pseudo_dfg_post'])} | "
                     f"{mark(checks[2], d['pseudo_dfg_post'], d['self_trained'])} | "
                     f"{'' if ratio >= 0.9 else '**'}{ratio:.2f}{'' if ratio >= 0.9 else '**'} |")
    n = max(counts["runs"], 1)
    head = [f"Over {counts['runs']} runs: source < FA in {counts['source<fa']}, FA < refined pseudo-labels in "
            f"{counts['fa<pseudo']}, pseudo-labels <= self-trained in {counts['pseudo<=st']}, self-trained >= 0.9x "
            f"oracle in {counts['st>=0.9oracle']} ({100 * counts['st>=0.9oracle'] / n:.0f}%).", ""]
    return head + lines, counts


def per_class(records: list[dict]) -> list[str]:
    """Per-class Dice per stage, mean over seeds and severities, one table per configuration."""
    lines = []
    for config in sorted({r["configuration"] for r in records}):
        rows: dict = {}
        for r in records:
            if r["configuration"] != config:
                continue
            for stage, row in r["table"].items():
                for cls, v in row["per_class"].items():
                    rows.setdefault(stage, {}).setdefault(cls, []).append(v["dice"])
        classes = list(next(iter(rows.values())))
        lines += [f"#### `{config}`", "", "| stage | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for stage in STAGES:
            if stage in rows:
                lines.append(f"| {stage} | " + " | ".join(f"{np.mean(rows[stage][c]):.3f}" for c in classes) + " |")
        lines.append("")
    return lines


def search_table(records: list[dict]) -> list[str]:
    """Where the DFG search ended, per class: share of searched slices on which the class was present and the
    model's mask was kept (no stable box: stage 0; a mask outside the area bounds: bound) or a stage-1/2/3 SAM mask
    replaced it."""
    lines = ["| config | class | present slices | kept model (0) | outside area bounds | stage 1 | stage 2 | stage 3 |",
             "|---|---|---|---|---|---|---|---|"]
    for config in sorted({r["configuration"] for r in records}):
        totals: dict = {}
        for r in records:
            if r["configuration"] == config:
                for cls, counts in r["search"].items():
                    for stage, n in counts.items():
                        totals.setdefault(cls, {}).setdefault(stage, 0)
                        totals[cls][stage] += n
        for cls, counts in totals.items():
            present = sum(n for s, n in counts.items() if s != "absent")
            share = lambda s: f"{100 * counts.get(s, 0) / max(present, 1):.0f}%"  # noqa: E731
            lines.append(f"| {config} | {cls} | {present} | {share('0')} | {share('bound')} | {share('1')} | "
                         f"{share('2')} | {share('3')} |")
    return lines


def speed_section(speed: dict) -> list[str]:
    lines = []
    r = speed.get("refine")
    if r:
        lines += [f"- **Refinement over encoder-only time** ({r['sam']}, {r['runtime']}, {r['slices_searched']} searched "
                  f"slices of {r.get('cases', 1)} case): encoder only {r['encoder_only_s']:.1f} s, DFG search "
                  f"{r['fast_search_s']:.1f} s → ratio **{r['ratio_fast_over_encoder']:.2f}**; "
                  f"{r['decoder_calls_per_slice_and_class']['fast']:.1f} decoder calls per slice and present class."]
    for config, s in (speed.get("steps") or {}).items():
        lines += [f"- **Training step, `{config}`, same images and plans** (batch {s['stock']['batch_size']}, patch "
                  f"{s['stock']['patch_size']}, mean of {s['stock']['steps']} steps): stock nnUNetTrainer "
                  f"{s['stock']['mean_s']:.3f} s, FA {s['fa']['mean_s']:.3f} s (ratio **{s['fa_over_stock']:.2f}**), "
                  f"self-training {s['self_training']['mean_s']:.3f} s (ratio **{s['self_training_over_stock']:.2f}**)."]
    t = speed.get("tiling")
    if t:
        p = t["encoder_passes"]
        agree = f"{t['agreement_dice']:.3f}" if t["agreement_dice"] is not None else "n/a"
        if t["passes_saved"] is None:
            lines += [f"- **2×2 tiling**: not measured: the model gave no SDG box on the {t['slices']} slices."]
        else:
            lines += [f"- **2×2 tiling (SDG prompts from the FA model, {t['slices']} target test slices)**: encoder "
                      f"passes {p['1']} → {p['2']} (**{100 * t['passes_saved']:.0f}% saved**), time ratio "
                      f"tiled/untiled {t['time_ratio_tiled_over_untiled']:.2f}, label agreement tiled vs untiled "
                      f"(mean Dice per class) {agree}."]
    m = speed.get("memory")
    if m:
        lines += ["- **Peak memory of `nnunet_dfg refine` against the number of cases** (DFG prompt, one process "
                  "per row):", "", "| cases | slices | peak RSS (MiB) | wall (s) | s per slice |",
                  "|---|---|---|---|---|"]
        lines += [f"| {x['cases']} | {x['slices']} | {x['peak_rss_mb']} | {x['wall_s']} | {x['s_per_slice']} |"
                  for x in m]
        if len(m) > 1:
            grow = m[-1]["peak_rss_mb"] / m[0]["peak_rss_mb"]
            marginal = (m[-1]["wall_s"] - m[0]["wall_s"]) / max(m[-1]["slices"] - m[0]["slices"], 1)
            lines += ["", f"  Peak memory at {m[-1]['cases']} cases is {grow:.2f}x the 1-case figure; the marginal "
                          f"cost is {marginal:.2f} s per slice (the rest of a run is start-up: imports, model and "
                          "SAM loading, ONNX export)."]
    g = speed.get("gpu")
    lines += ["", "**GPU (MedSAM/SAM vit_b refinement per slice)**: " + (
        ", ".join(f"{k}: {v}" for k, v in g.items()) if g else
        "not measured: no GPU machine was lent to the session that produced this file.")]
    return lines


def render(meta: dict, records: list[dict], speed: dict, figures: dict, analysis: str) -> str:
    severities = sorted({r["severity"] for r in records})
    summary = summarise(records)
    goal_lines, _ = goal_checks(records)
    settings = "; ".join(f"`{c}`: volumes {' x '.join(map(str, v['shape']))}, trainers `*{v['variant']}`, oracle "
                         f"`*{v['oracle_variant']}`, search thresholds `{v['search_config']}`"
                         for c, v in meta["settings"].items())
    out = ["# Benchmarks", "",
           f"Regenerate with `{meta['command']}` (from scratch; this run: {meta['wall_min']:.0f} min on "
           f"{meta['machine']}, {meta['date']}). {meta.get('note', '')}", "",
           "## Setting", "",
           f"Synthetic MRI→CT-like benchmark (`nnunet_dfg synthetic`): {meta['n_source']} "
           f"labelled source images, {meta['n_target']} unlabelled target images (adaptation; the pseudo_* rows are "
           f"measured on them), {meta['n_test']} held-out target test images (all other rows). {settings} "
           "(trainer schedules: README, *Trainers and their variants*); segmenter LiteMedSAM. Seeds "
           f"{meta['seeds']}, severities {meta['severities']}, configurations {meta['configurations']}. Each "
           "model is its run's last checkpoint; target labels are read only by the evaluation and the oracle.", "",
           "## Quality: mean Dice per stage (mean ± spread over seeds)", ""]
    out += stage_tables(summary, severities)
    if "dice" in figures:
        out += [f"![Dice per stage and severity]({figures['dice']})", ""]
    out += ["## Goals: each DFG stage beats the one before, final model >= 0.9x oracle", "",
            "Note: the pseudo_* rows are measured on the target *training* images (what self-training learns "
            "from), the other rows on the held-out test images. *FA < pseudo* compares the FA model's own labels "
            "on the training images (`pseudo_fa`) with the refined ones (`pseudo_dfg_post`) on the same images.",
            ""] + goal_lines
    out += ["", "### Per-class Dice (mean over seeds and severities)", ""] + per_class(records)
    out += ["### Where the DFG search ended (all runs, per class)", ""] + search_table(records)
    out += ["", "## Speed (ratios measured in this run)", ""] + speed_section(speed)
    if "time" in figures:
        out += ["", f"![Time per slice and memory]({figures['time']})"]
    if analysis:
        out += ["", analysis.strip()]
    return "\n".join(out) + "\n"
