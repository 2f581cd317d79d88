"""Refuse images that cannot be segmented, naming the case, before any output is written.

nnU-Net reads such images without complaint: a NaN or inf voxel turns the normalisation of the whole case into NaN
(or, with SimpleITK's NIfTI reader, silently becomes 0), and a constant image has nothing to segment (its std is
0), so a run would write meaningless pseudo-labels or preprocessed data. Checked where the commands first read
images (``prepare-target``, ``refine``, ``sdg-predict``, ``finetune-sam``), over all cases, so a bad case 7 cannot
leave cases 1-6 half-published.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import UserError

NIFTI_ENDINGS = (".nii.gz", ".nii")


def image_problem(channels: Sequence[np.ndarray]) -> str | None:
    """Why a case's image (one array per channel) cannot be segmented, or None. NaN/inf are refused in any
    channel; "constant" only when every channel is (one blank channel of several may be deliberate)."""
    channels = [np.asarray(c) for c in channels]
    if not channels or any(c.size == 0 for c in channels):
        return "image is empty"
    for i, channel in enumerate(channels):
        where = "image" if len(channels) == 1 else f"channel {i}"
        for name, test in (("NaN", np.isnan), ("inf", np.isinf)):
            bad = int(np.count_nonzero(test(channel))) if np.issubdtype(channel.dtype, np.floating) else 0
            if bad:
                return f"{where} contains {name} ({bad} voxel{'s' if bad > 1 else ''})"
    lows, highs = [c.min() for c in channels], [c.max() for c in channels]
    if all(lo == hi for lo, hi in zip(lows, highs)):
        return f"image is constant (value {', '.join(str(float(v)) for v in lows)}): nothing to segment"
    return None


def _read_channels(files: Sequence[Path], reader_class) -> list[np.ndarray]:
    """The stored values: NIfTI through nibabel, because SimpleITK's NIfTI reader (nnU-Net's default) turns NaN
    and inf into 0 without a word; other formats through nnU-Net's reader for the plans."""
    if all(str(f).endswith(NIFTI_ENDINGS) for f in files):
        import nibabel
        try:
            return [np.asanyarray(nibabel.load(str(f)).dataobj) for f in files]
        except (nibabel.filebasedimages.ImageFileError, zlib.error) as e:
            raise ValueError(str(e)) from None
    data, _ = reader_class().read_images([str(f) for f in files])
    return list(data)


def check_case_images(cases: Mapping[str, Sequence[Path]], reader_class) -> None:
    """Reads every case and raises one ``UserError`` naming the first bad one. ``reader_class``: nnU-Net's
    ``plans_manager.image_reader_writer_class``. Costs one extra read per case; worth it to write nothing."""
    for case, files in cases.items():
        try:
            channels = _read_channels(files, reader_class)
        except (RuntimeError, OSError, ValueError, EOFError) as e:
            detail = next((line for line in str(e).splitlines() if line.strip()), "inconsistent channel files")
            raise UserError(f"{case}: cannot read {', '.join(Path(f).name for f in files)}: {detail}") from None
        problem = image_problem(channels)
        if problem:
            raise UserError(f"{case}: {problem}")
