"""Peak memory and seconds per slice of ``nnunet_dfg refine`` against the volume size, up to CT size.

Why: every other figure is on small synthetic volumes; a 120 x 512 x 512 CT would need ~4.7 GB per float32 copy of
its softmax and decoder features. ``refine`` streams them through memory-mapped files above
``$NNUNET_DFG_STREAM_ABOVE_MB`` (nnunet_dfg/volume/stream.py); this measures whether the memory curve stays flat or
grows with the slice size only. One synthetic target case per size (``synthetic.make_case``, written on the model's
grid spacing so the network grid has exactly that size), one ``refine`` subprocess per size (peak RSS from
``wait4``). The search runs on at most ``--max-slices`` slices per size (the prediction and the streaming always
cover the whole volume), so the CT-size row stays within minutes.

Usage:
    .venv/bin/python benchmarks/memory_curve.py --model RESULTS/DatasetX/TRAINER__PLANS__2d [--sizes 16x128x128,
        48x256x256,120x512x512] [--max-slices 8] [-o memory_curve.json] [--markdown memory_curve.md]
    .venv/bin/python benchmarks/memory_curve.py --model ... --tiny     # machinery check: one 4 x 32 x 32 volume
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_ratios import _nnunet, _peak_rss_mb  # noqa: E402

DEFAULT_SIZES = ((16, 128, 128), (48, 256, 256), (120, 512, 512))
TINY_SIZES = ((4, 32, 32),)
OUT_ID = 990


def parse_sizes(text: str) -> tuple[tuple[int, int, int], ...]:
    """``"16x128x128,120x512x512"`` -> ((16, 128, 128), (120, 512, 512))."""
    sizes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s.strip())
    if not sizes or any(len(s) != 3 or min(s) < 1 for s in sizes):
        raise ValueError(f"sizes must look like 16x128x128,120x512x512, got {text!r}")
    return sizes


def grid_spacing(model: Path) -> tuple[float, float, float]:
    """(z, y, x) spacing of the model's configuration, so preprocessing does not resample the case."""
    plans = json.loads((model / "plans.json").read_text())
    config = model.name.rsplit("__", 1)[-1]
    spacing = [float(v) for v in plans["configurations"][config]["spacing"]]
    if len(spacing) == 2:  # 2d: in-plane only; z from the dataset
        spacing = [float(plans["original_median_spacing_after_transp"][0]), *spacing]
    return tuple(spacing)  # type: ignore[return-value]


def write_case(folder: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float],
               seed: int = 0) -> Path:
    """One synthetic target case of ``shape`` in ``folder`` (nnU-Net naming)."""
    from nnunet_dfg.synthetic import write_nifti, make_case

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "case_0000_0000.nii.gz"
    if not path.exists():
        image, _, _ = make_case(np.random.default_rng(seed), "target", 0.7, shape, spacing)
        write_nifti(image, spacing, str(path))
    return path


def in_memory_mb(channels: int, shape: tuple[int, int, int]) -> float:
    """One float32 copy of ``channels`` maps of ``shape``, in MiB: what streaming avoids holding."""
    return channels * float(np.prod(shape)) * 4 / 2 ** 20


def measure_size(model: Path, shape: tuple[int, int, int], work: Path, env: dict, search_config: str | None,
                 max_slices: int | None, index: int = 0) -> dict:
    """One ``refine`` subprocess on one synthetic case of ``shape``: peak RSS, wall time, seconds per slice."""
    folder = work / f"images_{'x'.join(map(str, shape))}"
    write_case(folder, shape, grid_spacing(model))
    raw = work / f"raw_{index}"
    shutil.rmtree(raw, ignore_errors=True)
    cmd = [_nnunet("nnunet_dfg"), "refine", "-i", str(folder), "-m", str(model), "-f", "all", "--out-id",
           str(OUT_ID + index), "--name", f"MemoryCurve{index}", "--prompt", "dfg", "--disable-tta", "--no-progress"]
    if search_config:
        cmd += ["--search-config", search_config]
    if max_slices is not None:
        cmd += ["--max-slices", str(max_slices)]
    rss, wall = _peak_rss_mb(cmd, {**env, "nnUNet_raw": str(raw)}, work / f"refine_{index}.log")
    out = next(raw.glob(f"Dataset{OUT_ID + index}_*"))
    report = json.loads(next((out / "dfg_refine" / "reports").glob("*.json")).read_text())
    searched = min(shape[0], max_slices) if max_slices is not None else shape[0]
    channels = int(report.get("feature_channels") or 0) + len(json.loads((model / "dataset.json").read_text())
                                                                ["labels"])
    shutil.rmtree(raw, ignore_errors=True)
    return {"shape": list(shape), "voxels_m": round(float(np.prod(shape)) / 1e6, 3), "slices_searched": searched,
            "peak_rss_mb": round(rss), "wall_s": round(wall, 1), "s_per_slice": round(wall / shape[0], 3),
            "one_float32_copy_mb": round(in_memory_mb(channels, shape))}


def memory_curve(model: Path, sizes, work: Path, env: dict | None = None, search_config: str | None = None,
                 max_slices: int | None = 8) -> list[dict]:
    """:func:`measure_size` for every size, smallest first."""
    env = dict(os.environ if env is None else env)
    return [measure_size(Path(model), tuple(s), Path(work), env, search_config, max_slices, i)
            for i, s in enumerate(sorted(sizes, key=lambda s: int(np.prod(s))))]


def markdown(rows: list[dict]) -> str:
    """The BENCHMARKS.md table."""
    lines = ["| volume (Z x Y x X) | voxels (M) | slices searched | peak RSS (MiB) | one float32 copy of K + C "
             "(MiB) | wall (s) | s per slice |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {'x'.join(map(str, r['shape']))} | {r['voxels_m']} | {r['slices_searched']} | {r['peak_rss_mb']} "
              f"| {r['one_float32_copy_mb']} | {r['wall_s']} | {r['s_per_slice']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model folder (TRAINER__PLANS__CONFIG)")
    parser.add_argument("--sizes", help="comma-separated ZxYxX (default: 16x128x128,48x256x256,120x512x512)")
    parser.add_argument("--tiny", action="store_true", help="one 4x32x32 volume: checks the machinery")
    parser.add_argument("--max-slices", type=int, default=8, help="slices searched per volume (default 8)")
    parser.add_argument("--search-config", help="JSON overrides of the DFG search constants")
    parser.add_argument("--work", default="memory_curve_work")
    parser.add_argument("-o", help="write the rows as JSON here")
    parser.add_argument("--markdown", help="write the markdown table here")
    args = parser.parse_args()
    sizes = TINY_SIZES if args.tiny else parse_sizes(args.sizes) if args.sizes else DEFAULT_SIZES
    rows = memory_curve(Path(args.model), sizes, Path(args.work), search_config=args.search_config,
                        max_slices=args.max_slices)
    table = markdown(rows)
    print(table)
    if args.o:
        Path(args.o).write_text(json.dumps(rows, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
