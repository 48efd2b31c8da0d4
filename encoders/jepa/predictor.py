"""The JEPA predictor: a narrow transformer that fills in target tokens from context tokens.

Layout as in the V-JEPA release (`src/models/predictor.py`): Linear D -> width, a learned mask
token per mask config (zero init), the fixed sin-cos position embedding of the token grid added
to the context tokens and to the mask tokens at the target positions, transformer blocks over
[context | targets], LayerNorm, Linear width -> out_dim (D for latent targets; the pixels of a
tubelet for the pixel variant). Only the outputs at target positions are returned.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from timm.models.vision_transformer import Block

from ..pos_embed import sincos_2d, sincos_3d


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), index (B, K) -> (B, K, C): the tokens at `index`, per sample."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


class Predictor(nn.Module):
    """JEPA predictor over a token grid (t, h, w).

    forward(context, context_index, target_index, mask_index=0):
        context (B, Kc, embed_dim) encoder tokens at `context_index` (B, Kc);
        target_index (B, Kt) or a list of them (I-JEPA: one per target block, each predicted
        from the same context);
        returns (B, Kt, out_dim), or a list of them when a list was given.
    """

    def __init__(self, grid, embed_dim: int, width: int = 384, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, num_mask_tokens: int = 1,
                 out_dim: int | None = None, uniform_power: bool = True, video: bool = True,
                 zero_init_mask_tokens: bool = True, init_std: float = 0.02):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.embed_dim, self.width = int(embed_dim), int(width)
        self.out_dim = int(out_dim or embed_dim)
        self.predictor_embed = nn.Linear(self.embed_dim, self.width)
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, self.width)) for _ in range(int(num_mask_tokens))])
        t, h, w = self.grid
        if video:
            pos = sincos_3d(self.width, t, h, w, uniform_power=uniform_power)
        else:
            if t != 1:
                raise ValueError(f"an image predictor needs a grid with t=1, got {self.grid}")
            pos = sincos_2d(self.width, h, w)
        # Fixed, but a Parameter (requires_grad False) as in the release: its checkpoints and
        # optimiser parameter groups count it, so theirs and ours line up index for index.
        self.predictor_pos_embed = nn.Parameter(pos.unsqueeze(0), requires_grad=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.predictor_blocks = nn.ModuleList([
            Block(self.width, int(num_heads), mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(int(depth))])
        self.predictor_norm = norm(self.width)
        self.predictor_proj = nn.Linear(self.width, self.out_dim)
        self._init_weights(init_std, zero_init_mask_tokens)

    def _init_weights(self, std: float, zero_mask_tokens: bool) -> None:
        # The release's order (mask tokens, then the modules), so one seed gives its weights.
        if not zero_mask_tokens:
            for tok in self.mask_tokens:
                nn.init.trunc_normal_(tok, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Residual branches scaled down with depth (release: divide by sqrt(2 * layer)).
        for i, blk in enumerate(self.predictor_blocks, start=1):
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * i))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * i))

    def forward(self, context, context_index, target_index, mask_index: int = 0):
        many = isinstance(target_index, (list, tuple))
        targets = list(target_index) if many else [target_index]
        if len({t.shape[1] for t in targets}) > 1:  # unequal target sets: one pass each
            return [self._predict(context, context_index, [t], mask_index)[0] for t in targets]
        out = self._predict(context, context_index, targets, mask_index)
        return out if many else out[0]

    def _predict(self, context, context_index, targets, mask_index):
        b, n_ctx, _ = context.shape
        pos = self.predictor_pos_embed.to(context.dtype).expand(b, -1, -1)
        x = self.predictor_embed(context) + gather_tokens(pos, context_index)
        token = self.mask_tokens[mask_index % len(self.mask_tokens)]
        # Several target sets share one context: stack them along the batch, one pass.
        x = x.repeat(len(targets), 1, 1)
        tgt_index = torch.cat(targets, dim=0)
        pos_all = self.predictor_pos_embed.to(context.dtype).expand(tgt_index.size(0), -1, -1)
        queries = token.to(x.dtype) + gather_tokens(pos_all, tgt_index)
        x = torch.cat([x, queries], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        x = self.predictor_proj(self.predictor_norm(x[:, n_ctx:]))
        return list(x.split(b, dim=0))
