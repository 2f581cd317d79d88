"""What the commands that run a trained nnU-Net and SAM over volumes share (``refine``, ``sdg-predict``, and the
SAM/image parts of ``finetune-sam``): their common options and arguments, sharding, the image checks, and the
settings a resumed run must agree on, stored relative to ``nnUNet_raw`` / ``nnUNet_results`` so a moved nnU-Net
tree still resumes.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import UserError
from .nnunet_io import resolve_model_folder

OUT_ID_OFFSET = {"dfg": 100, "box": 110, "sdg": 120}  # refine's default output id: target id + offset
RELIABLE_ID_OFFSET = 5  # refine --pseudo-ignore RULE: that dataset's default id is 5 above the prompt's


@dataclass(kw_only=True)
class ModelOptions:
    """A trained nnU-Net (``-m``, or ``-d/-tr/-p/-c``), how it predicts, the segmenter, and this run's part."""

    dataset: str | None = None            # -d
    model: Path | None = None             # -m: model folder instead of nnUNet_results/<-d>/<tr>__<p>__<c>
    configuration: str = "2d"
    fold: str = "0"
    trainer: str = "nnUNetTrainerDFG_FA"
    plans: str = "nnUNetPlans"
    checkpoint: str = "checkpoint_final.pth"
    sam: str = "litemedsam"
    sam_mode: str | None = None
    sam_intensity: str = "auto"           # what SAM sees: ct / mr window of the raw image, auto from dataset.json
    sam_window: str | None = None         # "LOW,HIGH" HU for ct (default sam.intensity.DEFAULT_CT_WINDOW)
    tile: int = 1                         # box prompts: n x n slices share one encoder pass
    device: str = "cpu"
    num_parts: int = 1
    part_id: int = 0
    disable_tta: bool = False
    step_size: float = 0.5
    progress: bool = True

    def check(self) -> None:
        if self.tile not in (1, 2):
            raise UserError(f"--tile must be 1 or 2, got {self.tile}")
        if self.num_parts < 1 or not 0 <= self.part_id < self.num_parts:
            raise UserError(f"-part_id must lie in 0..{self.num_parts - 1}")
        check_sam_intensity(self.sam_intensity, self.sam_window)

    def resolve_model(self) -> Path:
        return resolve_model_folder(self.model, self.dataset, self.trainer, self.plans, self.configuration)

    def my_cases(self, cases: Mapping[str, Any]) -> list[str]:
        """This part's cases (``-num_parts/-part_id``, as ``nnUNetv2_predict`` shards)."""
        return sorted(cases)[self.part_id::self.num_parts]

    def settings(self, model: Path, images: Path) -> dict:
        """What determines the labels besides the command's own options; equal across parts and resumed runs."""
        return {"model": portable(model), "fold": str(self.fold), "checkpoint": self.checkpoint,
                "images": portable(images), "sam": self.sam, "sam_mode": self.sam_mode,
                "mirroring": not self.disable_tta, "step_size": self.step_size, "tile": self.tile,
                "sam_intensity": self.sam_intensity, "sam_window": self.sam_window}

    def sam_modality(self, images: Path, model_dataset: Mapping) -> str:
        """``ct``, ``mr`` or ``equalize``: ``--sam-intensity``, or with ``auto`` channel 0's name in the dataset.json
        beside the image folder (the target's own, e.g. ``imagesTr/../dataset.json``), else in the model's."""
        from .nnunet_io import read_json
        from .sam.intensity import resolve_modality
        beside = Path(images).parent / "dataset.json"
        return resolve_modality(self.sam_intensity, read_json(beside) if beside.is_file() else model_dataset)

    def sam_volume(self, predictor, files: Sequence[Path], modality: str):
        """The case's raw channel 0 on the network grid, windowed for SAM (``sam.intensity.sam_image``; equalize:
        each slice along axis 0, the axis the volume engine cuts SAM's slices along)."""
        from .sam.intensity import parse_window, sam_image
        return sam_image(predictor.raw_image(files), modality, parse_window(self.sam_window))

    def open_predictor(self, model: Path):
        from .volume.predictor import FeaturePredictor
        return FeaturePredictor(model, self.fold, self.checkpoint, self.device, not self.disable_tta,
                                self.step_size)

    def open_segmenter(self, segmenter: Any = None) -> Any:
        """``segmenter`` if given (tests), else ``--sam``; a load failure is one ``UserError`` line."""
        return segmenter if segmenter is not None else open_segmenter(self.sam, self.device, self.sam_mode)


