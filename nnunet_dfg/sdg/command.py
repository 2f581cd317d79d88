"""``nnunet_dfg sdg-predict``: the file-handling shell of SDG's inference (``finetune_command``: ``finetune-sam``).

A source model's softmax (nnU-Net's own predictor) -> one SDG box per slice and class (``--empty-box full``: the
whole slice where a class's thresholded map is empty) -> SAM (``--tile 2``: four slices per encoder pass; default
``auto``, see :func:`resolve_tile`) -> DFG-style score merge -> ``OUT/CASE<ending>`` on each input image's grid,
like ``nnUNetv2_predict`` (which also puts the model's dataset.json and plans.json next to them). No connectivity
post-processing: SDG has none. Resumable (finished cases are skipped) and shardable.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..command_base import ModelOptions, add_model_arguments, check_images, check_same_settings, options_from_args
from ..errors import UserError
from ..nnunet_io import list_cases, read_json, write_json_atomic, write_segmentation
from .options import EMPTY_BOX_HELP, check_empty_box, resolve_tile

SETTINGS_FILE = "sdg_predict.json"


@dataclass(kw_only=True)
class PredictOptions(ModelOptions):
    """``-d`` is the dataset the source model was trained on (without ``-m``)."""

    images: Path
    output: Path
    trainer: str = "nnUNetTrainerDFG_Source"
    tile: int | str = "auto"
    threshold: float = 0.75
    empty_box: str = "none"


def _settings(opts: PredictOptions, model: Path) -> dict:
    """What determines the labels; a resumed run or another part must agree on all of it."""
    return {**opts.settings(model, Path(opts.images)), "threshold": opts.threshold, "empty_box": opts.empty_box,
            "merge": "refined 2 / model 1 / background 0.5"}


def finetune_mismatches(meta: dict, used: dict) -> list[str]:
    """The settings in ``used`` that differ from those a fine-tuned decoder's checkpoint ``meta`` records: a decoder
    trained on whole-slice boxes, equalised slices or 2x2 canvases answers other prompts and inputs than it learnt.
    A deliberate ablation may want exactly that, so the command warns and goes on."""
    return [f"{key} {meta[key]!r} when fine-tuned, {value!r} here" for key, value in used.items()
            if key in meta and meta[key] != value]


def _warn_finetune_mismatch(opts: PredictOptions) -> None:
    from ..sam.finetuned import checkpoint_meta, is_finetuned_checkpoint
    if not is_finetuned_checkpoint(opts.sam):
        return
    used = {"empty_box": opts.empty_box, "sam_intensity": opts.sam_intensity, "tile": opts.tile}
    differ = finetune_mismatches(checkpoint_meta(opts.sam), used)
    if differ:
        print(f"warning: --sam {opts.sam}: " + "; ".join(differ), file=sys.stderr)


def _check_settings(out: Path, settings: dict) -> None:
    existing = out / SETTINGS_FILE
    if existing.is_file():
        check_same_settings(read_json(existing), settings, f"{out} (predictions)", "use another -o or delete it")
    elif out.is_dir() and any(p.name.endswith(".nii.gz") or p.suffix in (".nrrd", ".mha", ".tif")
                              for p in out.iterdir()):
        raise UserError(f"{out} already holds files not written by sdg-predict; use another -o")


def sdg_predict(opts: PredictOptions, segmenter: Any = None) -> dict:
    """Predict (this part of) a folder of images; returns a summary. ``segmenter`` overrides ``--sam`` (tests)."""
    from tqdm import tqdm

    from ..prompt_search import SDGConfig
    from ..volume import refine_volume

    opts = replace(opts, tile=resolve_tile(opts.tile, opts.sam))
    opts.check()
    if not 0.0 < opts.threshold < 1.0:
        raise UserError(f"--threshold must lie strictly between 0 and 1, got {opts.threshold}")
    check_empty_box(opts.empty_box)
    _warn_finetune_mismatch(opts)
    model = opts.resolve_model()
    model_dataset = read_json(model / "dataset.json")
    ending = model_dataset["file_ending"]
    cases = list_cases(Path(opts.images), ending, len(model_dataset["channel_names"]))
    out = Path(opts.output)
    settings = _settings(opts, model)
    _check_settings(out, settings)
    mine = opts.my_cases(cases)
    todo = [c for c in mine if not (out / f"{c}{ending}").is_file()]
    summary = {"output": str(out), "cases_done": [], "cases_skipped": len(mine) - len(todo), "encoder_calls": 0}
    if not todo:
        return summary
    predictor = opts.open_predictor(model)
    check_images({c: cases[c] for c in todo}, predictor.plans_manager.image_reader_writer_class)
    segmenter = opts.open_segmenter(segmenter)
    tmp_dir = out / ".sdg_partial"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SETTINGS_FILE, settings)
    for name in ("dataset.json", "plans.json"):  # as nnUNetv2_predict does; `nnunet_dfg evaluate` reads labels
        write_json_atomic(out / name, read_json(model / name))
    config = SDGConfig(threshold=opts.threshold, empty_box=opts.empty_box)
    modality = opts.sam_modality(Path(opts.images), model_dataset)
    writer = predictor.plans_manager.image_reader_writer_class()
    for case in tqdm(todo, desc=f"sdg-predict tile {opts.tile}", unit="case", disable=not opts.progress):
        pred = predictor.predict_case(cases[case], with_features=False)
        image = opts.sam_volume(predictor, cases[case], modality)
        volume = refine_volume(image, pred.probs, None, segmenter, "sdg", config, tile=opts.tile)
        label = predictor.to_original_grid(volume.label, pred.properties)
        write_segmentation(writer, label, out / f"{case}{ending}", pred.properties, ending, tmp_dir)
        summary["cases_done"].append(case)
        summary["encoder_calls"] += volume.total("encoder_calls")
    try:
        tmp_dir.rmdir()  # only when empty: a parallel part may still be writing there
    except OSError:
        pass
    return summary


def _run_predict(args: argparse.Namespace) -> None:
    opts = options_from_args(PredictOptions, args)
    s = sdg_predict(opts)
    print(f"predicted {len(s['cases_done'])} case(s), {s['cases_skipped']} already done -> {s['output']}")


def add_sdg_parsers(subparsers) -> None:
    """Adds ``sdg-predict`` and ``finetune-sam`` to the ``nnunet_dfg`` sub-command parsers."""
    p = subparsers.add_parser("sdg-predict", help="SDG inference: source model -> refined boxes -> SAM -> labels")
    p.add_argument("-i", dest="images", type=Path, required=True, help="folder of images (CASE_XXXX<ending>)")
    p.add_argument("-o", dest="output", type=Path, required=True, help="output folder for CASE<ending> labels")
    add_model_arguments(p, "nnUNetTrainerDFG_Source", "source dataset id/name (model in nnUNet_results, with "
                                                       "-tr -p -c)", "auto",
                        "1, 2 (2x2 slices per SAM encoder pass) or auto (default): 1 for LiteMedSAM's 256 px "
                        "input, 2 for 1024 px SAM/MedSAM")
    p.add_argument("--threshold", type=float, default=0.75, help="SDG box threshold theta1 on the probability")
    p.add_argument("--empty-box", default="none", help=EMPTY_BOX_HELP + "; a decoder fine-tuned with one value is "
                                                                      "meant to predict with the same")
    p.set_defaults(func=_run_predict)

    from .finetune_command import add_finetune_parser  # here: only sdg-predict's parser needs it
    add_finetune_parser(subparsers)
