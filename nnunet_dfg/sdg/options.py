"""The options ``sdg-predict`` and ``finetune-sam`` share (``--empty-box``, ``--tile``), checked the same way in
both: a decoder is meant to be fine-tuned and used with the same values."""
from __future__ import annotations

from ..errors import UserError

EMPTY_BOX_HELP = ("where a class's thresholded map is empty on a slice: none (default: no box, the model's "
                  "labels stay) or full (the whole slice as its box, as the SDG reference; only for classes the "
                  "model boxes on some slice of the volume)")


def check_empty_box(value: str) -> None:
    """``--empty-box`` as a one-line ``UserError`` (the values: ``prompt_search.config.EMPTY_BOXES``)."""
    from ..prompt_search.config import EMPTY_BOXES
    if value not in EMPTY_BOXES:
        raise UserError(f"--empty-box must be {' or '.join(EMPTY_BOXES)}, got {value}")


def resolve_tile(value: int | str, sam: str) -> int:
    """``--tile`` 1, 2 or ``auto``: 2x2 canvases (SDG's merging) for 1024 px SAM/MedSAM, none for LiteMedSAM,
    whose 256 px input would leave each slice 128 px on a 2x2 canvas (read from ``--sam``, a fine-tuned
    checkpoint's base included, without loading it)."""
    text = str(value).strip().lower()
    if text == "auto":
        from ..sam.build import LITEMEDSAM_SPEC
        from ..sam.finetuned import base_spec
        return 1 if base_spec(sam) == LITEMEDSAM_SPEC else 2
    if text in ("1", "2"):
        return int(text)
    raise UserError(f"--tile must be 1, 2 or auto, got {value}")
