"""`Segmenter`: a thin stateful shell over the pure transforms and a loaded model.

Encoding is the expensive step (one per slice), decoding is cheap (one per box), so
the two are split: :meth:`Segmenter.embed` returns an :class:`Embedding` that any
number of :meth:`Segmenter.segment` calls can reuse.  The only state kept is the
model and two call counters used by benchmarks and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from .build import LITEMEDSAM_SPEC, SamParts
from .finetuned import build_parts
from .runtimes import OnnxDecoder, OnnxEncoder, OpenVinoEncoder, resolve_runtime
from .split_decoder import DecoderBoxSide, DecoderImageSide
from .transforms import (
    FrameGeometry,
    boxes_to_frame,
    embedding_to_slice,
    postprocess_logits,
    preprocess_slice,
    validate_boxes,
)

__all__ = ["Embedding", "Segmenter", "load_segmenter"]

Device = Union[str, torch.device]


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; identity suffices
class Embedding:
    """Image embedding of one slice plus the geometry needed to map back onto it."""

    tensor: torch.Tensor  # (1, C, e, e) on the model's device
    geometry: FrameGeometry
    model_name: str

    @property
    def image_size(self) -> tuple:
        """(H, W) of the slice that was embedded."""
        return self.geometry.original_size

    def features(self) -> np.ndarray:
        """(C, H, W) float32 features on the slice grid, bilinear, padding excluded.

        Not normalised: callers compare features across slices and choose their own
        normalisation.  Computed on demand (C*H*W floats can be large), not cached.
        """
        with torch.inference_mode():
            feat = embedding_to_slice(self.tensor[0], self.geometry)
        return feat.cpu().numpy().astype(np.float32, copy=False)


class Segmenter:
    """Box-prompted segmenter: ``embed`` a slice once, ``segment`` many boxes on it."""

    def __init__(self, parts: SamParts, device: Device = "cpu", decode_batch: Optional[int] = None,
                 runtime: Optional[str] = None) -> None:
        self.device = torch.device(device)
        self.parts = parts.to(self.device)
        # "onnx"/"openvino": exported graphs run encoder and decoder on the CPU (runtimes.py), built at first use
        self.runtime = resolve_runtime(runtime, self.device)
        # decoding runs the split form of SAM's decoder (split_decoder.py; box_decoder.BoxDecoder is the stock
        # order it is tested against): the box-independent image side once per embedding (cached for the last
        # one), the per-box side per call
        self._image_side = DecoderImageSide(self.parts.prompt_encoder, self.parts.mask_decoder).eval()
        # with_iou: SAM's predicted IoU of each mask comes along (segment_with_iou); the masks are the same
        self._box_side = DecoderBoxSide(self.parts.prompt_encoder, self.parts.mask_decoder, with_iou=True).eval()
        self._prepared: tuple = (None, None)  # (embedding tensor, its image-side tensors), identity-keyed
        self._onnx_encoder: Optional[Union[OnnxEncoder, OpenVinoEncoder]] = None
        self._onnx_decoder: Optional[OnnxDecoder] = None
        if decode_batch is None:
            # Measured on 2 CPU cores with the split decoder, a batch of 8 boxes costs about what 8 single
            # calls do (stock decoder: ~2x more per box); on GPU batching pays off.
            decode_batch = 64 if self.device.type == "cuda" else 1
        if int(decode_batch) < 1:
            raise ValueError(f"decode_batch must be >= 1, got {decode_batch}")
        self.decode_batch = int(decode_batch)
        self.n_encoder_calls = 0
        self.n_decoder_calls = 0

    @property
    def name(self) -> str:
        return self.parts.name

    @property
    def frame(self) -> int:
        return self.parts.preprocess.frame

    def reset_counters(self) -> None:
        self.n_encoder_calls = 0
        self.n_decoder_calls = 0

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode a 2D slice of any size and intensity range (one encoder pass)."""
        x, geometry = preprocess_slice(image, self.parts.preprocess, self.device)
        if self.runtime in ("onnx", "openvino"):
            if self._onnx_encoder is None:
                encoder = OpenVinoEncoder if self.runtime == "openvino" else OnnxEncoder
                self._onnx_encoder = encoder(self.parts.image_encoder, x)
            tensor = self._onnx_encoder(x)
        else:
            with torch.inference_mode():
                tensor = self.parts.image_encoder(x)
        self.n_encoder_calls += 1
        return Embedding(tensor=tensor, geometry=geometry, model_name=self.name)

    def segment_logits(self, embedding: Embedding, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) inclusive ``x0, y0, x1, y1`` boxes in slice pixels -> (N, H, W) float32 logits."""
        return self._segment(embedding, boxes)[0]

    def segment(self, embedding: Embedding, boxes: np.ndarray) -> np.ndarray:
        """(N, H, W) bool masks: logits > 0, i.e. sigmoid > 0.5 as in the references."""
        return self.segment_logits(embedding, boxes) > 0

    def segment_with_iou(self, embedding: Embedding, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The masks of :meth:`segment` and (N,) float32 IoUs that SAM's IoU head predicts for them (its own
        estimate of each mask's quality, computed in the same decoder pass)."""
        logits, iou = self._segment(embedding, boxes)
        return logits > 0, iou

    def _segment(self, embedding: Embedding, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_embedding(embedding)
        geometry = embedding.geometry
        clipped = validate_boxes(boxes, geometry.original_size)
        H, W = geometry.original_size
        out = np.empty((clipped.shape[0], H, W), dtype=np.float32)
        iou = np.empty(clipped.shape[0], dtype=np.float32)
        framed = boxes_to_frame(clipped, geometry)
        with torch.inference_mode():
            for start in range(0, framed.shape[0], self.decode_batch):
                chunk = framed[start : start + self.decode_batch]
                low_res, predicted = self._decode_with_iou(embedding.tensor, chunk)
                out[start : start + chunk.shape[0]] = postprocess_logits(low_res, geometry).cpu().numpy()
                iou[start : start + chunk.shape[0]] = predicted.float().cpu().numpy()
                self.n_decoder_calls += chunk.shape[0]
        return out, iou

    def _decode(self, tensor: torch.Tensor, framed: np.ndarray) -> torch.Tensor:
        """Low-resolution logits (N, 1, h, w) of framed boxes."""
        return self._decode_with_iou(tensor, framed)[0]

    def _decode_with_iou(self, tensor: torch.Tensor, framed: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        onnx = self.runtime in ("onnx", "openvino")
        if onnx and self._onnx_decoder is None:
            self._onnx_decoder = OnnxDecoder(self._image_side, self._box_side, tensor)
        if self._prepared[0] is not tensor:
            prepared = self._onnx_decoder.prepare(tensor) if onnx else self._image_side(tensor)
            self._prepared = (tensor, prepared)
        prepared = self._prepared[1]
        if onnx:
            return self._onnx_decoder(prepared, framed)
        return self._box_side(*prepared, torch.as_tensor(framed, dtype=torch.float32, device=self.device))

    def _check_embedding(self, embedding: Embedding) -> None:
        if not isinstance(embedding, Embedding):
            raise TypeError(f"expected an Embedding from Segmenter.embed, got {type(embedding).__name__}")
        expected = tuple(self.parts.prompt_encoder.image_embedding_size)
        if embedding.model_name != self.name or tuple(embedding.tensor.shape[-2:]) != expected:
            raise ValueError(f"embedding was made by {embedding.model_name!r}, not by this {self.name!r} segmenter")

    def __repr__(self) -> str:
        return (f"Segmenter({self.name!r}, device={str(self.device)!r}, decode_batch={self.decode_batch}, "
                f"runtime={self.runtime!r})")


def load_segmenter(
    spec: str = LITEMEDSAM_SPEC,
    device: Device = "cpu",
    mode: Optional[str] = None,
    decode_batch: Optional[int] = None,
    sha256: Optional[str] = None,
    runtime: Optional[str] = None,
) -> Segmenter:
    """Load a box-prompted segmenter from local files only (nothing is downloaded).

    ``spec``: ``"litemedsam"`` (bundled, sha256-verified) or a segment-anything
    checkpoint path, optionally ``"vit_b:/path.pth"``; ``mode`` ``"sam"`` or
    ``"medsam"`` picks the preprocessing for such a checkpoint.  ``sha256``
    additionally pins a user checkpoint. ``runtime``: ``"auto"`` (on the CPU the encoder under OpenVINO and the
    decoder under ONNX Runtime), ``"openvino"`` (the same), ``"onnx"`` (ONNX Runtime for both) or ``"torch"``;
    default ``$NNUNET_DFG_SAM_RUNTIME`` or ``"auto"``. The ONNX graphs are exported
    from the modules at first use: train ``parts.mask_decoder`` before the first ``segment``, or use ``"torch"``.
    """
    return Segmenter(build_parts(spec, mode=mode, sha256=sha256), device=device, decode_batch=decode_batch,
                     runtime=runtime)
