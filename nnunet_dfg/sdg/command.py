"""``nnunet_dfg sdg-predict`` and ``nnunet_dfg finetune-sam``: the file-handling shells of the SDG method.

``sdg-predict``: a source model's softmax (nnU-Net's own predictor) -> one SDG box per slice and class -> SAM
(``--tile 2``: four slices per encoder pass; default ``auto``, see :func:`resolve_tile`) -> DFG-style score merge
-> ``OUT/CASE<ending>`` on each input image's grid, like ``nnUNetv2_predict`` (which also puts the model's
dataset.json and plans.json next to them). No connectivity post-processing: SDG has none. Resumable (finished
cases are skipped) and shardable.

``finetune-sam``: SDG's mask-decoder fine-tuning on the labelled SOURCE dataset (allowed in SDG's setting, never in
DFG's), prompted by default with the source model's own refined boxes (``--boxes refined``; ``gt``: ground-truth
boxes) on the canvases ``sdg-predict --tile`` uses, saved as a small checkpoint that ``--sam PATH`` loads on top
of its base model.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..command_base import (ModelOptions, add_model_arguments, add_sam_intensity_arguments, check_images,
                            check_same_settings, check_sam_intensity, options_from_args, open_segmenter, portable)
from ..errors import UserError
from ..nnunet_io import (dataset_folder, env_folder, list_cases, read_json, write_json_atomic,
                         write_segmentation)

SETTINGS_FILE = "sdg_predict.json"


@dataclass(kw_only=True)
class PredictOptions(ModelOptions):
    """``-d`` is the dataset the source model was trained on (without ``-m``)."""

    images: Path
    output: Path
    trainer: str = "nnUNetTrainerDFG_Source"
    tile: int | str = "auto"
    threshold: float = 0.75


@dataclass(kw_only=True)
class FinetuneOptions(ModelOptions):
    """``-d``: the labelled SOURCE dataset; with ``--boxes refined`` the model options name the source model whose
    SDG boxes prompt the training slices (``-num_parts``/``-part_id``/``-step_size`` keep their defaults)."""

    output: Path
    trainer: str = "nnUNetTrainerDFG_Source"
    tile: int | str = "auto"        # as sdg-predict's --tile
    epochs: int = 10
    slices_per_epoch: int = 200
    max_slices: int | None = None  # fixed random subset of the foreground slices (bounds encoder passes, memory)
    seed: int = 0
    boxes: str = "refined"          # refined: the source model's SDG boxes (-m or -d/-tr/-p/-c, -f); gt: labels'
    threshold: float = 0.75         # SDG box threshold, as sdg-predict's


BOX_SOURCES = ("refined", "gt")


def resolve_tile(value: int | str, sam: str) -> int:
    """``--tile`` 1, 2 or ``auto``: 2x2 canvases (SDG's merging) for 1024 px SAM/MedSAM, none for LiteMedSAM,
    whose 256 px input would leave each slice 128 px on a 2x2 canvas (read from ``--sam``, a fine-tuned
    checkpoint's base included, without loading it)."""
    text = str(value).strip().lower()
    if text == "auto":
        from ..sam.build import LITEMEDSAM_SPEC
        from ..sam.finetuned import base_spec
        return 1 if base_spec(sam) == LITEMEDSAM_SPEC else 2
    if text in ("1", "2"):
        return int(text)
    raise UserError(f"--tile must be 1, 2 or auto, got {value}")


def _settings(opts: PredictOptions, model: Path) -> dict:
    """What determines the labels; a resumed run or another part must agree on all of it."""
    return {**opts.settings(model, Path(opts.images)), "threshold": opts.threshold,
            "merge": "refined 2 / model 1 / background 0.5"}


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
    config = SDGConfig(threshold=opts.threshold)
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


def source_slices(raw: Path, configuration: str, plans: str) -> list:
    """Foreground axial slices of a labelled raw dataset, through nnU-Net's preprocessing of ``configuration``
    (what the source model and ``sdg-predict`` see), or unchanged with ``configuration="none"`` (the images' array
    axis 0; equivalent for z-score normalised modalities, since SAM min-max scales every slice)."""
    from .slices import TrainingSlice, foreground_slices
    from .source import labelled_cases

    dataset, cases, label_files = labelled_cases(raw)
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    check_images(cases, determine_reader_writer_from_dataset_json(dataset, str(next(iter(cases.values()))[0]),
                                                                  verbose=False))
    if configuration == "none":
        import SimpleITK as sitk

        def load(case):
            image = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[case][0]))).astype(np.float32)
            return image, sitk.GetArrayFromImage(sitk.ReadImage(str(label_files[case])))
    else:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        plans_file = env_folder("nnUNet_preprocessed") / raw.name / f"{plans}.json"
        if not plans_file.is_file():
            raise UserError(f"no plans at {plans_file}: run nnUNetv2_plan_and_preprocess first, or use -c none")
        manager = PlansManager(str(plans_file))
        if configuration not in manager.available_configurations:
            raise UserError(f"configuration {configuration!r} is not in {plans_file.name} "
                            f"(has {', '.join(manager.available_configurations)})")
        cm = manager.get_configuration(configuration)

        def load(case):
            data, seg, _ = cm.preprocessor_class(verbose=False).run_case(
                [str(f) for f in cases[case]], str(label_files[case]), manager, cm, dataset)
            return data[0].astype(np.float32), seg[0]
    pool = []
    for case in cases:
        image, label = load(case)
        if image.shape != label.shape:
            raise UserError(f"case {case}: image {image.shape} and label {label.shape} differ in shape")
        pool += [TrainingSlice(image[z], label[z].astype(np.int16), f"{case}/{z}") for z in foreground_slices(label)]
    if not pool:
        raise UserError(f"{raw.name} has no labelled foreground slice")
    return pool


