"""A smaller network for 2-core CPUs, as a plans identifier of nnU-Net's own (``-p nnUNetPlansCPU``).

nnU-Net's plans file is editable by design: a copy under a new ``plans_name`` with fewer features per stage trains
several times faster per step on the CPU, so the demo and the benchmark can train to convergence within their
budgets. Only the network width and the batch size change; the preprocessing does not, so the copy keeps each
configuration's ``data_identifier`` and reads the data nnU-Net already preprocessed for the original plans. Users'
own runs keep nnU-Net's default plans.

The batch is capped at 8 (the DFG reference's self-training batch): nnU-Net sizes a 2d batch up to 5% of the
dataset's voxels, which for the synthetic benchmark's 64 px slices is 29, 3.6x the cost of a step at 8 on a CPU.
"""
from __future__ import annotations

import copy

CPU_PLANS = "nnUNetPlansCPU"


MAX_BATCH_SIZE = 8


def cpu_plans(plans: dict, name: str = CPU_PLANS, base_features: int = 16, max_features: int = 128,
              batch_size: int | None = None, max_batch_size: int | None = MAX_BATCH_SIZE) -> dict:
    """``plans`` with every configuration's U-Net narrowed to ``min(base * 2**stage, max)`` features per stage, its
    batch set to ``batch_size`` or else capped at ``max_batch_size`` (None: nnU-Net's)."""
    if base_features < 1 or max_features < base_features:
        raise ValueError(f"need 1 <= base_features <= max_features, got {base_features} and {max_features}")
    out = copy.deepcopy(plans)
    out["plans_name"] = name
    for configuration in out["configurations"].values():
        arch = configuration.get("architecture")
        if arch is None:  # inherits its network from another configuration
            continue
        kwargs = arch["arch_kwargs"]
        kwargs["features_per_stage"] = [min(base_features * 2 ** i, max_features) for i in range(kwargs["n_stages"])]
        if batch_size is not None:
            configuration["batch_size"] = batch_size
        elif max_batch_size is not None and "batch_size" in configuration:
            configuration["batch_size"] = min(configuration["batch_size"], max_batch_size)
    return out
