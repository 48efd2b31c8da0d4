"""Optimiser parameter groups and per-step schedules (probe training; reusable by pretraining)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and biases + 1-D parameters (norm scales) without decay.

    Same rule as the V-JEPA release: a parameter is exempt when its name ends in `bias` or it has
    at most one dimension. The attentive probe's query tokens are 3-D (1, Q, D), so they are
    decayed, as in the release (keeping the protocol identical matters more than the choice).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "decay": True}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "decay": False})
    return groups


def build_adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)


def cosine_value(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from `start` (step 0) to `end` (step >= total); e.g. a weight-decay ramp."""
    if total <= 0:
        return end
    progress = min(max(step / total, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class CosineSchedule:
    """Per-step learning rate: linear warmup start_lr -> base_lr, then cosine to final_lr.

    `schedule(step)` is the rate for the step-th optimiser update (0-based); it is a pure function
    of the step, so a resumed run only needs the step count, not scheduler state.
    """

    base_lr: float
    final_lr: float
    total_steps: int
    warmup_steps: int = 0
    start_lr: float = 0.0

    def __post_init__(self):
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}], "
                             f"got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_lr + (self.base_lr - self.start_lr) * step / self.warmup_steps
        return cosine_value(step - self.warmup_steps, self.total_steps - self.warmup_steps,
                            self.base_lr, self.final_lr)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