def _training_pool(opts: FinetuneOptions, raw: Path) -> tuple[list, int, dict]:
    """The source slices with their prompts' box source, how many were available, and what to record of it."""
    if opts.boxes == "gt":
        pool = source_slices(raw, opts.configuration, opts.plans)
        return pool, len(pool), {}
    from ..prompt_search import SDGConfig
    from .source import refined_slices
    if opts.configuration == "none":
        raise UserError("-c none has no source model to refine boxes with: use --boxes gt, or the model's -c")
    model = opts.resolve_model()
    predictor = opts.open_predictor(model)
    # SAM's input as sdg-predict makes it (the raw image windowed by modality), here of the source's modality
    modality = opts.sam_modality(raw / "imagesTr", read_json(model / "dataset.json"))
    pool, _ = refined_slices(raw, predictor, SDGConfig(threshold=opts.threshold), opts.progress,
                             lambda files: opts.sam_volume(predictor, files, modality))
    return pool, len(pool), {"model": portable(model), "fold": str(opts.fold), "checkpoint": opts.checkpoint,
                             "mirroring": not opts.disable_tta, "threshold": opts.threshold,
                             "sam_modality": modality, "sam_window": opts.sam_window}


def finetune_sam(opts: FinetuneOptions, segmenter: Any = None) -> dict:
    """Fine-tune the mask decoder on the source dataset and save the checkpoint; returns its metadata."""
    from tqdm import tqdm

    from ..sam.finetuned import is_finetuned_checkpoint, save_finetuned
    from .finetune import FinetuneConfig, finetune_mask_decoder
    from .slices import tile_groups

    out = Path(opts.output)
    if out.exists():
        raise UserError(f"{out} already exists; refusing to overwrite it")
    if is_finetuned_checkpoint(opts.sam):
        raise UserError(f"--sam {opts.sam} is already fine-tuned; give its base model")
    if opts.boxes not in BOX_SOURCES:
        raise UserError(f"--boxes must be {' or '.join(BOX_SOURCES)}, got {opts.boxes}")
    if not 0.0 < opts.threshold < 1.0:
        raise UserError(f"--threshold must lie strictly between 0 and 1, got {opts.threshold}")
    if opts.max_slices is not None and opts.max_slices < 1:
        raise UserError(f"--max-slices must be >= 1, got {opts.max_slices}")
    check_sam_intensity(opts.sam_intensity, opts.sam_window)
    try:
        config = FinetuneConfig(epochs=opts.epochs, slices_per_epoch=opts.slices_per_epoch, seed=opts.seed,
                                tile=resolve_tile(opts.tile, opts.sam))
    except ValueError as e:
        raise UserError(str(e)) from None
    raw = dataset_folder(env_folder("nnUNet_raw"), opts.dataset)
    pool, n_available, source_meta = _training_pool(opts, raw)
    if opts.max_slices is not None:
        if opts.max_slices < len(pool):
            keep = np.random.default_rng(opts.seed).choice(len(pool), opts.max_slices, replace=False)
            pool = [pool[i] for i in sorted(keep)]
    segmenter = segmenter if segmenter is not None else open_segmenter(opts.sam, opts.device, opts.sam_mode)
    n_canvases = len(tile_groups(pool, config.tile))
    total = config.epochs * min(-(-config.slices_per_epoch // config.tile ** 2), n_canvases)
    bar = tqdm(total=total, desc=f"finetune-sam tile {config.tile}", unit="canvas", disable=not opts.progress)

    def on_step(epoch: int, step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix_str(f"epoch {epoch + 1} loss {loss:.3f}")

    history = finetune_mask_decoder(segmenter, pool, config, on_step)
    bar.close()
    meta = {"source_dataset": raw.name, "configuration": opts.configuration, "plans": opts.plans,
            "boxes": opts.boxes, **source_meta, "n_canvases": n_canvases,
            "n_slices": len(pool), "n_slices_available": n_available, "slices": [t.key for t in pool],
            "loss_per_epoch": history, "encoder_calls": getattr(segmenter, "n_encoder_calls", None),
            **asdict(config)}
    save_finetuned(out, segmenter.parts, opts.sam, opts.sam_mode, meta)
    return meta


def _run_predict(args: argparse.Namespace) -> None:
    opts = options_from_args(PredictOptions, args)
    s = sdg_predict(opts)
    print(f"predicted {len(s['cases_done'])} case(s), {s['cases_skipped']} already done -> {s['output']}")


def _run_finetune(args: argparse.Namespace) -> None:
    opts = options_from_args(FinetuneOptions, args)
    meta = finetune_sam(opts)
    losses = ", ".join(f"{v:.3f}" for v in meta["loss_per_epoch"])
    print(f"fine-tuned on {meta['n_slices']} source slices, loss per epoch {losses} -> {opts.output}")


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
    p.set_defaults(func=_run_predict)

    p = subparsers.add_parser("finetune-sam", help="SDG: fine-tune SAM's mask decoder on the labelled source")
    p.add_argument("-d", dest="dataset", required=True, help="labelled SOURCE raw dataset id/name")
    p.add_argument("-o", dest="output", type=Path, required=True, help="checkpoint file to write (.pth)")
    p.add_argument("-c", dest="configuration", default="2d",
                   help="nnU-Net configuration whose preprocessing the slices get (as at sdg-predict); with "
                        "--boxes gt also 'none' (the images as stored)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans")
    p.add_argument("--boxes", default="refined",
                   help="refined (default): the source model's SDG boxes on its training slices, as sdg-predict "
                        "prompts; gt: the labels' boxes")
    p.add_argument("-m", dest="model", type=Path, help="--boxes refined: source model folder instead of -d/-tr/-p/-c")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainerDFG_Source")
    p.add_argument("-f", dest="fold", default="0")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth")
    p.add_argument("--disable-tta", action="store_true", help="no mirroring in the source model's predictions")
    p.add_argument("--threshold", type=float, default=0.75, help="SDG box threshold, as sdg-predict's")
    p.add_argument("--tile", default="auto", help="as sdg-predict's --tile: 2 trains on 2x2 canvases; auto: 1 for "
                                                  "LiteMedSAM, 2 for SAM/MedSAM")
    p.add_argument("--sam", default="litemedsam", help="base model: 'litemedsam' or a SAM/MedSAM checkpoint")
    p.add_argument("--sam-mode", choices=("sam", "medsam"))
    add_sam_intensity_arguments(p)  # --boxes refined: the source fed to SAM as sdg-predict feeds the target
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--slices-per-epoch", type=int, default=200,
                   help="slices drawn (without repeats) per epoch; tiled: this / 4 canvases")
    p.add_argument("--max-slices", type=int, help="train on a fixed random subset of this many slices (each canvas "
                                                  "is embedded once and kept in memory, ~4 MiB each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-device", dest="device", default="cpu")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_run_finetune)
