"""What can box prompting give at best on the target images, when SAM answers the ground-truth box?

Why: when the refined pseudo-labels lose to the FA model, either the search finds bad boxes or the segmenter's
masks are worse than the model's prediction whatever the box. Each labelled structure of each slice is prompted
with its ground-truth bounding box plus the search's margin (3 px at 256 px, scaled to the slice), the mask
post-processed as in the search (largest region, holes filled), the image windowed as refine windows it, and
each class scored by 3D Dice against the target labels (classes scored independently, no merge). Target labels
are read only here, to prompt and to score: this is an evaluation.

    .venv/bin/python benchmarks/analyses/sam_ceiling.py -o bench_out [-c 2d 3d_fullres]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_dfg.evaluation import dice
from nnunet_dfg.nnunet_io import read_json, write_json_atomic
from nnunet_dfg.prompt_search import DFGConfig
from nnunet_dfg.prompt_search.masks import bbox, expand_box, largest_component
from nnunet_dfg.sam.intensity import resolve_modality, sam_image
from nnunet_dfg.sam.segmenter import load_segmenter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402


def ground_truth_masks(image: np.ndarray, label: np.ndarray, n_classes: int, segmenter,
                       config: DFGConfig) -> np.ndarray:
    """(K, Z, H, W) boolean SAM masks, each slice prompted with the bbox (+ margin, clipped) of each class in it."""
    margin = config.for_slice(label.shape[1:]).box_margin
    out = np.zeros((n_classes,) + label.shape, dtype=bool)
    for z in range(label.shape[0]):
        classes = [c for c in range(1, n_classes) if (label[z] == c).any()]
        if not classes:
            continue
        boxes = [expand_box(bbox(label[z] == c), margin, label.shape[1:]) for c in classes]
        masks = segmenter.segment(segmenter.embed(image[z]), np.asarray(boxes, dtype=np.float32))
        for c, mask in zip(classes, masks):
            out[c, z] = largest_component(np.asarray(mask, dtype=bool), True)
    return out


def run(pipeline, segmenter, config: DFGConfig) -> dict:
    """Per-class Dice of ground-truth-box SAM masks over the run's target training cases."""
    dataset = read_json(pipeline.target_raw / "dataset.json")
    labels, modality = dataset["labels"], resolve_modality("auto", dataset)  # SAM's input as refine gives it
    names = {int(v): k for k, v in labels.items() if k != "background"}
    scores: dict[str, list[float]] = {name: [] for name in names.values()}
    for label_file in sorted(Path(pipeline.cfg.target_labels_tr).glob("*.nii.gz")):
        case = label_file.name[: -len(".nii.gz")]
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file))).astype(np.int64)
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(pipeline.target_raw / "imagesTr" / f"{case}_0000.nii.gz")))
        masks = ground_truth_masks(sam_image(image.astype(np.float32), modality), label, max(names) + 1, segmenter,
                                   config)
        for c, name in names.items():
            if (label == c).any():
                scores[name].append(dice(masks[c], label == c))
    per_class = {name: float(np.mean(v)) for name, v in scores.items() if v}
    return {"mean_dice": float(np.mean(list(per_class.values()))), "per_class": per_class}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="the benchmark's work folder (run_all.py -o)")
    parser.add_argument("-c", nargs="+", default=["2d", "3d_fullres"], help="configurations")
    args = parser.parse_args()
    out = Path(args.o).resolve()
    grid = quality_grid.GridRun(quality_grid.GridSpec(), out / "grid")
    segmenter = load_segmenter("litemedsam")
    search = DFGConfig()
    results = {}
    for record in sorted(read_json(out / "grid.json"), key=lambda r: (r["configuration"], r["seed"], r["severity"])):
        if record["configuration"] not in args.c:
            continue
        key = f"{record['configuration']} seed {record['seed']} severity {record['severity']:g}"
        results[key] = run(grid.pipeline(record["configuration"], record["seed"], record["severity"]), segmenter,
                           search)
        searched = record["table"]["pseudo_dfg_raw"]["mean_dice"]
        per_class = {c: round(v, 3) for c, v in results[key]["per_class"].items()}
        print(f"{key}: ground-truth box {results[key]['mean_dice']:.3f} {per_class} (DFG search {searched:.3f})",
              flush=True)
    write_json_atomic(out / "sam_ceiling.json", results)
    for config in args.c:
        values = [r["mean_dice"] for k, r in results.items() if k.startswith(config + " ")]
        if values:
            print(f"{config}: ground-truth-box SAM mean Dice {np.mean(values):.3f} over {len(values)} runs")


if __name__ == "__main__":
    main()
