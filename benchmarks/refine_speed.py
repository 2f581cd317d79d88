"""Benchmark of the DFG refinement step: speed against the encoder, decoder work, and pseudo-label quality.

Prints, on the same slices of real target cases with the real segmenter:
- refinement wall time / encoder-only time (goal <= 1.5 on CPU with LiteMedSAM), the encoder time per slice and
  the time of one decoder call (split decoder: the slice's image side is cached),
- decoder calls per searched slice and per present class, fast (lazy + cached) vs plain (every step decoded),
- whether the fast and the plain search return identical labels,
- pseudo-label Dice against the hidden target labels: model argmax, DFG-refined, DFG + 3D post-processing.

Usage (after `nnunet_dfg demo -o demo_out`):
    .venv/bin/python benchmarks/refine_speed.py --demo demo_out [--cases 2]
or with any model: --model RESULTS/DatasetX/TRAINER__PLANS__CONFIG -f all --images DIR --labels DIR
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_dfg.evaluation import dice
from nnunet_dfg.nnunet_io import list_cases
from nnunet_dfg.pipeline.command import DEMO_SEARCH_CONFIG
from nnunet_dfg.prompt_search import largest_component_per_class, refine_slice
from nnunet_dfg.refine.command import parse_search_config
from nnunet_dfg.volume.predictor import FeaturePredictor
from nnunet_dfg.sam import load_segmenter


def _paths(args) -> tuple[Path, Path, Path]:
    if args.demo:
        root = Path(args.demo)
        model = next((root / "nnUNet_results/Dataset702_DFGSynthTarget").glob("nnUNetTrainerDFG_FA_demo__*__2d"))
        return (model, root / "nnUNet_raw/Dataset702_DFGSynthTarget/imagesTr",
                root / "nnUNet_raw/_hidden_labels/Dataset702_DFGSynthTarget/labelsTr")
    return Path(args.model), Path(args.images), Path(args.labels)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _search(pred, segmenter, config, lazy: bool, now=time.perf_counter):
    """Every slice of one case; returns labels, per-slice seconds, decoder calls and present-class counts."""
    labels, seconds, calls, present = np.argmax(pred.probs, 0).astype(np.uint8), {}, {}, {}
    for z in range(pred.image.shape[0]):
        t = now()
        r = refine_slice(pred.image[z], pred.probs[:, z], pred.features[:, z], segmenter, config, lazy=lazy)
        if r.encoder_calls:
            seconds[z] = now() - t
            calls[z] = r.decoder_calls
            present[z] = sum(tr.present for tr in r.traces.values())
        labels[z] = r.label
    return labels, seconds, calls, present


def measure(model: Path, images: Path, label_dir: Path, fold: str = "all", cases: int = 2,
            search_config: str = DEMO_SEARCH_CONFIG, sam: str = "litemedsam", runtime: str = "auto",
            plain: bool = True, clock: str = "wall") -> dict:
    """The figures listed in the module docstring; ``plain=False`` skips the (slow) plain search. ``clock="cpu"``
    times with the process's CPU time: on a shared machine other processes' load then leaves the ratios alone
    (meaningful with one thread, e.g. ``OMP_NUM_THREADS=1``)."""
    now = CLOCKS[clock]
    predictor = FeaturePredictor(model, fold, use_mirroring=False)
    config, _ = parse_search_config("dfg", search_config)
    segmenter = load_segmenter(sam, runtime=runtime)
    warm = segmenter.embed(np.zeros((64, 64), np.float32))  # ONNX export and first-call costs stay out of timings
    segmenter.segment(warm, np.array([[8, 8, 40, 40]]))
    ending = predictor.dataset_json["file_ending"]
    chosen = list(list_cases(images, ending, len(predictor.dataset_json["channel_names"])).items())[:cases]
    totals = dict(t_fast=0.0, t_plain=0.0, t_enc=0.0, calls_fast=0, calls_plain=0, slices=0, classes=0,
                  identical=True, t_call=0.0, n_call=0)
    quality = {"model": [], "dfg": [], "dfg_post": []}
    classes = [c for c in predictor.label_manager.foreground_labels]
    for case, files in chosen:
        pred = predictor.predict_case(files)
        fast, sec_fast, calls_fast, present = _search(pred, segmenter, config, lazy=True, now=now)
        if plain:
            slow, sec_plain, calls_plain, _ = _search(pred, segmenter, config, lazy=False, now=now)
            totals["t_plain"] += sum(sec_plain.values())
            totals["calls_plain"] += sum(calls_plain.values())
            totals["identical"] &= bool(np.array_equal(fast, slow))
        t = now()
        for z in sec_fast:
            segmenter.embed(pred.image[z])
        totals["t_enc"] += now() - t
        if sec_fast:  # one decoder call (segment: image side cached, postprocessing included), on a searched slice
            emb = segmenter.embed(pred.image[next(iter(sec_fast))])
            h, w = emb.image_size
            segmenter.segment(emb, np.array([[w // 4, h // 4, 3 * w // 4, 3 * h // 4]]))
            t = now()
            for i in range(8):
                segmenter.segment(emb, np.array([[w // 4 - i, h // 4, 3 * w // 4, 3 * h // 4 + i]]))
            totals["t_call"] += now() - t
            totals["n_call"] += 8
        totals["t_fast"] += sum(sec_fast.values())
        totals["calls_fast"] += sum(calls_fast.values())
        totals["slices"] += len(sec_fast)
        totals["classes"] += sum(present.values())
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(label_dir / f"{case}{ending}")))
        model_label = predictor.to_original_grid(np.argmax(pred.probs, 0), pred.properties)
        refined = predictor.to_original_grid(fast, pred.properties)
        post = largest_component_per_class(refined, classes)
        for key, lab in (("model", model_label), ("dfg", refined), ("dfg_post", post)):
            quality[key].append([dice(lab == c, ref == c) for c in classes])
        print(f"{case}: {len(sec_fast)} slices searched, fast {sum(sec_fast.values()):.1f} s"
              + (f", plain {sum(sec_plain.values()):.1f} s" if plain else ""), flush=True)
    n, k = max(totals["slices"], 1), max(totals["classes"], 1)
    figures = {
        "sam": segmenter.name, "runtime": segmenter.runtime, "clock": clock, "slices_searched": totals["slices"],
        "present_class_slices": totals["classes"], "encoder_only_s": round(totals["t_enc"], 2),
        "fast_search_s": round(totals["t_fast"], 2),
        "encoder_s_per_slice": round(totals["t_enc"] / n, 3),
        "decoder_ms_per_call": round(1000 * totals["t_call"] / max(totals["n_call"], 1), 1),
        "ratio_fast_over_encoder": round(totals["t_fast"] / max(totals["t_enc"], 1e-9), 2),
        "decoder_calls_per_slice": {"fast": round(totals["calls_fast"] / n, 2)},
        "decoder_calls_per_slice_and_class": {"fast": round(totals["calls_fast"] / k, 2)},
        "pseudo_label_mean_dice": {key: round(float(np.mean(v)), 4) for key, v in quality.items()},
        "pseudo_label_dice_per_class": {key: dict(zip([str(c) for c in classes], np.mean(v, 0).round(4).tolist()))
                                        for key, v in quality.items()},
    }
    if plain:
        figures.update(plain_search_s=round(totals["t_plain"], 2), fast_equals_plain=totals["identical"],
                       ratio_plain_over_encoder=round(totals["t_plain"] / max(totals["t_enc"], 1e-9), 2))
        figures["decoder_calls_per_slice"]["plain"] = round(totals["calls_plain"] / n, 2)
        figures["decoder_calls_per_slice_and_class"]["plain"] = round(totals["calls_plain"] / k, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", help="a `nnunet_dfg demo -o` folder")
    parser.add_argument("--model"), parser.add_argument("-f", default="all")
    parser.add_argument("--images"), parser.add_argument("--labels")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--search-config", default=DEMO_SEARCH_CONFIG)
    parser.add_argument("--sam", default="litemedsam")
    parser.add_argument("--runtime", choices=("auto", "torch", "onnx", "openvino"), default="auto",
                        help="SAM runtime (auto: ONNX Runtime on the CPU)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="cpu: process CPU time (robust to other processes' load; use one thread)")
    parser.add_argument("-o", help="also write the figures as JSON here")
    args = parser.parse_args()
    model, images, label_dir = _paths(args)
    figures = measure(model, images, label_dir, args.f, args.cases, args.search_config, args.sam, args.runtime,
                      clock=args.clock)
    print(json.dumps(figures, indent=2))
    if args.o:
        Path(args.o).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
