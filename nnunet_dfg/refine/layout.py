"""The pseudo-label dataset a refinement writes: a new nnU-Net raw dataset plus a ``dfg_refine/`` side folder.

    DatasetNNN_<Target><Suffix>/
        dataset.json               the model's channels/labels, numTraining, "dfg_pseudo_labels" metadata
        imagesTr/                  the target images (symlinks, or copies)
        labelsTr/CASE<ending>      post-processed pseudo-labels; written LAST, so "exists" means "case done"
        dfg_refine/labels_raw/     merged labels before connectivity post-processing (to evaluate that stage)
        dfg_refine/labels_model/   the model's own labels, where the search started (to evaluate what it adds)
        dfg_refine/reports/        CASE.json per case
        dfg_refine/reliability/    with --pseudo-ignore RULE: why a voxel is ignore in labelsTr (0 kept, 1 the
                                   search's evidence, 2 removed by the post-processing); labelsTr then holds
                                   dataset.json's "ignore" value there
        dfg_refine/.tmp/           files being written (renamed into place), never read by nnU-Net

Every file is written under a temporary name and renamed, so parallel parts (sharding) and killed runs never
leave a half-written file where a finished one is expected.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

from ..command_base import check_same_settings
from ..errors import UserError
from ..nnunet_io import atomic_path, datasets_with_id, read_json, write_segmentation

METADATA_KEY = "dfg_pseudo_labels"


class OutputDataset:
    """Paths and atomic writers of one output dataset folder."""

    def __init__(self, root: Path, file_ending: str, with_reliability: bool = False) -> None:
        self.root = Path(root)
        self.file_ending = file_ending
        self.with_reliability = with_reliability  # a --pseudo-ignore RULE dataset
        self.images = self.root / "imagesTr"
        self.labels = self.root / "labelsTr"
        self.side = self.root / "dfg_refine"
        self.labels_raw = self.side / "labels_raw"
        self.labels_model = self.side / "labels_model"
        self.reports = self.side / "reports"
        self.reliability = self.side / "reliability"
        self.tmp = self.side / ".tmp"

    def create(self) -> None:
        for folder in (self.images, self.labels, self.labels_raw, self.labels_model, self.reports, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        if self.with_reliability:
            self.reliability.mkdir(parents=True, exist_ok=True)

    def label_file(self, case: str) -> Path:
        return self.labels / f"{case}{self.file_ending}"

    def raw_label_file(self, case: str) -> Path:
        return self.labels_raw / f"{case}{self.file_ending}"

    def model_label_file(self, case: str) -> Path:
        return self.labels_model / f"{case}{self.file_ending}"

    def reliability_file(self, case: str) -> Path:
        return self.reliability / f"{case}{self.file_ending}"

    def report_file(self, case: str) -> Path:
        return self.reports / f"{case}.json"

    def is_done(self, case: str) -> bool:
        return self.label_file(case).is_file()

    def staged(self, final: Path, suffix: str = ""):
        """A fresh temporary path in ``.tmp/`` (ending in ``suffix`` so writers pick the format), renamed onto
        ``final`` only if the block succeeds."""
        return atomic_path(final, suffix=suffix, tmp_dir=self.tmp)

    def write_segmentation(self, writer, seg, final: Path, properties: dict) -> None:
        write_segmentation(writer, seg, final, properties, self.file_ending, self.tmp)

    def write_bytes(self, data: bytes, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        with self.staged(final, final.suffix) as tmp:
            tmp.write_bytes(data)

    def clear_tmp(self) -> None:
        """Removes what killed runs left in ``.tmp/``. Only call once every case has its label: no part is
        writing then (a case's label is its last file)."""
        try:
            leftovers = list(self.tmp.iterdir())
        except FileNotFoundError:
            return
        for leftover in leftovers:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def has_foreground(self, case: str) -> bool:
        """Whether the case's final label has any foreground voxel (from its report, written before the label)."""
        report = read_json(self.report_file(case))
        return any(n > 0 for n in report["voxels"]["after_postprocessing"].values())

    def discard(self) -> None:
        """Removes the whole dataset: renamed away first, so nnU-Net never sees it half-deleted and a parallel
        part that discards it too finds nothing (instead of failing halfway)."""
        gone = self.root.with_name(f".{self.root.name}.discarded.{os.getpid()}")
        try:
            os.replace(self.root, gone)
        except FileNotFoundError:
            return
        shutil.rmtree(gone, ignore_errors=True)

    def add_images(self, files: list[Path], copy_files: bool) -> None:
        """Link (absolute symlink) or copy a case's channel files into imagesTr; existing ones are kept."""
        for src in files:
            dst = self.images / src.name
            if dst.exists() or dst.is_symlink():
                continue
            with self.staged(dst, "") as tmp:
                if copy_files:
                    shutil.copyfile(src, tmp)
                else:
                    tmp.unlink()
                    os.symlink(src.resolve(), tmp)


def output_dataset_json(model_dataset: Mapping, num_cases: int, metadata: Mapping) -> dict:
    """The model's dataset.json (its labels and channels are the pseudo-labels' and images') for the new cases."""
    ds = {k: copy.deepcopy(v) for k, v in model_dataset.items() if k not in ("numTraining", METADATA_KEY)}
    for key in ("dfg_source_model", "dfg_unlabelled", "description", "name"):
        ds.pop(key, None)
    ds["numTraining"] = int(num_cases)
    ds["description"] = "pseudo-labels refined by nnunet_dfg refine"
    ds[METADATA_KEY] = dict(metadata)
    return ds


def resolve_output(raw_root: Path, out_id: int | None, target_id: int | None, name: str, offset: int = 100) -> Path:
    """``raw_root/DatasetNNN_name``; NNN defaults to target id + ``offset``. An id held by another name is refused."""
    if out_id is None:
        if target_id is None:
            raise UserError("--out-id is required when the target is not a numbered dataset")
        out_id = target_id + offset
    if not 1 <= out_id <= 999:
        raise UserError(f"output dataset id must lie in 1..999, got {out_id}")
    if target_id is not None and out_id == target_id:
        raise UserError(f"output dataset id {out_id} is the target's own id")
    folder = raw_root / f"Dataset{out_id:03d}_{name}"
    taken = [p.name for p in datasets_with_id(raw_root, out_id)]
    others = [t for t in taken if t != folder.name]
    if others:
        raise UserError(f"dataset id {out_id} is already used by {others[0]}; choose another --out-id")
    return folder


def check_resumable(folder: Path, metadata: Mapping) -> None:
    """An existing output folder may only be continued with the same settings (parts of one run agree)."""
    existing = folder / "dataset.json"
    if not existing.is_file():  # fresh, or a parallel part is just creating it: only our layout may be there
        ours = {"imagesTr", "labelsTr", "dfg_refine"}
        if folder.is_dir() and any(p.name not in ours and not p.name.startswith(".") for p in folder.iterdir()):
            raise UserError(f"{folder} exists and was not written by nnunet_dfg refine")
        return
    found = read_json(existing).get(METADATA_KEY)
    if found is None:
        raise UserError(f"{folder} exists and was not written by nnunet_dfg refine")
    check_same_settings(found, metadata, str(folder), "use another --out-id or delete it")


def write_dataset_json(folder: Path, dataset: Mapping) -> None:
    """Staged in ``dfg_refine/.tmp/`` like every other file (after :meth:`OutputDataset.create`), so a killed run
    leaves no temporary file in the dataset's root where nnU-Net looks."""
    OutputDataset(folder, "").write_bytes(json.dumps(dict(dataset), indent=2).encode(), Path(folder) / "dataset.json")
