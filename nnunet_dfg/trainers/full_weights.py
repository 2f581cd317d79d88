"""Initialise a trainer from a *complete* nnU-Net checkpoint, classifier included, via the stock CLI.

``nnUNetv2_train -pretrained_weights`` skips the segmentation heads (``.seg_layers.``), but DFG's adaptation
phases need the source classifier: its rows are the prototypes FA aligns to. nnU-Net gives trainers no hook for
this, so we wrap the loader that ``nnunetv2.run.run_training`` calls; the wrapper acts only on networks that a DFG
trainer marked, and leaves every other trainer's behaviour untouched.
"""
from __future__ import annotations

import os
import sys

import torch
from torch import nn

from .network_parts import unwrap

_MARK = "_dfg_wants_full_weights"
_LOADED = "_dfg_loaded_from"


class CheckpointError(RuntimeError):
    """A source checkpoint that is missing, unreadable or does not fit the network."""


def read_checkpoint_weights(fname: str) -> dict:
    """The ``network_weights`` of an nnU-Net checkpoint, or a one-line CheckpointError."""
    if not os.path.isfile(fname):
        raise CheckpointError(f"source checkpoint not found: {fname}")
    try:
        checkpoint = torch.load(fname, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"source checkpoint {fname} is unreadable ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise CheckpointError(f"{fname} is not an nnU-Net checkpoint (no 'network_weights')")
    return checkpoint["network_weights"]


def load_full_weights(network: nn.Module, fname: str) -> None:
    """Strictly load every weight, segmentation heads included."""
    module = unwrap(network)
    weights = {k[7:] if k.startswith("module.") else k: v for k, v in read_checkpoint_weights(fname).items()}
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{fname} does not fit this network (trained with nnUNetTrainerDFG_Source and the same plans?): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    module.load_state_dict(weights)
    setattr(module, _LOADED, fname)


def mark_for_full_weights(network: nn.Module) -> None:
    setattr(unwrap(network), _MARK, True)


def loaded_from(network: nn.Module) -> str | None:
    return getattr(unwrap(network), _LOADED, None)


def _fail(error: CheckpointError) -> None:
    print(f"ERROR: {error}", file=sys.stderr)
    sys.exit(2)


def install() -> None:
    """Wrap ``run_training.load_pretrained_weights`` once; harmless if nnU-Net's training entry is not loaded.

    Called before the trainer writes anything: a bad ``-pretrained_weights`` on the command line is rejected
    here with one line, before nnU-Net creates the results folder.
    """
    run_training = sys.modules.get("nnunetv2.run.run_training")
    if run_training is None or getattr(run_training.load_pretrained_weights, "_dfg_wrapper", False):
        return
    if "-pretrained_weights" in sys.argv[:-1]:
        try:
            read_checkpoint_weights(sys.argv[sys.argv.index("-pretrained_weights") + 1])
        except CheckpointError as e:
            _fail(e)
    original = run_training.load_pretrained_weights

    def load_pretrained_weights(network, fname, verbose=False):
        if not getattr(unwrap(network), _MARK, False):
            return original(network, fname, verbose=verbose)
        try:
            load_full_weights(network, fname)
        except CheckpointError as e:
            _fail(e)
        print(f"Loaded the complete source network, classifier included, from {fname}")

    load_pretrained_weights._dfg_wrapper = True
    run_training.load_pretrained_weights = load_pretrained_weights
