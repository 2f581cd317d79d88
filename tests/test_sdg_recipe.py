"""benchmarks/analyses/sdg_recipe.py's plumbing on a constructed grid (nothing is trained): the commands each variant
runs, the paired differences it reports, and its output file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "analyses"))

import sdg_recipe  # noqa: E402

from nnunet_dfg.cli import build_parser  # noqa: E402
from nnunet_dfg.nnunet_io import write_json_atomic  # noqa: E402
from nnunet_dfg.sam.finetuned import FORMAT  # noqa: E402

CLASSES = ("spleen", "liver")


def _evaluation(dice_by_case: dict[str, float]) -> dict:
    """An ``evaluate_folders``-shaped result whose classes all have the case's Dice."""
    per_case = {c: {k: {"dice": d, "assd": 1.0} for k in CLASSES} for c, d in dice_by_case.items()}
    mean = float(np.mean(list(dice_by_case.values())))
    return {"per_case": per_case, "per_class": {k: {"dice": mean, "assd": 1.0} for k in CLASSES},
            "mean_dice": mean, "mean_assd": 1.0}


def _grid(tmp_path: Path, seeds=(3, 4)) -> sdg_recipe.quality_grid.GridRun:
    grid = sdg_recipe.quality_grid.GridRun(sdg_recipe.quality_grid.GridSpec(workers=1), tmp_path / "grid")
    for seed in seeds:
        work = grid.chain_work("2d", seed, grid.spec.severities[0])
        write_json_atomic(work / "eval" / "source_only.json", _evaluation({f"case_{i}": 0.5 for i in range(4)}))
        (grid.root("2d", seed) / "nnunet" / "nnUNet_results" / "Dataset701_X").mkdir(parents=True)
        (grid.root("2d", seed) / "nnunet" / "nnUNet_raw" / f"Dataset{grid.spec.target_id(grid.spec.severities[0])}_Y"
         ).mkdir(parents=True)
    return grid


def test_each_variant_trains_and_predicts_with_its_own_option_at_the_reference_budget(tmp_path):
    grid = _grid(tmp_path)
    commands = {}
    for variant in sdg_recipe.VARIANTS:
        p = sdg_recipe.variant_pipeline(grid, "2d", 3, variant, tmp_path / "work", epochs=7, device="cuda")
        finetune, predict, evaluate = sdg_recipe.variant_steps(p)
        commands[variant] = (finetune.command(), predict.command())
        assert evaluate.action is not None and p.runner.work == tmp_path / "work" / "2d_seed3" / variant
    for variant, (finetune, predict) in commands.items():
        for cmd in (finetune, predict):
            assert build_parser().parse_args(cmd[1:]).command == cmd[1]  # the commands parse
            assert cmd[cmd.index("-device") + 1] == "cuda"
            assert cmd[cmd.index("--empty-box") + 1] == ("full" if variant == "full" else "none")
        assert finetune[finetune.index("--epochs") + 1] == "7" and "--max-slices" not in finetune
        assert "--batch-canvases" not in finetune  # 16 slices per step, the reference's
        assert ("--sam-intensity" in finetune) == (variant == "equalize")
        assert predict[predict.index("--sam-intensity") + 1] == ("equalize" if variant == "equalize" else "auto")
        checkpoint = finetune[finetune.index("-o") + 1]
        assert predict[predict.index("--sam") + 1] == checkpoint
        assert checkpoint == str(tmp_path / "work" / "2d_seed3" / variant / sdg_recipe.CHECKPOINT)
        assert predict[predict.index("-i") + 1].endswith("imagesTs")  # the target's test images
    assert len({c[0][c[0].index("-o") + 1] for c in commands.values()}) == 3  # three decoders


def test_summary_pairs_each_variant_with_source_only_and_each_option_with_the_recipe():
    runs = [{"source_only": _evaluation({"a": 0.5, "b": 0.6}), "recipe": _evaluation({"a": 0.55, "b": 0.7}),
             "full": _evaluation({"a": 0.45, "b": 0.6})} for _ in range(2)]
    out = sdg_recipe.summary(runs, ["recipe", "full"])
    assert out["recipe"]["mean_dice"] == pytest.approx(0.625) and out["source_only"]["per_class"]["liver"] == 0.55
    assert out["recipe - source_only"]["mean_low_high"][0] == pytest.approx(0.075)
    assert out["recipe - source_only"]["n"] == 4
    assert out["full - recipe"]["mean_low_high"] == pytest.approx([-0.1, -0.1, -0.1])
    assert "recipe - recipe" not in out and "full - source_only" in out
    table = sdg_recipe.markdown(out, ["recipe", "full"])
    assert "| full - recipe | -0.100 | [-0.100, -0.100] | 4 |" in table and "| recipe | 0.625 |" in table


def test_loss_curve_reports_how_flat_the_last_passes_are():
    curve = sdg_recipe.loss_curve([1.0] * 10 + [0.5] * 10)
    assert curve["passes"] == 20 and curve["last_tenth_change"] == 0.0 and curve["first"] == 1.0
    assert sdg_recipe.loss_curve(list(np.linspace(1.0, 0.0, 20)))["last_tenth_change"] < 0


def test_main_runs_every_variant_of_every_seed_and_writes_the_figures(tmp_path, monkeypatch, capsys):
    """The steps replaced by a stand-in that writes what they would (a checkpoint's record, an evaluation): one job
    per seed and variant, figures pooled over the seeds, written where asked."""
    grid = _grid(tmp_path)
    ran = []

    def fake_run(p):
        variant = p.runner.work.name
        ran.append((p.cfg.seed, variant, p.cfg.finetune_epochs))
        gain = {"recipe": 0.1, "equalize": 0.2, "full": -0.1}[variant]
        write_json_atomic(p.runner.work / "eval" / "sdg.json", _evaluation({f"case_{i}": 0.5 + gain for i in range(4)}))
        torch.save({"format": FORMAT, "meta": {"loss_per_epoch": [1.0, 0.8, 0.7, 0.7]}},
                   p.runner.work / sdg_recipe.CHECKPOINT)
    monkeypatch.setattr(sdg_recipe, "run_steps", fake_run)
    out = tmp_path / "figures.json"
    figures = sdg_recipe.main([str(grid.out), "--seeds", "3", "4", "--epochs", "5", "-o", str(out)])
    assert sorted(ran) == sorted((s, v, 5) for s in (3, 4) for v in sdg_recipe.VARIANTS)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(figures))
    assert written["equalize - source_only"]["mean_low_high"] == pytest.approx([0.2, 0.2, 0.2])
    assert written["equalize - recipe"]["n"] == 8 and written["loss"]["seed4 full"]["last"] == 0.7
    assert "| full - recipe | -0.200 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="seed 9"):
        sdg_recipe.main([str(grid.out), "--seeds", "9"])
