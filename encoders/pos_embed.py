"""Fixed sin-cos position embeddings (1D, 2D, 3D) and their interpolation to other grids.

Conventions follow the V-JEPA release (`src/models/utils/pos_embs.py`) so that embeddings computed
here equal the `pos_embed` stored in its checkpoints:

* 1D: for width D, frequencies omega_i = 1 / 10000**(i / (D/2)), i = 0..D/2-1; the embedding of
  position p is [sin(p * omega), cos(p * omega)] (all sines first, then all cosines).
* 2D: [emb(h) | emb(w)], each D/2 wide; tokens in row-major (h, w) order.
* 3D: [emb(t) | emb(h) | emb(w)]; tokens in (t, h, w) order. With `uniform_power` each axis gets
  the same width 2*ceil(D/6) and the concatenation is cut to D; otherwise t gets D/2 and h, w D/4.

Computed in float64 and returned as float32, as the release does (numpy, then `.float()`).
The predictor of the in-repo JEPA pretraining reuses these helpers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sincos_1d_from_positions(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M, embed_dim) embedding of the (flattened) `positions`."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_1d(embed_dim: int, length: int) -> torch.Tensor:
    """(length, embed_dim) embedding of positions 0..length-1."""
    return sincos_1d_from_positions(embed_dim, torch.arange(length, dtype=torch.float64)).float()


def sincos_2d(embed_dim: int, grid_h: int, grid_w: int | None = None) -> torch.Tensor:
    """(grid_h*grid_w, embed_dim) embedding, row-major (h, w), h in the first half of the width.

    (The I-JEPA/MAE code puts w in the first half instead; checkpoints store their own
    `pos_embed`, so this only matters for freshly initialised models.)
    """
    grid_w = grid_h if grid_w is None else grid_w
    if embed_dim % 4:
        raise ValueError(f"2D sin-cos embedding width must be a multiple of 4, got {embed_dim}")
    h, w = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                          torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    emb = torch.cat([sincos_1d_from_positions(embed_dim // 2, h),
                     sincos_1d_from_positions(embed_dim // 2, w)], dim=1)
    return emb.float()


def sincos_3d(embed_dim: int, grid_t: int, grid_h: int, grid_w: int | None = None, *,
              uniform_power: bool = False) -> torch.Tensor:
    """(grid_t*grid_h*grid_w, embed_dim) embedding in (t, h, w) token order."""
    grid_w = grid_h if grid_w is None else grid_w
    if uniform_power:
        # Equal share per axis, rounded up to an even width; the overshoot (at most 4 channels,
        # taken from the end of the w part) is cut off below.
        dim_t = dim_h = dim_w = 2 * math.ceil(embed_dim / 6)
    else:
        if embed_dim % 8:
            raise ValueError(f"3D sin-cos embedding width must be a multiple of 8 without uniform_power, got {embed_dim}")
        dim_t, dim_h, dim_w = embed_dim // 2, embed_dim // 4, embed_dim // 4
    t, h, w = torch.meshgrid(torch.arange(grid_t, dtype=torch.float64),
                             torch.arange(grid_h, dtype=torch.float64),
                             torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    emb = torch.cat([sincos_1d_from_positions(dim_t, t),
                     sincos_1d_from_positions(dim_h, h),
                     sincos_1d_from_positions(dim_w, w)], dim=1)
    return emb[:, :embed_dim].float()


def interpolate_pos_embed(pos_embed: torch.Tensor, src_grid: tuple[int, ...], dst_grid: tuple[int, ...]) -> torch.Tensor:
    """Resample a (1, N, D) embedding laid out on `src_grid` to `dst_grid`.

    3D grids (t, h, w) use trilinear and 2D grids (h, w) bicubic interpolation, as the V-JEPA and
    I-JEPA releases do when evaluating at other frame counts or resolutions. The same grid returns
    the input unchanged.
    """
    src_grid, dst_grid = tuple(int(g) for g in src_grid), tuple(int(g) for g in dst_grid)
    if len(src_grid) != len(dst_grid) or len(src_grid) not in (2, 3):
        raise ValueError(f"grids must both be (h, w) or (t, h, w), got {src_grid} and {dst_grid}")
    _, n, dim = pos_embed.shape
    if math.prod(src_grid) != n:
        raise ValueError(f"position embedding has {n} tokens, which is not the grid {src_grid}")
    if src_grid == dst_grid:
        return pos_embed
    mode = "trilinear" if len(src_grid) == 3 else "bicubic"
    grid = pos_embed.reshape(1, *src_grid, dim).movedim(-1, 1)  # (1, D, *grid)
    # `size=` uses the same coordinate scale (in/out) as the release's `scale_factor=out/in`.
    out = F.interpolate(grid.float(), size=dst_grid, mode=mode, align_corners=False)
    return out.movedim(1, -1).reshape(1, -1, dim).to(pos_embed.dtype)
