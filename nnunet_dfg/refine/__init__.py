"""``nnunet_dfg refine``: nnU-Net softmax + decoder features -> per-slice box-prompt search -> pseudo-label dataset.

Modules: ``command`` (options, sharding, resume, argparse; the search itself is ``nnunet_dfg.volume``),
``layout`` (the output dataset, atomic writes), ``report`` (JSON traces), ``figures`` (Fig. 1-style PNGs).
"""
from .command import RefineOptions, add_refine_parser, refine_dataset, refine_datasets

__all__ = ["RefineOptions", "add_refine_parser", "refine_dataset", "refine_datasets"]
