"""Does a stage gain or lose against another on small organs only, or at every organ size on the slice?

Per-slice Dice of two stages against the organ's size on the slice, from a finished grid (nothing is run).
Why: the benchmark's slices are 64 x 64 px, so an organ covers 10-110 px of a slice (the reference's 256 px
slices have 16x as many). SAM answers each slice upsampled to 256 px and its masks are resized back, so a boundary
off by one slice pixel costs a small organ a large part of its Dice; the network predicts at the slice's own
resolution. Pairing two stages slice by slice within size classes shows whether a stage loses on small organs
only or everywhere. Slices where the organ is absent from the ground truth have no Dice; for them the tables give
the false-positive pixels per slice instead (the volume Dice of the stage tables counts both).

    .venv/bin/python benchmarks/analyses/dice_by_organ_size.py -o bench_out [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_dfg.nnunet_io import dataset_folder, write_json_atomic
from nnunet_dfg.statistics import bootstrap_interval
from nnunet_dfg.synthetic import LABELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402

EDGES = (1, 30, 60, 100)  # slice pixels of the organ: [1, 30), [30, 60), [60, 100), [100, inf)
# (better, worse, images): the test-image rows and the pseudo-labels of the target training images
PAIRS = (("sdg", "source_only", "test"), ("sdg_no_finetune", "source_only", "test"),
         ("pseudo_dfg_raw", "pseudo_fa", "train"), ("pseudo_dfg_post", "pseudo_fa", "train"))
PSEUDO = {"pseudo_fa": "dfg_refine/labels_model", "pseudo_dfg_raw": "dfg_refine/labels_raw",
          "pseudo_dfg_post": "labelsTr"}


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def slice_score(predicted: np.ndarray, organ: np.ndarray) -> float:
    """One slice's score of a class's 2D masks: the Dice where the organ is there, the predicted (false-positive)
    pixels where it is not."""
    area = int(organ.sum())
    return 2.0 * float((predicted & organ).sum()) / float(predicted.sum() + area) if area else float(predicted.sum())


def slice_scores(prediction: np.ndarray, truth: np.ndarray, labels: dict[str, int]) -> list[tuple[str, int, float]]:
    """(class, organ pixels on the slice, :func:`slice_score`) for every slice and class of (Z, Y, X) ``truth``."""
    return [(name, int((truth[z] == value).sum()), slice_score(prediction[z] == value, truth[z] == value))
            for name, value in labels.items() for z in range(truth.shape[0])]


def bucket(area: int) -> str:
    """The size class of an organ area, e.g. '30-59'; 'absent' for 0."""
    if area == 0:
        return "absent"
    i = int(np.searchsorted(EDGES, area, side="right")) - 1
    return f"{EDGES[i]}+" if i == len(EDGES) - 1 else f"{EDGES[i]}-{EDGES[i + 1] - 1}"


def stage_folder(p, stage: str) -> Path:
    if stage in PSEUDO:
        return dataset_folder(p.raw, p.cfg.pseudo_id("dfg")) / PSEUDO[stage]
    return p.predictions / stage


def compare(p, better: str, worse: str, images: str, labels: dict[str, int]) -> list[tuple[str, str, float, float]]:
    """(class, size class, Dice of better, Dice of worse) per slice and class, over one chain's images."""
    truth_folder = p.cfg.target_labels_ts if images == "test" else p.cfg.target_labels_tr
    out = []
    for truth_file in sorted(Path(truth_folder).glob("*.nii.gz")):
        truth = read_array(truth_file)
        a = slice_scores(read_array(stage_folder(p, better) / truth_file.name), truth, labels)
        b = slice_scores(read_array(stage_folder(p, worse) / truth_file.name), truth, labels)
        out += [(cls, bucket(area), da, db) for (cls, area, da), (_, _, db) in zip(a, b)]
    return out


def table(rows: list[tuple[str, str, float, float]]) -> list[dict]:
    """Mean per-slice Dice of both stages and the paired difference (bootstrap over slices) per class and size."""
    out = []
    for cls in dict.fromkeys(r[0] for r in rows):
        for size in ("absent",) + tuple(bucket(e) for e in EDGES):
            sel = [(a, b) for c, s, a, b in rows if c == cls and s == size]
            if len(sel) < 2:
                continue
            a, b = np.array(sel).T
            mean, low, high = bootstrap_interval(a - b)
            out.append({"class": cls, "pixels": size, "slices": len(sel), "better": round(float(a.mean()), 3),
                        "worse": round(float(b.mean()), 3), "difference": [round(mean, 3), round(low, 3),
                                                                          round(high, 3)]})
    return out


def markdown(better: str, worse: str, rows: list[dict]) -> str:
    """Dice rows per size class, then one row per class of false-positive pixels where the organ is absent."""
    lines = [f"| class | organ px on the slice | slices | {worse} | {better} | difference [95% interval] |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["pixels"] == "absent"):
        d, fmt = r["difference"], ".1f" if r["pixels"] == "absent" else ".3f"
        what = "absent (false-positive px)" if r["pixels"] == "absent" else r["pixels"]
        lines.append(f"| {r['class']} | {what} | {r['slices']} | {r['worse']:{fmt}} | {r['better']:{fmt}} | "
                     f"{d[0]:+{fmt}} [{d[1]:+{fmt}}, {d[2]:+{fmt}}] |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="a finished run_all.py folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    out = Path(args.o).resolve()
    grid = quality_grid.GridRun(quality_grid.GridSpec(), out / "grid")
    labels = {k: v for k, v in LABELS.items() if v}
    figures = {}
    for better, worse, images in PAIRS:
        rows = []
        for seed in args.seeds:
            p = grid.pipeline("2d", seed, grid.spec.severities[0])
            if stage_folder(p, better).is_dir() and stage_folder(p, worse).is_dir():
                rows += compare(p, better, worse, images, labels)
        if rows:
            figures[f"{better} - {worse}"] = table(rows)
            print(f"\n{better} against {worse} ({images} images, seeds {args.seeds})\n")
            print(markdown(better, worse, figures[f"{better} - {worse}"]))
    write_json_atomic(out / "dice_by_organ_size.json", figures)


if __name__ == "__main__":
    main()
