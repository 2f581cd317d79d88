"""What does each part of the DFG search add? The grid's refinement re-run without it, pseudo-labels scored.

Why: the grid's stage table says whether the refined pseudo-labels beat the FA model, not why. ``no_search``
(every class "absent", so the pseudo-label is the FA model's argmax plus the connectivity post-processing)
isolates what the SAM search adds; a lower presence threshold tests whether the search is starved of classes
on small, low-confidence slices; no stage 3 tests whether inflated boxes make masks leak into other organs; no
growth bound shows what the bound saves. Target labels are read only to score. Appended to BENCHMARKS.md by hand.

    .venv/bin/python benchmarks/analyses/search_ablation.py -o bench_out [-c 2d 3d_fullres]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from nnunet_dfg.evaluation import evaluate_folders
from nnunet_dfg.nnunet_io import dataset_folder, read_json, write_json_atomic
from nnunet_dfg.statistics import bootstrap_interval, case_dice

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402

BIN = Path(sys.executable).parent
# Each variant overrides the benchmark's search settings, which bound a refined mask to 2x the model's own mask
# of the class (max_growth, off in the reference rules).
# no_growth_bound: the reference rules (at the benchmark's pixel thresholds).
# no_search: every class "absent", the pseudo-label is the FA argmax (+ post-processing), no SAM call.
# no_stage3: the reference rules without box inflation; a class whose stage 2 finds no stable box keeps the model's
# prediction.
# hand_scaled_64px: the demo's former hand-set thresholds (40 confident pixels, masks > 15 px at 64 px, i.e. 640
# and 240 at the 256 px the search scales from; the default scales the reference's 200 and 50 by slice area, 12.5
# and 3.1 px at 64 px): does scaling by organ size starve the search of small, low-confidence organs?
# shrink_bound_2: also discard a refined mask under half the model's own (max_shrink, off in the shipped settings).
VARIANTS = {"no_growth_bound": {"max_growth": 0.0}, "no_search": {"presence_min_pixels": 10 ** 9},
            "no_stage3": {"stage3_steps": 0, "max_growth": 0.0},
            "hand_scaled_64px": {"presence_min_pixels": 640, "stage1_min_mask": 240},
            "shrink_bound_2": {"max_shrink": 2.0},
            # overlap_by_probability: pixels two refined masks claim go to the class the model finds likelier there
            # (the reference: the lower class index; a spleen box that grows over the left kidney takes it)
            "overlap_by_probability": {"overlap_by_probability": True}}
ABLATION_OFFSET = 150  # output ids: target + 150, removed after scoring


def ablate(grid: quality_grid.GridRun, configuration: str, seed: int, severity: float, name: str,
           overrides: dict) -> dict:
    p = grid.pipeline(configuration, seed, severity)
    config = {**json.loads(grid.spec.settings[configuration].search_config), **overrides}
    out_id = p.cfg.target_id + ABLATION_OFFSET
    cmd = [str(BIN / "nnunet_dfg"), "refine", "-d", str(p.cfg.target_id), "-c", configuration, "-f", "all", "-tr",
           p.cfg.trainer("FA"), "-p", p.cfg.plans, "--prompt", "dfg", "--search-config", json.dumps(config),
           "--out-id", str(out_id), "--name", "Ablation", "--disable-tta", "--no-progress"]
    proc = subprocess.run(cmd, env=p.runner.env, capture_output=True, text=True)
    out = p.raw / f"Dataset{out_id:03d}_Ablation"
    try:
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1:]}
        labels = {k: v for k, v in read_json(p.target_raw / "dataset.json")["labels"].items() if k != "background"}
        scores = {stage: evaluate_folders(str(folder), str(p.cfg.target_labels_tr), labels=labels)
                  for stage, folder in (("raw", out / "dfg_refine/labels_raw"), ("post", out / "labelsTr"))}
        return {stage: {"mean_dice": r["mean_dice"], "per_class": {c: v["dice"] for c, v in r["per_class"].items()},
                        "per_case": case_dice(r)} for stage, r in scores.items()}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="the benchmark's work folder (run_all.py -o)")
    parser.add_argument("-c", nargs="+", default=["2d"], help="configurations to re-run")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    out = Path(args.o).resolve()
    grid = quality_grid.GridRun(quality_grid.GridSpec(), out / "grid")
    path = out / "search_ablation.json"
    results = read_json(path) if path.is_file() else {}
    for record in sorted(read_json(out / "grid.json"), key=lambda r: (r["seed"], r["severity"])):
        if record["configuration"] not in args.c:
            continue
        key = f"{record['configuration']} seed {record['seed']} severity {record['severity']:g}"
        table = record["table"]
        row = results.setdefault(key, {"shipped": {stage: {"mean_dice": table[f"pseudo_dfg_{stage}"]["mean_dice"],
                                                           "per_class": {c: v["dice"] for c, v in table[
                                                               f"pseudo_dfg_{stage}"]["per_class"].items()}}
                                                   for stage in ("raw", "post")}})
        for name, overrides in VARIANTS.items():
            if name not in row and name in args.variants:
                row[name] = ablate(grid, record["configuration"], record["seed"], record["severity"], name, overrides)
                write_json_atomic(path, results)
        print(key, {n: (round(v["raw"]["mean_dice"], 3), round(v["post"]["mean_dice"], 3))
                    for n, v in row.items() if "error" not in v}, flush=True)
    names = ["shipped", *VARIANTS]
    print("\n| run | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for key, row in results.items():
        cells = [f"{row[n]['raw']['mean_dice']:.3f} / {row[n]['post']['mean_dice']:.3f}"
                 if n in row and "error" not in row[n] else "–" for n in names]
        print(f"| {key} | " + " | ".join(cells) + " |")
    for config in sorted({key.split()[0] for key in results}):
        means = []
        for name in names:
            done = [r[name] for k, r in results.items()
                    if k.split()[0] == config and name in r and "error" not in r[name]]
            mean = {stage: np.mean([d[stage]["mean_dice"] for d in done]) for stage in ("raw", "post")} if done else {}
            means.append(f"**{mean['raw']:.3f} / {mean['post']:.3f}**" if done else "–")
        print(f"| mean {config} | " + " | ".join(means) + " |")
    paired(results, read_json(out / "grid.json"), names[1:])


def paired(results: dict, records: list[dict], variants: list[str]) -> None:
    """Each variant's post-processed pseudo-labels against the shipped ones and the FA model's own, paired per
    case over every run that has it (variants run before per-case scores were kept are left out)."""
    shipped = {f"{r['configuration']} seed {r['seed']} severity {r['severity']:g}": r for r in records}
    for name in variants:
        d_ship, d_fa = [], []
        for key, row in results.items():
            if name not in row or "per_case" not in row[name].get("post", {}) or key not in shipped:
                continue
            mine, ev = row[name]["post"]["per_case"], shipped[key]["evaluations"]
            for ref, out in ((case_dice(ev["pseudo_dfg_post"]), d_ship), (case_dice(ev["pseudo_fa"]), d_fa)):
                out += [mine[c] - ref[c] for c in sorted(mine) if c in ref]
        if d_ship:
            fmt = lambda d: "{:+.3f} [{:+.3f}, {:+.3f}]".format(*bootstrap_interval(np.array(d)))  # noqa: E731
            print(f"{name}: minus shipped {fmt(d_ship)}, minus FA's labels {fmt(d_fa)} ({len(d_ship)} cases)")


if __name__ == "__main__":
    main()
