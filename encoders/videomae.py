"""VideoMAE / VideoMAEv2 family: their ViT with our names, and converters for the release and HF layouts.

Facts from the releases (`MCG-NJU/VideoMAE` `modeling_finetune.py` / `modeling_pretrain.py`,
`OpenGVLab/VideoMAEv2` `models/modeling_finetune.py` / `models/modeling_pretrain.py`) that this
module reproduces:

* Tubelet embedding: one Conv3d, kernel = stride = (tubelet, patch, patch), tokens in (t, h, w) order.
* Attention: a fused `qkv` weight *without* bias, plus separate `q_bias` and `v_bias`; the key bias
  is fixed at zero (`cat(q_bias, zeros, v_bias)`). VideoMAEv2 optionally has cosine attention
  (`cos_attn`: L2-normalised q and k, a learned per-head log-scale `attn.scale`, clamped at 4.6052
  ~ log 100, then exp) and layer scale (`init_values` > 0: `gamma_1`, `gamma_2`). None of the
  released VideoMAEv2 models (ViT-g, distilled ViT-S/B) turns either on; both are supported so a
  checkpoint that has them loads strictly rather than half.
* LayerNorm eps 1e-6 everywhere, GELU (erf) MLPs; ViT-g/14 has MLP width 6144 (`mlp_ratio` 48/11).
* Position embedding: a fixed 1-D sinusoid table over the flattened token index (t*h*w positions),
  `get_sinusoid_encoding_table`, interleaved sin/cos (even channels sin, odd cos). It is a plain
  tensor attribute in the release, so checkpoints never store it; we compute it too.
  *Other grids:* the release builds the table for the number of patches it was constructed with
  and has no interpolation for it (its fine-tune loader resamples `pos_embed` only when a file
  stores one, which only the unused learnable option does); a model built for another frame count
  or resolution simply gets a fresh 1-D table of that length. We do the same for any input grid:
  `sinusoid_table(t*h*w, D)`. Note that the table is 1-D, so on another grid a flat index lands
  on a different (t, h, w) place than in training; this is the release's behaviour, not ours.
  (VideoMAE v1's *pretraining* encoder even builds its table for 16 frames whatever
  `--num_frames` says; at 16 frames, the released setting, that is the same table.)
* Final norm. Pretraining encoders (`encoder.norm`) and `use_mean_pooling=False` fine-tuned models
  (`norm`) normalise every token. Fine-tuned `use_mean_pooling=True` models (the released default)
  have `norm = Identity` and a `fc_norm` applied to the *mean* of the block outputs. For frozen
  tokens we return the block outputs passed through whichever of the two the file has (`fc_norm`
  applied per token in the second case): it is the only LayerNorm the file holds that was trained
  on the final block's outputs, and layer taps get the same norm, as `encoders.vit` does.
  `VideoMAEViT.pooled(x)` gives the release's own fine-tuned feature, `fc_norm(mean(tokens))`.

Checkpoint layouts (release, pretraining, VideoMAEv2, Hugging Face) are converted in
`encoders.videomae_checkpoint`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .vit import PatchEmbed3D, gather_tokens

COS_ATTN_MAX_LOG_SCALE = 4.6052  # the release's constant (log(1 / 0.01), rounded)


# ----- position table -------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _sinusoid_table_cpu(num_positions: int, dim: int) -> torch.Tensor:
    # angle(p, j) = p / 10000 ** (2 * (j // 2) / dim): the denominators are Python float powers,
    # as the release's numpy code computes them, so the float32 table comes out identical.
    denom = torch.tensor([10000.0 ** (2 * (j // 2) / dim) for j in range(dim)], dtype=torch.float64)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] / denom[None, :]
    table = torch.empty_like(angles)
    table[:, 0::2] = angles[:, 0::2].sin()
    table[:, 1::2] = angles[:, 1::2].cos()
    return table.float()


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """(num_positions, dim) float32: the release's `get_sinusoid_encoding_table` without its batch dim."""
    return _sinusoid_table_cpu(int(num_positions), int(dim)).clone()


