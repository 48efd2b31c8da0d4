"""V-JEPA 2.1 family (Mur-Labadia et al. 2026, arXiv:2603.14482): V-JEPA 2's RoPE ViT with the
corrected rotary layout, modality embeddings, an image patch embedding and one LayerNorm per
hierarchical layer.

Facts read from `facebookresearch/vjepa2` (`app/vjepa_2_1/models/vision_transformer.py`,
`app/vjepa_2_1/models/utils/modules.py`, `src/hub/backbones.py`), as its hub builds the four
released encoders (`vjepa2_1_vit_{base,large,giant,gigantic}_384`):

* Blocks are V-JEPA 2's (`encoders.vjepa2.Block`: pre-norm, LayerNorm eps 1e-6, qkv bias, GELU
  MLP, same parameter names), but the rotary angle table is *interleaved* (`repeat_interleave(2)`:
  both channels of a rotated pair share one frequency), the fix of vjepa2 PR #15 that V-JEPA 2
  kept out for compatibility (`encoders.vjepa2.Rotary3D(interleave=True)`).
* Rotary positions are floats. With `interpolate_rope` (on in every released model) rows and
  columns are rescaled to the pretraining grid: `row * (G - 1) / (h - 1)` with G = 256/16 = 16
  (252/14 = 18 for patch 14) and h the input's rows (columns likewise), so a 384 px input (24 x
  24 patches) spans the same angles as the 256 px grid did. Frames are not rescaled.
* After the patch embedding a learnt `video_mod_embed` (1, 1, D) is added to every token; a clip
  of exactly one frame goes through `patch_embed_img` (tubelet 1) and gets `img_mod_embed`
  instead (the hub's `img_temporal_dim_size=1`), on a (1, h, w) grid.
* No final `norm`: `norms_block` holds one LayerNorm per hierarchical layer (blocks [2, 5, 8, 11]
  at depth 12, [5, 11, 17, 23] at 24, [9, 19, 29, 39] at 40, [11, 23, 37, 47] at 48). The output
  is the last block through `norms_block[-1]`; a layer tap (`out_layers`) is one of those
  blocks through its own norm, and only those blocks can be tapped (the release's `out_layers`
  looks them up in `hierarchical_layers`). The pretraining predictor reads the concatenation of
  the last `n` taps (`n` = 4 for ViT-g and ViT-G, 1 for the distilled ViT-B and ViT-L).

State-dict names are the release's (`patch_embed.proj`, `patch_embed_img.proj`, `img_mod_embed`,
`video_mod_embed`, `blocks.{i}.*`, `norms_block.{j}`), so a release checkpoint loads strictly after
the generic `module.` / `backbone.` stripping. V-JEPA 2 files (a final `norm`, none of the above)
are refused with the entry to use, and so are Hugging Face folders, whose 2.1 layout
(transformers PR #45497) is not released.

Precision: the release builds the angles from float32 positions, so under bf16 its rotated
queries are float32 until attention casts them; here they are cast back to the queries' dtype
right after the rotation (the same numbers attention would see under autocast).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from .errors import CheckpointError
from .vit import PatchEmbed3D, gather_tokens, release_init
from .vjepa2 import LN_EPS, Block, Rotary3D, entries_of, grid_positions, rope_split

# depth -> the blocks that carry a LayerNorm of their own (the release's `hierarchical_layers`)
HIERARCHICAL_LAYERS = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 40: (9, 19, 29, 39), 48: (11, 23, 37, 47)}
# patch size -> side of the pretraining token grid interpolated RoPE maps onto (256/16, 252/14)
PRETRAINED_ROPE_GRID = {16: 16, 14: 18}


def hierarchical_layers(depth: int) -> tuple[int, ...]:
    if depth not in HIERARCHICAL_LAYERS:
        raise ValueError(f"V-JEPA 2.1 defines its per-layer norms for depths "
                         f"{sorted(HIERARCHICAL_LAYERS)} only, not {depth}")
    return HIERARCHICAL_LAYERS[depth]


def rope_positions(grid: tuple[int, int, int], ids: torch.Tensor | None, device, rope_grid: int | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float (frame, row, column) positions of tokens on `grid`; with `rope_grid` G, rows and
    columns rescaled by (G - 1) / (side - 1), in the release's order of operations."""
    frame, row, col = (p.float() for p in grid_positions(grid, ids, device=device))
    if rope_grid is not None:
        _, h, w = grid
        if h < 2 or w < 2:
            raise ValueError(f"interpolated RoPE needs at least 2 patches per side, got a {h}x{w} grid "
                             "(the release divides by side - 1)")
        row = row * (rope_grid - 1) / (h - 1)
        col = col * (rope_grid - 1) / (w - 1)
    return frame, row, col


