"""Optimisation of a probe: its config, AdamW groups, per-step schedules and the gradient sum.

Follows the release's `eval.py`: AdamW, lr cosine (schedulers stepped *before* each update, so
update k uses the value at k+1), weight decay cosine from `weight_decay` to `final_weight_decay`
(the release's 1e-6) on the decayed group, gradient norm clipped at `clip_grad_norm` (1.0). Which
parameters are decayed is the probe's `optim_groups` (`param_groups`). A
`probes.grid.ProbeGrid` gets per-head groups with their own lr / wd (the protocol's schedule
scaled to each) and per-head clipping. `param_groups`, `cosine_value` and `CosineSchedule` are
reusable by pretraining.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

import parallel
from common.fields import bounded, check_ranges


@dataclass
class OptimConfig:
    """Optimisation of one probe. `batch_size` is the global batch (protocol);
    `micro_batch_size` (memory) and `num_workers` (throughput) are not protocol."""

    epochs: int = bounded(low=1)
    batch_size: int = bounded(low=1)
    lr: float = bounded(low=0, low_open=True, high=1,
                        why="AdamW probes train at 1e-5 to 1e-2; the paper uses 1e-3")
    final_lr: float = bounded(0.0, low=0, high=1)
    warmup_epochs: float = bounded(0, low=0)
    weight_decay: float = bounded(0.01, low=0)
    final_weight_decay: float = bounded(1e-6, low=0)
    clip_grad_norm: float | None = bounded(1.0, low=0, low_open=True)
    bf16: bool = True
    micro_batch_size: int | None = bounded(None, low=1)
    # Loader processes (throughput, not protocol): `auto` is what the machine has.
    num_workers: int | Literal["auto"] = bounded(0, low=0)

    NOT_PROTOCOL = ("micro_batch_size", "num_workers")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "micro_batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in ("lr", "final_lr", "weight_decay", "final_weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        nw = self.num_workers
        if nw != "auto" and (not isinstance(nw, int) or isinstance(nw, bool)):
            raise ValueError(f"num_workers must be an integer or auto, got {nw!r}")
        check_ranges(self)
        if not self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown optimisation keys {unknown}; valid keys: {sorted(known)}")
        required = [f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"optimisation config lacks required keys {missing}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def protocol(self) -> dict[str, Any]:
        """The fields that change the numbers (`bf16` is a request; the precision that ran is
        recorded by the runner)."""
        d = self.to_dict()
        for k in self.NOT_PROTOCOL + ("bf16",):
            d.pop(k)
        return d


# How a probe's parameters meet AdamW's weight decay (a probe declares it as `optim_groups`):
# `split`, this harness's: biases and 1-D parameters (norm scales) are not decayed;
# `release`, V-JEPA 2's `eval.py init_opt`: one group per head, every parameter decayed (biases,
# LayerNorms and the query tokens too), and a grid's heads in its config's order (weight decay
# outer, lr inner; `probes.grid.ProbeGrid`).
OPTIM_GROUPS = ("split", "release")


def optim_groups_of(model: nn.Module) -> str:
    """The model's `optim_groups` (`split` when it declares none), checked."""
    mode = getattr(model, "optim_groups", None) or "split"
    if mode not in OPTIM_GROUPS:
        raise ValueError(f"optim_groups must be one of {OPTIM_GROUPS}, got {mode!r}")
    return mode


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups of a model's trainable parameters, as its `optim_groups` says.

    `split` (default): decayed weights, and biases + 1-D parameters without decay (the V-JEPA
    release's rule: a parameter is exempt when its name ends in `bias` or it has at most one
    dimension; the attentive probe's query tokens are 3-D (1, Q, D), so they are decayed).
    `release`: one group, every parameter decayed, as V-JEPA 2's `eval.py` builds each head's.
    """
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if optim_groups_of(model) == "release":
        return [{"params": [p for _, p in params], "weight_decay": weight_decay, "decay": True}]
    decay, no_decay = [], []
    for name, p in params:
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


class GradSum:
    """The float64 sum of a step's micro-batch gradients, over every rank, rounded once.

    Adding float32 gradients in float64 is exact unless two terms differ by more than 2**28 in
    magnitude, so the total does not depend on how the micro-batches were grouped on ranks;
    rounded to float32 it is the same in one process and on any number of ranks."""

    def __init__(self, params: list, device):
        self.params = params
        self.sizes = [p.numel() for p in params]
        self.total = torch.zeros(sum(self.sizes), dtype=torch.float64, device=device)
        self.touched = torch.zeros(len(params), dtype=torch.float64, device=device)

    def add(self) -> None:
        """Move the gradients of the last backward() into the sum."""
        for i, (part, p) in enumerate(zip(self.total.split(self.sizes), self.params)):
            if p.grad is not None:
                part.add_(p.grad.reshape(-1))
                self.touched[i] = 1
                p.grad = None

    def finish(self) -> None:
        """Sum over the ranks and hand each parameter its gradient (None where no rank had one,
        as AdamW then leaves the parameter alone, like a single process)."""
        parallel.all_sum_(self.total)
        parallel.all_sum_(self.touched)
        for part, p, touched in zip(self.total.split(self.sizes), self.params, self.touched.tolist()):
            p.grad = part.view_as(p).to(p.dtype) if touched else None


class ProbeOptimiser:
    """AdamW over a probe (per-head groups for a grid) stepped on the protocol's schedules.

    Per optimiser update: `begin(g)` sets every group's lr and weight decay for global step g and
    clears the gradients; `grad_sum(num_micro, device)` the float64 accumulator a step of several
    micro-batches (or ranks) needs; `update(units_ok, size)` rescales, clips and steps."""

    def __init__(self, probe: nn.Module, optim: OptimConfig, steps_per_epoch: int,
                 groups: list[dict] | None = None):
        """`groups`: AdamW groups carrying their own `base_lr` / `base_wd` (a grid's,
        `probes.grid.grid_param_groups`); default the probe's two groups at the protocol's."""
        self.optim = optim
        self.total = optim.epochs * steps_per_epoch
        self.schedule = CosineSchedule(optim.lr, optim.final_lr, self.total,
                                       warmup_steps=round(optim.warmup_epochs * steps_per_epoch))
        if groups is not None:
            self.opt = torch.optim.AdamW(groups)
        else:
            self.opt = build_adamw(probe, optim.lr, optim.weight_decay)
        self.params = [p for p in probe.parameters() if p.requires_grad]
        heads = getattr(probe, "heads", None)
        self.clip_groups = ([[p for p in h.parameters() if p.requires_grad] for h in heads]
                            if heads is not None else [self.params])
        self._decay_group = self.opt.param_groups[0]

    def lr(self, g: int) -> float:
        """The protocol's lr of update g: the release steps its schedulers before each update,
        so update g uses the value at g+1."""
        return self.schedule(min(g + 1, self.total))

    def begin(self, g: int) -> float:
        """Set the groups' lr and weight decay for update g, clear the gradients; the lr."""
        optim, lr = self.optim, self.lr(g)
        factor = lr / optim.lr  # a grid head's schedule is the protocol's, scaled to its own lr
        for group in self.opt.param_groups:
            group["lr"] = group.get("base_lr", optim.lr) * factor
            if group.get("decay", group is self._decay_group):
                base = group.get("base_wd", optim.weight_decay)
                group["weight_decay"] = cosine_value(g + 1, self.total, base,
                                                     min(optim.final_weight_decay, base))
        self.opt.zero_grad(set_to_none=True)
        return lr

    def grad_sum(self, num_micro: int, device) -> GradSum | None:
        """A step of several micro-batches (or ranks) sums their gradients in float64 and rounds
        once: the sum is then the same in any order, so micro-batches spread over any number of
        ranks give the weights of one process (float32 accumulation depends on the order)."""
        if parallel.world_size() > 1 or num_micro > 1:
            return GradSum(self.params, device)
        return None

    def update(self, units_ok: int, size: int) -> None:
        """One AdamW update on the gradients of `units_ok` loaded units of a global batch of
        `size` (nothing happens when none loaded)."""
        if not units_ok:
            return
        # Unreadable samples (or a step's box count): the mean over the units that loaded.
        if units_ok != size:
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(size / units_ok)
        if self.optim.clip_grad_norm is not None:
            for part in self.clip_groups:  # each head clipped on its own norm
                torch.nn.utils.clip_grad_norm_(part, self.optim.clip_grad_norm)
        self.opt.step()

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)
