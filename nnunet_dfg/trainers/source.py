"""Supervised training on the labelled source domain (DFG step 1)."""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from .network_parts import remove_classifier_bias
from .progress_plot import ThrottledProgressPlot
from .variants import make_variant


class nnUNetTrainerDFG_Source(ThrottledProgressPlot, nnUNetTrainer):
    """nnU-Net's trainer (CE + Dice, its augmentation and schedule) with bias-free segmentation heads.

    The difference from ``nnUNetTrainer``: DFG treats the rows of the final 1x1 classifier as class
    prototypes and the network's logits as ``prototype . feature``. A bias would add a per-class offset that the
    transport loss of the FA phase cannot see, so the heads are built without one. Because the change lives in
    ``build_network_architecture``, stock ``nnUNetv2_predict`` rebuilds the same network. (The progress plot is
    also drawn less often in short epochs: see ``progress_plot``.)
    """

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        return remove_classifier_bias(network)


make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_50epochs", "50 epochs.", num_epochs=50)
make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_demo",
             "Sized for the synthetic demo on 2 CPU cores (a few minutes).",
             num_epochs=20, num_iterations_per_epoch=20, num_val_iterations_per_epoch=2)
make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_demoFinetune",
             "The demo's oracle: fine-tuning the source model on labelled target volumes (8 epochs).",
             num_epochs=8, num_iterations_per_epoch=20, num_val_iterations_per_epoch=2)
# the benchmark's schedules (BENCHMARKS.md): 2 configurations x 2 seeds x 3 severities must fit an hour on 2 cores
make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_bench", "Benchmark, 2d.",
             num_epochs=12, num_iterations_per_epoch=20, num_val_iterations_per_epoch=2)
make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_benchFinetune", "Benchmark oracle, 2d.",
             num_epochs=5, num_iterations_per_epoch=20, num_val_iterations_per_epoch=2)
make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_bench3d",
             "Benchmark, 3d_fullres (a 3D step with its augmentation costs several 2D steps on the CPU).",
             num_epochs=6, num_iterations_per_epoch=20, num_val_iterations_per_epoch=2)
make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_bench3dFinetune", "Benchmark oracle, 3d_fullres.",
             num_epochs=2, num_iterations_per_epoch=20, num_val_iterations_per_epoch=2)
make_variant(nnUNetTrainerDFG_Source, "nnUNetTrainerDFG_Source_test", "Smoke-test length: plumbing, not accuracy.",
             num_epochs=2, num_iterations_per_epoch=3, num_val_iterations_per_epoch=2)