# ----- model ----------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention with the release's parameters: `qkv.weight`, `q_bias`, `v_bias` (k bias 0)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, cos_attn: bool = False, device=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.cos_attn = cos_attn
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, device=device)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim, device=device))
            self.v_bias = nn.Parameter(torch.zeros(dim, device=device))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        if cos_attn:  # learned log logit scale per head, initialised at log 10 (the release's name)
            self.scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0), device=device))
        self.proj = nn.Linear(dim, dim, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.cos_attn:
            logit_scale = torch.clamp(self.scale, max=COS_ATTN_MAX_LOG_SCALE).exp()
            q = F.normalize(q, dim=-1) * logit_scale.to(q.dtype)
            k = F.normalize(k, dim=-1)
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as the release
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, device=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; `gamma_1` / `gamma_2` (layer scale) only when `init_values` > 0."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True, cos_attn: bool = False,
                 init_values: float = 0.0, norm_eps: float = 1e-6, device=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, device=device)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, cos_attn=cos_attn, device=device)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, device=device)
        self.mlp = Mlp(dim, mlp_hidden, device=device)
        if init_values and init_values > 0:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values), device=device))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values), device=device))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class VideoMAEViT(nn.Module):
    """The VideoMAE / VideoMAEv2 encoder: (B, C, T, H, W) -> tokens (B, T/t * H/p * W/p, D). No cls token."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        mlp_hidden_dim: int | None = None,
        qkv_bias: bool = True,
        cos_attn: bool = False,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
        final_norm: bool = True,
        final_norm_eps: float | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.embed_dim = self.num_features = embed_dim
        self.num_heads, self.depth = num_heads, depth
        # int(dim * ratio), as the release computes it (ViT-g: int(1408 * 48 / 11) = 6144).
        self.mlp_hidden_dim = int(mlp_hidden_dim) if mlp_hidden_dim is not None else int(embed_dim * mlp_ratio)
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim, device=device)
        self.grid = self.grid_for(num_frames, img_size, img_size)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, self.mlp_hidden_dim, qkv_bias=qkv_bias, cos_attn=cos_attn,
                  init_values=init_values, norm_eps=norm_eps, device=device)
            for _ in range(depth)
        ])
        eps = norm_eps if final_norm_eps is None else final_norm_eps
        self.norm = nn.LayerNorm(embed_dim, eps=eps, device=device) if final_norm else nn.Identity()
        self._tables: dict[tuple[int, str], torch.Tensor] = {}  # position tables per (N, device); not state
        if torch.device(device or "cpu").type != "meta":  # a meta model is filled by a checkpoint
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The fine-tuning model's init: trunc-normal(0.02) linears, zero biases, unit LayerNorms.

        (q_bias / v_bias start at zero, the Conv3d keeps PyTorch's default, as in the release.)
        """
        from timm.layers import trunc_normal_

        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def grid_for(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        if num_frames % self.tubelet_size:
            raise ValueError(f"{num_frames} frames is not a multiple of the tubelet size {self.tubelet_size}")
        return (num_frames // self.tubelet_size, height // self.patch_size, width // self.patch_size)

    def position_table(self, grid: tuple[int, int, int], device=None) -> torch.Tensor:
        """(1, N, D) fixed table for `grid`: the 1-D sinusoid over N = t*h*w flat positions."""
        n = math.prod(grid)
        key = (n, str(device))
        if key not in self._tables:
            self._tables[key] = sinusoid_table(n, self.embed_dim).unsqueeze(0).to(device)
        return self._tables[key]

    def _embed(self, x: torch.Tensor, masks) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"VideoMAE expects video (B, C, T, H, W), got shape {tuple(x.shape)}")
        grid = self.grid_for(*x.shape[2:])
        x = self.patch_embed(x)
        x = x + self.position_table(grid, x.device).to(x.dtype)
        if masks is not None:
            x = gather_tokens(x, masks)
        return x

    def forward(self, x: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
                out_layers: Sequence[int] | None = None):
        """Tokens (B, N, D), normed by the final norm; the contract of `encoders.vit.VisionTransformer`.

        masks: optional (B, K) token indices to keep (or a list of them), applied after the
            position table is added; with sorted indices this is the release's `x[~mask]`.
        out_layers: block indices (0-based, negatives from the end); returns a list of those
            blocks' outputs, each through the final norm, in the order asked for.
        """
        x = self._embed(x, masks)
        if out_layers is None:
            for block in self.blocks:
                x = block(x)
            return self.norm(x)
        bad = [i for i in out_layers if not -self.depth <= i < self.depth]
        if bad:
            raise ValueError(f"out_layers {bad} out of range for a {self.depth}-block encoder")
        wanted = [i % self.depth for i in out_layers]
        outs = {}
        last = max(wanted)
        for i, block in enumerate(self.blocks[:last + 1]):
            x = block(x)
            if i in wanted:
                outs[i] = self.norm(x)
        return [outs[i] for i in wanted]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D): the norm of the mean of the block outputs, the release's fine-tuned `forward_features`

        (`fc_norm(x.mean(1))`) when the checkpoint is a `use_mean_pooling` fine-tuned one.
        """
        x = self._embed(x, None)
        for block in self.blocks:
            x = block(x)
        return self.norm(x.mean(1))


# ----- building from a registry config --------------------------------------------------------
def build_videomae(cfg: Mapping[str, Any], device=None) -> VideoMAEViT:
    """The backbone described by `cfg['arch']` (a composed encoder config)."""
    if cfg.get("modality", "video") != "video":
        raise ValueError(f"encoder {cfg.get('name')!r}: VideoMAE is a video encoder (modality: video)")
    arch = dict(cfg["arch"])
    dim = int(arch["embed_dim"])
    ratio = float(arch.get("mlp_ratio", 4.0))
    hidden = arch.get("mlp_hidden_dim")
    if hidden is not None and "mlp_ratio" in arch and abs(int(hidden) - dim * ratio) >= 1:
        raise ValueError(f"encoder {cfg.get('name')!r}: mlp_hidden_dim {hidden} disagrees with "
                         f"mlp_ratio {ratio} x embed_dim {dim}")
    return VideoMAEViT(
        img_size=int(arch["resolution"]),
        patch_size=int(arch["patch_size"]),
        num_frames=int(arch.get("num_frames", 16)),
        tubelet_size=int(arch.get("tubelet_size", 2)),
        in_chans=int(arch.get("in_chans", 3)),
        embed_dim=dim,
        depth=int(arch["depth"]),
        num_heads=int(arch["num_heads"]),
        mlp_ratio=ratio,
        mlp_hidden_dim=None if hidden is None else int(hidden),
        qkv_bias=bool(arch.get("qkv_bias", True)),
        cos_attn=bool(arch.get("cos_attn", False)),
        init_values=float(arch.get("init_values", 0.0) or 0.0),
        norm_eps=float(arch.get("norm_eps", 1e-6)),
        final_norm=bool(arch.get("final_norm", True)),
        final_norm_eps=None if arch.get("final_norm_eps") is None else float(arch["final_norm_eps"]),
        device=device,
    )
