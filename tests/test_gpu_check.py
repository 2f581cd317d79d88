"""The device-free parts of benchmarks/gpu_check.py and benchmarks/memory_curve.py: the GPU script's CPU dry run
and the memory curve's pure helpers (the curve itself runs `refine` subprocesses: minutes, not a unit test)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


@pytest.mark.slow  # the GPU script's whole CPU dry run in a subprocess
def test_gpu_check_cpu_dry_run(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--tiny", "--repeat", "1",
                          "--boxes", "2", "--markdown", str(tmp_path / "gpu.md"), "-o", str(tmp_path / "gpu.json")],
                         capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads((tmp_path / "gpu.json").read_text())
    assert figures["weights"].startswith("random weights") and figures["steps"] is None
    assert figures["refinement"]["split_vs_stock_max_abs_logit_diff"] < 1e-3
    text = (tmp_path / "gpu.md").read_text()
    assert "CPU dry run" in text and "split, batched" in text and "not measured (pass --demo)" in text


def test_memory_curve_helpers(tmp_path):
    import memory_curve as mc

    assert mc.parse_sizes("4x32x32, 16x128x128") == ((4, 32, 32), (16, 128, 128))
    with pytest.raises(ValueError):
        mc.parse_sizes("4x32")
    assert round(mc.in_memory_mb(37, (120, 512, 512))) == 4440
    model = tmp_path / "Trainer__Plans__2d"
    model.mkdir()
    (model / "plans.json").write_text(json.dumps({"configurations": {"2d": {"spacing": [0.8, 0.8]}},
                                                  "original_median_spacing_after_transp": [2.5, 0.8, 0.8]}))
    assert mc.grid_spacing(model) == (2.5, 0.8, 0.8)
    path = mc.write_case(tmp_path / "images", (4, 32, 32), (2.5, 0.8, 0.8))
    assert path.name == "case_0000_0000.nii.gz" and path.stat().st_size > 0
    row = {"shape": [4, 32, 32], "voxels_m": 0.004, "slices_searched": 2, "peak_rss_mb": 1900,
           "one_float32_copy_mb": 1, "wall_s": 100.0, "s_per_slice": 25.0}
    assert mc.markdown([row]).splitlines()[-1].startswith("| 4x32x32 | 0.004 | 2 | 1900 |")
