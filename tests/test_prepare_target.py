"""prepare-target never overwrites or resumes into a preprocessed folder that other plans (or labels) made."""
from __future__ import annotations

import json

import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dfg.errors import UserError
from nnunet_dfg.prepare_target import PREPARED, _claim_folders


def _plans(mean: float = 0.0, features=(32, 64)) -> dict:
    return {"plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
            "foreground_intensity_properties_per_channel": {"0": {"mean": mean, "std": 1.0}},
            "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d", "spacing": [1.0, 1.0],
                                      "normalization_schemes": ["ZScoreNormalization"], "patch_size": [64, 64],
                                      "architecture": {"arch_kwargs": {"features_per_stage": list(features)}}}}}


def _claim(out, plans, labels=False):
    _claim_folders(out, plans, [PlansManager(plans).get_configuration("2d")], labels)


def test_resume_with_the_same_plans_and_refuse_other_plans_or_labels(tmp_path):
    out = tmp_path / "Dataset702_T"
    _claim(out, _plans())  # a fresh folder: recorded before the first data write
    (out / "nnUNetPlans_2d").mkdir()
    _claim(out, _plans())  # the same plans: resume
    cpu = {**_plans(features=(16, 32)), "plans_name": "nnUNetPlansCPU"}
    _claim(out, cpu)  # another network on the same preprocessed data (nnUNetPlansCPU) shares the data folder
    assert set(json.loads((out / PREPARED).read_text())) == {"nnUNetPlans_2d"}
    with pytest.raises(UserError, match="made with other plans or labels"):
        _claim(out, _plans(mean=5.0))  # other intensity statistics: the data folder is not reused
    with pytest.raises(UserError, match="made with other plans or labels"):
        _claim(out, _plans(), labels=True)


def test_refuse_a_folder_that_nnunet_preprocessed(tmp_path):
    out = tmp_path / "Dataset702_T"
    (out / "nnUNetPlans_2d").mkdir(parents=True)
    (out / "nnUNetPlans.json").write_text(json.dumps(_plans(mean=3.0)))  # e.g. nnUNetv2_plan_and_preprocess
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(UserError, match="holds another preprocessing"):
        _claim(out, _plans())
    with pytest.raises(UserError, match="holds another preprocessing"):  # other plans name, same data folder
        _claim(out, {**_plans(), "plans_name": "nnUNetPlansCPU"})
    assert sorted(p.name for p in out.iterdir()) == before
    (out / "nnUNetPlans.json").write_text(json.dumps(_plans()))  # an older prepare-target run's own output
    _claim(out, _plans())
