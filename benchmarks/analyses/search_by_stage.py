"""Which outcome of the DFG search (a stage-1, 2 or 3 mask, or the model's mask kept) gains or loses, per class?

Why: over five seeds the search alone changes the FA model's pseudo-labels by -0.05 to +0.002 and the left kidney
loses in every size class (``dice_by_organ_size.py``). The refine reports say, per slice and class, where the
search ended: a stage-1, 2 or 3 SAM mask replaced the model's, or the model's mask was kept (no stable box, or a
mask over the growth bound). Pairing the model's and the search's labels per slice within those groups shows which
stage's masks cost what. Per seed, the 4 target training images: the refine report, ``labels_model`` (the FA
model's labels the search starts from) and ``labels_raw`` (after the search, before post-processing); the 2D Dice
of both where the organ is in the target label, their false-positive pixels where it is not. Nothing is run;
target labels are read only to score.

    .venv/bin/python benchmarks/analyses/search_by_stage.py -o bench_out [--seeds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nnunet_dfg.nnunet_io import dataset_folder, read_json, write_json_atomic
from nnunet_dfg.statistics import bootstrap_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402
from dice_by_organ_size import read_array, slice_score  # noqa: E402

GROUPS = ("stage 1", "stage 2", "stage 3", "no stable box", "growth bound")


def group(trace: dict) -> str | None:
    """The trace's group: where the search ended for a class the model labels on the slice (None: it does not)."""
    if not trace["present"]:
        return None
    if trace["refined"]:
        return f"stage {trace['stage']}"
    return "growth bound" if "model prediction kept" in trace["reason"] else "no stable box"


def slice_rows(report: dict, truth: np.ndarray, model: np.ndarray, searched: np.ndarray) -> list[dict]:
    """One row per searched (slice, class) the model labels: its group and the model's and the search's score (2D
    Dice where the organ is in ``truth``, else predicted pixels); arrays (Z, Y, X) on the search's grid."""
    if list(truth.shape) != list(report["network_grid_shape"]):
        raise ValueError(f"labels {truth.shape} are not on the search's grid {report['network_grid_shape']}")
    names = {str(v): k for k, v in report["labels"].items() if v}
    rows = []
    for z, entry in report["slices"].items():
        for c, trace in entry["classes"].items():
            where = group(trace)
            if where is None:
                continue
            organ = truth[int(z)] == int(c)
            rows.append({"class": names[c], "group": where, "organ": bool(organ.any()),
                         "model": slice_score(model[int(z)] == int(c), organ),
                         "search": slice_score(searched[int(z)] == int(c), organ)})
    return rows


def run_seed(grid: quality_grid.GridRun, seed: int) -> list[dict]:
    p = grid.pipeline("2d", seed, grid.spec.severities[0])
    refine = dataset_folder(p.raw, p.cfg.pseudo_id("dfg")) / "dfg_refine"
    rows = []
    for report_file in sorted((refine / "reports").glob("*.json")):
        report, case = read_json(report_file), report_file.stem
        truth = read_array(Path(p.cfg.target_labels_tr) / f"{case}.nii.gz")
        rows += slice_rows(report, truth, read_array(refine / "labels_model" / f"{case}.nii.gz"),
                           read_array(refine / "labels_raw" / f"{case}.nii.gz"))
    return rows


def summary(rows: list[dict]) -> dict:
    """Per class and group: slices with the organ (mean Dice model -> search, paired difference with its interval)
    and without it (mean false-positive pixels model -> search)."""
    out: dict = {}
    for name in dict.fromkeys(r["class"] for r in rows):
        for where in GROUPS:
            mine = [r for r in rows if r["class"] == name and r["group"] == where]
            if not mine:
                continue
            on = [r for r in mine if r["organ"]]
            off = [r for r in mine if not r["organ"]]
            entry: dict = {"slices_with_organ": len(on), "slices_without": len(off)}
            if on:
                d = np.array([r["search"] - r["model"] for r in on])
                entry.update({"dice_model": round(float(np.mean([r["model"] for r in on])), 3),
                              "dice_search": round(float(np.mean([r["search"] for r in on])), 3),
                              "search - model": [round(v, 3) for v in bootstrap_interval(d)]})
            if off:
                entry.update({"fp_px_model": round(float(np.mean([r["model"] for r in off])), 1),
                              "fp_px_search": round(float(np.mean([r["search"] for r in off])), 1)})
            out[f"{name} / {where}"] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="a finished run_all.py folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    out = Path(args.o).resolve()
    grid = quality_grid.GridRun(quality_grid.GridSpec(), out / "grid")
    rows = [r for seed in args.seeds for r in run_seed(grid, seed)]
    figures = {"seeds": args.seeds, **summary(rows)}
    write_json_atomic(out / "search_by_stage.json", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
