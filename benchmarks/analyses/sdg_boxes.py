"""How much of each organ do the SDG boxes cover on the target, against what the source model itself labels?

Why: SAM answering a ground-truth box gives 0.85-0.89 on the target (``sam_ceiling.py``) while SDG with the
source model's refined boxes stays below the source model. SAM's mask mostly stays inside its box, so where the
box is no wider than the model's own mask SAM has little to add. Per seed, the grid's 2d source model predicts the
8 target test images (nnU-Net's probabilities), each slice and class gets the SDG box (``sdg_box``, threshold 0.75
and largest component as the reference), and on every slice that holds the organ this records: whether a box was
found, the share of organ pixels inside the box (box recall), the shares the model's argmax and the grid's
fine-tuned SDG labels cover (model and SDG recall), and the 2D Dice of both. Target labels are read only to score.

    .venv/bin/python benchmarks/analyses/sdg_boxes.py -o bench_out [--seeds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nnunet_dfg.evaluation import dice
from nnunet_dfg.nnunet_io import read_json, write_json_atomic
from nnunet_dfg.prompt_search import SDGConfig
from nnunet_dfg.prompt_search.sdg import sdg_box
from nnunet_dfg.statistics import bootstrap_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402
from dice_by_organ_size import read_array  # noqa: E402


def slice_rows(probs: np.ndarray, truth: np.ndarray, sdg: np.ndarray, labels: dict[str, int],
               config: SDGConfig) -> list[dict]:
    """One row per (slice, class) where the organ is in ``truth``; arrays (K, Z, Y, X) / (Z, Y, X), sliced on Z."""
    model = probs.argmax(0)
    rows = []
    for name, value in labels.items():
        for z in range(truth.shape[0]):
            organ = truth[z] == value
            if not organ.any():
                continue
            box = sdg_box(probs[value, z], config.threshold, config.downscale)
            inside = np.zeros_like(organ)
            if box is not None:
                x0, y0, x1, y1 = box
                inside[y0:y1 + 1, x0:x1 + 1] = True
            rows.append({"class": name, "area": int(organ.sum()), "box": box is not None,
                         "box_recall": float((organ & inside).sum() / organ.sum()),
                         "model_recall": float((organ & (model[z] == value)).sum() / organ.sum()),
                         "sdg_recall": float((organ & (sdg[z] == value)).sum() / organ.sum()),
                         "model_dice": dice(model[z] == value, organ), "sdg_dice": dice(sdg[z] == value, organ)})
    return rows


def run_seed(grid: quality_grid.GridRun, seed: int, out: Path) -> list[dict]:
    """The seed's rows over its test images (cached in ``out``)."""
    from nnunet_dfg.volume.predictor import FeaturePredictor

    done = out / f"seed{seed}.json"
    if done.is_file():
        return read_json(done)
    p = grid.pipeline("2d", seed, grid.spec.severities[0])
    predictor = FeaturePredictor(p.model(p.cfg.source_id, "Source"), p.cfg.source_fold)
    order = list(predictor.plans_manager.transpose_forward)  # the 2d network's slicing axis first
    rows = []
    for label_file in sorted(Path(p.cfg.target_labels_ts).glob("*.nii.gz")):
        case = label_file.name[: -len(".nii.gz")]
        probs, _ = predictor.probabilities_on_image_grid([p.target_raw / "imagesTs" / f"{case}_0000.nii.gz"])
        probs = probs.transpose([0, *(1 + a for a in order)])
        truth = read_array(label_file).transpose(order)
        sdg = read_array(p.predictions / "sdg" / label_file.name).transpose(order)  # the fine-tuned decoder's
        rows += [dict(r, case=case, seed=seed) for r in slice_rows(probs, truth, sdg, p.labels, SDGConfig())]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(done, rows)
    return rows


def summary(rows: list[dict]) -> dict:
    """Per class: slices, share with a box, mean box and model recall, and on boxed slices the Dice of the model
    and of fine-tuned SDG with their paired difference (interval over slices)."""
    out = {}
    for name in dict.fromkeys(r["class"] for r in rows):
        mine = [r for r in rows if r["class"] == name]
        boxed = [r for r in mine if r["box"]]
        entry = {"slices": len(mine), "with_box": round(len(boxed) / len(mine), 3),
                 "box_recall": round(float(np.mean([r["box_recall"] for r in mine])), 3),
                 "model_recall": round(float(np.mean([r["model_recall"] for r in mine])), 3)}
        if boxed:
            d = np.array([r["sdg_dice"] - r["model_dice"] for r in boxed])
            entry.update({"boxed_box_recall": round(float(np.mean([r["box_recall"] for r in boxed])), 3),
                          "boxed_model_recall": round(float(np.mean([r["model_recall"] for r in boxed])), 3),
                          "boxed_sdg_finetuned_recall": round(float(np.mean([r["sdg_recall"] for r in boxed])), 3),
                          "boxed_model_dice": round(float(np.mean([r["model_dice"] for r in boxed])), 3),
                          "boxed_sdg_finetuned_dice": round(float(np.mean([r["sdg_dice"] for r in boxed])), 3),
                          "sdg_finetuned - model": [round(v, 3) for v in bootstrap_interval(d)]})
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="a finished run_all.py folder (its grid's 2d models and SDG labels)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    out = Path(args.o).resolve()
    grid = quality_grid.GridRun(quality_grid.GridSpec(), out / "grid")
    rows = [r for seed in args.seeds for r in run_seed(grid, seed, out / "sdg_boxes")]
    figures = {"seeds": args.seeds, **summary(rows)}
    write_json_atomic(out / "sdg_boxes.json", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
