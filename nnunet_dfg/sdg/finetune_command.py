"""``nnunet_dfg finetune-sam``: SDG's mask-decoder fine-tuning on the labelled SOURCE dataset (allowed in SDG's
setting, never in DFG's), prompted by default with the source model's own refined boxes (``--boxes refined``;
``gt``: ground-truth boxes, the project's ablation) on the canvases ``sdg-predict --tile`` uses, saved as a small
checkpoint that ``--sam PATH`` loads on top of its base model. The schedule is the reference's (``finetune``):
``--epochs`` passes over every pool slice, 16 slices per step, canvases reshuffled every pass.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..command_base import (ModelOptions, add_sam_intensity_arguments, check_images, check_sam_intensity,
                            open_segmenter, options_from_args, portable)
from ..errors import UserError
from ..nnunet_io import dataset_folder, env_folder, read_json
from .options import EMPTY_BOX_HELP, check_empty_box, resolve_tile

BOX_SOURCES = ("refined", "gt")


@dataclass(kw_only=True)
class FinetuneOptions(ModelOptions):
    """``-d``: the labelled SOURCE dataset; with ``--boxes refined`` the model options name the source model whose
    SDG boxes prompt the training slices (``-num_parts``/``-part_id``/``-step_size`` keep their defaults)."""

    output: Path
    trainer: str = "nnUNetTrainerDFG_Source"
    tile: int | str = "auto"        # as sdg-predict's --tile
    epochs: int = 200               # passes over the pool (the reference's 200)
    batch_canvases: int | None = None  # canvases per step; None: 16 slices' worth (finetune.FinetuneConfig)
    max_slices: int | None = None  # fixed random subset of the pool (bounds the embeddings kept, ~4 MiB each)
    seed: int = 0
    boxes: str = "refined"          # refined: the source model's SDG boxes (-m or -d/-tr/-p/-c, -f); gt: labels'
    threshold: float = 0.75         # SDG box threshold, as sdg-predict's
    empty_box: str = "none"         # as sdg-predict's: "full" also trains on whole-slice boxes


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
        if opts.sam_intensity == "equalize":  # per slice, so the preprocessed channel serves as well as the raw one
            from ..sam.intensity import equalize_slices
            pool = [replace(item, image=equalize_slices(item.image)) for item in pool]
        return pool, len(pool), {"sam_intensity": opts.sam_intensity}
    from ..prompt_search import SDGConfig, whole_slice_box
    from .source import refined_slices
    if opts.configuration == "none":
        raise UserError("-c none has no source model to refine boxes with: use --boxes gt, or the model's -c")
    model = opts.resolve_model()
    predictor = opts.open_predictor(model)
    # SAM's input as sdg-predict makes it (the raw image windowed by modality), here of the source's modality
    modality = opts.sam_modality(raw / "imagesTr", read_json(model / "dataset.json"))
    pool, _ = refined_slices(raw, predictor, SDGConfig(threshold=opts.threshold, empty_box=opts.empty_box),
                             opts.progress, lambda files: opts.sam_volume(predictor, files, modality))
    boxes = [(box, item.label.shape) for item in pool for box in item.boxes.values()]
    return pool, len(pool), {"model": portable(model), "fold": str(opts.fold), "checkpoint": opts.checkpoint,
                             "mirroring": not opts.disable_tta, "threshold": opts.threshold,
                             "sam_intensity": opts.sam_intensity, "sam_modality": modality,
                             "sam_window": opts.sam_window, "n_boxes_available": len(boxes),
                             "n_whole_slice_boxes_available": sum(box == whole_slice_box(shape)
                                                                  for box, shape in boxes)}


def _check(opts: FinetuneOptions) -> None:
    """Every option that can be judged without reading data, as one-line ``UserError``s."""
    from ..sam.finetuned import is_finetuned_checkpoint
    if Path(opts.output).exists():
        raise UserError(f"{opts.output} already exists; refusing to overwrite it")
    if is_finetuned_checkpoint(opts.sam):
        raise UserError(f"--sam {opts.sam} is already fine-tuned; give its base model")
    if opts.boxes not in BOX_SOURCES:
        raise UserError(f"--boxes must be {' or '.join(BOX_SOURCES)}, got {opts.boxes}")
    if not 0.0 < opts.threshold < 1.0:
        raise UserError(f"--threshold must lie strictly between 0 and 1, got {opts.threshold}")
    if opts.max_slices is not None and opts.max_slices < 1:
        raise UserError(f"--max-slices must be >= 1, got {opts.max_slices}")
    check_empty_box(opts.empty_box)
    if opts.empty_box == "full" and opts.boxes == "gt":
        raise UserError("--empty-box full needs --boxes refined (a ground-truth box is never empty)")
    check_sam_intensity(opts.sam_intensity, opts.sam_window)


def finetune_sam(opts: FinetuneOptions, segmenter: Any = None) -> dict:
    """Fine-tune the mask decoder on the source dataset and save the checkpoint; returns its metadata."""
    from tqdm import tqdm

    from ..sam.finetuned import save_finetuned
    from .finetune import FinetuneConfig, finetune_mask_decoder
    from .slices import tile_groups

    _check(opts)
    try:
        config = FinetuneConfig(epochs=opts.epochs, batch_canvases=opts.batch_canvases, seed=opts.seed,
                                tile=resolve_tile(opts.tile, opts.sam))
    except ValueError as e:
        raise UserError(str(e)) from None
    raw = dataset_folder(env_folder("nnUNet_raw"), opts.dataset)
    pool, n_available, source_meta = _training_pool(opts, raw)
    if opts.max_slices is not None and opts.max_slices < len(pool):
        keep = np.random.default_rng(opts.seed).choice(len(pool), opts.max_slices, replace=False)
        pool = [pool[i] for i in sorted(keep)]
    segmenter = segmenter if segmenter is not None else open_segmenter(opts.sam, opts.device, opts.sam_mode)
    n_canvases = len(tile_groups(pool, config.tile))
    bar = tqdm(total=config.epochs * config.steps_per_epoch(n_canvases), desc=f"finetune-sam tile {config.tile}",
               unit="step", disable=not opts.progress)

    def on_step(epoch: int, step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix_str(f"pass {epoch + 1} loss {loss:.3f}")

    history = finetune_mask_decoder(segmenter, pool, config, on_step)
    bar.close()
    meta = {"source_dataset": raw.name, "configuration": opts.configuration, "plans": opts.plans,
            "boxes": opts.boxes, "empty_box": opts.empty_box, **source_meta, "n_canvases": n_canvases,
            "canvases_per_step": config.canvases_per_step, "n_slices": len(pool), "n_slices_available": n_available,
            "slices": [t.key for t in pool], "loss_per_epoch": history,
            "encoder_calls": getattr(segmenter, "n_encoder_calls", None), **asdict(config)}
    save_finetuned(opts.output, segmenter.parts, opts.sam, opts.sam_mode, meta)
    return meta


def _run_finetune(args: argparse.Namespace) -> None:
    opts = options_from_args(FinetuneOptions, args)
    meta = finetune_sam(opts)
    losses = meta["loss_per_epoch"]
    shown = ", ".join(f"{v:.3f}" for v in (losses if len(losses) <= 12 else losses[:6] + losses[-6:]))
    print(f"fine-tuned on {meta['n_slices']} source slices for {len(losses)} passes, loss per pass {shown}"
          f"{' (first and last 6)' if len(losses) > 12 else ''} -> {opts.output}")


def add_finetune_parser(subparsers) -> None:
    """Adds ``finetune-sam`` to the ``nnunet_dfg`` sub-command parsers."""
    p = subparsers.add_parser("finetune-sam", help="SDG: fine-tune SAM's mask decoder on the labelled source")
    p.add_argument("-d", dest="dataset", required=True, help="labelled SOURCE raw dataset id/name")
    p.add_argument("-o", dest="output", type=Path, required=True, help="checkpoint file to write (.pth)")
    p.add_argument("-c", dest="configuration", default="2d",
                   help="nnU-Net configuration whose preprocessing the slices get (as at sdg-predict); with "
                        "--boxes gt also 'none' (the images as stored)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans")
    p.add_argument("--boxes", default="refined",
                   help="refined (default): the source model's SDG boxes on its training slices, as sdg-predict "
                        "prompts; gt: the labels' boxes (the project's ablation)")
    p.add_argument("-m", dest="model", type=Path, help="--boxes refined: source model folder instead of -d/-tr/-p/-c")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainerDFG_Source")
    p.add_argument("-f", dest="fold", default="0")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth")
    p.add_argument("--disable-tta", action="store_true", help="no mirroring in the source model's predictions")
    p.add_argument("--threshold", type=float, default=0.75, help="SDG box threshold, as sdg-predict's")
    p.add_argument("--empty-box", default="none", help=EMPTY_BOX_HELP + "; give sdg-predict the same")
    p.add_argument("--tile", default="auto", help="as sdg-predict's --tile: 2 trains on 2x2 canvases; auto: 1 for "
                                                  "LiteMedSAM, 2 for SAM/MedSAM")
    p.add_argument("--sam", default="litemedsam", help="base model: 'litemedsam' or a SAM/MedSAM checkpoint")
    p.add_argument("--sam-mode", choices=("sam", "medsam"))
    add_sam_intensity_arguments(p)  # --boxes refined: the source fed to SAM as sdg-predict feeds the target
    p.add_argument("--epochs", type=int, default=200,
                   help="passes over every pool slice (default 200, the reference's); each pass reshuffles the "
                        "canvases")
    p.add_argument("--batch-canvases", type=int,
                   help="canvases per optimiser step (default: 16 slices' worth, the reference's batch: 16 "
                        "untiled, 4 with --tile 2)")
    p.add_argument("--max-slices", type=int, help="train on a fixed random subset of this many pool slices (every "
                                                  "canvas is embedded once and kept in memory, ~4 MiB each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-device", dest="device", default="cpu")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_run_finetune)
