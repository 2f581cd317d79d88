"""Where DFG's "features" and "prototypes" live in nnU-Net's dynamic U-Nets, and how to read them."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP


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


def remove_classifier_bias(network: nn.Module) -> nn.Module:
    """Drop the bias of every segmentation head so logits are exactly prototype . feature."""
    for head in unwrap(network).decoder.seg_layers:
        head.bias = None
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
