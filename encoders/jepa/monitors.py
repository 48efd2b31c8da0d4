"""What a pretraining run watches besides its loss: the effective rank of the latent targets
(with a warning when they collapse) and the context gain (does the predictor use what the
encoder saw?). Neither draws random numbers, so a resumed run stays exact.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

log = logging.getLogger(__name__)

COLLAPSE_FRACTION = 0.25  # a fall below this share of the first logged rank warns


@torch.no_grad()
def effective_rank(tokens: torch.Tensor, max_tokens: int = 4096) -> float:
    """exp(entropy) of the centred tokens' normalised singular-value spectrum (Roy & Vetterli).

    About the width for well-spread features, 1 when every token points the same way. JEPA
    objectives can collapse to a few directions while the loss keeps falling, which a frozen
    probe then pays for; this number is how a run shows it. Tokens are subsampled by a fixed
    stride, so no random state is used (resume stays exact).
    """
    x = tokens.detach().reshape(-1, tokens.shape[-1]).float()
    if x.shape[0] > max_tokens:
        x = x[:: -(-x.shape[0] // max_tokens)]
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x).pow(2)  # on the tokens' device: no per-step copy to the host
    if float(s.sum()) <= 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


class CollapseWatch:
    """Effective rank of each logged step's latent targets; warns once when it falls below a
    quarter of the first value (partial collapse: the loss can fall while features degrade).

    `first`: the reference, e.g. the first `target_rank` of a resumed run's metrics.csv."""

    def __init__(self, first: float | None = None):
        self.first = first
        self.warned = False

    def __call__(self, targets: torch.Tensor, step: int) -> float:
        rank = effective_rank(targets)
        if self.first is None:
            self.first = rank
        elif rank < COLLAPSE_FRACTION * self.first and not self.warned:
            self.warned = True
            log.warning(
                "target features are collapsing: effective rank %.1f at step %d, %.1f at the "
                "start (metrics.csv, target_rank); lower optim.lr or raise optim.ema",
                rank, step, self.first)
        return round(rank, 3)


@torch.no_grad()
def context_gain(predictor: torch.nn.Module, contexts, targets, h: torch.Tensor,
                 loss: torch.Tensor, loss_fn: Callable,
                 autocast: Callable[[], AbstractContextManager]) -> float:
    """Loss with the context features zeroed (the predictor keeps only the positions) minus
    the loss. Near zero or negative: the predictor ignores what the encoder saw, so the
    encoder gets no useful signal (a tiny run at the release's lr ratios did exactly that).

    `loss_fn(preds, targets, h)` is the step's loss; `autocast()` the step's autocast context."""
    blind = []
    for i, (context, target_sets) in enumerate(zip(contexts, targets)):
        zeros = torch.zeros(*context.shape, predictor.embed_dim, device=context.device)
        with autocast():
            blind.append(predictor(zeros, context, list(target_sets), mask_index=i))
    return float(loss_fn(blind, targets, h) - loss.detach())


__all__ = ["COLLAPSE_FRACTION", "CollapseWatch", "context_gain", "effective_rank"]
