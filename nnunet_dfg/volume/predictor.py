"""Softmax AND decoder features of a trained nnU-Net, predicted by nnU-Net's own machinery.

Why a wrapper instead of a second pass: nnU-Net's sliding window (Gaussian weighting, tile overlap, mirroring,
padding) is what makes its softmax what it is. Wrapping the network so that its forward returns
``cat([logits, features], 1)`` and letting the predictor allocate K + C output channels runs the features through
exactly the same aggregation, so logits and features stay consistent (with bias-free heads, the aggregated logits
are the prototypes applied to the aggregated features).

Caveat inherited from nnU-Net: the predictor accumulates in float16, features included (~3 significant digits).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..trainers.network_parts import capture_features, unwrap


class LogitsAndFeatures(nn.Module):
    """Forward returns ``cat([logits, features], 1)``; state dicts are the wrapped network's own.

    The predictor reloads ``list_of_parameters`` into ``self.network`` before predicting, so loading and saving
    are delegated to keep the checkpoint's keys valid.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.with_features = True  # False: plain logits (prompts that need no features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture_features(self.network) as store:
            logits = self.network(x)
        if isinstance(logits, (list, tuple)):  # deep supervision left on: full resolution comes first
            logits = logits[0]
        if not self.with_features:
            return logits
        return torch.cat([logits, store[-1].to(logits.dtype)], 1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)

    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)


def _label_manager_with_features(base, extra: int):
    """nnU-Net's label manager class of the model, for the same labels, reporting ``extra`` more output channels:
    the predictor's sliding window allocates ``num_segmentation_heads`` channels, and the features ride along."""

    class WithFeatures(type(base)):
        @property
        def num_segmentation_heads(self) -> int:
            return super().num_segmentation_heads + extra

    return WithFeatures(base.label_dict, base.regions_class_order, inference_nonlin=base.inference_nonlin)


