"""``nnunet_dfg prepare-target``: preprocess unlabelled target images with the *source model's* plans.

nnU-Net's own ``plan_and_preprocess`` would fingerprint the target (crashing on the all-zero dummy labels that
unlabelled data would need) and plan a different network. Adaptation must keep the source network and its
intensity normalisation, so we reuse the plans stored in the source model's results folder and run nnU-Net's
preprocessor case by case. Only the model folder (plans.json, dataset.json) is read on the source side.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import UserError
from .image_checks import check_case_images
from .target_normalization import changed_channels, image_channel_reader, target_plans
from .nnunet_io import (atomic_folder, atomic_path, dataset_folder, datasets_with_id, env_folder, list_cases, read_json,
                        resolve_model_folder, write_json_atomic)


def model_folder(source: int | str, trainer: str, plans: str, configuration: str | None) -> Path:
    """``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG`` with a clear error if absent.

    Without a configuration, the one trained configuration of that trainer and plans is taken.
    """
    if configuration is None:
        results = dataset_folder(env_folder("nnUNet_results"), source)
        found = sorted(results.glob(f"{trainer}__{plans}__*"))
        if len(found) != 1:
            raise UserError(f"{len(found)} trained {trainer}__{plans} models in {results}: choose one with -c")
        return found[0]
    return resolve_model_folder(None, source, trainer, plans, configuration)


def check_compatible(source_dataset: dict, target_dataset: dict | None, num_found_channels: int | None = None) -> None:
    """Channel count and file ending of the target must match what the source network was trained on."""
    n_source = len(source_dataset["channel_names"])
    if target_dataset is not None:
        if target_dataset.get("file_ending") != source_dataset["file_ending"]:
            raise UserError(f"file ending mismatch: target uses {target_dataset.get('file_ending')!r}, "
                            f"the source model {source_dataset['file_ending']!r}")
        n_target = len(target_dataset.get("channel_names", target_dataset.get("modality", {})))
        if n_target != n_source:
            raise UserError(f"channel mismatch: target has {n_target} channel(s), the source model expects {n_source}")


def ignore_entry(source_dataset: dict, target_dataset: dict | None) -> int | None:
    """The ``"ignore"`` label of a derived dataset (``refine --pseudo-ignore``), None where it has none. Its other
    labels must be the source model's and ignore one above them (nnU-Net's rule), so the network stays the same."""
    labels = dict((target_dataset or {}).get("labels", {}))
    if "ignore" not in labels:
        return None
    ignore = labels.pop("ignore")
    values = [v for v in source_dataset["labels"].values() if isinstance(v, int)]
    if labels != source_dataset["labels"] or ignore != max(values) + 1:
        raise UserError(f"the target's labels {dict(target_dataset['labels'])} are not the model's "
                        f"{source_dataset['labels']} plus \"ignore\": {max(values) + 1}")
    return int(ignore)


def target_dataset_json(source_dataset: dict, num_cases: int, model_dir: Path, target_dataset: dict | None = None
                        ) -> dict:
    """The preprocessed target's dataset.json: the source's labels (the network's), no labels used; the target's own
    channel names where it has them (same count: checked), so models trained on it name the target's modality."""
    ds = copy.deepcopy(source_dataset)
    if target_dataset and target_dataset.get("channel_names"):
        ds["channel_names"] = dict(target_dataset["channel_names"])
    ds["numTraining"] = num_cases
    ds["dfg_source_model"] = str(model_dir)
    return ds


def _save_case(preprocessor, files, seg_file, plans_manager, configuration_manager, dataset_json,
               out_truncated: Path) -> None:
    """Preprocess one case; files are written under temporary names and renamed, the .pkl (the 'done' mark) last."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import comp_blosc2_params

    data, seg, properties = preprocessor.run_case([str(f) for f in files], seg_file and str(seg_file), plans_manager,
                                                  configuration_manager, dataset_json)
    if seg_file is None:
        # Unlabelled: nothing to oversample. The dataloader only reads these when oversampling; keep the keys.
        label_manager = plans_manager.get_label_manager(dataset_json)
        properties["class_locations"] = {c: np.zeros((0, data.ndim), dtype=np.int64)
                                         for c in label_manager.foreground_labels}
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    patch = tuple(configuration_manager.patch_size)
    blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    # not nnunet_io.atomic_path: nnU-Net's save_case writes three files from one name; the .pkl (the case's done
    # mark) is renamed last
    tmp = out_truncated.with_name(f".tmp_{out_truncated.name}")
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(tmp), chunks=chunks, blocks=blocks,
                                  chunks_seg=chunks_seg, blocks_seg=blocks_seg)
    for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
        os.replace(f"{tmp}{suffix}", f"{out_truncated}{suffix}")


PREPARED = "dfg_prepare_target.json"  # data identifier -> what made that folder (plans, labels): checked on reuse
_NOT_DATA = ("architecture", "batch_size", "patch_size", "batch_dice", "median_image_size_in_voxels", "inherits_from")


def _made_by(plans: dict, configuration_manager, with_labels: bool) -> dict:
    """What decides a data folder's content: the configuration without its network, the intensity statistics."""
    conf = {k: v for k, v in configuration_manager.configuration.items() if k not in _NOT_DATA}
    return json.loads(json.dumps({"configuration": conf, "transpose_forward": plans.get("transpose_forward"),
                                  "intensity": plans.get("foreground_intensity_properties_per_channel"),
                                  "labels": with_labels}))


def _claim_folders(out: Path, plans: dict, configuration_managers: list, with_labels: bool) -> None:
    """Refuses to write into a folder that something else preprocessed (e.g. nnU-Net's own planning of this
    dataset), to overwrite another plans file of that name, or to reuse (resume) a data folder that other plans
    or other labels made; then records what this run makes, before its first data write."""
    plans_file = out / f"{plans['plans_name']}.json"
    same_plans = plans_file.is_file() and read_json(plans_file) == json.loads(json.dumps(plans))
    record = read_json(out / PREPARED) if (out / PREPARED).is_file() else {}
    fix = f"remove {out} to prepare it again, or give the target another dataset id"
    if (plans_file.is_file() and not same_plans) or (not record and not same_plans and out.is_dir()
                                                     and any(out.iterdir())):
        raise UserError(f"{out} holds another preprocessing (other plans, or not made by prepare-target): {fix}")
    for cm in configuration_managers:
        made = _made_by(plans, cm, with_labels)
        if record.setdefault(cm.data_identifier, made) != made:
            raise UserError(f"{out / cm.data_identifier} was made with other plans or labels than this run's: {fix}")
    write_json_atomic(out / PREPARED, record)


def prepare_target(target_raw: Path, model_dir: Path, configurations: list[str] | None = None,
                   preprocessed_root: Path | None = None, with_labels: bool = False) -> Path:
    """Preprocess ``target_raw/imagesTr`` with the plans of ``model_dir``; returns the preprocessed folder.

    ``with_labels`` also reads ``labelsTr``: for datasets *derived* by this package (pseudo-labels for
    self-training, the oracle's reference labels). It is off by default so that a target dataset that happens
    to carry labels never has them read during adaptation. A derived dataset's ``"ignore"`` label (``refine
    --pseudo-ignore``) is kept in the preprocessed dataset.json, where nnU-Net's trainer finds it.

    Resumable: finished cases (their .pkl exists) are skipped; a configuration's folder only appears under its
    final name once all its cases are done. ``dfg_prepare_target.json`` records which plans and labels made each
    data folder: a folder made otherwise (other plans, nnU-Net's own preprocessing) is refused, never reused or
    overwritten.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = read_json(model_dir / "plans.json")
    source_dataset = read_json(model_dir / "dataset.json")
    target_json = target_raw / "dataset.json"
    target_dataset = read_json(target_json) if target_json.is_file() else None
    check_compatible(source_dataset, target_dataset)
    cases = list_cases(target_raw / "imagesTr", source_dataset["file_ending"], len(source_dataset["channel_names"]))
    labels = {}
    if with_labels:
        labels = {c: target_raw / "labelsTr" / f"{c}{source_dataset['file_ending']}" for c in cases}
        missing = [c for c, p in labels.items() if not p.is_file()]
        if missing:
            raise UserError(f"{len(missing)} case(s) have no label in {target_raw / 'labelsTr'}, e.g. {missing[0]}")
    configurations = configurations or [model_dir.name.split("__")[-1]]
    unknown = [c for c in configurations if c not in plans["configurations"]]
    if unknown:
        raise UserError(f"configuration(s) {unknown} not in the source plans ({sorted(plans['configurations'])})")

    out = (preprocessed_root or env_folder("nnUNet_preprocessed")) / target_raw.name
    plans = copy.deepcopy(plans)
    plans["dataset_name"] = target_raw.name
    dataset_json = target_dataset_json(source_dataset, len(cases), model_dir, target_dataset)
    dataset_json["dfg_labels_used"] = with_labels
    ignore = ignore_entry(source_dataset, target_dataset) if with_labels else None
    if ignore is not None:  # nnU-Net then leaves those voxels out of the loss and of its validation metrics
        dataset_json["labels"] = {**dataset_json["labels"], "ignore": ignore}
    plans_manager = PlansManager(plans)
    reader = plans_manager.image_reader_writer_class
    changes = changed_channels(plans, (target_dataset or {}).get("channel_names"))
    if changes or any(not (out / plans_manager.get_configuration(c).data_identifier).is_dir() for c in configurations):
        check_case_images(cases, reader)  # all cases, before the first read for statistics or write
    if changes:  # the target's modality needs another normalisation than the source's (target_normalization.py)
        try:
            plans = target_plans(plans, changes, image_channel_reader(cases, reader))
        except ValueError as e:
            raise UserError(str(e)) from None
        plans_manager = PlansManager(plans)
    dataset_json["dfg_target_normalization"] = changes
    _claim_folders(out, plans, [plans_manager.get_configuration(c) for c in configurations], with_labels)
    for configuration in configurations:
        cm = plans_manager.get_configuration(configuration)
        final = out / cm.data_identifier
        if final.is_dir():
            continue
        # not nnunet_io.atomic_folder: the partial folder is kept on failure so that a rerun resumes case by case
        partial = out / f".{cm.data_identifier}.partial"
        partial.mkdir(parents=True, exist_ok=True)
        preprocessor = cm.preprocessor_class(verbose=False)
        todo = [c for c in cases if not (partial / f"{c}.pkl").is_file()]
        for case in tqdm(todo, desc=f"prepare-target {configuration}", unit="case"):
            _save_case(preprocessor, cases[case], labels.get(case), plans_manager, cm, dataset_json, partial / case)
        os.replace(partial, final)
    if with_labels:  # nnU-Net's final validation compares against these (the pseudo-labels for self-training)
        (out / "gt_segmentations").mkdir(parents=True, exist_ok=True)
        for case, label in labels.items():
            with atomic_path(out / "gt_segmentations" / label.name, suffix=source_dataset["file_ending"]) as tmp:
                shutil.copyfile(label, tmp)
    write_json_atomic(out / f"{plans['plans_name']}.json", plans)
    write_json_atomic(out / "dataset.json", dataset_json)
    # nnU-Net's trainer copies this file next to its results; the source model folder has the source's copy.
    fingerprint = model_dir / "dataset_fingerprint.json"
    write_json_atomic(out / "dataset_fingerprint.json", read_json(fingerprint) if fingerprint.is_file() else {})
    return out


def link_folder_as_dataset(images: Path, dataset_id: int, name: str, file_ending: str, num_channels: int,
                           raw_root: Path | None = None, channel_names: dict | None = None) -> Path:
    """Registers a plain folder of target images as a new raw dataset (symlinks; the folder is not touched).

    ``channel_names`` (the CLI passes the source's: a bare folder says nothing of its modality, so it keeps the
    source's normalisation) default to ``channelN``, which nnU-Net's convention reads as non-CT."""
    raw_root = raw_root or env_folder("nnUNet_raw")
    if datasets_with_id(raw_root, dataset_id):
        raise UserError(f"dataset id {dataset_id} is already used in {raw_root}")
    cases = list_cases(images, file_ending, num_channels)
    with atomic_folder(raw_root / f"Dataset{dataset_id:03d}_{name}") as tmp:
        (tmp / "imagesTr").mkdir()
        for files in cases.values():
            for f in files:
                os.symlink(f.resolve(), tmp / "imagesTr" / f.name)
        channels = dict(channel_names) if channel_names else {str(i): f"channel{i}" for i in range(num_channels)}
        write_json_atomic(tmp / "dataset.json", {"channel_names": channels,
                                                  "labels": {"background": 0}, "numTraining": len(cases),
                                                  "file_ending": file_ending})
    return raw_root / f"Dataset{dataset_id:03d}_{name}"
