"""The same command twice gives the same result: seeded DFG training (nnUNet_dfg_seed) and refine with the real
LiteMedSAM on the default CPU runtimes (OpenVINO encoder, ONNX Runtime decoder), also when a run is killed with
SIGKILL and resumed."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import tiny_copy
from _tiny_model import TINY_DFG, TinyModel
from cli_env import cli, cli_command, kill_midway, nnunet_env, run

ENV = {"OMP_NUM_THREADS": "1"}  # every run of a comparison with the same thread count


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_root) -> TinyModel:
    yield from tiny_copy(tmp_path_factory, tiny_model_root, "determinism")


def _weights(results: Path, trainer: str, dataset: str = "Dataset701_DFGSynthSource") -> dict:
    path = results / dataset / f"{trainer}__nnUNetPlans__2d" / "fold_all" / "checkpoint_final.pth"
    return torch.load(path, map_location="cpu", weights_only=False)["network_weights"]


def _train(tiny: TinyModel, results: str, seed: str | None, *extra: str, dataset: str = "701",
           trainer: str = "nnUNetTrainerDFG_Source_test") -> Path:
    env = {**tiny.env, **ENV, "nnUNet_results": str(tiny.root / results)}
    if seed is not None:
        env["nnUNet_dfg_seed"] = seed
    run(["nnUNetv2_train", dataset, "2d", "all", "-tr", trainer, "-device", "cpu", *extra], env)
    return tiny.root / results


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_source_training_twice_gives_identical_weights(tiny):
    """The session's tiny model (trained with the default seed, one thread: _tiny_model.build_tiny_model) is the
    first run; a second one with the seed 0 given must reproduce it bit for bit. (A tiny model prebuilt through
    NNUNET_DFG_TINY_MODEL by other code can differ: build it anew.)"""
    trainer = "nnUNetTrainerDFG_Source_test"
    first = torch.load(tiny.model_dir / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                       weights_only=False)["network_weights"]
    again = _weights(_train(tiny, "res_b", "0"), trainer)
    assert _same(first, again)
    log = next((tiny.model_dir / "fold_all").glob("training_log_*.txt")).read_text()
    assert "seed 0 (nnUNet_dfg_seed)" in log


def test_fa_training_twice_gives_identical_weights_and_another_seed_does_not(tiny):
    """The seed reaches training (the source and FA trainers share the seeding mixin; FA's run is the cheaper one:
    no final validation)."""
    run(["nnunet_dfg", "prepare-target", "-d", "702", "-m", str(tiny.model_dir), "-c", "2d"], tiny.env)
    source = str(tiny.model_dir / "fold_all" / "checkpoint_final.pth")
    runs = [_weights(_train(tiny, f"res_fa{i}", seed, "-pretrained_weights", source, dataset="702",
                            trainer="nnUNetTrainerDFG_FA_test"), "nnUNetTrainerDFG_FA_test",
                     "Dataset702_DFGSynthTarget") for i, seed in enumerate(("3", "3", "4"))]
    assert _same(runs[0], runs[1])
    assert not _same(runs[0], runs[2])
    assert not _same(runs[0], torch.load(source, map_location="cpu", weights_only=False)["network_weights"])


def test_bad_seed_stops_training_before_anything_is_written(tiny):
    env = {**tiny.env, **ENV, "nnUNet_results": str(tiny.root / "res_bad"), "nnUNet_dfg_seed": "zero"}
    proc = run(["nnUNetv2_train", "701", "2d", "all", "-tr", "nnUNetTrainerDFG_Source_test", "-device", "cpu"], env,
               check=False)
    assert proc.returncode != 0
    assert "nnUNet_dfg_seed: a seed must be a non-negative integer, got 'zero'" in proc.stderr
    assert not (tiny.root / "res_bad").exists()


def _labels(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for sub in ("labelsTr", "dfg_refine/labels_raw", "dfg_refine/labels_model")
            for p in sorted((out / sub).iterdir())}


def test_refine_with_litemedsam_is_byte_identical_twice_and_after_sigkill(tiny):
    def args(out_id: int) -> list[str]:  # 4 slices per case: a LiteMedSAM pass costs seconds, more add nothing
        return tiny.refine_args("--out-id", str(out_id), "--search-config", TINY_DFG, "--max-slices", "4")

    def out(out_id: int) -> Path:
        return tiny.raw / f"Dataset{out_id}_DFGSynthTargetPseudoDFG"

    proc = cli(args(870), tiny.root, timeout=900, **ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = _labels(out(870))
    assert len(reference) == 9
    reports = sorted((out(870) / "dfg_refine" / "reports").glob("*.json"))
    calls = [json.loads(r.read_text())["calls"] for r in reports]
    assert len(calls) == 3 and all(c["encoder"] >= 1 and c["decoder"] >= 1 for c in calls)  # LiteMedSAM ran

    proc = subprocess.Popen(cli_command(args(872)), env=nnunet_env(tiny.root, **ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    kill_midway(proc, out(872) / "labelsTr", 3, timeout=600)
    resumed = cli(args(872), tiny.root, timeout=900, **ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done" in resumed.stdout
    # the second run: its cases from before the kill and those after the resume equal the first run's, byte for byte
    assert _labels(out(872)) == reference
