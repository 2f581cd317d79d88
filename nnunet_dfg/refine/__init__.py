"""``nnunet_dfg refine``: nnU-Net softmax + decoder features -> per-slice box-prompt search -> pseudo-label dataset.

Modules: ``predict_features`` (nnU-Net's predictor, K + C output channels), ``volume`` (pure per-slice search over
a volume), ``report`` (JSON traces), ``figures`` (Fig. 1-style PNGs), ``layout`` (the output dataset, atomic
writes), ``command`` (sharding, resume, argparse).
"""
from .command import RefineOptions, add_refine_parser, refine_dataset
from .volume import PROMPTS, VolumeResult, refine_volume, select_slices

__all__ = ["PROMPTS", "RefineOptions", "VolumeResult", "add_refine_parser", "refine_dataset", "refine_volume",
           "select_slices"]
