"""What DFG's two target-side phases (FA, self-training) share: they continue a *complete* earlier network."""
from __future__ import annotations

import torch

from .network_parts import weights_were_loaded
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

    ``nnUNetv2_train -pretrained_weights CKPT`` loads every weight with nnU-Net's own loader, the classifier
    included through its ``prototype_head`` alias (see ``network_parts``); training without it (and not resuming
    with ``--c``) stops with one line at the start of training.
    """

    lr_decay: float = 0.8
    decay_every: int = 5  # iterations

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

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

    def on_train_start(self):
        super().on_train_start()
        if not weights_were_loaded(self.network):
            raise RuntimeError(f"{self.__class__.__name__} continues an earlier model: pass "
                               "-pretrained_weights <results of the previous step>/fold_X/checkpoint_final.pth")
        self.print_to_log_file(f"Adam lr={self.initial_lr} wd={self.weight_decay}, x{self.lr_decay} every "
                               f"{self.decay_every} iterations; started from the loaded network, classifier included")
