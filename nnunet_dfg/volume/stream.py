"""Per-slice storage of a case's softmax and decoder features on disk, for volumes too large to hold in RAM.

Why: ``refine`` needs the softmax (K channels) and the decoder features (C channels) of the whole volume, but reads
them one slice at a time. Held whole in float32, a 120 x 512 x 512 CT with K + C = 37 takes ~4.7 GB per copy, and
the conversions from nnU-Net's float16 buffer made several copies. Here they live in memory-mapped files in a work
folder: the softmax in float32 (as the in-memory path computes it), the features in float16, which is lossless
because nnU-Net accumulates them in float16. Reading a slice converts it to float32, so the search sees exactly the
values of the in-memory path and its labels are byte-identical.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["Float32Slices", "STREAM_ENV", "chunks", "open_memmap", "should_stream"]

STREAM_ENV = "NNUNET_DFG_STREAM_ABOVE_MB"
DEFAULT_STREAM_ABOVE_MB = 1024


class Float32Slices:
    """Read-only array-like over a (C, Z, Y, X) on-disk array; every indexing returns a float32 copy."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def ndim(self) -> int:
        return self._array.ndim

    dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key], dtype=np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._array, dtype=dtype or np.float32)


def chunks(n: int, size: int) -> list[slice]:
    """``range(n)`` in consecutive slices of at most ``size`` (>= 1)."""
    size = max(1, int(size))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def open_memmap(folder: Path, name: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
    """A fresh writable ``.npy`` memory map in ``folder`` (removed with the folder by the caller)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(Path(folder) / f"{name}.npy", mode="w+", dtype=dtype, shape=tuple(shape))


def should_stream(channels: int, spatial: Sequence[int], above_mb: float | None = None) -> bool:
    """Whether ``channels`` float32 maps of ``spatial`` size exceed the in-memory budget
    (``above_mb``, else ``$NNUNET_DFG_STREAM_ABOVE_MB``, else 1024 MiB; 0 streams always)."""
    if above_mb is None:
        above_mb = float(os.environ.get(STREAM_ENV, DEFAULT_STREAM_ABOVE_MB))
    return channels * int(np.prod(spatial)) * 4 > above_mb * 2 ** 20
