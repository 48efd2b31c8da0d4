"""The sigmoid focal loss V-JEPA 2 trains its EK100 anticipation heads with.

As the release's `evals/action_anticipation_frozen/losses.py` (`sigmoid_focal_loss`, RetinaNet's
loss, Lin et al. 2017) computes it: one-hot targets over the K classes, a binary cross-entropy
per class, times (1 - p_t)^gamma, times alpha_t = alpha for the target class and 1 - alpha for
the others (no alpha term when alpha < 0). The release calls it with its defaults (alpha 0.25,
gamma 2, reduction **sum**: summed over the batch and every class, not averaged), once per
output; a step's loss is verb + noun + action. Equal to the release's values and gradients on
fixtures (tests/fixtures/ek100/).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("sum", "mean", "none")


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "sum") -> torch.Tensor:
    """`inputs` logits (B, K), `targets` class indices (B,)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if inputs.ndim != 2:
        raise ValueError(f"inputs must be (batch, classes), got shape {tuple(inputs.shape)}")
    one_hot = F.one_hot(targets, inputs.shape[1]).to(inputs.dtype)
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, one_hot, reduction="none")
    p_t = p * one_hot + (1 - p) * (1 - one_hot)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * one_hot + (1 - alpha) * (1 - one_hot)) * loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss
