"""BENCHMARKS.md from the figures of one run (``run_all.py``): tables, goal checks and the PNG links.

Everything here is derived from the JSON the run wrote, so the file can be re-rendered without re-running
(``run_all.py --report-only``). Hand-written analysis lives in ``benchmarks/ANALYSIS.md`` and is appended as is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_dfg.pipeline.stage_table import STAGES
from nnunet_dfg.statistics import GOALS, bootstrap_interval, case_dice, compare_goals

def by_role(records: list[dict]) -> list[dict]:
    """Records regrouped so that confirmation seeds never pool with development seeds: their configuration becomes
    ``2d, confirmation seeds`` / ``2d, development seeds`` once any confirmation seed is present."""
    if not any(r.get("role") == "confirmation" for r in records):
        return records
    return [{**r, "configuration": f"{r['configuration']}, {r.get('role', 'development')} seeds"} for r in records]


def stage_summary(records: list[dict]) -> dict:
    """config -> stage -> {mean, low, high, sd_seeds, n}: the mean Dice over the cases of all seeds with a 95%
    bootstrap interval over (case, seed) units, and the spread of the per-seed means."""
    out: dict = {}
    for config in sorted({r["configuration"] for r in records}):
        runs = [r for r in records if r["configuration"] == config]
        for stage in STAGES:
            per_seed = [case_dice(r["evaluations"][stage]) for r in runs if stage in r.get("evaluations", {})]
            if not per_seed:
                continue
            pooled = np.array([v for seed in per_seed for v in seed.values()])
            mean, low, high = bootstrap_interval(pooled)
            seed_means = [float(np.mean(list(seed.values()))) for seed in per_seed]
            out.setdefault(config, {})[stage] = {"mean": mean, "low": low, "high": high, "n": int(pooled.size),
                                                 "seeds": len(per_seed), "sd_seeds": float(np.std(seed_means))}
    return out


def stage_tables(summary: dict) -> list[str]:
    lines = []
    for config, stages in summary.items():
        lines += [f"### `{config}`", "", "| stage | mean Dice | 95% interval | sd of seed means | cases x seeds |"
                  " what |", "|---|---|---|---|---|---|"]
        for stage, v in stages.items():
            lines.append(f"| {stage} | {v['mean']:.3f} | [{v['low']:.3f}, {v['high']:.3f}] | {v['sd_seeds']:.3f} | "
                         f"{v['n'] // max(v['seeds'], 1)} x {v['seeds']} | {STAGES[stage]} |")
        lines.append("")
    return lines


CONVERGED = 0.85  # the bar a source model (in domain) and the oracle must clear for a stage table to mean much


def convergence(records: list[dict]) -> list[str]:
    """Per configuration and seed: the source model in its domain and the oracle, each against ``CONVERGED``, so a
    seed whose model did not converge is named rather than averaged away."""
    lines = ["| config | seed | source_in_domain | oracle | converged |", "|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["configuration"], r["seed"])):
        dice = {s: r["table"][s]["mean_dice"] for s in ("source_in_domain", "oracle") if s in r["table"]}
        ok = bool(dice) and all(v >= CONVERGED for v in dice.values())
        cells = " | ".join(f"{dice[s]:.3f}" if s in dice else "–" for s in ("source_in_domain", "oracle"))
        lines.append(f"| {r['configuration']} | {r['seed']} | {cells} | {'yes' if ok else '**no**'} |")
    return lines


def goal_tables(records: list[dict]) -> tuple[list[str], dict]:
    """Per configuration: each goal as a paired difference with its interval and verdict."""
    lines, verdicts = [], {}
    for config in sorted({r["configuration"] for r in records}):
        comparisons = compare_goals([r["evaluations"] for r in records if r["configuration"] == config])
        if not any(c.n for c in comparisons):
            lines += [f"#### `{config}`", "", "No goal measured: this configuration runs the source model's rows and "
                      "the oracle only (no adaptation chain).", ""]
            continue
        lines += [f"#### `{config}`", "", "| goal | mean paired difference | 95% interval | pairs | verdict |",
                  "|---|---|---|---|---|"]
        for c, goal in zip(comparisons, GOALS):
            if c.n == 0:
                lines.append(f"| {c.name} | – | – | 0 | not measured |")
                continue
            mark = "**met**" if c.met else c.verdict()
            lines.append(f"| {c.name} | {c.mean:+.3f} | [{c.low:+.3f}, {c.high:+.3f}] | {c.n} | {mark} |")
            verdicts[(config, c.name)] = c
        lines.append("")
    return lines, verdicts


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
                  f"{r['decoder_calls_per_slice_and_class']['fast']:.1f} decoder calls per slice and present class"
                  + (f"; encoder {r['encoder_s_per_slice']:.2f} s per slice, one decoder call "
                     f"{r['decoder_ms_per_call']:.0f} ms" if "decoder_ms_per_call" in r else "") + "."]
    d = speed.get("decoder")
    if d:
        f, ops = d["floor"], ", ".join(f"{k} {v:.1f}" for k, v in list(d["per_op_ms"].items())[:6])
        lines += [f"- **Where a decoder call goes** (`benchmarks/decoder_profile.py`: ONNX Runtime's profile of the "
                  f"split decoder, one box, {d['threads']} threads, mean of {d['calls']} calls): {d['ms_per_call']:.1f} "
                  f"ms of kernels, {d['matrix_ms_per_call']:.1f} ms of them matrix products (ms per call by operator: "
                  f"{ops}). At {f['decoder_calls_per_slice']:.1f} calls per slice and {f['encoder_s_per_slice']:.2f} s "
                  f"of encoder, this decoder gives a ratio of {f['ratio_profiled_decoder']:.2f}, one made of its "
                  f"matrix products alone **{f['ratio_matrix_products_only']:.2f}**; 1.5 needs "
                  f"{f['ms_per_call_for_ratio_1_5']:.1f} ms per call."]
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
        "not measured: no GPU machine was lent to the session that produced this file. The measurement is "
        "prepared: `benchmarks/gpu_check.py --device cuda [--checkpoint medsam_vit_b.pth] [--demo DEMO_DIR] "
        "--markdown gpu.md` (vit_b refinement per slice, split vs stock and batched vs sequential decoding, FA and "
        "self-training steps against a stock nnU-Net step; `--device cpu --tiny` is its dry run).")]
    c = speed.get("memory_curve")
    if c:
        from memory_curve import markdown as curve_table
        lines += ["", "- **Peak memory and time against the volume size** (`benchmarks/memory_curve.py`; one "
                  "`refine` process per size, softmax and features memory-mapped above "
                  "`$NNUNET_DFG_STREAM_ABOVE_MB`):", "", curve_table(c)]
    return lines


def render(meta: dict, records: list[dict], speed: dict, figures: dict, analysis: str) -> str:
    commits = sorted({(r["seed"], r.get("commit", "unknown")) for r in records if r.get("role") == "confirmation"})
    records = by_role(records)
    summary = stage_summary(records)
    goal_lines, _ = goal_tables(records)
    settings = "; ".join(f"`{c}`: volumes {' x '.join(map(str, v['shape']))}, seeds {list(v['seeds'])}, trainers "
                         f"`*{v['variant']}`, oracle `*{v['oracle_variant']}`, search settings `{v['search_config']}`"
                         for c, v in meta["settings"].items())
    goals = "; ".join(f"*{name}*: {what}" for name, _, _, _, what in GOALS)
    out = ["# Benchmarks", "",
           f"Regenerate with `{meta['command']}` (from scratch; this run: {meta['wall_min']:.0f} min on "
           f"{meta['machine']}, {meta['date']}). {meta.get('note', '')}", "",
           "## Setting", "",
           f"Synthetic T2-SPIR MRI → portal-venous CT benchmark (`nnunet_dfg synthetic`, severity "
           f"{meta['severities']}; the physics of both domains: docs/SYNTHETIC_BENCHMARK.md): {meta['n_source']} "
           f"labelled source volumes, {meta['n_target']} unlabelled target volumes (adaptation; the pseudo_* rows "
           f"are measured on them), {meta['n_test']} held-out target test volumes (all other rows but "
           f"source_in_domain, which is nnU-Net's validation fold of the source). Plans `{meta['plans']}` "
           f"(nnU-Net's plans with a narrower network, `nnunet_dfg/cpu_plans.py`). {settings} (trainer schedules: "
           "docs/USAGE.md); segmenter LiteMedSAM. A seed fixes the synthetic data and every training run "
           "(`nnUNet_dfg_seed`). Each model is its run's last checkpoint; target labels are read only by the "
           "evaluation and the oracle.", "",
           f"**Seeds.** Development seeds {list(meta.get('development_seeds', []))}: every design choice, option "
           "and default was looked at on them. Confirmation seeds "
           f"{list(meta.get('confirmation_seeds', []))}: named in `benchmarks/quality_grid.py` before they ran, "
           "run once after every choice was frozen; verdicts are theirs, the development figures stand beside "
           "them. "
           + ("Confirmation chains ran at " + ", ".join(f"seed {s}: `{c}`" for s, c in commits) + "."
              if commits else "No confirmation seed has run yet: every figure below is a development figure."), "",
           "## Quality: mean Dice per stage", "",
           "Mean Dice over the cases of all seeds (per case: mean over the four organs) with a 95% percentile "
           "bootstrap interval over (case, seed) units, and the standard deviation of the per-seed means.", ""]
    out += stage_tables(summary)
    out += [f"Convergence, per seed (both at least {CONVERGED}):", ""] + convergence(records) + [""]
    if "dice" in figures:
        out += [f"![Dice per stage]({figures['dice']})", ""]
    out += ["## Goals, as paired differences", "",
            f"{goals}. Each is the mean of per-case paired differences (the same image under both stages; the "
            "oracle goal uses self-trained - 0.9 x oracle) pooled over seeds, with a 95% bootstrap interval over "
            "(case, seed) units; **met** only when the interval lies above 0, *reversed* when it lies below, *not "
            "shown* otherwise.", ""] + goal_lines
    out += ["### Per-class Dice (mean over seeds)", ""] + per_class(records)
    out += ["### Where the DFG search ended (all runs, per class)", ""] + search_table(records)
    out += ["", "## Speed (ratios measured in this run)", ""] + speed_section(speed)
    if "time" in figures:
        out += ["", f"![Time per slice and memory]({figures['time']})"]
    if analysis:
        out += ["", analysis.strip()]
    return "\n".join(out) + "\n"
