"""CPU execution of a segmenter's image encoder (OpenVINO, else ONNX Runtime) and box decoder (ONNX Runtime).

Measured here on 2 CPU cores with LiteMedSAM: the TinyViT encoder takes ~3x less time under ONNX Runtime than
under PyTorch (ORT folds the batch norms into the convolutions and fuses the window-attention reshapes that eager
PyTorch runs as separate copies) and another ~1.2-1.4x less under OpenVINO; the mask decoder ~1.2x less under
ONNX Runtime. The graphs are exported in memory from the loaded modules at first use, so a fine-tuned decoder is
exported with its own weights. The encoder's export (~9 s of one core for LiteMedSAM, every command start) is kept
in a cache folder keyed by a hash of the module's structure and weights (``encoder_onnx``; nothing is downloaded).
Outputs agree with PyTorch to ~1e-5 (float rounding), so a mask can differ at a pixel whose logit is ~0; within one
runtime every result is deterministic.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..nnunet_io import atomic_path

__all__ = ["RUNTIMES", "OnnxDecoder", "OnnxEncoder", "OpenVinoEncoder", "cache_folder", "encoder_onnx",
           "export_box_side", "export_onnx", "resolve_runtime"]

RUNTIMES = ("auto", "torch", "onnx", "openvino")  # openvino: encoder under OpenVINO, decoder under ORT
RUNTIME_ENV = "NNUNET_DFG_SAM_RUNTIME"
CACHE_ENV = "NNUNET_DFG_CACHE"  # folder of exported encoder graphs; "off" disables the cache
PREPARED = ("keys", "k0", "v0", "q0")  # DecoderImageSide's outputs, in order


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: str | None, device: torch.device) -> str:
    """``auto`` (default, or ``$NNUNET_DFG_SAM_RUNTIME``) on the CPU: the encoder under OpenVINO and the decoder
    under ONNX Runtime (both dependencies), falling back to ONNX Runtime alone, then to PyTorch, if one is missing.

    On a GPU PyTorch is kept: batched decoding pays there and the export would only add start-up time.
    """
    runtime = runtime or os.environ.get(RUNTIME_ENV) or "auto"
    if runtime not in RUNTIMES:
        raise ValueError(f"SAM runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        if device.type != "cpu" or not _importable("onnxruntime"):
            return "torch"
        return "openvino" if _importable("openvino") else "onnx"
    if runtime in ("onnx", "openvino") and device.type != "cpu":
        raise ValueError(f"the {runtime} runtime is for device cpu; use runtime 'torch' on a GPU")
    if runtime == "openvino" and not _importable("openvino"):
        raise ValueError("runtime 'openvino' needs the openvino package (pip install openvino)")
    return runtime


def export_onnx(module: nn.Module, args: tuple, inputs: Sequence[str], outputs: Sequence[str],
                dynamic_axes: dict | None = None) -> bytes:
    """The module as an in-memory ONNX model (opset 17, the TorchScript exporter), nothing written to disk."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(module, args, buffer, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    return buffer.getvalue()


def cache_folder() -> Path | None:
    """``$NNUNET_DFG_CACHE``, else ``$XDG_CACHE_HOME/nnunet_dfg`` (``~/.cache/nnunet_dfg``); None when set to off."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nnunet_dfg"


def graph_key(module: nn.Module, example: torch.Tensor) -> str:
    """A hash of everything the exported graph depends on: torch's version, the module's structure (its repr),
    every parameter and buffer, and the example input's shape and type."""
    digest = hashlib.sha256(f"{torch.__version__}|{module!r}|{tuple(example.shape)}|{example.dtype}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def encoder_onnx(image_encoder: nn.Module, example: torch.Tensor) -> bytes:
    """The encoder's ONNX graph, from the cache (``cache_folder``) when an identical module was exported before;
    a new export is stored there atomically (an unwritable folder only costs the next run the export again)."""
    folder = cache_folder()
    path = folder / f"encoder_{graph_key(image_encoder, example)}.onnx" if folder is not None else None
    if path is not None and path.is_file():
        return path.read_bytes()
    graph = export_onnx(image_encoder.eval(), (example,), ["image"], ["embedding"])
    if path is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(graph)
        except OSError:
            pass
    return graph


def export_box_side(box_side: nn.Module, prepared: Sequence[torch.Tensor], boxes: torch.Tensor) -> bytes:
    """The split decoder's per-box side (``split_decoder.DecoderBoxSide``) with any number of boxes: the graph
    :class:`OnnxDecoder` runs for every call; a second output ``iou`` when the box side has ``with_iou``."""
    outputs = ["low_res", "iou"] if getattr(box_side, "with_iou", False) else ["low_res"]
    return export_onnx(box_side.eval(), (*prepared, boxes), [*PREPARED, "boxes"], outputs,
                       {"boxes": {0: "n"}, **{name: {0: "n"} for name in outputs}})


def _session(model: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """``image_encoder`` as an ONNX Runtime session; input shape fixed by the model's frame."""

    def __init__(self, image_encoder: nn.Module, example: torch.Tensor) -> None:
        self.session = _session(encoder_onnx(image_encoder, example))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"image": x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)


class OpenVinoEncoder:
    """``image_encoder`` compiled by OpenVINO from the same ONNX export, in float32 (its CPU default may be bf16).

    The CPU default. Measured with LiteMedSAM on 64 px slices, 2-core machine: 1.17 s per encoder pass against
    1.61 s under ONNX Runtime at one thread, 0.74-0.82 s against 0.92 s at two; embeddings within 3e-6 of ONNX
    Runtime's and byte-identical run to run and at one or two threads. Its split box decoder was slower (33 vs
    26 ms per call), so the decoder stays under ONNX Runtime.
    """

    def __init__(self, image_encoder: nn.Module, example: torch.Tensor) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(encoder_onnx(image_encoder, example), b"")
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                          "INFERENCE_PRECISION_HINT": "f32"})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(self.compiled({"image": x.detach().cpu().numpy()})[0]))


class OnnxDecoder:
    """The split box decoder (see split_decoder.py) as two sessions: ``prepare`` once per embedding, then
    boxes (N, 4) in frame coordinates -> (N, 1, h, w) low-resolution logits, or (logits, (N,) predicted IoUs)
    when the box side was built ``with_iou``."""

    def __init__(self, image_side: nn.Module, box_side: nn.Module, embedding: torch.Tensor) -> None:
        self.image_session = _session(export_onnx(image_side.eval(), (embedding.cpu(),), ["embedding"],
                                                  list(PREPARED)))
        with torch.no_grad():
            prepared = image_side(embedding.cpu())
        self.box_session = _session(export_box_side(box_side, prepared, torch.tensor([[10.0, 10.0, 50.0, 50.0]])))

    def prepare(self, embedding: torch.Tensor) -> dict:
        outs = self.image_session.run(None, {"embedding": embedding.detach().cpu().numpy()})
        return dict(zip(PREPARED, outs))

    def __call__(self, prepared: dict, framed_boxes: np.ndarray) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feed = {**prepared, "boxes": np.ascontiguousarray(framed_boxes, dtype=np.float32)}
        outs = [torch.from_numpy(o) for o in self.box_session.run(None, feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)
