"""The README's first command, ``nnunet_dfg demo``, end to end through the CLI: every step on nnU-Net's stock
commands and the real LiteMedSAM, with the shortest trainer variants and tiny volumes (the plumbing, not the
figures: BENCHMARKS.md has those).

It runs the reverse direction (``--direction ct2mr``: CT-like source, MRI-like target), so that one whole run
also checks what only that direction exercises: prepare-target gives the MRI-like target nnU-Net's z-score instead
of the CT source's CTNormalization, and refine feeds SAM the MR window. The default direction's chain (MRI source,
CT target with CTNormalization, SAM's CT window) runs step by step through the stock commands in
test_stock_cli.py; the demo's steps are the same commands whichever direction the data has."""
from __future__ import annotations

import json

import pytest
from cli_env import nnunet_env, run
from PIL import Image

from nnunet_dfg.refine.layout import METADATA_KEY

pytestmark = pytest.mark.slow  # the whole demo: minutes

STAGES = {"source_in_domain", "source_only", "fa", "pseudo_fa", "pseudo_box", "pseudo_sdg", "pseudo_dfg_raw",
          "pseudo_dfg_post", "self_trained", "sdg", "sdg_no_finetune", "oracle"}


def test_demo_runs_every_stage_and_prints_the_stage_table(tmp_path):
    out = tmp_path / "demo"
    args = ["nnunet_dfg", "demo", "-o", str(out), "--variant", "_test", "--oracle-variant", "_test", "--seed", "3",
            "--n-source", "5", "--n-target", "2", "--n-test", "2", "--shape", "4", "48", "48", "--direction", "ct2mr"]
    proc = run(args, nnunet_env(tmp_path), timeout=1500)
    table = json.loads((out / "work" / "stage_table.json").read_text())
    assert set(table) == STAGES
    for stage, row in table.items():
        assert 0.0 <= row["mean_dice"] <= 1.0 and set(row["per_class"]) == {"spleen", "right_kidney", "left_kidney",
                                                                            "liver"}, stage
    # the real LiteMedSAM searched and decoded boxes on the target training images (refine's per-case reports)
    reports = [json.loads(p.read_text())
               for p in sorted((out / "nnUNet_raw").glob("Dataset802_*/dfg_refine/reports/*.json"))]
    assert len(reports) == 2
    assert sum(len(r["slices_searched"]) for r in reports) >= 1 and sum(r["calls"]["decoder"] for r in reports) >= 1
    printed = proc.stdout[proc.stdout.index("source_in_domain"):]
    assert all(stage in printed for stage in STAGES) and "stage table:" in printed
    assert "source < FA" in printed and "self-trained >= 0.9x oracle" in printed  # the paired goal checks
    # the stage figure beside the table: bars and one slice per stage (its content: test_stage_figure.py)
    assert f"stage figure: {out / 'work' / 'stage_figure.png'}" in printed
    with Image.open(out / "work" / "stage_figure.png") as png:
        assert png.format == "PNG" and png.width > 800 and png.height > 600
    predictions = out / "work" / "predictions"
    for stage in ("source_only", "fa", "self_trained", "sdg", "sdg_no_finetune", "oracle"):
        assert sorted(p.name for p in (predictions / stage).glob("*.nii.gz")) == ["case_0002.nii.gz",
                                                                                   "case_0003.nii.gz"], stage
    plans = out / "nnUNet_preprocessed" / "Dataset701_DFGSynthSource" / "nnUNetPlansCPU.json"
    assert json.loads(plans.read_text())["plans_name"] == "nnUNetPlansCPU"
    # the MRI-like target of the CT-like source gets nnU-Net's z-score (prepare-target), the FA model trains on it
    target_plans = json.loads((out / "nnUNet_preprocessed/Dataset702_DFGSynthTarget/nnUNetPlansCPU.json").read_text())
    assert json.loads(plans.read_text())["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"]
    assert target_plans["configurations"]["2d"]["normalization_schemes"] == ["ZScoreNormalization"]
    prepared = json.loads((out / "nnUNet_preprocessed/Dataset702_DFGSynthTarget/dataset.json").read_text())
    assert prepared["channel_names"] == {"0": "MRI"}
    assert prepared["dfg_target_normalization"]["0"]["target"] == "ZScoreNormalization"
    fa = out / "nnUNet_results/Dataset702_DFGSynthTarget/nnUNetTrainerDFG_FA_test__nnUNetPlansCPU__2d/plans.json"
    assert json.loads(fa.read_text())["configurations"]["2d"]["normalization_schemes"] == ["ZScoreNormalization"]
    # refine fed SAM the MR window
    pseudo = json.loads((out / "nnUNet_raw/Dataset802_DFGSynthTargetPseudoDFG/dataset.json").read_text())
    assert pseudo["channel_names"] == {"0": "MRI"} and pseudo[METADATA_KEY]["sam_modality"] == "mr"
    source = out / "nnUNet_results" / "Dataset701_DFGSynthSource" / "nnUNetTrainerDFG_Source_test__nnUNetPlansCPU__2d"
    assert "seed 3 (nnUNet_dfg_seed)" in next((source / "fold_0").glob("training_log_*.txt")).read_text()
    again = run(args, nnunet_env(tmp_path), timeout=300)  # resumes: nothing to do
    assert "[run ]" not in again.stdout and json.loads((out / "work" / "stage_table.json").read_text()) == table
