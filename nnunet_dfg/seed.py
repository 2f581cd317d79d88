"""The one documented seed of a DFG run (torch-free, so the CLI can check it before anything starts)."""
from __future__ import annotations

import os

SEED_ENV = "nnUNet_dfg_seed"
DEFAULT_SEED = 0


def parse_seed(value) -> int:
    """A seed as numpy and torch accept it: an integer in [0, 2**32)."""
    try:
        seed = int(str(value).strip())
    except ValueError:
        raise ValueError(f"a seed must be a non-negative integer, got {value!r}") from None
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"a seed must be a non-negative integer below 2**32, got {seed}")
    return seed


def seed_from_environment(environ=os.environ) -> int:
    """``nnUNet_dfg_seed`` if set, else ``DEFAULT_SEED``."""
    value = environ.get(SEED_ENV, "").strip()
    if not value:
        return DEFAULT_SEED
    try:
        return parse_seed(value)
    except ValueError as e:
        raise ValueError(f"{SEED_ENV}: {e}") from None
