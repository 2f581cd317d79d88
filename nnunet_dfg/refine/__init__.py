"""``nnunet_dfg refine``: nnU-Net softmax + decoder features -> per-slice box-prompt search -> pseudo-label dataset.

Modules: ``command`` (options, sharding, resume, argparse; the search itself is ``nnunet_dfg.volume``),
``case`` (one case: the search once, then each output dataset), ``ignore`` (``--pseudo-ignore``: nnU-Net's ignore
label on unreliable voxels), ``layout`` (the output dataset, atomic writes), ``report`` (JSON traces), ``figures``
(Fig. 1-style PNGs).
"""
from .command import RefineOptions, add_refine_parser, refine_dataset, refine_datasets

__all__ = ["RefineOptions", "add_refine_parser", "refine_dataset", "refine_datasets"]
