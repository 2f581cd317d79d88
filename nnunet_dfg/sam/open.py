"""Loading a segmenter for a command: any load failure becomes one clear ``UserError`` line."""
from __future__ import annotations

from ..errors import UserError


def open_segmenter(spec: str, device: str = "cpu", mode: str | None = None):
    from .segmenter import load_segmenter
    try:
        return load_segmenter(spec, device=device, mode=mode)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        raise UserError(f"cannot load segmenter {spec!r}: {str(e).splitlines()[0] if str(e) else e}") from None
