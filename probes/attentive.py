"""Attentive probe: learnable queries cross-attend to a frozen encoder's tokens, then a linear head.

Structure follows the V-JEPA release's `AttentiveClassifier` (facebookresearch/jepa,
`src/models/attentive_pooler.py`), and the parameter names are kept identical
(`pooler.query_tokens`, `pooler.cross_attention_block.{norm1,xattn.q,xattn.kv,xattn.proj,norm2,
mlp.fc1,mlp.fc2}`, `pooler.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
`linear`) so a probe checkpoint from the release loads with `load_release_state_dict`.

Facts checked against the release:
- only the tokens are LayerNorm-ed before the cross-attention; the query token is not;
- query and key/value projections are separate Linear layers (`q`: D->D, `kv`: D->2D) with bias;
- `xattn.proj` and `mlp.fc2` weights are divided by sqrt(2) after init (depth-scaled init);
- with depth > 1 the V-JEPA 2 probe runs depth-1 self-attention blocks over the *tokens* before
  the cross-attention (the V-JEPA 1 code applied them to the query, where with one query they do
  little); we follow V-JEPA 2.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.reshape(b, n, num_heads, d // num_heads).transpose(1, 2)  # (B, H, N, D/H)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


class CrossAttention(nn.Module):
    """Multi-head attention from queries `q` (B, n, D) to tokens `x` (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.q(q), self.num_heads)
        k, v = self.kv(x).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            q, _split_heads(k, self.num_heads), _split_heads(v, self.num_heads))
        return self.proj(_merge_heads(out))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttentionBlock(nn.Module):
    """q <- q + xattn(q, LN(x)); q <- q + MLP(LN(q)). The query itself is not normalised."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class Block(nn.Module):
    """Pre-norm transformer block over the tokens (used when depth > 1)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, num_queries: int = 1, depth: int = 1,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, init_std: float = 0.02):
        super().__init__()
        if depth < 1 or num_queries < 1:
            raise ValueError(f"depth and num_queries must be >= 1 (got depth={depth}, "
                             f"num_queries={num_queries})")
        self.init_std = init_std
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.blocks = (nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias)
                                     for _ in range(depth - 1)) if depth > 1 else None)
        self.cross_attention_block = CrossAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias)
        nn.init.trunc_normal_(self.query_tokens, std=init_std)
        self.apply(self._init_weights)
        self._rescale_residual_branches()

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=self.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.no_grad()
    def _rescale_residual_branches(self) -> None:
        # Outputs of residual branches are shrunk by sqrt(2 * layer) so deeper stacks start close
        # to identity (as in the release; layer ids count the token blocks first).
        layers = list(self.blocks or [])
        for layer_id, blk in enumerate(layers, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))
        last = len(layers) + 1
        self.cross_attention_block.xattn.proj.weight.div_(math.sqrt(2.0 * last))
        self.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0 * last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blocks is not None:
            for blk in self.blocks:
                x = blk(x)
        q = self.query_tokens.expand(x.shape[0], -1, -1)
        return self.cross_attention_block(q, x)  # (B, num_queries, D)


class AttentiveProbe(nn.Module):
    """Attentive pooler + linear head: tokens (B, N, D) -> logits (B, num_classes).

    With several queries the head reads the mean of the query outputs.
    """

    kind = "attentive"

    def __init__(self, embed_dim: int, num_classes: int, num_heads: int, num_queries: int = 1,
                 depth: int = 1, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_std: float = 0.02):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.pooler = AttentivePooler(embed_dim, num_heads, num_queries, depth, mlp_ratio,
                                      qkv_bias, init_std)
        self.linear = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"attentive probe expects tokens (B, N, {self.embed_dim}), "
                             f"got {tuple(tokens.shape)}")
        return self.linear(self.pooler(tokens).mean(dim=1))


def load_release_state_dict(probe: AttentiveProbe, state: Mapping[str, torch.Tensor]) -> None:
    """Load a V-JEPA release probe state dict (its `classifier` entry) into `probe`.

    The release saves the DDP-wrapped module, so keys carry a `module.` prefix; it is stripped.
    Loading is strict: missing or unexpected keys are an error that names them.
    """
    cleaned = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = probe.load_state_dict(cleaned, strict=False)
    if missing or unexpected:
        raise ValueError(f"probe checkpoint does not match AttentiveProbe: missing keys "
                         f"{sorted(missing)}, unexpected keys {sorted(unexpected)}")
