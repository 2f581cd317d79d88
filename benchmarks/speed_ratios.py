"""Speed figures of one benchmark run, each a ratio of two timings taken on the same data in the same run.

- refinement (DFG search) over encoder-only time on the same slices (``refine_speed.measure``);
- seconds per training step of FA and of self-training over a stock ``nnUNetTrainer`` step (``step_time.py``);
- encoder passes saved by 2x2 tiling of the SDG prompts, and what it does to the labels;
- peak memory of ``nnunet_dfg refine`` against the number of cases (one case is held at a time, so it must not
  grow), and refinement seconds per slice.
Every figure comes from a subprocess or a fresh object, so one measurement's caches do not flatter the next.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _nnunet(cmd: str) -> str:
    path = BIN / cmd
    return str(path) if path.exists() else cmd


def step_ratios(env: dict, configuration: str, target_id: int, pseudo_id: int, trainers: dict[str, str],
                checkpoints: dict[str, Path], steps: int = 12, plans: str = "nnUNetPlans", device: str = "cpu") -> dict:
    """FA (target images) and ST (same images + pseudo-labels) steps against nnU-Net's stock trainer on the latter."""
    runs = {"stock": ("nnUNetTrainer", pseudo_id, None), "fa": (trainers["fa"], target_id, checkpoints["source"]),
            "self_training": (trainers["st"], pseudo_id, checkpoints["fa"])}
    out = {}
    for key, (trainer, dataset, ckpt) in runs.items():
        scratch = tempfile.mkdtemp(prefix="step_time_")
        try:
            cmd = [sys.executable, str(HERE / "step_time.py"), "-d", str(dataset), "-c", configuration, "-tr", trainer,
                   "-p", plans, "-n", str(steps), "-device", device]
            cmd += ["-pretrained_weights", str(ckpt)] if ckpt else []
            proc = subprocess.run(cmd, env={**env, "nnUNet_results": scratch}, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"step timing of {trainer} failed: {proc.stderr.strip().splitlines()[-1:]}")
            out[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    out["fa_over_stock"] = out["fa"]["mean_s"] / out["stock"]["mean_s"]
    out["self_training_over_stock"] = out["self_training"]["mean_s"] / out["stock"]["mean_s"]
    return out


def tiling_savings(model: Path, fold: str, images: Path, sam: str = "litemedsam", max_cases: int | None = None) -> dict:
    """SDG boxes of ``model`` on target test images, encoded one slice at a time and 2x2 per pass.

    The benchmark passes the FA model: a source model that finds nothing on the target gives no box, hence no
    encoder pass to save (``passes_saved`` is then None)."""
    from nnunet_dfg.evaluation import dice
    from nnunet_dfg.nnunet_io import list_cases
    from nnunet_dfg.volume import refine_volume
    from nnunet_dfg.volume.predictor import FeaturePredictor
    from nnunet_dfg.sam import load_segmenter
    predictor = FeaturePredictor(model, fold, use_mirroring=False)
    segmenter = load_segmenter(sam)
    segmenter.segment(segmenter.embed(np.zeros((64, 64), np.float32)), np.array([[8, 8, 40, 40]]))  # warm-up
    ds = predictor.dataset_json
    figures = {"encoder_passes": {1: 0, 2: 0}, "seconds": {1: 0.0, 2: 0.0}, "agreement_dice": [], "slices": 0}
    cases = list(list_cases(images, ds["file_ending"], len(ds["channel_names"])).values())
    for files in cases[:max_cases]:
        pred = predictor.predict_case(files, with_features=False)
        labels = {}
        for tile in (1, 2):
            segmenter.reset_counters()
            started = time.perf_counter()
            labels[tile] = refine_volume(pred.image, pred.probs, None, segmenter, "sdg", tile=tile).label
            figures["seconds"][tile] += time.perf_counter() - started
            figures["encoder_passes"][tile] += segmenter.n_encoder_calls
        figures["slices"] += pred.image.shape[0]
        for c in range(1, pred.probs.shape[0]):
            if (labels[1] == c).any() or (labels[2] == c).any():
                figures["agreement_dice"].append(dice(labels[1] == c, labels[2] == c))
    passes = figures["encoder_passes"]
    figures["passes_saved"] = 1 - passes[2] / passes[1] if passes[1] else None
    figures["time_ratio_tiled_over_untiled"] = figures["seconds"][2] / max(figures["seconds"][1], 1e-9)
    figures["agreement_dice"] = float(np.mean(figures["agreement_dice"])) if figures["agreement_dice"] else None
    return figures


def _peak_rss_mb(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """(peak resident memory in MiB of the command and its waited-for children, wall seconds)."""
    started = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed, see {log}")
    return usage.ru_maxrss / 1024, time.time() - started


def refine_memory(model: Path, images: Path, work: Path, env: dict, search_config: str,
                  counts: tuple[int, ...] = (1, 2, 4)) -> list[dict]:
    """``nnunet_dfg refine`` on the first 1, 2, 4 ... cases of ``images``: peak RSS and seconds per slice."""
    import SimpleITK as sitk
    from nnunet_dfg.nnunet_io import read_json
    ending = read_json(model / "dataset.json")["file_ending"]
    cases = sorted(images.glob(f"*_0000{ending}"))
    rows = []
    for i, n in enumerate(counts):
        if n > len(cases):
            break
        folder = work / f"images_{n}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in cases[:n]:
            if not (folder / f.name).exists():
                os.symlink(f.resolve(), folder / f.name)
        raw = work / f"raw_{n}"
        shutil.rmtree(raw, ignore_errors=True)
        cmd = [_nnunet("nnunet_dfg"), "refine", "-i", str(folder), "-m", str(model), "-f", "all", "--out-id",
               str(900 + i), "--name", f"Memory{n}", "--prompt", "dfg", "--search-config", search_config,
               "--disable-tta", "--no-progress"]
        rss, wall = _peak_rss_mb(cmd, {**env, "nnUNet_raw": str(raw)}, work / f"refine_{n}.log")
        slices = sum(sitk.ReadImage(str(f)).GetSize()[2] for f in cases[:n])
        rows.append({"cases": n, "slices": slices, "peak_rss_mb": round(rss), "wall_s": round(wall, 1),
                     "s_per_slice": round(wall / slices, 2)})
    return rows
