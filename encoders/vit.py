"""Vision Transformer with the V-JEPA release's parameter layout (video: 3D tubelets; image: 2D patches).

State-dict names match `facebookresearch/jepa` (`src/models/vision_transformer.py`), so its
checkpoints load strictly after prefix stripping: `patch_embed.proj` (Conv3d for video, Conv2d for
images, as I-JEPA), `pos_embed` (a fixed sin-cos table kept as a non-trainable parameter, hence in
the state dict), `blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}` (timm `Block`,
which uses SDPA) and the final `norm`. There is no cls token.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from .pos_embed import interpolate_pos_embed, sincos_2d, sincos_3d


class PatchEmbed3D(nn.Module):
    """(B, C, T, H, W) -> (B, T/t * H/p * W/p, D) with one Conv3d over t x p x p tubelets."""

    def __init__(self, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int, device=None):
        super().__init__()
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class PatchEmbed2D(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D) with one Conv2d (the I-JEPA layout)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, device=None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@torch.no_grad()
def release_init(model: nn.Module, init_std: float) -> None:
    """The JEPA releases' init (V-JEPA, V-JEPA 2, 2.1): trunc-normal weights of every linear and
    convolution, zero biases, unit LayerNorms, and each block's residual branches (`attn.proj`,
    `mlp.fc2`) divided by sqrt(2 * its 1-based depth)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            trunc_normal_(m.weight, std=init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for layer_id, block in enumerate(model.blocks, start=1):
        block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
        block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))


def gather_tokens(x: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Keep the tokens whose indices are in `masks` ((B, K) each); several masks stack along batch.

    A list of masks gives (len(masks) * B, K, D), in the release's order (mask-major), which is how
    JEPA pretraining runs several context/target masks through one forward.
    """
    mask_list = [masks] if isinstance(masks, torch.Tensor) else list(masks)
    out = []
    for m in mask_list:
        if m.dtype not in (torch.int64, torch.int32) or m.ndim != 2 or m.shape[0] != x.shape[0]:
            raise ValueError(
                f"masks must be integer token indices of shape (B={x.shape[0]}, K), got {tuple(m.shape)} {m.dtype}"
            )
        index = m.to(device=x.device, dtype=torch.int64).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        out.append(torch.gather(x, 1, index))
    return torch.cat(out, dim=0)


class VisionTransformer(nn.Module):
    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        video: bool = True,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        uniform_power: bool = False,
        drop_path_rate: float = 0.0,
        init_std: float = 0.02,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.video = video
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = (num_frames, tubelet_size) if video else (1, 1)
        self.embed_dim = self.num_features = embed_dim
        self.num_heads, self.depth = num_heads, depth
        self.uniform_power = uniform_power
        self.init_std = init_std

        if video:
            self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim, device=device)
        else:
            self.patch_embed = PatchEmbed2D(patch_size, in_chans, embed_dim, device=device)
        self.grid = self.grid_for(self.num_frames, img_size, img_size)
        # Fixed, but a Parameter (requires_grad False) as in the release, so it is saved and loaded.
        self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.grid), embed_dim, device=device),
                                      requires_grad=False)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                  drop_path=dpr[i], act_layer=nn.GELU, norm_layer=norm_layer, device=device)
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim, device=device)
        if torch.device(device or "cpu").type != "meta":  # a meta model is filled by a checkpoint
            self.init_weights()

    # ----- construction -----------------------------------------------------------------------
    def grid_for(self, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Token grid of an input: (t, h, w) for video, (h, w) for images."""
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        if not self.video:
            return (height // self.patch_size, width // self.patch_size)
        if num_frames % self.tubelet_size:
            raise ValueError(f"{num_frames} frames is not a multiple of the tubelet size {self.tubelet_size}")
        return (num_frames // self.tubelet_size, height // self.patch_size, width // self.patch_size)

    def sincos_table(self, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """The (1, N, D) sin-cos table this model uses on `grid` (default: its own)."""
        grid = self.grid if grid is None else grid
        if self.video:
            table = sincos_3d(self.embed_dim, *grid, uniform_power=self.uniform_power)
        else:
            table = sincos_2d(self.embed_dim, *grid)
        return table.unsqueeze(0)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The release's init: sin-cos table, trunc-normal weights, residual branches rescaled by depth."""
        self.pos_embed.copy_(self.sincos_table())
        release_init(self, self.init_std)

    # ----- forward ----------------------------------------------------------------------------
    def pos_embed_for(self, grid: tuple[int, ...]) -> torch.Tensor:
        return interpolate_pos_embed(self.pos_embed, self.grid, grid)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
                out_layers: Sequence[int] | None = None):
        """Tokens (B, N, D) of `x`: video (B, C, T, H, W); image (B, C, H, W) or (B, C, 1, H, W).

        masks: optional (B, K) LongTensor (or list of them) of token indices to keep, applied after
            the position embedding is added (JEPA context/target selection).
        out_layers: optional block indices (0-based, negatives count from the end); then a list of
            those blocks' outputs, each passed through the final norm, is returned instead.
        """
        if self.video:
            if x.ndim != 5:
                raise ValueError(f"video encoder expects (B, C, T, H, W), got shape {tuple(x.shape)}")
            grid = self.grid_for(*x.shape[2:])
        else:
            if x.ndim == 5:
                if x.shape[2] != 1:
                    raise ValueError(f"image encoder got {x.shape[2]} frames; fold frames into the batch "
                                     "(FrozenEncoder does) or pass (B, C, H, W)")
                x = x[:, :, 0]
            if x.ndim != 4:
                raise ValueError(f"image encoder expects (B, C, H, W), got shape {tuple(x.shape)}")
            grid = self.grid_for(1, *x.shape[2:])
        x = self.patch_embed(x)
        x = x + self.pos_embed_for(grid).to(x.dtype)  # keep the patch embedding's (autocast) dtype
        if masks is not None:
            x = gather_tokens(x, masks)

        if out_layers is None:
            for block in self.blocks:
                x = block(x)
            return self.norm(x)
        bad = [i for i in out_layers if not -self.depth <= i < self.depth]
        if bad:
            raise ValueError(f"out_layers {bad} out of range for a {self.depth}-block encoder")
        wanted = [i % self.depth for i in out_layers]
        outs = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                outs[i] = self.norm(x)
        return [outs[i] for i in wanted]  # in the order asked for
