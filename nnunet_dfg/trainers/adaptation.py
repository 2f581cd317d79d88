"""What DFG's two target-side phases (FA, self-training) share: they continue a *complete* earlier network."""
from __future__ import annotations

import torch

from . import full_weights
from .source import nnUNetTrainerDFG_Source


class StepDecayLR:
    """lr = initial * decay ** (iterations done // every), evaluated at epoch starts (nnU-Net's scheduler API)."""

    def __init__(self, optimizer, initial_lr: float, decay: float, every: int, iterations_per_epoch: int):
        self.optimizer, self.initial_lr, self.decay = optimizer, initial_lr, decay
        self.every, self.iterations_per_epoch = every, iterations_per_epoch

    def step(self, epoch: int) -> None:
        lr = self.initial_lr * self.decay ** ((epoch * self.iterations_per_epoch) // self.every)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class nnUNetTrainerDFG_Adapt(nnUNetTrainerDFG_Source):
    """Base of the adaptation trainers: Adam with a step-decayed lr, started from a full checkpoint.

    ``-pretrained_weights CKPT`` loads every weight, classifier included (see ``full_weights``); training without
    it, or from a checkpoint of another network, stops with one line before anything is written.
    """

    lr_decay: float = 0.8
    decay_every: int = 5  # iterations

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        full_weights.install()
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    def initialize(self):
        super().initialize()
        full_weights.mark_for_full_weights(self.network)

    def frozen_parameters(self) -> list:
        return []

    def configure_optimizers(self):
        for p in self.frozen_parameters():
            p.requires_grad_(False)
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, self.initial_lr, weight_decay=self.weight_decay)
        scheduler = StepDecayLR(optimizer, self.initial_lr, self.lr_decay, self.decay_every,
                                self.num_iterations_per_epoch)
        return optimizer, scheduler

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        self._resumed = True

    def on_train_start(self):
        super().on_train_start()
        if full_weights.loaded_from(self.network) is None and not getattr(self, "_resumed", False):
            raise RuntimeError(f"{self.__class__.__name__} continues an earlier model: pass "
                               "-pretrained_weights <results of the previous step>/fold_X/checkpoint_final.pth")
        self.print_to_log_file(f"Adam lr={self.initial_lr} wd={self.weight_decay}, x{self.lr_decay} every "
                               f"{self.decay_every} iterations; started from {full_weights.loaded_from(self.network)}")
