"""Does SDG beat the source model at milder shifts, where the source model still finds the organs?

SDG against the source model as the shift grows, with the grid's 2d source models (nothing is trained).
Why: at the benchmark's severity (0.7: the liver's contrast inverted) SAM prompted with the source model's refined
boxes is below the source model alone on every organ (BENCHMARKS.md). SDG can only refine what the source model
finds; this measures whether it helps where the source model still finds the organs. Per seed and severity: the
grid's generator writes the target (the same patients at another severity), ``nnUNetv2_predict`` with the source
model gives source_only, ``sdg-predict`` with the shipped segmenter gives sdg_no_finetune and with the grid's
decoder fine-tuned on that seed's source (``finetune-sam`` learns from the source only, so nothing is retrained)
gives sdg, all scored on the 8 test images; each SDG row's difference to source_only is paired per case and
pooled over the seeds. The grid's own severity is read from the grid, not recomputed.

    .venv/bin/python benchmarks/analyses/sdg_by_severity.py -o bench_out [--severities 0.3 0.5] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
import sys
from pathlib import Path

import numpy as np

from nnunet_dfg.nnunet_io import read_json, write_json_atomic
from nnunet_dfg.statistics import bootstrap_interval, case_dice, paired_differences

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402

STAGES = ("source_only", "sdg_no_finetune", "sdg")


def evaluations(grid: quality_grid.GridRun, seed: int, severity: float, out: Path) -> dict:
    """Stage -> evaluate_folders result for one seed and severity (the grid's severity: its chain's)."""
    if severity == grid.spec.severities[0]:
        work = grid.chain_work("2d", seed, severity)
    else:
        work = out / f"seed{seed}" / f"severity{severity:g}"
        p = grid.pipeline("2d", seed, severity, work)
        checkpoint = grid.chain_work("2d", seed, grid.spec.severities[0]) / "sam_finetuned_on_source.pth"
        p.cfg = dataclasses.replace(p.cfg, sdg_checkpoint=checkpoint)
        wanted = {f"{kind}_{stage}" for stage in STAGES for kind in ("predict", "evaluate")}
        for step in p.steps():
            if step.name in wanted:
                p.runner.run(step)
    return {stage: read_json(work / "eval" / f"{stage}.json") for stage in STAGES}


def summary(runs: list[dict]) -> dict:
    """Mean Dice of every stage, per class and overall, and each SDG row's paired difference to source_only."""
    out = {}
    for stage in STAGES[1:]:
        diffs = np.concatenate([paired_differences(case_dice(r[stage]), case_dice(r["source_only"])) for r in runs])
        mean, low, high = bootstrap_interval(diffs)
        out["n"], out[f"{stage}_minus_source"] = int(diffs.size), [round(mean, 3), round(low, 3), round(high, 3)]
    for stage in STAGES:
        out[stage] = round(float(np.mean([d for r in runs for d in case_dice(r[stage]).values()])), 3)
        classes = runs[0][stage]["per_class"]
        out[f"{stage}_per_class"] = {c: round(float(np.mean([r[stage]["per_class"][c]["dice"] for r in runs])), 3)
                                     for c in classes}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="a finished run_all.py folder (its grid's 2d source models)")
    parser.add_argument("--severities", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    out = Path(args.o).resolve()
    base = quality_grid.GridSpec()
    # the grid's severity first, so its target keeps its dataset id; the others get the next ids
    severities = tuple(dict.fromkeys((base.severities[0], *args.severities)))
    grid = quality_grid.GridRun(quality_grid.GridSpec(severities=severities), out / "grid")
    for seed in args.seeds:
        raw = Path(grid.pipeline("2d", seed, severities[0]).runner.env["nnUNet_raw"])
        quality_grid.write_data(raw, grid.spec, seed, grid.spec.settings["2d"].shape)
    work = out / "sdg_by_severity"
    jobs = [(seed, sev) for sev in severities for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=grid.spec.workers) as pool:
        results = dict(zip(jobs, pool.map(lambda job: evaluations(grid, *job, work), jobs)))
    figures = {f"{sev:g}": summary([results[seed, sev] for seed in args.seeds]) for sev in severities}
    write_json_atomic(out / "sdg_by_severity.json", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
