"""Does SDG at the reference's recipe, or with its equalised input or whole-slice boxes, beat the source model?

Why (issue 25): every SDG figure of the reference is fine-tuned at its recipe (200 passes over every source slice,
16 slices per step, canvases reshuffled every pass), and two of its choices the project offers as options: its
input, each slice equalised (``--sam-intensity equalize``), and its box where the map is empty, the whole slice
(``--empty-box full``), trained and predicted the same way. Per seed of a finished ``quality_grid.py`` grid
(configuration 2d, the grid's first severity), the grid's source model and its source data train three decoders
with the pipeline's own ``finetune-sam`` step, at ``--epochs`` passes: ``recipe`` (the grid's SAM intensity, no
box where the map is empty), ``equalize`` and ``full`` (one option each); the pipeline's ``sdg-predict`` step
labels the target test images with each, scored on the grid's hidden test labels. Nothing is tuned here: give the
budget and the seeds before looking at the figures.

Reported: per variant, mean Dice overall and per class; its paired difference to the grid's source_only
(``variant - source_only``) and each option's to the recipe (``option - recipe``), per case, pooled over the seeds,
with 95% bootstrap intervals (``nnunet_dfg.statistics``); and each decoder's training loss per pass, with the
change over its last tenth of passes (near 0: flat, converged).

    .venv/bin/python benchmarks/analyses/sdg_recipe.py GRID --seeds 3 4 [--epochs 200] [-device cuda] \
        [-o GRID/../sdg_recipe.json]

GRID is the folder ``quality_grid.GridRun`` wrote (``run_all.py``'s ``OUT/grid``). Resumable: each variant's
steps keep their markers under ``GRID/../sdg_recipe/<configuration>_seed<seed>/<variant>/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nnunet_dfg.nnunet_io import read_json, write_json_atomic
from nnunet_dfg.pipeline.dfg import DFGPipeline
from nnunet_dfg.sam.finetuned import checkpoint_meta
from nnunet_dfg.statistics import bootstrap_interval, case_dice, paired_differences

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402

# each variant's change to the grid's pipeline configuration (the recipe: none)
VARIANTS = {"recipe": {}, "equalize": {"sam_intensity": "equalize"}, "full": {"sdg_empty_box": "full"}}
STEPS = ("finetune_sam", "predict_sdg", "evaluate_sdg")  # the pipeline's own steps of the sdg row
CHECKPOINT = "sam_finetuned_on_source.pth"  # where DFGPipeline.sdg_steps writes the decoder (its runner's work)


def variant_pipeline(grid: quality_grid.GridRun, configuration: str, seed: int, variant: str, work: Path,
                     epochs: int, device: str | None = None) -> DFGPipeline:
    """The grid chain's pipeline, its sdg row alone at the reference's budget (``epochs`` passes over every boxed
    source slice, 16 per step) with ``variant``'s option, in its own work folder."""
    severity = grid.spec.severities[0]
    p = grid.pipeline(configuration, seed, severity, work / f"{configuration}_seed{seed}" / variant)
    p.cfg = dataclasses.replace(p.cfg, sdg=True, sdg_finetuned=True, sdg_no_finetune=False, sdg_checkpoint=None,
                                finetune_epochs=epochs, finetune_max_slices=None, finetune_batch_canvases=None,
                                **({"device": device} if device else {}), **VARIANTS[variant])
    return p


def variant_steps(p: DFGPipeline) -> list:
    """The pipeline's fine-tuning, prediction and evaluation steps of the sdg row, in that order."""
    steps = [s for s in p.steps() if s.name in STEPS]
    if [s.name for s in steps] != list(STEPS):
        raise RuntimeError(f"the pipeline no longer has the steps {STEPS}: {[s.name for s in steps]}")
    return steps


def run_steps(p: DFGPipeline) -> None:
    """Fine-tune, predict and score one variant (finished steps are skipped)."""
    for step in variant_steps(p):
        p.runner.run(step)


def source_only(grid: quality_grid.GridRun, configuration: str, seed: int) -> dict:
    path = grid.chain_work(configuration, seed, grid.spec.severities[0]) / "eval" / "source_only.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: the grid's chain of seed {seed} has not been evaluated")
    return read_json(path)


