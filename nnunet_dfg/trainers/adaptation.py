"""What DFG's two target-side phases (FA, self-training) share: they continue a *complete* earlier network."""
from __future__ import annotations

import torch

from .network_parts import weights_were_loaded
from .source import nnUNetTrainerDFG_Source


class StepDecayLR:
    """lr = initial * decay ** n, with n the decays done before the current unit: the first after ``first`` units,
    then one every ``every``. A unit is an iteration (FA: the reference decays x0.8 after its first iteration and then
    every 5) or an epoch (self-training: once per pass over the pseudo-labelled slices).

    nnU-Net calls ``step(epoch)`` at every epoch start; a trainer counting iterations also calls ``at_iteration``.
    """

    def __init__(self, optimizer, initial_lr: float, decay: float, every: int, iterations_per_epoch: int,
                 first: int | None = None, per_iteration: bool = True):
        self.optimizer, self.initial_lr, self.decay = optimizer, initial_lr, decay
        self.every, self.iterations_per_epoch, self.per_iteration = every, iterations_per_epoch, per_iteration
        self.first = every if first is None else first

    def decays(self, done: int) -> int:
        return 0 if done < self.first else 1 + (done - self.first) // self.every

    def _set(self, done: int) -> None:
        lr = self.initial_lr * self.decay ** self.decays(done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, epoch: int) -> None:
        self._set(epoch * self.iterations_per_epoch if self.per_iteration else epoch)

    def at_iteration(self, iteration: int) -> None:
        if self.per_iteration:
            self._set(iteration)


class nnUNetTrainerDFG_Adapt(nnUNetTrainerDFG_Source):
    """Base of the adaptation trainers: Adam with a step-decayed lr, started from a full checkpoint.

    ``nnUNetv2_train -pretrained_weights CKPT`` loads every weight with nnU-Net's own loader, the classifier
    included through its ``prototype_head`` alias (see ``network_parts``); training without it (and not resuming
    with ``--c``) stops with one line at the start of training.
    """

    lr_decay: float = 0.8
    decay_every: int = 5  # units (iterations, or epochs where decay_per_epoch)
    first_decay_after: int | None = None  # units before the first decay; None: decay_every
    decay_per_epoch: bool = False

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
                                self.num_iterations_per_epoch, self.first_decay_after,
                                per_iteration=not self.decay_per_epoch)
        return optimizer, scheduler

    def on_train_start(self):
        super().on_train_start()
        if not weights_were_loaded(self.network):
            raise RuntimeError(f"{self.__class__.__name__} continues an earlier model: pass "
                               "-pretrained_weights <results of the previous step>/fold_X/checkpoint_final.pth")
        unit = "epochs" if self.decay_per_epoch else "iterations"
        first = self.decay_every if self.first_decay_after is None else self.first_decay_after
        self.print_to_log_file(f"Adam lr={self.initial_lr} wd={self.weight_decay}, x{self.lr_decay} after {first} "
                               f"then every {self.decay_every} {unit}; started from the loaded network, classifier "
                               "included")
