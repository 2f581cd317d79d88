"""How much does the 64 px slice limit SAM given a right box, against the same patients at 128 and 256 px?

Why: every box-prompted stage (DFG refinement, SDG) loses to the networks on small organs, and on 64 px slices a
spleen is ~10 px across; the DFG and SDG references prompt SAM on 256-512 px slices. This separates the slice size
from everything else: the grid's test patients of each seed, written by the grid's own per-case generators at
``--factors`` times the in-plane samples (spacing / factor: the same anatomy, noise drawn at the finer grid), in
the target domain (windowed as refine windows it) and in the source domain (the same patient as the MR-like
source; MR percentile window), each slice's classes prompted with their ground-truth box plus the search's margin
(``sam_ceiling.ground_truth_masks``), 3D Dice per class against the labels of that grid. Labels are read to
prompt and to score: an evaluation. Nothing is trained and no grid folder is needed; grid.json, when there,
adds the networks' figures for comparison.

    .venv/bin/python benchmarks/analyses/sam_by_slice_size.py -o bench_out [--factors 1 2 4] [--seeds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nnunet_dfg.evaluation import dice
from nnunet_dfg.nnunet_io import read_json, write_json_atomic
from nnunet_dfg.prompt_search import DFGConfig
from nnunet_dfg.sam.intensity import sam_image
from nnunet_dfg.sam.segmenter import load_segmenter
from nnunet_dfg.statistics import bootstrap_interval
from nnunet_dfg.synthetic import LABELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402
from sam_ceiling import ground_truth_masks  # noqa: E402
from sdg_image_grid import fine_patients  # noqa: E402

DOMAINS = {"target": "ct", "source": "mr"}  # the domain's SAM window: the synthetic target's channel is "CT"


def run_seed(spec: quality_grid.GridSpec, seed: int, factor: int, domain: str, segmenter, out: Path) -> dict:
    """Case -> class -> Dice of ground-truth-box SAM masks for one seed (cached in ``out``)."""
    done = out / f"seed{seed}_factor{factor}_{domain}.json"
    if done.is_file():
        return read_json(done)
    names = {v: k for k, v in LABELS.items() if v}
    result = {}
    for case, image, label, _ in fine_patients(spec, seed, factor, domain):
        masks = ground_truth_masks(sam_image(image, DOMAINS[domain]), label.astype(np.int64), max(names) + 1,
                                   segmenter, DFGConfig())
        result[case] = {name: dice(masks[v], label == v) for v, name in names.items() if (label == v).any()}
        print(seed, factor, domain, case, round(float(np.mean(list(result[case].values()))), 3), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(done, result)
    return result


def summary(runs: dict[tuple[int, str], list[dict]], factors: list[int]) -> dict:
    """Mean Dice per (factor, domain), per class, and each factor's paired difference to the first factor."""
    out: dict = {}
    for (factor, domain), seeds in runs.items():
        cases = [c for run in seeds for c in run.values()]
        per_class = {k: round(float(np.mean([c[k] for c in cases if k in c])), 3)
                     for k in LABELS if any(k in c for c in cases)}
        row = {"n": len(cases), "mean_dice": round(float(np.mean([np.mean(list(c.values())) for c in cases])), 3),
               "per_class": per_class}
        if factor != factors[0]:
            base = [c for run in runs[(factors[0], domain)] for c in run.values()]
            d = np.array([np.mean(list(c.values())) - np.mean(list(b.values())) for c, b in zip(cases, base)])
            row[f"minus factor {factors[0]}"] = [round(v, 3) for v in bootstrap_interval(d)]
        out[f"factor {factor} {domain}"] = row
    return out


def network_rows(out: Path, seeds: list[int]) -> dict:
    """The 2d grid's source_in_domain and source_only over ``seeds``, for the comparison line (if grid.json is there)."""
    if not (out / "grid.json").is_file():
        return {}
    records = [r for r in read_json(out / "grid.json") if r["configuration"] == "2d" and r["seed"] in seeds]
    return {row: round(float(np.mean([r["table"][row]["mean_dice"] for r in records])), 3)
            for row in ("source_in_domain", "source_only") if records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="a work folder (a run_all.py folder adds the networks' rows)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    if min(args.factors) < 1:
        parser.error(f"--factors must be >= 1, got {args.factors}")
    out = Path(args.o).resolve()
    spec, segmenter = quality_grid.GridSpec(), load_segmenter("litemedsam")
    runs = {(f, d): [run_seed(spec, s, f, d, segmenter, out / "sam_by_slice_size") for s in args.seeds]
            for d in DOMAINS for f in args.factors}
    figures = {"factors": args.factors, "seeds": args.seeds, "shape": list(spec.settings["2d"].shape),
               "networks_2d": network_rows(out, args.seeds), **summary(runs, args.factors)}
    write_json_atomic(out / "sam_by_slice_size.json", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
