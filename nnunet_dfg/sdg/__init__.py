"""SDG (METHOD.md, "SDG"): refined-box SAM inference over volumes with tiled encoder passes, and mask-decoder
fine-tuning on the labelled source. Commands: ``add_sdg_parsers`` adds ``sdg-predict`` and ``finetune-sam``.

Modules: ``slices`` (training prompts: refined or ground-truth boxes, jitter, canvases, the pass schedule),
``finetune`` (training loop and embedding cache), ``source`` (the labelled source slices and the source model's
boxes on them), ``command`` (``sdg-predict``; the box -> SAM -> merge step over a volume is
``nnunet_dfg.volume``) and ``finetune_command`` (``finetune-sam``).
Only the two command modules are imported eagerly, so the CLI starts without torch; the other names load on first
use.
"""
from importlib import import_module

from .command import PredictOptions, add_sdg_parsers, resolve_tile, sdg_predict
from .finetune_command import FinetuneOptions, finetune_sam

_LAZY = {
    "FinetuneConfig": "finetune", "dice_bce_loss": "finetune", "dice_bce_batch": "finetune",
    "finetune_mask_decoder": "finetune", "EmbeddingCache": "finetune",
    "TrainingSlice": "slices", "foreground_slices": "slices", "jitter_box": "slices", "slice_prompts": "slices",
    "grow_box": "slices", "refined_prompts": "slices", "training_prompts": "slices", "tile_groups": "slices",
    "epoch_batches": "slices",
}

__all__ = ["FinetuneOptions", "PredictOptions", "add_sdg_parsers", "finetune_sam", "resolve_tile", "sdg_predict",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
