"""The reverse direction (CT source -> MRI-like target) through ``nnunet_dfg pipeline``, with the shortest trainer
variants, tiny volumes and no SDG/oracle rows: prepare-target must give the MRI-like target nnU-Net's z-score
instead of the CT source's CTNormalization, refine must feed SAM the MR window, and every stage must evaluate.
(The default MRI -> CT direction runs in test_demo_cli.py.)"""
from __future__ import annotations

import json
import math

import pytest

from cli_env import nnunet_env, run
from nnunet_dfg.refine.layout import METADATA_KEY

pytestmark = pytest.mark.slow  # a whole pipeline run: minutes


def test_ct_source_to_mri_target_pipeline(tmp_path):
    env = nnunet_env(tmp_path)
    run(["nnunet_dfg", "synthetic", "--direction", "ct2mr", "--seed", "2", "--n-source", "5", "--n-target", "2",
         "--n-test", "1", "--shape", "4", "48", "48"], env)
    hidden = tmp_path / "raw/_hidden_labels/Dataset702_DFGSynthTarget"
    work = tmp_path / "work"
    proc = run(["nnunet_dfg", "pipeline", "-s", "701", "-t", "702", "-o", str(work), "--variant", "_test",
                "-p", "nnUNetPlansCPU", "--no-oracle", "--no-sdg", "--search-config", '{"max_growth": 2.0}',
                "--target-labels-tr", str(hidden / "labelsTr"), "--target-labels-ts", str(hidden / "labelsTs")],
               env, timeout=1200)
    table = json.loads((work / "stage_table.json").read_text())
    assert {"source_only", "fa", "self_trained", "pseudo_dfg_post"} <= set(table)
    for stage, row in table.items():
        assert math.isfinite(row["mean_dice"]) and 0.0 <= row["mean_dice"] <= 1.0, stage
    assert "stage table:" in proc.stdout

    source = json.loads((tmp_path / "pre/Dataset701_DFGSynthSource/nnUNetPlansCPU.json").read_text())
    target = json.loads((tmp_path / "pre/Dataset702_DFGSynthTarget/nnUNetPlansCPU.json").read_text())
    assert source["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"]
    assert target["configurations"]["2d"]["normalization_schemes"] == ["ZScoreNormalization"]
    prepared = json.loads((tmp_path / "pre/Dataset702_DFGSynthTarget/dataset.json").read_text())
    assert prepared["channel_names"] == {"0": "MRI"}
    assert prepared["dfg_target_normalization"]["0"]["target"] == "ZScoreNormalization"
    fa = tmp_path / "res/Dataset702_DFGSynthTarget/nnUNetTrainerDFG_FA_test__nnUNetPlansCPU__2d/plans.json"
    assert json.loads(fa.read_text())["configurations"]["2d"]["normalization_schemes"] == ["ZScoreNormalization"]
    pseudo = json.loads((tmp_path / "raw/Dataset802_DFGSynthTargetPseudoDFG/dataset.json").read_text())
    assert pseudo["channel_names"] == {"0": "MRI"} and pseudo[METADATA_KEY]["sam_modality"] == "mr"
