"""The V-JEPA 2.1 predictor (`facebookresearch/vjepa2`, `app/vjepa_2_1/models/predictor.py`, as
its hub builds it for `vjepa2_1_vit_*_384`): context tokens and mask tokens through RoPE blocks
to predicted target tokens, and, as every released 2.1 predictor returns all tokens, projected
context tokens too.

What differs from V-JEPA 2's predictor:

* Input: the encoder's last `n` hierarchical taps concatenated on channels (`n` = 1 for the
  distilled ViT-B / ViT-L, 4 for ViT-g / ViT-G). With `n` = 1 `predictor_embed` is one Linear;
  with more it is `Linear(n*D, D) -> GELU -> Linear(D, width)` (`predictor_embed.0` / `.2`).
* Blocks rotate with the interleaved layout (`Rotary3D(interleave=True)`), positions the token
  indices on a square grid of the nominal size (`img_size // patch_size` per side; the release
  passes the predictor no input grid and does not interpolate its RoPE).
* A learnt `video_mod_embed` (or `img_mod_embed` for images) is added to every token after the
  mask tokens are appended; mask token `mask_index` (default 1, the release's) fills targets.
* Outputs: `predictor_proj` for targets, `predictor_proj_context` for context tokens, each
  `n * out` wide, where `out` is the teacher's width / n for the distilled models (ViT-G's 1664)
  and the encoder's width otherwise.

Sizes (width, depth, mask tokens, `n`, output widths) are read from a state dict's shapes by
`predictor_arch`; the head count is not visible in shapes (the hub uses 12). The release sorts
tokens by position before the blocks and undoes it after; attention is order-free, so that is
left out here.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from .vjepa2 import LN_EPS, Block, Rotary3D, entries_of, grid_positions, rope_split

HUB_NUM_HEADS = 12


class VJEPA21Predictor(nn.Module):
    def __init__(self, *, embed_dim: int, num_inputs: int = 1, width: int = 384, depth: int = 12,
                 num_heads: int = HUB_NUM_HEADS, mlp_ratio: float = 4.0, num_mask_tokens: int = 8,
                 out_dim: int | None = None, context_proj: bool = True, modality_embedding: bool = True,
                 grid_size: int = 24, device=None):
        super().__init__()
        if width % num_heads or rope_split(width // num_heads) < 2:
            raise ValueError(f"predictor width {width} with {num_heads} heads cannot carry 3-D RoPE")
        if num_inputs == 1:
            self.predictor_embed = nn.Linear(embed_dim, width, device=device)
        else:
            self.predictor_embed = nn.Sequential(nn.Linear(embed_dim * num_inputs, embed_dim, device=device),
                                                 nn.GELU(), nn.Linear(embed_dim, width, device=device))
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, width, device=device)) for _ in range(num_mask_tokens)])
        self.modality_embedding = modality_embedding
        if modality_embedding:
            self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, width, device=device))
            self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, width, device=device))
        self.predictor_blocks = nn.ModuleList(
            [Block(width, num_heads, mlp_ratio, qkv_bias=True, device=device) for _ in range(depth)])
        self.predictor_norm = nn.LayerNorm(width, eps=LN_EPS, device=device)
        out_dim = out_dim or embed_dim * num_inputs
        self.predictor_proj = nn.Linear(width, out_dim, device=device)
        self.predictor_proj_context = nn.Linear(width, out_dim, device=device) if context_proj else None
        self.grid_size = grid_size
        self.split = rope_split(width // num_heads)

    def forward(self, context: torch.Tensor, context_index: torch.Tensor, target_index: torch.Tensor,
                mod: str = "video", mask_index: int = 1, grid: tuple[int, int, int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(predicted targets (B, Kt, out), projected context (B, Kc, out) or None).

        context: (B, Kc, n*D) the encoder's taps at `context_index` (B, Kc); target_index: (B, Kt)
        token indices, frame-major, on `grid` (t, h, w), by default the release's nominal grid
        (rows of `grid_size` tokens). Positions are the tokens' integer coordinates on that grid
        (not rescaled: the release's predictor does not interpolate its RoPE), so another grid
        gives each token its own place where the release would wrap rows at `grid_size`.
        """
        if mod not in ("video", "image"):
            raise ValueError(f"mod must be 'video' or 'image', got {mod!r}")
        b, n_ctx, _ = context.shape
        x = self.predictor_embed(context)
        token = self.mask_tokens[mask_index % len(self.mask_tokens)].to(x.dtype)
        x = torch.cat([x, token.expand(b, target_index.shape[1], -1)], dim=1)
        if self.modality_embedding:
            x = x + (self.img_mod_embed if mod == "image" else self.video_mod_embed)
        ids = torch.cat([context_index, target_index], dim=1).to(device=x.device, dtype=torch.int64)
        if grid is None:
            grid = (1, self.grid_size, self.grid_size)
        positions = tuple(p.float() for p in grid_positions(tuple(grid), ids))  # float, as the release's
        rope = Rotary3D(positions, self.split, interleave=True)
        for blk in self.predictor_blocks:
            x = blk(x, rope)
        x = self.predictor_norm(x)
        pred = self.predictor_proj(x[:, n_ctx:])
        ctx = self.predictor_proj_context(x[:, :n_ctx]) if self.predictor_proj_context is not None else None
        return pred, ctx


