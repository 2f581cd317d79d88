"""DFG step 5, self-training on the refined pseudo-labels (a dataset written by ``nnunet_dfg refine``)."""
from __future__ import annotations

import torch
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from .adaptation import nnUNetTrainerDFG_Adapt
from .source import SYNTHETIC_ABDOMEN
from .variants import make_variant


class nnUNetTrainerDFG_ST(nnUNetTrainerDFG_Adapt):
    """Self-training: continue the FA model on pseudo-labels with soft Dice only, keep the last model.

    Differs from nnU-Net's trainer in: soft Dice without cross-entropy (reference: CE would fit the pseudo-labels'
    boundary errors voxel by voxel, Dice weighs them by structure), no deep supervision, Adam lr 1e-4 decayed
    x0.8 per epoch (reference: 100 epochs of batch 8; one nnU-Net "epoch" here is 50 iterations of the plans'
    batch size). nnU-Net's augmentation and its validation on held-out *pseudo*-labels stay; no target
    ground truth is involved. Start it from the FA checkpoint with ``-pretrained_weights``.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-4
        self.weight_decay = 5e-4  # the reference's
        self.num_epochs = 100
        self.num_iterations_per_epoch = 50
        self.decay_every = self.num_iterations_per_epoch

    def _build_loss(self):
        return MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=self.configuration_manager.batch_dice,
                                           do_bg=False, smooth=1e-5, ddp=self.is_ddp)


make_variant(nnUNetTrainerDFG_ST, "nnUNetTrainerDFG_ST_test", "Smoke-test length.",
             num_epochs=2, num_iterations_per_epoch=2, decay_every=2, num_val_iterations_per_epoch=1)
make_variant(nnUNetTrainerDFG_ST, "nnUNetTrainerDFG_ST_demo", "The synthetic abdomen (the demo, the 2d benchmark).",
             num_epochs=10, num_iterations_per_epoch=25, decay_every=25, **SYNTHETIC_ABDOMEN)
make_variant(nnUNetTrainerDFG_ST, "nnUNetTrainerDFG_ST_bench3d", "The synthetic abdomen, 3d_fullres.",
             num_epochs=8, num_iterations_per_epoch=25, decay_every=25, **SYNTHETIC_ABDOMEN)
