"""Would another connectivity rule than the largest 3D component give better refined pseudo-labels?

Scores other connectivity post-processing rules on the refined pseudo-labels a finished benchmark grid left.
Why: the reference keeps each class's largest 3D component. When the FA model splits an organ and predicts a
larger false blob elsewhere, that rule keeps the blob and drops the organ: a left kidney went from 0.40 Dice to
0.00. The rules below are pure functions of the labels before post-processing (``dfg_refine/labels_raw``), so
no model or SAM runs; target labels are read only to score.

    .venv/bin/python benchmarks/analyses/postprocess_ablation.py -o bench_out [-o other_bench_out ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunet_dfg.evaluation import dice
from nnunet_dfg.nnunet_io import dataset_folder, read_json, write_json_atomic
from nnunet_dfg.prompt_search import largest_component_per_class
from nnunet_dfg.prompt_search.postprocess import keep_components_per_class

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402


RULES: dict[str, Callable[[np.ndarray, list[int]], np.ndarray]] = {
    "none": lambda label, classes: label,
    "largest (shipped)": lambda label, classes: largest_component_per_class(label, classes),
    # drop only islands under a fifth of the largest piece: an organ split in two keeps both halves
    "over 20% of largest": lambda label, classes: keep_components_per_class(
        label, classes, lambda s: s >= 0.2 * s.max()),
    # the largest piece only when it holds most of the class: otherwise which piece is the organ is a guess
    "largest if majority": lambda label, classes: keep_components_per_class(
        label, classes, lambda s: s == s.max() if s.max() * 2 >= s.sum() else s > 0),
}


def score_run(pipeline) -> dict[str, float]:
    """Mean Dice (over cases and classes) of each rule on one grid run's DFG pseudo-labels."""
    labels = read_json(pipeline.target_raw / "dataset.json")["labels"]
    classes = sorted(int(v) for k, v in labels.items() if k != "background")
    folder = dataset_folder(pipeline.raw, pipeline.cfg.pseudo_id("dfg")) / "dfg_refine" / "labels_raw"
    scores: dict[str, list[float]] = {name: [] for name in RULES}
    for path in sorted(folder.glob("*.nii.gz")):
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(pipeline.cfg.target_labels_tr) / path.name)))
        for name, rule in RULES.items():
            out = rule(raw, classes)
            scores[name] += [dice(out == c, ref == c) for c in classes]
    return {name: float(np.mean(v)) for name, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, action="append", help="a benchmark work folder (run_all.py -o)")
    args = parser.parse_args()
    names = list(RULES)
    print("Mean Dice of the DFG pseudo-labels over each grid's runs; in brackets, the runs where the rule beats no "
          "post-processing.\n")
    print("| run | config | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for folder in map(lambda f: Path(f).resolve(), args.o):
        grid = quality_grid.GridRun(quality_grid.GridSpec(), folder / "grid")
        results = {}
        for record in sorted(read_json(folder / "grid.json"),
                             key=lambda r: (r["configuration"], r["seed"], r["severity"])):
            if not grid.spec.settings[record["configuration"]].chain:  # no search ran: nothing to post-process
                continue
            key = f"{record['configuration']} seed {record['seed']} severity {record['severity']:g}"
            results[key] = score_run(grid.pipeline(record["configuration"], record["seed"], record["severity"]))
        write_json_atomic(folder / "postprocess_ablation.json", results)
        for config in sorted({k.split()[0] for k in results}):
            runs = [r for k, r in results.items() if k.split()[0] == config]
            wins = {n: sum(r[n] > r["none"] + 1e-9 for r in runs) for n in names}
            cells = [f"{np.mean([r[n] for r in runs]):.3f}" + ("" if n == "none" else f" ({wins[n]}/{len(runs)})")
                     for n in names]
            print(f"| {folder.name} | {config} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
