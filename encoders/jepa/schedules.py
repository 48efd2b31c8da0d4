"""Pretraining schedules as pure functions of the optimisation step, plus the EMA update.

Being functions of `step` (not stateful schedulers) is what makes resume exact: a resumed run
recomputes lr, weight decay and EMA momentum from the saved step alone.

Facts from the V-JEPA release (`src/utils/schedulers.py`, `app/vjepa/train.py`): the schedulers
are stepped *before* each optimisation step, so step s (0-based) uses the value at s + 1;
lr warms up linearly start -> peak, then follows a cosine to `final_lr` over the remaining steps;
weight decay follows a cosine from `weight_decay` to `final_weight_decay` over the whole run;
the EMA momentum is linear from ema[0] to ema[1] over the run. All three run over the *schedule*
length, which the release makes `ipe_scale` x the run (`int()` of it for lr and wd, the float
product for the EMA), so with ipe_scale 1.25 a run ends at lr 7.5e-5 and EMA 0.9996, not at
final_lr and ema[1]. `schedule_length` None: the schedules end at the run's last step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedules:
    """All step-dependent hyperparameters of a run of `total_steps` optimisation steps.

    `schedule_length`: steps the schedules span (None: `total_steps`)."""

    total_steps: int
    warmup_steps: int
    start_lr: float
    lr: float
    final_lr: float
    weight_decay: float
    final_weight_decay: float
    ema_start: float
    ema_end: float
    schedule_length: float | None = None

    configured_warmup: int | None = None  # before the clamp to a tenth of a short run

    @classmethod
    def from_optim(cls, opt: dict, steps_per_epoch: int) -> "Schedules":
        """The schedules of a resolved config's `optim` section at `steps_per_epoch` (ipe).

        Run length: `total_steps`, else epochs x ipe. Schedule length: `schedule_steps`, else
        ipe_scale x the run (the release: T = ipe_scale * epochs * ipe)."""
        total = opt["total_steps"] or int(round(float(opt["epochs"]) * steps_per_epoch))
        length = (float(opt["schedule_steps"]) if opt.get("schedule_steps") is not None
                  else float(opt.get("ipe_scale", 1.0)) * total)
        warmup = opt["warmup_steps"]
        if warmup is None:
            warmup = int(float(opt["warmup_epochs"]) * steps_per_epoch)
        configured = int(warmup)
        if warmup >= int(length):  # a shortened schedule would otherwise never leave warmup
            warmup = int(length) // 10
        return cls(total_steps=int(total), warmup_steps=int(warmup), start_lr=float(opt["start_lr"]),
                   lr=float(opt["lr"]), final_lr=float(opt["final_lr"]),
                   weight_decay=float(opt["weight_decay"]),
                   final_weight_decay=float(opt["final_weight_decay"]),
                   ema_start=float(opt["ema"][0]), ema_end=float(opt["ema"][1]),
                   schedule_length=length, configured_warmup=configured)

    @property
    def length(self) -> float:
        return float(self.total_steps if self.schedule_length is None else self.schedule_length)

    @property
    def schedule_steps(self) -> int:
        return int(self.length)

    def learning_rate(self, step: int) -> float:
        s = step + 1
        if s < self.warmup_steps:
            return self.start_lr + (s / max(1, self.warmup_steps)) * (self.lr - self.start_lr)
        progress = (s - self.warmup_steps) / max(1, self.schedule_steps - self.warmup_steps)
        cosine = self.final_lr + (self.lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(self.final_lr, cosine)

    def wd(self, step: int) -> float:
        progress = (step + 1) / max(1, self.schedule_steps)
        value = self.final_weight_decay + (self.weight_decay - self.final_weight_decay) * 0.5 * (
            1.0 + math.cos(math.pi * progress))
        # Clamp at the end value in the direction of travel (cosine past T would turn back).
        if self.final_weight_decay <= self.weight_decay:
            return max(self.final_weight_decay, value)
        return min(self.final_weight_decay, value)

    def momentum(self, step: int) -> float:
        return self.ema_start + step * (self.ema_end - self.ema_start) / max(1.0, self.length)


@torch.no_grad()
def ema_update(target: torch.nn.Module, online: torch.nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter.

    Frozen parameters (fixed sin-cos position embeddings) are identical in both and stay so.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError(f"EMA: target has {len(t_params)} parameters, online {len(o_params)}")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)
