"""A grid of probe heads trained on one encoder pass.

The frozen encoder's forward is the whole cost of an evaluation; the heads are cheap. A grid of
H heads (every combination of the given learning rates and weight decays, V-JEPA 2's practice)
reads the same tokens, each head with its own AdamW hyperparameters, schedule scale and gradient
clipping, so one run does the work of H runs. Heads never interact: the loss is the sum of the
heads' losses, so each head's gradient is exactly its own.

Selection (`probes.trainer.train_probe`): by default the head is chosen on a validation split
held out from the training data, and only that head is scored on the evaluation split;
`selection: eval_max` (the V-JEPA 2 release's practice) picks the best head on the evaluation
split itself, and is labelled as such in the protocol.

Head order: `grid_points` lists learning rates outer, weight decays inner. Heads whose probe
declares `optim_groups: release` (V-JEPA 2's optimiser, `probes.optim.param_groups`) are put in
the release's order instead, weight decay outer and lr inner, as its configs' `multihead_kwargs`
list them: head k is then built k-th (the same initialisation draw) with the release's k-th
(lr, weight decay), and a release grid checkpoint loads head for head.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from probes.optim import optim_groups_of, param_groups

SELECTIONS = ("val", "eval_max")


def grid_points(grid: dict) -> list[dict]:
    """[{lr, weight_decay}, ...]: the cartesian product of `grid['lr']` x `grid['weight_decay']`."""
    unknown = sorted(set(grid) - {"lr", "weight_decay"})
    if unknown:
        raise ValueError(f"probe.grid: unknown key(s) {unknown}; a grid has lr and weight_decay "
                         f"lists, e.g. grid={{lr: [1e-3, 3e-4], weight_decay: [0.01, 0.1]}}")
    lrs = [float(v) for v in _as_list(grid.get("lr"), "lr")]
    wds = [float(v) for v in _as_list(grid.get("weight_decay"), "weight_decay")]
    if any(v <= 0 for v in lrs) or any(v < 0 for v in wds):
        raise ValueError(f"probe.grid: learning rates must be > 0 and weight decays >= 0, got "
                         f"lr={lrs}, weight_decay={wds}")
    return [{"lr": lr, "weight_decay": wd} for lr, wd in itertools.product(lrs, wds)]


def release_order(points: Sequence[dict]) -> list[dict]:
    """The points with weight decay outer and lr inner (V-JEPA 2's `multihead_kwargs` order):
    each list keeps the order in which its values first appear in `points`."""
    wds = list(dict.fromkeys(p["weight_decay"] for p in points))
    lrs = list(dict.fromkeys(p["lr"] for p in points))
    return sorted((dict(p) for p in points),
                  key=lambda p: (wds.index(p["weight_decay"]), lrs.index(p["lr"])))


def _as_list(value, name: str) -> list:
    if value is None:
        raise ValueError(f"probe.grid needs a list of {name}")
    return list(value) if isinstance(value, (list, tuple)) else [value]


class ProbeGrid(nn.Module):
    """H probes on the same tokens: tokens (B, N, D) -> logits (B, H, C)."""

    def __init__(self, make_probe: Callable[[], nn.Module], points: Sequence[dict]):
        super().__init__()
        if not points:
            raise ValueError("a probe grid needs at least one point")
        self.heads = nn.ModuleList(make_probe() for _ in points)
        # The heads are alike until trained: which head gets which point is only the order.
        release = optim_groups_of(self.heads[0]) == "release"
        self.points = release_order(points) if release else [dict(p) for p in points]

    def forward(self, tokens: torch.Tensor, **inputs) -> torch.Tensor:
        """`inputs`: what the task kind gives the heads besides tokens (boxes for detection)."""
        return torch.stack([head(tokens, **inputs) for head in self.heads], dim=1)

    def __len__(self) -> int:
        return len(self.heads)


def grid_param_groups(grid: ProbeGrid) -> list[dict]:
    """AdamW groups per head (`probes.optim.param_groups`: decayed weights and exempt ones, or
    one group of all with `optim_groups: release`), each carrying the head's own base lr /
    weight decay (the schedules scale them) and its head index."""
    groups = []
    for h, (head, point) in enumerate(zip(grid.heads, grid.points)):
        for g in param_groups(head, point["weight_decay"]):
            g.update(head=h, base_lr=point["lr"], lr=point["lr"],
                     base_wd=point["weight_decay"] if g.get("decay") else 0.0)
            groups.append(g)
    return groups