class VJEPA21VisionTransformer(nn.Module):
    """V-JEPA 2.1 video encoder: `(B, C, T, H, W)` -> tokens `(B, N, D)`.

    `img_size` and `num_frames` are the nominal input (the spec); any multiple of the patch and
    tubelet sizes runs (one frame: the image branch, when `image_patch_embed`).
    """

    def __init__(self, *, img_size: int = 384, patch_size: int = 16, num_frames: int = 16, tubelet_size: int = 2,
                 in_chans: int = 3, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 init_std: float = 0.02, interpolate_rope: bool = True, modality_embedding: bool = True,
                 image_patch_embed: bool = True, device: torch.device | str | None = None):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.embed_dim = self.num_features = embed_dim
        self.num_heads, self.depth = num_heads, depth
        self.init_std = init_std
        self.hierarchical_layers = hierarchical_layers(depth)
        if interpolate_rope and patch_size not in PRETRAINED_ROPE_GRID:
            raise ValueError(f"interpolated RoPE is defined for patch sizes {sorted(PRETRAINED_ROPE_GRID)} "
                             f"(the release's pretraining grids), not {patch_size}")
        self.rope_grid = PRETRAINED_ROPE_GRID[patch_size] if interpolate_rope else None
        self.rope_split = rope_split(embed_dim // num_heads)
        if embed_dim % num_heads or self.rope_split < 2:
            raise ValueError(f"embed_dim {embed_dim} with {num_heads} heads cannot carry 3-D RoPE")
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim, device=device)
        self.patch_embed_img = (PatchEmbed3D(patch_size, 1, in_chans, embed_dim, device=device)
                                if image_patch_embed else None)
        self.modality_embedding = modality_embedding
        if modality_embedding:
            self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, embed_dim, device=device))
            self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, embed_dim, device=device))
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_path=dpr[i], device=device) for i in range(depth)
        ])
        self.norms_block = nn.ModuleList([nn.LayerNorm(embed_dim, eps=LN_EPS, device=device)
                                          for _ in self.hierarchical_layers])
        self.grid = self.grid_for(num_frames, img_size, img_size)
        if torch.device(device or "cpu").type != "meta":  # a meta model is filled by a checkpoint
            self.init_weights()

    def is_image(self, num_frames: int) -> bool:
        """One frame goes through the image patch embedding (the hub's `img_temporal_dim_size=1`)."""
        return num_frames == 1 and self.patch_embed_img is not None

    def grid_for(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        tubelet = 1 if self.is_image(num_frames) else self.tubelet_size
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        if num_frames % tubelet:
            raise ValueError(f"{num_frames} frames is not a multiple of the tubelet size {tubelet}")
        return (num_frames // tubelet, height // self.patch_size, width // self.patch_size)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The release's init: trunc-normal weights, zero biases, residual branches rescaled by
        depth, modality embeddings N(0, 1e-6)."""
        release_init(self, self.init_std)
        if self.modality_embedding:
            nn.init.normal_(self.img_mod_embed, std=1e-6)
            nn.init.normal_(self.video_mod_embed, std=1e-6)

    def _tap_norms(self, out_layers: Sequence[int]) -> list[int]:
        """Block index of each requested tap; only hierarchical layers have a norm to tap."""
        bad = [i for i in out_layers if not -self.depth <= i < self.depth]
        if bad:
            raise ValueError(f"out_layers {bad} out of range for a {self.depth}-block encoder")
        wanted = [i % self.depth for i in out_layers]
        untapped = [i for i in wanted if i not in self.hierarchical_layers]
        if untapped:
            raise ValueError(f"V-JEPA 2.1 taps only its hierarchical layers {list(self.hierarchical_layers)} "
                             f"(each has its own LayerNorm); blocks {untapped} have none")
        return wanted

    def forward(self, x: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
                out_layers: Sequence[int] | None = None):
        """Tokens (B, N, D) of a video `x` (B, C, T, H, W).

        masks: optional (B, K) LongTensor (or a list, stacked mask-major along the batch) of token
            indices to keep; kept tokens are rotated by their positions in the full grid.
        out_layers: optional hierarchical block indices (negatives from the end); then a list of
            those blocks' outputs, each through its own norm, in the order asked for.
        """
        if x.ndim != 5:
            raise ValueError(f"V-JEPA 2.1 encoder expects video (B, C, T, H, W), got shape {tuple(x.shape)}")
        grid = self.grid_for(*x.shape[2:])
        image = self.is_image(x.shape[2])
        x = (self.patch_embed_img if image else self.patch_embed)(x)
        if self.modality_embedding:
            x = x + (self.img_mod_embed if image else self.video_mod_embed)
        ids = None
        if masks is not None:
            x = gather_tokens(x, masks)
            mask_list = [masks] if isinstance(masks, torch.Tensor) else list(masks)
            ids = torch.cat([m.to(device=x.device, dtype=torch.int64) for m in mask_list], dim=0)
        rope = Rotary3D(rope_positions(grid, ids, x.device, self.rope_grid), self.rope_split, interleave=True)

        wanted = None if out_layers is None else self._tap_norms(out_layers)
        outs = {}
        for i, block in enumerate(self.blocks):
            x = block(x, rope)
            if wanted is not None and i in wanted:
                outs[i] = self.norms_block[self.hierarchical_layers.index(i)](x)
        if wanted is not None:
            return [outs[i] for i in wanted]
        return self.norms_block[-1](x)


# ----- registry hooks -------------------------------------------------------------------------
_ARCH_KEYS = {"embed_dim", "depth", "num_heads", "patch_size", "resolution", "mlp_ratio", "tubelet_size",
              "num_frames", "qkv_bias", "in_chans", "drop_path_rate", "init_std", "use_rope",
              "interpolate_rope", "modality_embedding", "image_patch_embed"}


def build_vjepa2_1(cfg: Mapping[str, Any], device=None) -> VJEPA21VisionTransformer:
    """The backbone described by `cfg['arch']` (a composed encoder config)."""
    arch = dict(cfg["arch"])
    unknown = sorted(set(arch) - _ARCH_KEYS)
    if unknown:
        raise ValueError(f"encoder {cfg.get('name')!r}: V-JEPA 2.1 arch does not use {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_ARCH_KEYS))})")
    if not arch.get("use_rope", True):
        raise ValueError(f"encoder {cfg.get('name')!r}: every V-JEPA 2.1 encoder uses RoPE")
    if cfg.get("modality", "video") != "video":
        raise ValueError(f"encoder {cfg.get('name')!r}: V-JEPA 2.1 is a video encoder (modality video)")
    return VJEPA21VisionTransformer(
        img_size=int(arch["resolution"]), patch_size=int(arch["patch_size"]),
        num_frames=int(arch.get("num_frames", 16)), tubelet_size=int(arch.get("tubelet_size", 2)),
        in_chans=int(arch.get("in_chans", 3)), embed_dim=int(arch["embed_dim"]), depth=int(arch["depth"]),
        num_heads=int(arch["num_heads"]), mlp_ratio=float(arch.get("mlp_ratio", 4.0)),
        qkv_bias=bool(arch.get("qkv_bias", True)), drop_path_rate=float(arch.get("drop_path_rate", 0.0)),
        init_std=float(arch.get("init_std", 0.02)), interpolate_rope=bool(arch.get("interpolate_rope", True)),
        modality_embedding=bool(arch.get("modality_embedding", True)),
        image_patch_embed=bool(arch.get("image_patch_embed", True)), device=device,
    )


def _width(state: Mapping[str, Any]) -> int:
    patch = state.get("patch_embed.proj.weight")
    return int(patch.shape[0]) if patch is not None and hasattr(patch, "shape") else -1


def is_vjepa2_1_state(state: Mapping[str, Any]) -> bool:
    """The release's 2.1 layout: per-layer norms and modality embeddings, no final `norm`."""
    return any(k.startswith("norms_block.") for k in state) or "video_mod_embed" in state


def is_vjepa2_state(state: Mapping[str, Any]) -> bool:
    """The V-JEPA 2 release layout: a final `norm` and none of 2.1's keys."""
    return "norm.weight" in state and not is_vjepa2_1_state(state)


def checkpoint_filter(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A V-JEPA 2.1 release state (prefixes already stripped) as it is; a V-JEPA 2 file or a
    Hugging Face state is an error naming what to use instead."""
    if any(k.startswith(("encoder.layer.", "encoder.embeddings.", "vjepa2.encoder.")) for k in state):
        raise CheckpointError(
            "checkpoint is in the Hugging Face VJEPA2Model layout: V-JEPA 2.1 entries read the release's "
            ".pt files (dl.fbaipublicfiles.com/vjepa2/vjepa2_1_*.pt); transformers has not released a "
            "2.1 layout (PR #45497). A V-JEPA 2 Hugging Face folder goes with a vjepa2_* entry")
    if is_vjepa2_state(state):
        fits = entries_of("vjepa2", _width(state))
        use = f"--encoder {' or '.join(fits)}" if fits else "a vjepa2_* entry"
        raise CheckpointError(
            "checkpoint is a V-JEPA 2 encoder (a final norm, no norms_block / modality embeddings, "
            f"trained with V-JEPA 2's RoPE layout): use {use}, not a V-JEPA 2.1 entry")
    return dict(state)


def hf_arch(hf: Mapping[str, Any], weight_names: Any = ()) -> dict[str, Any]:
    """Our `arch` for a V-JEPA 2.1 Hugging Face config.json (`model_type` vjepa2 with
    `use_rope_interleave`, transformers PR #45497): sizes only, so a wrong entry can be named;
    the folder's weights are refused by `checkpoint_filter` until transformers releases the layout."""
    patch = hf.get("patch_size", 16)
    return {
        "embed_dim": int(hf.get("hidden_size", 1024)), "depth": int(hf.get("num_hidden_layers", 24)),
        "num_heads": int(hf.get("num_attention_heads", 16)), "mlp_ratio": float(hf.get("mlp_ratio", 4.0)),
        "patch_size": int(patch[0] if isinstance(patch, (list, tuple)) else patch),
        "tubelet_size": int(hf.get("tubelet_size", 2)), "resolution": int(hf.get("crop_size", 384)),
        "interpolate_rope": bool(hf.get("interpolate_rope", False)),
        "modality_embedding": bool(hf.get("use_modality_embeddings", False)),
    }
