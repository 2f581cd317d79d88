"""DFG step 5, self-training on the refined pseudo-labels (a dataset written by ``nnunet_dfg refine``)."""
from __future__ import annotations

import math

import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from .adaptation import nnUNetTrainerDFG_Adapt
from .source import SYNTHETIC_ABDOMEN
from .variants import make_variant


class nnUNetTrainerDFG_ST(nnUNetTrainerDFG_Adapt):
    """Self-training: continue the FA model on pseudo-labels with soft Dice only, keep the last model.

    Differs from nnU-Net's trainer in: soft Dice without cross-entropy (reference: CE would fit the pseudo-labels'
    boundary errors voxel by voxel, Dice weighs them by structure), no deep supervision, and the reference's schedule
    in its own unit: an epoch is one pass over the pseudo-labelled slices (2d: ceil(slices / batch size)
    iterations, counted from the training cases at the start; 3d: one patch per case), Adam lr 1e-4 decayed x0.8
    per pass, 100 passes, slices sampled uniformly (no foreground oversampling; nnU-Net draws a case, then a slice,
    which is uniform over slices when the volumes have equal depth). nnU-Net's augmentation and its validation on
    held-out *pseudo*-labels stay; no target ground truth is involved. Start it from the FA checkpoint with
    ``-pretrained_weights``.
    """

    max_iterations_per_pass: int | None = None  # smoke tests only: cap a pass

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-4
        self.weight_decay = 5e-4  # the reference's
        self.num_epochs = 100  # passes
        self.decay_every, self.first_decay_after, self.decay_per_epoch = 1, 1, True
        self.oversample_foreground_percent = 0.0

    def iterations_per_pass(self) -> int:
        """Iterations that visit every pseudo-labelled slice (2d) or case (3d) once at the plans' batch size."""
        tr_keys, _ = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, tr_keys)
        if len(self.configuration_manager.patch_size) == 2:
            units = sum(int(dataset.load_case(k)[0].shape[1]) for k in tr_keys)
        else:
            units = len(tr_keys)
        return max(1, math.ceil(units / self.batch_size))

    def on_train_start(self):
        super().on_train_start()  # initialises the trainer (datasets, scheduler) if needed
        full = self.iterations_per_pass()
        cap = self.max_iterations_per_pass
        self.num_iterations_per_epoch = full if cap is None else min(full, cap)
        self.lr_scheduler.iterations_per_epoch = self.num_iterations_per_epoch
        self.print_to_log_file(f"one epoch = one pass over the pseudo-labelled data: {full} iterations of batch "
                               f"{self.batch_size}" + ("" if cap is None else f" (capped at {cap})")
                               + f"; {self.num_epochs} passes")

    def _build_loss(self):
        return soft_dice_loss(self.label_manager, self.configuration_manager.batch_dice, self.is_ddp)


def soft_dice_loss(label_manager, batch_dice: bool, ddp: bool) -> DC_and_CE_loss:
    """Soft Dice only, as nnU-Net's own trainer builds its loss but with the cross-entropy weight 0: with an ignore
    label in the dataset (``refine --pseudo-ignore``) nnU-Net's ``DC_and_CE_loss`` masks those voxels out of the
    Dice terms (``loss_mask``), so they give no gradient; without one it is ``MemoryEfficientSoftDiceLoss`` alone."""
    return DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": ddp}, {},
                          weight_ce=0, weight_dice=1, ignore_label=label_manager.ignore_label,
                          dice_class=MemoryEfficientSoftDiceLoss)


make_variant(nnUNetTrainerDFG_ST, "nnUNetTrainerDFG_ST_test", "Smoke-test length: 2 passes of at most 2 iterations.",
             num_epochs=2, max_iterations_per_pass=2, num_val_iterations_per_epoch=1)
# CPU: the first 10 of the reference's 100 passes. With x0.8 per pass they hold 89% of the schedule's summed
# learning rate (1 - 0.8 ** 10), the last 90 passes the remaining 11%.
for _suffix in ("_demo", "_bench"):  # the 2d benchmark's differs from the demo's only in its source model
    make_variant(nnUNetTrainerDFG_ST, f"nnUNetTrainerDFG_ST{_suffix}",
                 "The synthetic abdomen (the demo, the 2d benchmark): 10 passes over the pseudo-labelled slices.",
                 num_epochs=10, **SYNTHETIC_ABDOMEN)
make_variant(nnUNetTrainerDFG_ST, "nnUNetTrainerDFG_ST_bench3d", "The synthetic abdomen, 3d_fullres: 10 passes.",
             num_epochs=10, **SYNTHETIC_ABDOMEN)
