"""What every task kind and every evaluation scorer provides (`probes.kinds` has the kinds;
`probes.anticipation` the anticipation kind): the abstract bases, apart so that a kind in its own
module and the dispatcher in `probes.kinds` import them without importing each other."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Kind(ABC):
    name = ""
    primary = ""            # the metric that selects a grid head and the progress bar shows
    train_metric: str | None = None  # a per-step training score ('train_top1'), if any

    @abstractmethod
    def target(self, batch: dict, device) -> torch.Tensor:
        """What the loss compares with, on `device`."""

    def probe_inputs(self, batch: dict, device) -> dict:
        return {}

    def forward(self, probe, tokens: torch.Tensor, inputs: dict, autocast) -> torch.Tensor:
        """tokens (B, V, L, D) -> logits (B, V, C), or (B, V, H, C) for a `ProbeGrid`."""
        b, v = tokens.shape[:2]
        with autocast():
            logits = probe(tokens.flatten(0, 1), **inputs)
        return logits.float().reshape(b, v, *logits.shape[1:])

    @abstractmethod
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(loss summed over units and heads, units) for one view's logits (n, [H,] C)."""

    def hits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Correct training predictions summed over a grid's heads, a 0-d float tensor left on
        the device (only with `train_metric`; the trainer reads a step's counts at once and
        divides by the heads): no host sync per micro-batch."""
        return None

    @abstractmethod
    def merge(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores with the views merged: (B, V, [H,] C) -> (B, [H,] C)."""

    @abstractmethod
    def scorer(self, device) -> Scorer:
        """A fresh scorer of one evaluation pass."""


def per_head(logits: torch.Tensor, target: torch.Tensor):
    """Logits (n, H, C) with the target repeated per head, flattened to (n*H, C)."""
    heads = logits.shape[1]
    return logits.reshape(-1, logits.shape[-1]), target.repeat_interleave(heads, dim=0), heads


# --------------------------------------------------------------------------------------------
# scoring an evaluation pass


class Scorer(ABC):
    """Metrics over a pass: `update` per micro-batch, `merge_ranks` once under DDP (collective),
    `compute` -> {name: percent}; `predictions(parts)` the per-sample arrays saved beside the
    record. `kept(scores, target, batch)` is what a micro-batch contributes to the predictions."""

    @abstractmethod
    def update(self, scores: torch.Tensor, target: torch.Tensor, batch: dict) -> None:
        """Add one micro-batch's merged scores."""

    def progress(self) -> str:
        return ""

    @abstractmethod
    def merge_ranks(self, total_micro: int) -> None:
        """Combine every rank's share (collective; DDP only)."""

    @abstractmethod
    def empty(self) -> bool:
        """True when no readable sample was scored."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics of the pass."""

    @abstractmethod
    def kept(self, scores, target, batch) -> tuple:
        """What one micro-batch contributes to the per-sample predictions."""

    @staticmethod
    @abstractmethod
    def predictions(parts: list[tuple]) -> dict:
        """The per-sample arrays saved beside the record, from the kept parts."""