def check_sam_intensity(intensity: str, window: str | None) -> None:
    """``--sam-intensity`` and ``--sam-window`` as one-line ``UserError``s, before anything runs."""
    from .sam.intensity import check_intensity, parse_window
    try:
        check_intensity(intensity)
        parse_window(window)
    except ValueError as e:
        raise UserError(str(e)) from None


def open_segmenter(spec: str, device: str = "cpu", mode: str | None = None):
    from .sam.segmenter import load_segmenter
    try:
        return load_segmenter(spec, device=device, mode=mode)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        raise UserError(f"cannot load segmenter {spec!r}: {str(e).splitlines()[0] if str(e) else e}") from None


def options_from_args(cls: type, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def portable(path: Path) -> str:
    """``$nnUNet_raw/...`` or ``$nnUNet_results/...`` where the path lies inside one, so that an nnU-Net tree moved
    as a whole (its variables pointing to the new place) still resumes; other paths stay absolute."""
    path = Path(path).resolve()
    for name in ("nnUNet_raw", "nnUNet_results"):
        root = os.environ.get(name)
        if root and path.is_relative_to(Path(root).resolve()):
            return f"${name}/{path.relative_to(Path(root).resolve()).as_posix()}"
    return str(path)


def check_same_settings(found: Mapping, wanted: Mapping, what: str, hint: str) -> None:
    """Refuses to continue ``what`` written with other settings, naming the keys that differ."""
    if dict(found) != dict(wanted):
        diff = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
        raise UserError(f"{what} was written with other settings ({', '.join(diff)}); {hint}")


def check_images(cases: Mapping[str, Sequence[Path]], reader_class) -> None:
    """Every case readable, finite and not constant (``image_checks``), before any output is written."""
    from .image_checks import check_case_images
    check_case_images(cases, reader_class)


def add_model_arguments(p: argparse.ArgumentParser, trainer: str, dataset_help: str, tile_default: int | str,
                        tile_help: str) -> None:
    """The arguments of :class:`ModelOptions` (``-d`` is the command's own: its meaning differs)."""
    p.add_argument("-d", dest="dataset", help=dataset_help)
    p.add_argument("-m", dest="model", type=Path, help="model folder (TRAINER__PLANS__CONFIG) instead of -d/-tr/-p/-c")
    p.add_argument("-c", dest="configuration", default="2d")
    p.add_argument("-f", dest="fold", default="0")
    p.add_argument("-tr", dest="trainer", default=trainer)
    p.add_argument("-p", dest="plans", default="nnUNetPlans")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth")
    p.add_argument("--sam", default="litemedsam", help="'litemedsam' (bundled), a SAM/MedSAM checkpoint path, or "
                                                       "a finetune-sam checkpoint")
    p.add_argument("--sam-mode", choices=("sam", "medsam"), help="preprocessing of a checkpoint given to --sam")
    add_sam_intensity_arguments(p)
    if tile_default == "auto":  # sdg-predict: the command resolves it from --sam (sdg.command.resolve_tile)
        p.add_argument("--tile", default="auto", help=tile_help)
    else:
        p.add_argument("--tile", type=int, choices=(1, 2), default=tile_default, help=tile_help)
    p.add_argument("-device", dest="device", default="cpu", help="cpu or cuda (nnU-Net and SAM)")
    p.add_argument("-num_parts", dest="num_parts", type=int, default=1)
    p.add_argument("-part_id", dest="part_id", type=int, default=0)
    p.add_argument("--disable-tta", action="store_true", help="no mirroring at prediction (faster)")
    p.add_argument("-step_size", dest="step_size", type=float, default=0.5)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def add_sam_intensity_arguments(p: argparse.ArgumentParser) -> None:
    """``--sam-intensity`` and ``--sam-window`` (refine, sdg-predict, pipeline, demo): what SAM is fed."""
    p.add_argument("--sam-intensity", default="auto",
                   help="SAM's input from the raw image: ct (HU window), mr (0.5-99.5 percentiles of the non-zero "
                        "voxels), auto (default: ct if the images' dataset.json names channel 0 'CT', else mr), "
                        "equalize (the SDG reference's: each slice min-max scaled to 8 bits and "
                        "histogram-equalised)")
    p.add_argument("--sam-window", metavar="LOW,HIGH",
                   help="CT window in HU for SAM (default -125,275: the DFG reference's soft-tissue window)")
