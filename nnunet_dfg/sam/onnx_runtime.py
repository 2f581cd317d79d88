"""ONNX Runtime execution of a segmenter's image encoder and box decoder, for the CPU.

Measured here on 2 CPU cores with LiteMedSAM: the TinyViT encoder takes ~3x less time under ONNX Runtime than
under PyTorch (ORT folds the batch norms into the convolutions and fuses the window-attention reshapes that eager
PyTorch runs as separate copies), the mask decoder ~1.2x less. The graphs are exported in memory from the loaded
modules at first use (a few seconds; nothing is written or downloaded), so a fine-tuned decoder is exported with
its own weights. Outputs agree with PyTorch to ~1e-5 (float rounding), so a mask can differ at a pixel whose
logit is ~0; within one runtime every result is deterministic.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["RUNTIMES", "OnnxDecoder", "OnnxEncoder", "resolve_runtime"]

RUNTIMES = ("auto", "torch", "onnx")
RUNTIME_ENV = "NNUNET_DFG_SAM_RUNTIME"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: str | None, device: torch.device) -> str:
    """``auto`` (default, or ``$NNUNET_DFG_SAM_RUNTIME``): ONNX Runtime on the CPU when installed, else PyTorch.

    On a GPU PyTorch is kept: batched decoding pays there and the export would only add start-up time.
    """
    runtime = runtime or os.environ.get(RUNTIME_ENV) or "auto"
    if runtime not in RUNTIMES:
        raise ValueError(f"SAM runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        return "onnx" if device.type == "cpu" and onnxruntime_available() else "torch"
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError("the ONNX Runtime path is for device cpu; use runtime 'torch' on a GPU")
    return runtime


def _session(module: nn.Module, args: tuple, inputs: Sequence[str], outputs: Sequence[str],
             dynamic_axes: dict | None = None):
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(module, args, buffer, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """``image_encoder`` as an ONNX Runtime session; input shape fixed by the model's frame."""

    def __init__(self, image_encoder: nn.Module, example: torch.Tensor) -> None:
        self.session = _session(image_encoder.eval(), (example,), ["image"], ["embedding"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"image": x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)


class OnnxDecoder:
    """Boxes (N, 4) in frame coordinates + one embedding -> (N, 1, h, w) low-resolution logits."""

    def __init__(self, box_decoder: nn.Module, embedding: torch.Tensor) -> None:
        example = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
        self.session = _session(box_decoder.eval(), (embedding.cpu(), example), ["embedding", "boxes"], ["low_res"],
                                {"boxes": {0: "n"}, "low_res": {0: "n"}})

    def __call__(self, embedding: torch.Tensor, framed_boxes: np.ndarray) -> torch.Tensor:
        feed = {"embedding": embedding.detach().cpu().numpy(),
                "boxes": np.ascontiguousarray(framed_boxes, dtype=np.float32)}
        return torch.from_numpy(self.session.run(None, feed)[0])
