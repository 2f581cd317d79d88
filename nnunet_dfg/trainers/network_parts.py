"""Where DFG's "features" and "prototypes" live in nnU-Net's dynamic U-Nets, and how to read them.

The full-resolution classifier ``decoder.seg_layers[-1]`` is also registered as ``network.prototype_head`` (the
same module under a second name, as nnU-Net's ``decoder.encoder`` is its ``encoder``). Its weight then appears in
the state dict under a key without ``.seg_layers.``, which nnU-Net's own ``load_pretrained_weights`` transfers:
``nnUNetv2_train -pretrained_weights`` gives an adaptation trainer the source prototypes with no loader of ours.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

PROTOTYPE_HEAD = "prototype_head"
_LOADED = "_dfg_weights_loaded"


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module behind DDP / torch.compile wrappers (their state-dict keys differ)."""
    if isinstance(network, DDP):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def classifier(network: nn.Module) -> nn.Module:
    """The full-resolution 1x1 conv: its weight rows are the class prototypes."""
    return unwrap(network).decoder.seg_layers[-1]


def prototypes(network: nn.Module) -> torch.Tensor:
    """(K, C) prototype matrix (background row first)."""
    weight = classifier(network).weight
    return weight.reshape(weight.shape[0], weight.shape[1])


def _prototype_keys(network: nn.Module, prefix: str) -> list[tuple[str, str]]:
    """(alias key, seg_layers key) of every classifier tensor."""
    canonical = f"decoder.seg_layers.{len(network.decoder.seg_layers) - 1}."
    return [(f"{prefix}{PROTOTYPE_HEAD}.{name}", f"{prefix}{canonical}{name}")
            for name in classifier(network).state_dict()]


def _on_load(network: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook: the alias is the authoritative copy (``load_pretrained_weights`` fills it from
    the file but keeps the freshly initialised ``.seg_layers.`` value); a checkpoint written before the alias
    existed gets it from ``.seg_layers.``, so it still loads strictly (``nnUNetv2_predict``). Marks the network
    as loaded (adaptation trainers refuse to start from random weights)."""
    for alias, canonical in _prototype_keys(network, prefix):
        if alias in state_dict:
            state_dict[canonical] = state_dict[alias]
        elif canonical in state_dict:
            state_dict[alias] = state_dict[canonical]
    setattr(network, _LOADED, True)


def weights_were_loaded(network: nn.Module) -> bool:
    """Whether any state dict (``-pretrained_weights``, a resumed checkpoint) was loaded into the network."""
    return getattr(unwrap(network), _LOADED, False)


def dfg_heads(network: nn.Module) -> nn.Module:
    """Bias-free segmentation heads (logits are exactly prototype . feature) and the ``prototype_head`` alias of
    the full-resolution one (see the module docstring)."""
    for head in network.decoder.seg_layers:
        head.bias = None
    network.add_module(PROTOTYPE_HEAD, network.decoder.seg_layers[-1])
    network.register_load_state_dict_pre_hook(_on_load)
    return network



@contextmanager
def capture_features(network: nn.Module) -> Iterator[list]:
    """Collects the output of the last decoder stage (full resolution, before the classifier) during forwards."""
    store: list = []
    handle = unwrap(network).decoder.stages[-1].register_forward_hook(lambda m, i, o: store.append(o))
    try:
        yield store
    finally:
        handle.remove()
