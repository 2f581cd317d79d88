"""One seed for everything random in a DFG training run, so the same command twice gives the same model.

nnU-Net's trainer is unseeded: weight initialisation, the case sampler (a ``RandomState`` drawn from OS entropy),
patch crops and batchgeneratorsv2's augmentation all vary from run to run, which on the small CPU benchmarks makes
run-to-run spread as large as the differences between adaptation stages. The DFG trainers seed Python, NumPy and
torch from ``nnUNet_dfg_seed`` (default 0), reseed the samplers after nnU-Net's warm-up batch, and ask torch for
deterministic algorithms. Bitwise repeatability needs augmentation in the main process (``nnUNet_n_proc_DA=0``,
the CPU setting): nnU-Net's multi-process augmenter delivers batches in whatever order its workers finish.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..seed import SEED_ENV, seed_from_environment


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # filling every new tensor with NaN (torch's default under deterministic algorithms) tripled a CPU step;
    # it only guards against reading memory no kernel wrote, which nnU-Net's ops never do
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = True  # nnU-Net's run_training turns cudnn.benchmark on
    torch.backends.cudnn.benchmark = False


class SeededTraining:
    """Mixin placed before ``nnUNetTrainer`` in the bases: seeds the network's initialisation and the data stream."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        self.seed = seed_from_environment()  # before the base writes anything: a bad value stops the run here
        super().__init__(plans, configuration, fold, dataset_json, device)

    def initialize(self):
        if not self.was_initialized:
            seed_everything(self.seed)
            threads = os.environ.get("OMP_NUM_THREADS", "")
            if self.device.type == "cpu" and threads.isdigit() and int(threads) > 0:
                # nnU-Net's run_training sets one torch thread per core; a result depends on the thread count, and
                # on a shared machine oversubscribed threads made CPU steps up to 10x slower
                torch.set_num_threads(int(threads))
        super().initialize()

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        # nnU-Net drew one warm-up batch from samplers seeded by the OS: reseed them and everything after
        seed_everything(self.seed + 1)
        for offset, generator in enumerate((train, val)):
            loader = getattr(generator, "data_loader", None)  # SingleThreadedAugmenter (nnUNet_n_proc_DA=0)
            if loader is not None:
                loader.rs = np.random.RandomState(self.seed + offset)
            else:
                self.print_to_log_file(f"{type(generator).__name__}: augmentation workers make the batch order "
                                       "run-dependent; set nnUNet_n_proc_DA=0 for a repeatable run")
        self.print_to_log_file(f"seed {self.seed} ({SEED_ENV})")
        return train, val
