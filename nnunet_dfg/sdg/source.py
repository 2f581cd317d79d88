"""The labelled source slices ``finetune-sam`` trains on (file handling; the prompts themselves are ``slices``).

SDG is not source-free: its decoder fine-tuning reads the source training images AND their labels, and with
``--boxes refined`` (default) also runs the source model on them, so that training prompts are the boxes
``sdg-predict`` will give SAM (METHOD.md, SDG step 3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..command_base import check_images
from ..errors import UserError
from ..nnunet_io import list_cases, read_json
from .slices import TrainingSlice


def labelled_cases(raw: Path) -> tuple[dict, dict[str, list[Path]], dict[str, Path]]:
    """(dataset.json, case -> image files, case -> label file) of a raw dataset's imagesTr/labelsTr; every case
    needs its label."""
    dataset = read_json(raw / "dataset.json")
    ending = dataset["file_ending"]
    cases = list_cases(raw / "imagesTr", ending, len(dataset["channel_names"]))
    labels = {c: raw / "labelsTr" / f"{c}{ending}" for c in cases}
    missing = [c for c, f in labels.items() if not f.is_file()]
    if missing:
        raise UserError(f"{raw.name} has no label for case {missing[0]} in labelsTr (fine-tuning needs labels)")
    return dataset, cases, labels


def refined_slices(raw: Path, predictor: Any, config: Any, progress: bool = True,
                   sam_image: Callable[[Sequence[Path]], np.ndarray] | None = None) -> tuple[list[TrainingSlice], int]:
    """Every source training slice on which the source model (``volume.predictor.FeaturePredictor``) gives at
    least one SDG box (``prompt_search.volume_boxes(..., "sdg", config)``: with ``config.empty_box="full"`` also
    the whole-slice boxes, so every slice of a volume where some class is boxed), on the model's network grid
    (what ``sdg-predict`` sees), with those boxes and its ground truth; plus the number of slices looked at.

    ``sam_image(files)``, if given, is the (Z, Y, X) volume SAM is fed on that grid (as ``sdg-predict`` feeds
    it); default: the network's preprocessed channel 0.
    """
    from tqdm import tqdm

    from ..prompt_search import volume_boxes

    dataset, cases, labels = labelled_cases(raw)
    n_model, n_labels = int(predictor.num_classes), len(dataset["labels"]) - ("ignore" in dataset["labels"])
    if n_labels != n_model:
        raise UserError(f"{raw.name} has {n_labels} labels but the source model predicts {n_model} "
                        f"classes: give the dataset the model was trained on")
    check_images(cases, predictor.plans_manager.image_reader_writer_class)
    cm, pm = predictor.configuration_manager, predictor.plans_manager
    pool: list[TrainingSlice] = []
    seen = 0
    for case in tqdm(sorted(cases), desc="source predictions", unit="case", disable=not progress):
        # images and label through nnU-Net's preprocessing once (the label gets the images' crop and resampling);
        # the prediction reuses those images
        data, seg, properties = cm.preprocessor_class(verbose=False).run_case(
            [str(f) for f in cases[case]], str(labels[case]), pm, cm, predictor.dataset_json)
        pred = predictor.predict_case(cases[case], with_features=False,
                                      preprocessed=(data.astype(np.float32, copy=False), properties))
        label = seg[0]
        image = pred.image if sam_image is None else np.asarray(sam_image(cases[case]), dtype=np.float32)
        if label.shape != pred.probs.shape[1:] or image.shape != label.shape:
            raise UserError(f"case {case}: label {label.shape}, image {image.shape} and prediction "
                            f"{pred.probs.shape[1:]} differ in shape on the network grid")
        seen += label.shape[0]
        for z, boxes in volume_boxes(pred.probs, "sdg", config).items():
            if boxes:
                pool.append(TrainingSlice(np.ascontiguousarray(image[z]), label[z].astype(np.int16),
                                          f"{case}/{z}", boxes))
    if not pool:
        raise UserError(f"the source model gives no SDG box on any slice of {raw.name} (no prediction above the "
                        f"threshold {config.threshold}); use --boxes gt")
    return pool, seen