def predictor_arch(state: Mapping[str, Any]) -> dict[str, Any]:
    """Sizes of a 2.1 predictor state dict (prefixes stripped): the keyword arguments of
    `VJEPA21Predictor` except `num_heads` and `grid_size`, which shapes do not record."""
    if "predictor_embed.weight" in state:
        width, embed_dim = (int(s) for s in state["predictor_embed.weight"].shape)
        num_inputs = 1
    elif "predictor_embed.0.weight" in state and "predictor_embed.2.weight" in state:
        embed_dim, concat = (int(s) for s in state["predictor_embed.0.weight"].shape)
        width = int(state["predictor_embed.2.weight"].shape[0])
        num_inputs = concat // embed_dim
    else:
        raise ValueError("not a V-JEPA 2.1 predictor state: no predictor_embed weight")
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"predictor_blocks\.(\d+)\.", k))),
                    default=-1)
    fc1 = state.get("predictor_blocks.0.mlp.fc1.weight")
    return {
        "embed_dim": embed_dim, "num_inputs": num_inputs, "width": width, "depth": depth,
        "mlp_ratio": (int(fc1.shape[0]) / width) if fc1 is not None else 4.0,
        "num_mask_tokens": sum(1 for k in state if re.fullmatch(r"mask_tokens\.\d+", k)),
        "out_dim": int(state["predictor_proj.weight"].shape[0]) if "predictor_proj.weight" in state else None,
        "context_proj": "predictor_proj_context.weight" in state,
        "modality_embedding": "video_mod_embed" in state,
    }


def is_vjepa2_1_predictor_state(state: Mapping[str, Any]) -> bool:
    """A predictor state (prefixes stripped) in 2.1's layout: modality embeddings, a context
    projection or a multi-layer input embedding, none of which V-JEPA or V-JEPA 2 predictors have
    (every released 2.1 predictor has the first two; ViT-g/G's the third too)."""
    return any(k in state for k in ("video_mod_embed", "img_mod_embed", "predictor_proj_context.weight",
                                    "predictor_embed.0.weight"))


def wrong_version(family: str, state: Mapping[str, Any], encoder_width: int) -> str:
    """Why the predictor `state` cannot stand for a `family` entry's, naming the entries it
    belongs to; "" when 2.1-ness fits. A V-JEPA 2 predictor would load into a 2.1 module without
    its optional parts, and a 2.1 one could be trimmed to V-JEPA 2's keys, yet their RoPE layouts
    differ, so the keys decide, not a strict load."""
    is_21 = is_vjepa2_1_predictor_state(state)
    if is_21 == (family == "vjepa2_1"):
        return ""
    if is_21:
        try:
            width = predictor_arch(state)["embed_dim"]
        except ValueError:
            width = encoder_width
        fits = entries_of("vjepa2_1", width)
        use = f"--encoder {' or '.join(fits)}" if fits else "a vjepa2_1_* entry"
        return ("it is a V-JEPA 2.1 predictor (modality embeddings, predictor_proj_context or a multi-layer "
                f"predictor_embed; interleaved RoPE): use {use}, not a {family} entry")
    mask_tokens = sum(1 for k in state if re.fullmatch(r"mask_tokens\.\d+", k))
    other = "vjepa" if "predictor_pos_embed" in state and mask_tokens == 2 else "vjepa2"
    w = state.get("predictor_embed.weight")
    fits = entries_of(other, int(w.shape[1])) if w is not None else []
    use = f"--encoder {' or '.join(fits)}" if fits else f"a {other}_* entry"
    return ("it has none of a V-JEPA 2.1 predictor's keys (video_mod_embed, predictor_proj_context, a "
            f"multi-layer predictor_embed): a {'V-JEPA' if other == 'vjepa' else 'V-JEPA 2'} predictor; "
            f"use {use}, not a V-JEPA 2.1 entry")
