"""Does SDG gain on targets finer than the source when SAM sees the image's own grid instead of the network's?

Why: ``sdg-predict`` feeds SAM the target on the source model's network grid (its plans' spacing), so a target
scanned finer than the source (0.75 mm CT for a 1.5 mm MRI model) reaches SAM at the source's resolution, while
the SDG reference runs SAM on the image as it is; and SDG loses to the network most on small organs
(``dice_by_organ_size.py``). This measures whether SAM at the image's own resolution closes that gap. Per seed:
the grid's 8 test patients at its severity, written with ``--factor`` times the in-plane samples at spacing /
factor (the same patients: the grid's per-case generators) into this benchmark's own folder; the grid's 2d source
model gives source_only (nnU-Net's export of its logits to the image grid) and the SDG boxes, either on the
network grid, as ``sdg-predict`` does (labels exported back), or on the image grid (nnU-Net's probabilities
resampled to it, SAM on the raw slices); SAM as shipped and the grid's decoder fine-tuned on that seed's source.
Scored against the fine labels, paired per case, pooled over seeds. Nothing is trained.

    .venv/bin/python benchmarks/analyses/sdg_image_grid.py -o bench_out [--factor 2] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_dfg.evaluation import dice
from nnunet_dfg.nnunet_io import read_json, write_json_atomic
from nnunet_dfg.statistics import bootstrap_interval
from nnunet_dfg.synthetic import DEFAULT_SPACING, make_case, write_nifti

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the runner's modules (quality_grid)
import quality_grid  # noqa: E402

ROWS = ("source_only", "sdg_no_finetune_network", "sdg_no_finetune_image", "sdg_network", "sdg_image")
PAIRS = (("sdg_no_finetune_image", "sdg_no_finetune_network"), ("sdg_image", "sdg_network"),
         ("sdg_no_finetune_image", "source_only"), ("sdg_image", "source_only"),
         ("sdg_network", "source_only"))


def fine_patients(spec: quality_grid.GridSpec, seed: int, factor: int, domain: str = "target"):
    """(case, image, label, spacing) of the seed's test patients at ``factor`` x the in-plane samples.

    ``domain="source"`` renders the same patients as the source domain (anatomy is drawn before appearance)."""
    z, y, x = spec.settings["2d"].shape
    spacing = (DEFAULT_SPACING[0], DEFAULT_SPACING[1] / factor, DEFAULT_SPACING[2] / factor)
    # write_benchmark spawns one generator per case, source cases first, then the target's, then its test cases
    rngs = np.random.default_rng(seed).spawn(spec.n_source + spec.n_target + spec.n_test)
    for i in range(spec.n_test):
        image, label, _ = make_case(rngs[spec.n_source + spec.n_target + i], domain, spec.severities[0],
                                    (z, y * factor, x * factor), spacing)
        yield f"case_{spec.n_target + i:04d}", image, label, spacing


def check_same_patients(p, spec: quality_grid.GridSpec, seed: int) -> None:
    """At factor 1 the generator must give the grid's own first test label, or the cases are other patients."""
    case, _, label, _ = next(fine_patients(spec, seed, 1))
    grid_label = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(p.cfg.target_labels_ts) / f"{case}.nii.gz")))
    if not np.array_equal(label, grid_label):
        raise SystemExit(f"seed {seed}: the generator no longer reproduces the grid's test patients")


def sdg_labels(predictor, files: list[Path], image: np.ndarray, segmenters: dict, modality: str) -> dict:
    """Row -> label map on the image grid for one case (``image``: its raw channel 0)."""
    from nnunet_dfg.prompt_search import SDGConfig
    from nnunet_dfg.sam.intensity import sam_image
    from nnunet_dfg.volume import refine_volume

    config = SDGConfig()
    probs, _ = predictor.probabilities_on_image_grid(files)
    net = predictor.predict_case(files, with_features=False)
    on_net = sam_image(predictor.raw_image(files), modality)
    order = list(predictor.plans_manager.transpose_forward)  # the 2d network's slicing axis first, as on its grid
    on_image = sam_image(image, modality).transpose(order)
    probs_t = np.ascontiguousarray(probs.transpose([0, *(1 + a for a in order)]))
    rows = {"source_only": probs.argmax(0)}
    for name, segmenter in segmenters.items():
        label = refine_volume(on_net, net.probs, None, segmenter, "sdg", config).label
        rows[f"{name}_network"] = predictor.to_original_grid(label, net.properties)
        label = refine_volume(on_image, probs_t, None, segmenter, "sdg", config).label
        rows[f"{name}_image"] = label.transpose(np.argsort(order))
    return rows


def run_seed(grid: quality_grid.GridRun, seed: int, factor: int, out: Path) -> dict:
    """Case -> row -> class -> Dice for one seed (cached in ``out``)."""
    from nnunet_dfg.sam.intensity import resolve_modality
    from nnunet_dfg.sam.segmenter import load_segmenter
    from nnunet_dfg.volume.predictor import FeaturePredictor

    done = out / f"seed{seed}_factor{factor}.json"
    if done.is_file():
        return read_json(done)
    p = grid.pipeline("2d", seed, grid.spec.severities[0])
    check_same_patients(p, grid.spec, seed)
    c = p.cfg
    predictor = FeaturePredictor(p.model(c.source_id, "Source"), c.source_fold)
    segmenters = {"sdg_no_finetune": load_segmenter(c.sam),
                  "sdg": load_segmenter(str(grid.chain_work("2d", seed, grid.spec.severities[0])
                                                      / "sam_finetuned_on_source.pth"))}
    modality = resolve_modality(c.sam_intensity, read_json(p.target_raw / "dataset.json"))
    folder = out / f"seed{seed}_factor{factor}"
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    for case, image, label, spacing in fine_patients(grid.spec, seed, factor):
        path = folder / f"{case}_0000.nii.gz"
        write_nifti(image, spacing, str(path))
        rows = sdg_labels(predictor, [path], image, segmenters, modality)
        result[case] = {row: {name: dice(rows[row] == v, label == v) for name, v in p.labels.items()}
                        for row in ROWS}
        print(seed, case, {row: round(float(np.mean(list(d.values()))), 3) for row, d in result[case].items()},
              flush=True)
    write_json_atomic(done, result)
    return result


def summary(runs: list[dict]) -> dict:
    """Mean Dice per row (overall and per class) and each pair's paired difference over (case, seed) units."""
    cases = [case for run in runs for case in run.values()]
    out: dict = {"n": len(cases)}
    for row in ROWS:
        out[row] = round(float(np.mean([np.mean(list(c[row].values())) for c in cases])), 3)
        out[f"{row}_per_class"] = {k: round(float(np.mean([c[row][k] for c in cases])), 3) for k in cases[0][row]}
    for better, worse in PAIRS:
        d = np.array([np.mean(list(c[better].values())) - np.mean(list(c[worse].values())) for c in cases])
        out[f"{better} - {worse}"] = [round(v, 3) for v in bootstrap_interval(d)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="a finished run_all.py folder (its grid's 2d source models)")
    parser.add_argument("--factor", type=int, default=2, help="in-plane samples of the target over the source's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if args.factor < 1:
        parser.error(f"--factor must be >= 1, got {args.factor}")
    out = Path(args.o).resolve()
    grid = quality_grid.GridRun(quality_grid.GridSpec(), out / "grid")
    work = out / "sdg_image_grid"
    runs = [run_seed(grid, seed, args.factor, work) for seed in args.seeds]
    figures = {"factor": args.factor, "seeds": args.seeds, **summary(runs)}
    write_json_atomic(out / f"sdg_image_grid_factor{args.factor}.json", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