def _logits_and_features_predictor():
    """nnU-Net's ``nnUNetPredictor`` with :meth:`predict_with_features`: its own sliding window (Gaussian weights,
    overlap, mirroring, padding) over the logits and the decoder features at once (imported lazily: nnU-Net is
    slow to import)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class LogitsAndFeaturesPredictor(nnUNetPredictor):
        def predict_with_features(self, data: torch.Tensor, n_features: int) -> torch.Tensor:
            """(K + n_features, ...) aggregated outputs of a ``LogitsAndFeatures`` network; K with 0 features."""
            plain = self.label_manager
            self.network.with_features = n_features > 0
            if n_features:
                self.label_manager = _label_manager_with_features(plain, n_features)
            try:
                return self.predict_logits_from_preprocessed_data(data)
            finally:
                self.label_manager = plain

    return LogitsAndFeaturesPredictor


@dataclass
class CasePrediction:
    """One case in the network grid (nnU-Net's transposed, cropped, resampled array; axis 0 = slicing axis)."""

    image: np.ndarray        # (Z, Y, X) float32, preprocessed channel 0
    probs: np.ndarray        # (K, Z, Y, X) float32 softmax (a memory map when stored on disk)
    features: Any            # (C, Z, Y, X) float32 decoder features (not normalised), if asked for; stored on
                             # disk: a Float32Slices whose slices are float32
    properties: dict         # nnU-Net's preprocessing properties (needed to export back)


def _feature_channels(network: nn.Module, num_input_channels: int, patch_size: Sequence[int]) -> int:
    """C of ``decoder.stages[-1]``, read from its last conv's ``out_channels`` or, failing that, a tiny forward."""
    stage = unwrap(network).decoder.stages[-1]
    convs = [m for m in stage.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    if convs:
        return int(convs[-1].out_channels)
    with torch.inference_mode(), capture_features(network) as store:
        network(torch.zeros((1, num_input_channels, *patch_size)))
    return int(store[-1].shape[1])


class FeaturePredictor:
    """Loads a trained model folder once; :meth:`predict_case` preprocesses and predicts one case's files."""

    def __init__(self, model_dir: Path, fold: str, checkpoint: str = "checkpoint_final.pth",
                 device: str = "cpu", use_mirroring: bool = True, tile_step_size: float = 0.5) -> None:
        fold_value: int | str = fold if fold == "all" else int(fold)
        checkpoint_file = Path(model_dir) / f"fold_{fold}" / checkpoint
        if not checkpoint_file.is_file():
            raise UserError(f"checkpoint not found: {checkpoint_file}")
        for name in ("plans.json", "dataset.json"):
            if not (Path(model_dir) / name).is_file():
                raise UserError(f"model folder {model_dir} has no {name}")
        self.device = torch.device(device)
        self.predictor = _logits_and_features_predictor()(tile_step_size=tile_step_size, use_gaussian=True,
                                         use_mirroring=use_mirroring,
                                         perform_everything_on_device=self.device.type == "cuda",
                                         device=self.device, verbose=False, verbose_preprocessing=False,
                                         allow_tqdm=False)
        try:
            with warnings.catch_warnings():  # nnU-Net's trainer search imports timm: deprecation noise on stderr
                warnings.simplefilter("ignore", FutureWarning)
                self.predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=(fold_value,),
                                                                    checkpoint_name=checkpoint)
        except (RuntimeError, KeyError, EOFError, OSError, ValueError) as e:
            raise UserError(f"cannot load {checkpoint_file}: {type(e).__name__}: {str(e).splitlines()[0]}") \
                from None
        p = self.predictor
        if p.label_manager.has_regions:
            raise UserError("region-based models are not supported: the search needs a softmax over classes")
        num_inputs = len(p.dataset_json.get("channel_names", p.dataset_json.get("modality", {})))
        self.num_classes = int(p.label_manager.num_segmentation_heads)
        self.num_features = _feature_channels(p.network, num_inputs, p.configuration_manager.patch_size)
        p.network = LogitsAndFeatures(unwrap(p.network))

    @property
    def plans_manager(self):
        return self.predictor.plans_manager

    @property
    def configuration_manager(self):
        return self.predictor.configuration_manager

    @property
    def label_manager(self):
        return self.predictor.label_manager

    @property
    def dataset_json(self) -> dict:
        return self.predictor.dataset_json

    def preprocess(self, files: Sequence[Path]) -> tuple[np.ndarray, dict]:
        """nnU-Net's preprocessing of one case, exactly as ``nnUNetv2_predict`` runs it (no segmentation)."""
        cm = self.configuration_manager
        preprocessor = cm.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case([str(f) for f in files], None, self.plans_manager, cm,
                                                    self.dataset_json)
        return data.astype(np.float32, copy=False), properties

    def raw_image(self, files: Sequence[Path]) -> np.ndarray:
        """Channel 0 on the network grid *before* normalisation (Z, Y, X) float32: nnU-Net's own preprocessing
        (transpose, crop, resampling) with the scheme swapped for ``NoNormalization``, so SAM can be fed the raw
        intensities (HU for CT) voxel for voxel beside the network's input."""
        from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

        cm = self.configuration_manager
        raw_cm = ConfigurationManager({**cm.configuration,
                                       "normalization_schemes": ["NoNormalization"] * len(cm.normalization_schemes)})
        preprocessor = cm.preprocessor_class(verbose=False)
        data, properties = self.plans_manager.image_reader_writer_class().read_images([str(f) for f in files])
        # every channel: nnU-Net crops to the non-zero region of all of them
        out, _, _ = preprocessor.run_case_npy(data, None, properties, self.plans_manager, raw_cm, self.dataset_json)
        return np.ascontiguousarray(out[0], dtype=np.float32)

    def predict_case(self, files: Sequence[Path], with_features: bool = True, store: Path | None = None,
                     chunk_slices: int = 8, preprocessed: tuple[np.ndarray, dict] | None = None) -> CasePrediction:
        """Softmax (and features) of one case. With ``store`` (a work folder) and a volume whose K + C float32
        maps exceed ``$NNUNET_DFG_STREAM_ABOVE_MB`` (stream.should_stream), both are memory-mapped there instead
        of held in RAM, and a 2d configuration predicts ``chunk_slices`` slices at a time (its sliding window
        treats every slice alone, so the values are those of the whole-volume call). ``preprocessed``: the
        (data, properties) of ``files`` already through nnU-Net's preprocessing (a caller that also needed the
        label on the network grid), so the case is not preprocessed twice."""
        from .stream import should_stream

        data, properties = preprocessed if preprocessed is not None else self.preprocess(files)
        n_features = self.num_features if with_features else 0
        if store is not None and should_stream(self.num_classes + n_features, data.shape[1:]):
            return self._predict_stored(data, properties, n_features, Path(store), chunk_slices)
        out = self.predictor.predict_with_features(torch.from_numpy(data), n_features).float()
        logits = out[: self.num_classes]
        feats = out[self.num_classes:].cpu().numpy().astype(np.float32) if with_features else None
        probs = self.label_manager.apply_inference_nonlin(logits)
        return CasePrediction(image=np.ascontiguousarray(data[0]), probs=probs.cpu().numpy().astype(np.float32),
                              features=feats, properties=properties)

    def _predict_stored(self, data: np.ndarray, properties: dict, n_features: int, store: Path,
                        chunk_slices: int) -> CasePrediction:
        from .stream import Float32Slices, chunks, open_memmap

        k, spatial = self.num_classes, data.shape[1:]
        probs = open_memmap(store, "probs", (k, *spatial), np.float32)
        feats = None  # float16 when nnU-Net's buffer is (lossless), float32 otherwise
        per_slice = len(self.configuration_manager.patch_size) == len(spatial) - 1
        for part in chunks(spatial[0], chunk_slices) if per_slice else [slice(None)]:
            out = self.predictor.predict_with_features(torch.from_numpy(np.ascontiguousarray(data[:, part])),
                                                       n_features)
            offset = part.start or 0
            for sub in chunks(out.shape[1], chunk_slices):  # a 3d prediction is converted slab by slab
                z = slice(offset + sub.start, offset + sub.stop)
                probs[:, z] = self.label_manager.apply_inference_nonlin(out[:k, sub].float()).cpu().numpy()
                if n_features:
                    if feats is None:
                        dtype = np.float16 if out.dtype == torch.float16 else np.float32
                        feats = open_memmap(store, "features", (n_features, *spatial), dtype)
                    feats[:, z] = out[k:, sub].cpu().numpy()
            del out
        probs.flush()
        features = None
        if feats is not None:
            feats.flush()
            features = Float32Slices(feats)
        return CasePrediction(image=np.ascontiguousarray(data[0]), probs=probs, features=features,
                              properties=properties)

    def probabilities_on_image_grid(self, files: Sequence[Path]) -> tuple[np.ndarray, dict]:
        """(K, *image shape) float32 probabilities on the case's own grid, as ``nnUNetv2_predict
        --save_probabilities`` writes them (logits resampled, un-cropped, un-transposed by nnU-Net's export), and
        the preprocessing properties: for work at the image's resolution where it is finer than the network's."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        data, properties = self.preprocess(files)
        logits = self.predictor.predict_with_features(torch.from_numpy(data), 0).float()
        _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, self.plans_manager, self.configuration_manager, self.label_manager, properties,
            return_probabilities=True, num_threads_torch=max(1, torch.get_num_threads()))
        return np.asarray(probs, dtype=np.float32), properties

    def to_original_grid(self, label: np.ndarray, properties: dict) -> np.ndarray:
        """A network-grid label map back to the image's grid with nnU-Net's own export of a one-hot prediction
        (resampling, un-cropping, un-transposing), so pseudo-labels align with the images exactly as
        ``nnUNetv2_predict`` outputs do."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        onehot = torch.zeros((self.num_classes, *label.shape), dtype=torch.float32)
        onehot.scatter_(0, torch.from_numpy(label.astype(np.int64))[None], 1.0)
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            onehot, self.plans_manager, self.configuration_manager, self.label_manager, properties,
            return_probabilities=False, num_threads_torch=max(1, torch.get_num_threads()))
        return np.asarray(seg, dtype=np.uint8)