def loss_curve(losses: list[float]) -> dict:
    """The loss per pass, and its change over the last tenth of the passes against the tenth before them."""
    tenth = max(1, len(losses) // 10)
    change = (float(np.mean(losses[-tenth:]) - np.mean(losses[-2 * tenth:-tenth]))
              if len(losses) >= 2 * tenth else float("nan"))
    return {"passes": len(losses), "first": round(losses[0], 4), "last": round(losses[-1], 4),
            "last_tenth_change": round(change, 4), "per_pass": [round(v, 4) for v in losses]}


def _interval(diffs: np.ndarray) -> list[float]:
    return [round(v, 3) for v in bootstrap_interval(diffs)]


def summary(runs: list[dict], variants: list[str]) -> dict:
    """``runs``: one ``{"source_only" | variant: evaluate_folders result}`` per seed. Mean Dice (overall and per
    class) of every row, and the paired differences, pooled over the seeds."""
    out: dict = {}
    for row in ["source_only", *variants]:
        classes = runs[0][row]["per_class"]
        out[row] = {"mean_dice": round(float(np.mean([d for r in runs for d in case_dice(r[row]).values()])), 3),
                    "per_class": {c: round(float(np.mean([r[row]["per_class"][c]["dice"] for r in runs])), 3)
                                  for c in classes}}
    pairs = [(v, "source_only") for v in variants] + [(v, "recipe") for v in variants
                                                      if v != "recipe" and "recipe" in variants]
    for better, worse in pairs:
        diffs = np.concatenate([paired_differences(case_dice(r[better]), case_dice(r[worse])) for r in runs])
        out[f"{better} - {worse}"] = {"mean_low_high": _interval(diffs), "n": int(diffs.size)}
    return out


def markdown(figures: dict, variants: list[str]) -> str:
    """The table for ANALYSIS.md: mean Dice, per class, and the paired differences."""
    classes = list(figures["source_only"]["per_class"])
    lines = ["| row | mean Dice | " + " | ".join(classes) + " |", "|---" * (len(classes) + 2) + "|"]
    for row in ["source_only", *variants]:
        f = figures[row]
        lines.append(f"| {row} | {f['mean_dice']:.3f} | " + " | ".join(f"{f['per_class'][c]:.3f}" for c in classes)
                     + " |")
    lines += ["", "| paired difference | mean | 95% interval | n |", "|---|---|---|---|"]
    for key, f in figures.items():
        if " - " in key:
            mean, low, high = f["mean_low_high"]
            lines.append(f"| {key} | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] | {f['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="a finished quality_grid.py grid folder (run_all.py's OUT/grid)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the confirmation seeds")
    parser.add_argument("--configuration", default="2d")
    parser.add_argument("--epochs", type=int, default=200, help="finetune-sam passes (default 200, the reference's)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("-device", dest="device", help="cpu or cuda (default: the grid's)")
    parser.add_argument("--workers", type=int, default=1, help="variants run at once")
    parser.add_argument("-o", dest="output", type=Path, help="JSON (default: GRID/../sdg_recipe.json)")
    args = parser.parse_args(argv)
    grid_dir = args.grid.resolve()
    grid = quality_grid.GridRun(dataclasses.replace(quality_grid.GridSpec(), workers=args.workers), grid_dir)
    work = grid_dir.parent / "sdg_recipe"
    baselines = {seed: source_only(grid, args.configuration, seed) for seed in args.seeds}  # fail before training
    jobs = [(seed, v) for seed in args.seeds for v in args.variants]
    pipelines = {job: variant_pipeline(grid, args.configuration, job[0], job[1], work, args.epochs, args.device)
                 for job in jobs}
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(lambda job: run_steps(pipelines[job]), jobs))
    runs = [{"source_only": baselines[seed],
             **{v: read_json(pipelines[seed, v].runner.work / "eval" / "sdg.json") for v in args.variants}}
            for seed in args.seeds]
    figures = {"configuration": args.configuration, "seeds": args.seeds, "epochs": args.epochs,
               **summary(runs, args.variants),
               "loss": {f"seed{seed} {v}": loss_curve(checkpoint_meta(pipelines[seed, v].runner.work / CHECKPOINT)
                                                      ["loss_per_epoch"]) for seed, v in jobs}}
    write_json_atomic(args.output or grid_dir.parent / "sdg_recipe.json", figures)
    print(markdown(figures, args.variants))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "per_pass"} for k, v in figures["loss"].items()},
                     indent=1))
    return figures


if __name__ == "__main__":
    main()
