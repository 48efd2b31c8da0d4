"""Linear probe: mean-pooled tokens -> non-affine LayerNorm -> Linear.

Why a normalisation at all: encoders' token scales differ by orders of magnitude (VideoMAE's
un-normalised features vs. V-JEPA's LayerNorm-ed ones), and a plain linear layer trained with one
learning rate would then favour some encoders. MAE-style linear probing uses a BatchNorm without
affine for this; we use LayerNorm without affine instead because it is per sample: identical in
training and evaluation, independent of batch size and of DDP synchronisation, and a
non-affine normalisation followed by a linear layer is still a linear classifier of the
(standardised) features.
"""
from __future__ import annotations

import torch
from torch import nn


class LinearProbe(nn.Module):
    kind = "linear"

    def __init__(self, embed_dim: int, num_classes: int, init_std: float = 0.02):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.norm = nn.LayerNorm(embed_dim, elementwise_affine=False)
        self.linear = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"linear probe expects tokens (B, N, {self.embed_dim}), "
                             f"got {tuple(tokens.shape)}")
        return self.linear(self.norm(tokens.mean(dim=1)))
