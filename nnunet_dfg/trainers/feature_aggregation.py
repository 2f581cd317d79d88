"""DFG step 2, feature aggregation (FA): align unlabelled target features to the frozen source prototypes."""
from __future__ import annotations

from typing import List

import numpy as np
import torch
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from .fa_loss import FALossConfig, fa_loss_terms, flatten_features
from .network_parts import capture_features, prototypes, unwrap
from .adaptation import nnUNetTrainerDFG_Adapt
from .source import SYNTHETIC_ABDOMEN
from .variants import make_variant


class nnUNetTrainerDFG_FA(nnUNetTrainerDFG_Adapt):
    """Feature aggregation on target images preprocessed with the source plans (``nnunet_dfg prepare-target``).

    Differs from nnU-Net's trainer in: the loss (bidirectional transport between the frozen classifier rows and
    the last decoder stage's features; target labels are never used), Adam with a step-decayed lr (reference:
    lr 1e-4, wd 5e-4, x0.8 after the first iteration and then every 5, 160 iterations, the lr set per iteration;
    nnU-Net's plans set the batch size), no
    foreground oversampling (there are no labels), no "best" checkpoint and no final validation (both would need
    target labels; the last model is kept, as in the reference).

    Deep supervision is off: "features" always means the full-resolution output of ``decoder.stages[-1]``, the map
    the prototypes classify. The low-resolution heads are frozen with the classifier and play no part.

    Start it from the full source checkpoint: ``-pretrained_weights .../checkpoint_final.pth`` loads every weight,
    classifier included (through its ``prototype_head`` alias; see ``network_parts``).
    """

    fa_tau: float = 1.0
    fa_s: float = 0.5
    fa_prior = None  # per-class pi, background first; None = uniform

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-4
        self.weight_decay = 5e-4
        self.num_iterations_per_epoch = 5
        self.num_epochs = 32
        self.num_val_iterations_per_epoch = 2
        self.oversample_foreground_percent = 0.0
        self.first_decay_after = 1  # the reference's scheduler steps after its first iteration, then every 5
        self._iteration_in_epoch = 0
        self._best_ema = float("inf")  # label-free phase: never a "best" checkpoint
        for key in ("fa_forward", "fa_backward"):
            self.logger.local_logger.my_fantastic_logging[key] = []

    @property
    def fa_config(self) -> FALossConfig:
        return FALossConfig(tau=self.fa_tau, s=self.fa_s, prior=self.fa_prior)

    def frozen_parameters(self):
        """All segmentation heads: the full-resolution one holds the prototypes, the others are unused."""
        return [p for head in unwrap(self.network).decoder.seg_layers for p in head.parameters()]

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(f"FA loss: tau={self.fa_tau} s={self.fa_s} prior={self.fa_prior}")

    def _fa_step(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with capture_features(self.network) as store:
            with autocast(self.device.type, enabled=True) if self.device.type == 'cuda' else dummy_context():
                self.network(data)
        feats = flatten_features(store[-1].float())
        config = self.fa_config
        prior = None if config.prior is None else torch.as_tensor(config.prior, device=feats.device)
        forward, backward = fa_loss_terms(feats, prototypes(self.network).float(), config.tau, prior)
        return config.s * forward + (1 - config.s) * backward, forward, backward

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._iteration_in_epoch = 0

    def train_step(self, batch: dict) -> dict:
        data = batch['data'].to(self.device, non_blocking=True)
        self.lr_scheduler.at_iteration(self.current_epoch * self.num_iterations_per_epoch + self._iteration_in_epoch)
        self._iteration_in_epoch += 1
        self.optimizer.zero_grad(set_to_none=True)
        loss, forward, backward = self._fa_step(data)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {'loss': loss.detach().cpu().numpy(), 'fa_forward': forward.detach().cpu().numpy(),
                'fa_backward': backward.detach().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        for key in ("fa_forward", "fa_backward"):
            self.logger.log(key, float(np.mean(outputs[key])), self.current_epoch)
        self.print_to_log_file(f"FA loss {np.mean(outputs['loss']):.4f} (pixel->class "
                               f"{np.mean(outputs['fa_forward']):.4f}, class->pixel {np.mean(outputs['fa_backward']):.4f})")

    def validation_step(self, batch: dict) -> dict:
        loss, _, _ = self._fa_step(batch['data'].to(self.device, non_blocking=True))
        return {'loss': loss.detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        """The FA loss on held-out target batches; Dice needs labels, so it is logged as NaN."""
        loss = float(np.mean(collate_outputs(val_outputs)['loss'])) if val_outputs else float("nan")
        n_fg = len(self.label_manager.foreground_labels)
        self.logger.log('mean_fg_dice', float("nan"), self.current_epoch)
        self.logger.log('dice_per_class_or_region', [float("nan")] * n_fg, self.current_epoch)
        self.logger.log('val_losses', loss, self.current_epoch)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("No final validation: the target domain has no labels (evaluate with nnunet_dfg evaluate).")


make_variant(nnUNetTrainerDFG_FA, "nnUNetTrainerDFG_FA_test", "Smoke-test length.",
             num_epochs=2, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
for _suffix in ("_demo", "_bench"):  # the 2d benchmark's differs from the demo's only in its source model
    make_variant(nnUNetTrainerDFG_FA, f"nnUNetTrainerDFG_FA{_suffix}",
                 "The reference's 160 iterations on the synthetic abdomen (the demo, the 2d benchmark).",
                 num_epochs=32, num_iterations_per_epoch=5, **{**SYNTHETIC_ABDOMEN, "num_val_iterations_per_epoch": 1})
make_variant(nnUNetTrainerDFG_FA, "nnUNetTrainerDFG_FA_bench3d", "The reference's 160 iterations, 3d_fullres.",
             num_epochs=32, num_iterations_per_epoch=5, **{**SYNTHETIC_ABDOMEN, "num_val_iterations_per_epoch": 1})
make_variant(nnUNetTrainerDFG_FA, "nnUNetTrainerDFG_FA_lr1e5",
             "The third-party reproduction's setting for prostate (lr 1e-5).", initial_lr=1e-5)
make_variant(nnUNetTrainerDFG_FA, "nnUNetTrainerDFG_FA_tau01", "Sharper transport plans (tau 0.1).", fa_tau=0.1)
