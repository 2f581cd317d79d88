"""Bidirectional conditional-transport loss of DFG's feature-aggregation (FA) phase.

Pulls the target-domain pixel features towards the frozen source prototypes (classifier rows) from two sides:
each pixel chooses a class (forward plan, ``p_cls``) and each class chooses pixels (backward plan, ``p_pix``).
The backward term keeps small classes from being swallowed by the majority class, which a plain entropy or
pseudo-label loss does not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FALossConfig:
    """Reference constants (DFG code): tau 1, s 0.5, uniform fixed prior."""

    tau: float = 1.0
    s: float = 0.5
    prior: Optional[Sequence[float]] = None  # per-class pi (background first); None = uniform 1/K


def flatten_features(features: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (N, C): every pixel/voxel of the batch is one transport sample."""
    return features.movedim(1, -1).reshape(-1, features.shape[1])


def fa_loss_terms(features: torch.Tensor, prototypes: torch.Tensor, tau: float = 1.0,
                  prior: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two transport terms for ``features`` (N, C) and ``prototypes`` (K, C).

    Returns ``(mean_n sum_k cost * p_cls, sum_k pi_k sum_n cost * p_pix)``. Logits are raw dot products (the
    bias-free classifier's output); the cost is cosine distance, so the plans follow the classifier while the cost
    measures direction only.
    """
    num_classes = prototypes.shape[0]
    if prior is None:
        prior = torch.full((num_classes,), 1.0 / num_classes, dtype=features.dtype, device=features.device)
    prior = prior.to(features.dtype).to(features.device)
    sim = prototypes @ features.T  # (K, N)
    cost = 1.0 - F.normalize(prototypes, dim=1) @ F.normalize(features, dim=1).T
    p_cls = torch.softmax(sim / tau + torch.log(prior)[:, None], dim=0)
    p_pix = torch.softmax(sim / tau, dim=1)
    forward = (cost * p_cls).sum(0).mean()
    backward = (prior * (cost * p_pix).sum(1)).sum()
    return forward, backward


def fa_loss(features: torch.Tensor, prototypes: torch.Tensor, config: FALossConfig = FALossConfig()) -> torch.Tensor:
    """``s * forward + (1 - s) * backward`` on (N, C) features."""
    prior = None if config.prior is None else torch.as_tensor(config.prior, dtype=features.dtype)
    forward, backward = fa_loss_terms(features, prototypes, config.tau, prior)
    return config.s * forward + (1.0 - config.s) * backward
