"""nnUNetPlansCPU: a narrower network under nnU-Net's own plans conventions, same preprocessing."""
from __future__ import annotations

import pytest

from nnunet_dfg.cpu_plans import CPU_PLANS, cpu_plans

PLANS = {
    "plans_name": "nnUNetPlans",
    "configurations": {
        "2d": {"data_identifier": "nnUNetPlans_2d", "batch_size": 10,
               "architecture": {"arch_kwargs": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 512]}}},
        "3d_lowres": {"inherits_from": "3d_fullres"},
    },
}


def test_narrows_every_network_and_keeps_the_preprocessed_data():
    out = cpu_plans(PLANS)
    assert out["plans_name"] == CPU_PLANS
    c = out["configurations"]["2d"]
    assert c["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64, 128, 128]
    assert c["data_identifier"] == "nnUNetPlans_2d" and c["batch_size"] == 8  # capped: nnU-Net planned 10
    assert out["configurations"]["3d_lowres"] == {"inherits_from": "3d_fullres"}
    assert PLANS["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"][0] == 32  # a copy


def test_batch_size_and_width_options():
    c = cpu_plans(PLANS, base_features=8, max_features=32, batch_size=4)["configurations"]["2d"]
    assert c["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 32, 32] and c["batch_size"] == 4
    assert cpu_plans(PLANS, max_batch_size=None)["configurations"]["2d"]["batch_size"] == 10  # nnU-Net's
    assert cpu_plans(PLANS, max_batch_size=16)["configurations"]["2d"]["batch_size"] == 10  # never raised


def test_refuses_nonsense_widths():
    with pytest.raises(ValueError, match="base_features"):
        cpu_plans(PLANS, base_features=64, max_features=32)
