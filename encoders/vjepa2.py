"""V-JEPA 2 family (Assran et al. 2025): a ViT whose attention carries a 3-D rotary position embedding.

What differs from the V-JEPA ViT in `vit.py` (facts read from `facebookresearch/vjepa2`,
`src/models/vision_transformer.py` and `src/models/utils/modules.py`, used with `use_rope=True` by
every released encoder):

* No absolute position table: `pos_embed` does not exist. Position enters only through the
  rotation of queries and keys inside every attention layer.
* Rotary split of each head's `head_dim`: the first `s = 2 * ((head_dim // 3) // 2)` channels are
  rotated by the token's frame index, the next `s` by its row, the next `s` by its column; the
  `head_dim - 3s` channels left over are not rotated (ViT-L and ViT-g: head_dim 64, s = 20, 4 left;
  ViT-H: 80, s = 26, 2 left).
* Within a block of `s` channels, frequencies are `omega_j = 10000 ** (-j / (s / 2))` for
  j < s/2, and the angle table is `pos * omega` *repeated* (not interleaved) to `s` entries, while
  the rotation pairs adjacent channels `(2i, 2i+1) -> (x cos - y sin, y cos + x sin)`. Channel c
  thus uses frequency `omega[c mod s/2]`, so the two channels of a pair generally get different
  angles. The release documents this as a bug kept for compatibility with its weights; it is what
  the weights were trained with, so we reproduce it. The corrected layout (PR #15, documented in
  the release's `rotate_queries_or_keys` since commit bd566d8: `repeat_interleave(2)`, so both
  channels of a pair share one angle) is `Rotary3D(interleave=True)`, `arch.rope_interleave: true`;
  V-JEPA 2.1 (`encoders.vjepa2_1`) was trained with it.
* Positions are integer token coordinates (frame in tubelets, row and column in patches) of the
  *input* actually given: for any frame count or resolution they are recomputed from the token
  grid (the release's `handle_nonsquare_inputs=True`), nothing is interpolated. With `masks`,
  each kept token keeps the coordinates of its place in the full grid.
* Angles are computed in the dtype of the queries, as the release does (under bf16 autocast the
  table is bf16, like the authors' runs).
* Blocks: pre-norm, LayerNorm eps 1e-6, qkv bias, GELU MLP (`int(dim * mlp_ratio)` hidden; ViT-g
  mlp_ratio 48/11 gives 6144); final LayerNorm `norm`. The release's SwiGLU option
  (`use_silu`) is off in every released model (its hub passes a misspelt `use_SiLU=False`, which
  is ignored; the default is False), so it is not implemented. `use_activation_checkpointing`
  and `use_sdpa` do not change the function; we always use SDPA.
* Intermediate outputs (`out_layers`): each requested block's output passed through the same final
  `norm`, as the release's `VisionTransformer(out_layers=...)` returns them to its probes.

State-dict names are the release's (`patch_embed.proj`, `blocks.{i}.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}`, `norm`), so a release checkpoint loads strictly after the generic
`module.` / `backbone.` stripping. `checkpoint_filter` additionally converts the Hugging Face
`VJEPA2Model` layout (separate query/key/value) and drops a stored `pos_embed`, which a RoPE
model never reads.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from .vit import PatchEmbed3D, gather_tokens, release_init

LN_EPS = 1e-6
ROPE_THETA = 10000.0


def rope_split(head_dim: int) -> int:
    """Channels of a head rotated by each of frame, row and column (the release's d/h/w_dim)."""
    return 2 * ((head_dim // 3) // 2)


def grid_positions(grid: tuple[int, int, int], ids: torch.Tensor | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frame, row, column) integer coordinates of tokens on a (t, h, w) grid, row-major.

    `ids`: optional token indices (any shape) into the full grid; default all tokens in order.
    """
    _, h, w = grid
    if ids is None:
        ids = torch.arange(math.prod(grid), device=device)
    frame = ids // (h * w)
    rest = ids - frame * (h * w)
    row = rest // w
    return frame, row, rest - row * w


class Rotary3D:
    """Rotation tables of one forward pass: built once per dtype, shared by all blocks.

    `positions` are (frame, row, column) index tensors of shape (N,) (all tokens, shared by the
    batch) or (B, K) (kept tokens per sample); tables broadcast over heads. Integer positions give
    tables in the queries' dtype (V-JEPA 2); float positions (V-JEPA 2.1's, possibly rescaled)
    promote the angles to their float dtype, as the release's einsum does, and the rotated
    queries are cast back to their own dtype.
    `interleave`: False repeats the angle table (V-JEPA 2's layout, kept for its weights); True
    repeats each angle for the two channels of its pair (`repeat_interleave`, the corrected layout
    of vjepa2 PR #15 that V-JEPA 2.1 uses).
    """

    def __init__(self, positions: tuple[torch.Tensor, ...], split: int, interleave: bool = False):
        self.positions = positions
        self.split = split
        self.interleave = interleave
        self._tables: dict[torch.dtype, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _make(self, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        s = self.split
        device = self.positions[0].device
        omega = torch.arange(s // 2, dtype=dtype, device=device)
        omega = 1.0 / ROPE_THETA ** (omega / (s / 2.0))
        tables = []
        for pos in self.positions:
            angle = pos.unsqueeze(-1) * omega           # (..., N, s/2), in `dtype` for integer positions
            if self.interleave:                          # (a0, a0, a1, a1, ...): one angle per pair
                angle = angle.repeat_interleave(2, dim=-1)
            else:                                        # (a0, a1, ..., a0, a1, ...): V-JEPA 2 (module doc)
                angle = torch.cat([angle, angle], dim=-1)
            if angle.ndim == 3:                          # (B, K, s) -> (B, 1, K, s): broadcast heads
                angle = angle.unsqueeze(1)
            tables.append((angle.cos(), angle.sin()))
        return tables

    def tables(self, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if dtype not in self._tables:
            self._tables[dtype] = self._make(dtype)
        return self._tables[dtype]

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate queries or keys (B, heads, N, head_dim); channels past 3 * split are kept."""
        s = self.split
        if s == 0:
            return x
        parts = []
        for i, (cos, sin) in enumerate(self.tables(x.dtype)):
            seg = x[..., i * s:(i + 1) * s]
            pairs = seg.unflatten(-1, (-1, 2))
            turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
            parts.append(seg * cos + turned * sin)
        if 3 * s < x.shape[-1]:
            parts.append(x[..., 3 * s:])
        return torch.cat(parts, dim=-1).to(x.dtype)


class RoPEAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, device=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, device=device)
        self.proj = nn.Linear(dim, dim, device=device)

    def forward(self, x: torch.Tensor, rope: Rotary3D) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k = rope.rotate(q), rope.rotate(k)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, device=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float = 0.0,
                 device=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS, device=device)
        self.attn = RoPEAttention(dim, num_heads, qkv_bias=qkv_bias, device=device)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS, device=device)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), device=device)

    def forward(self, x: torch.Tensor, rope: Rotary3D) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VJEPA2VisionTransformer(nn.Module):
    """V-JEPA 2 video encoder: `(B, C, T, H, W)` -> tokens `(B, N, D)`, N = T/t * H/p * W/p.

    `img_size` and `num_frames` are only the nominal input (the spec); any multiple of the patch
    and tubelet sizes runs, with rotary positions recomputed for its grid.
    """

    def __init__(self, *, img_size: int = 256, patch_size: int = 16, num_frames: int = 16, tubelet_size: int = 2,
                 in_chans: int = 3, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 init_std: float = 0.02, rope_interleave: bool = False,
                 device: torch.device | str | None = None):
        super().__init__()
        self.rope_interleave = rope_interleave
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.embed_dim = self.num_features = embed_dim
        self.num_heads, self.depth = num_heads, depth
        self.init_std = init_std
        self.rope_split = rope_split(embed_dim // num_heads)
        if self.rope_split < 2:
            raise ValueError(f"head_dim {embed_dim // num_heads} is too small for 3-D RoPE (needs at least 6)")
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim, device=device)
        self.grid = self.grid_for(num_frames, img_size, img_size)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_path=dpr[i], device=device) for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS, device=device)
        if torch.device(device or "cpu").type != "meta":  # a meta model is filled by a checkpoint
            self.init_weights()

    def grid_for(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        if num_frames % self.tubelet_size:
            raise ValueError(f"{num_frames} frames is not a multiple of the tubelet size {self.tubelet_size}")
        return (num_frames // self.tubelet_size, height // self.patch_size, width // self.patch_size)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The release's init: trunc-normal weights, zero biases, residual branches rescaled by depth."""
        release_init(self, self.init_std)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
                out_layers: Sequence[int] | None = None):
        """Tokens (B, N, D) of a video `x` (B, C, T, H, W).

        masks: optional (B, K) LongTensor (or a list of them, stacked mask-major along the batch)
            of token indices to keep; kept tokens are rotated by their positions in the full grid.
        out_layers: optional block indices (0-based, negatives from the end); then a list of those
            blocks' outputs, each through the final norm, in the order asked for.
        """
        if x.ndim != 5:
            raise ValueError(f"V-JEPA 2 encoder expects video (B, C, T, H, W), got shape {tuple(x.shape)}")
        grid = self.grid_for(*x.shape[2:])
        x = self.patch_embed(x)
        ids = None
        if masks is not None:
            x = gather_tokens(x, masks)
            mask_list = [masks] if isinstance(masks, torch.Tensor) else list(masks)
            ids = torch.cat([m.to(device=x.device, dtype=torch.int64) for m in mask_list], dim=0)
        rope = Rotary3D(grid_positions(grid, ids, device=x.device), self.rope_split, interleave=self.rope_interleave)

        wanted = None
        if out_layers is not None:
            bad = [i for i in out_layers if not -self.depth <= i < self.depth]
            if bad:
                raise ValueError(f"out_layers {bad} out of range for a {self.depth}-block encoder")
            wanted = [i % self.depth for i in out_layers]
        outs = {}
        for i, block in enumerate(self.blocks):
            x = block(x, rope)
            if wanted is not None and i in wanted:
                outs[i] = self.norm(x)
        if wanted is not None:
            return [outs[i] for i in wanted]
        return self.norm(x)


# ----- registry hooks -------------------------------------------------------------------------
_ARCH_KEYS = {"embed_dim", "depth", "num_heads", "patch_size", "resolution", "mlp_ratio", "tubelet_size",
              "num_frames", "qkv_bias", "in_chans", "drop_path_rate", "init_std", "use_rope",
              "rope_interleave"}


def build_vjepa2(cfg: Mapping[str, Any], device=None) -> VJEPA2VisionTransformer:
    """The backbone described by `cfg['arch']` (a composed encoder config)."""
    arch = dict(cfg["arch"])
    unknown = sorted(set(arch) - _ARCH_KEYS)
    if unknown:
        raise ValueError(f"encoder {cfg.get('name')!r}: V-JEPA 2 arch does not use {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_ARCH_KEYS))})")
    if not arch.get("use_rope", True):
        raise ValueError(f"encoder {cfg.get('name')!r}: every V-JEPA 2 encoder uses RoPE; for a sin-cos "
                         "position table use the V-JEPA ViT (encoders.vjepa:build_vit)")
    if cfg.get("modality", "video") != "video":
        raise ValueError(f"encoder {cfg.get('name')!r}: V-JEPA 2 is a video encoder (modality video)")
    return VJEPA2VisionTransformer(
        img_size=int(arch["resolution"]), patch_size=int(arch["patch_size"]),
        num_frames=int(arch.get("num_frames", 16)), tubelet_size=int(arch.get("tubelet_size", 2)),
        in_chans=int(arch.get("in_chans", 3)), embed_dim=int(arch["embed_dim"]), depth=int(arch["depth"]),
        num_heads=int(arch["num_heads"]), mlp_ratio=float(arch.get("mlp_ratio", 4.0)),
        qkv_bias=bool(arch.get("qkv_bias", True)), drop_path_rate=float(arch.get("drop_path_rate", 0.0)),
        init_std=float(arch.get("init_std", 0.02)), rope_interleave=bool(arch.get("rope_interleave", False)),
        device=device,
    )


def _is_hf_layout(state: Mapping[str, Any]) -> bool:
    return any(k.startswith(("encoder.layer.", "encoder.embeddings.", "vjepa2.encoder.")) for k in state)


def hf_to_release(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face `VJEPA2Model` state dict -> this module's (release) names.

    `predictor.*` (the pretraining predictor, not part of the encoder) is dropped, and so are a
    `VJEPA2ForVideoClassification`'s `pooler.*` / `classifier.*` (its encoder sits under `vjepa2.`);
    separate query/key/value are concatenated into `qkv` in that order. Any other key is kept under
    its own name, so the strict loader reports it.
    """
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("vjepa2.")
        if key.startswith(("predictor.", "pooler.", "classifier.")):
            continue
        new = key
        if key.startswith("encoder.embeddings.patch_embeddings."):
            new = "patch_embed." + key[len("encoder.embeddings.patch_embeddings."):]
        elif key.startswith("encoder.layernorm."):
            new = "norm." + key[len("encoder.layernorm."):]
        elif key.startswith("encoder.layer."):
            new = "blocks." + key[len("encoder.layer."):]
            head, _, rest = new.partition(".attention.")
            if rest:
                part, _, suffix = rest.partition(".")
                if part in ("query", "key", "value"):
                    pending.setdefault(f"{head}.attn.qkv.{suffix}", {})[part] = value
                    continue
                new = f"{head}.attn.{rest}"
        out[new] = value
    for key, parts in pending.items():
        missing = [p for p in ("query", "key", "value") if p not in parts]
        if missing:
            from .errors import CheckpointError

            raise CheckpointError(f"Hugging Face V-JEPA 2 checkpoint lacks {', '.join(missing)} for {key}")
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def entries_of(family: str, width: int) -> list[str]:
    """Registry entries of `family` (vjepa2 or vjepa2_1) whose width is `width`, for the message
    that sends a file of one version to the other's entries."""
    from .registry import config, names

    return [n for n in names() if (c := config(n)).get("family") == family
            and int(c["arch"].get("embed_dim", -1)) == width]


def checkpoint_filter(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a V-JEPA 2 checkpoint (release or Hugging Face layout) onto `VJEPA2VisionTransformer`.

    Release files (`encoder` / `target_encoder`, prefixes already stripped) have our names; a
    `pos_embed` among them is dropped with a warning: the release builds no position table when
    RoPE is on and its loaders ignore one (its hub loader says its files hold one). A V-JEPA 2.1
    file (`norms_block`, modality embeddings: another key layout, trained with the interleaved
    RoPE) is an error naming the vjepa2_1 entry of its width.
    """
    state = hf_to_release(state) if _is_hf_layout(state) else dict(state)
    if any(k.startswith("norms_block.") for k in state) or "video_mod_embed" in state:
        from .errors import CheckpointError

        patch = state.get("patch_embed.proj.weight")
        fits = entries_of("vjepa2_1", int(patch.shape[0])) if patch is not None else []
        use = f"--encoder {' or '.join(fits)}" if fits else "a vjepa2_1_* entry"
        raise CheckpointError("checkpoint is a V-JEPA 2.1 encoder (norms_block, modality embeddings, trained "
                              f"with the interleaved RoPE layout): use {use}, not a V-JEPA 2 entry")
    if "pos_embed" in state:
        shape = tuple(state.pop("pos_embed").shape)
        warnings.warn(f"checkpoint holds a pos_embed {shape}, which a V-JEPA 2 (RoPE) encoder does not use; "
                      "dropped. If this is a V-JEPA 1 checkpoint, use a vjepa_* entry instead.", stacklevel=2)
    return state


def hf_arch(hf: Mapping[str, Any], weight_names: Any = ()) -> dict[str, Any]:
    """Our `arch` for a Hugging Face `VJEPA2Config` dict (a folder's config.json).

    `frames_per_clip` (64 in the hub's files) is the pretraining clip and is not returned: rotary
    positions follow the input, so an entry's probe clip (`num_frames`) stays; `crop_size` becomes
    `resolution`. Settings this module cannot reproduce (another activation or LayerNorm eps) are
    errors, not approximations.
    """
    if hf.get("model_type") != "vjepa2":
        raise ValueError(f"config.json: model_type {hf.get('model_type')!r}, expected 'vjepa2'")
    if hf.get("use_rope_interleave"):
        raise ValueError("config.json: use_rope_interleave is true, a V-JEPA 2.1 folder; use a vjepa2_1_* entry")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"config.json: hidden_act {hf['hidden_act']!r}; only gelu is implemented")
    if float(hf.get("layer_norm_eps", LN_EPS)) != LN_EPS:
        raise ValueError(f"config.json: layer_norm_eps {hf['layer_norm_eps']}; the release uses {LN_EPS}")
    patch = hf.get("patch_size", 16)
    return {
        "embed_dim": int(hf.get("hidden_size", 1024)), "depth": int(hf.get("num_hidden_layers", 24)),
        "num_heads": int(hf.get("num_attention_heads", 16)), "mlp_ratio": float(hf.get("mlp_ratio", 4.0)),
        "patch_size": int(patch[0] if isinstance(patch, (list, tuple)) else patch),
        "tubelet_size": int(hf.get("tubelet_size", 2)), "resolution": int(hf.get("crop_size", 256)),
        "in_chans": int(hf.get("in_chans", 3)), "qkv_bias": bool(hf.get("qkv_bias", True)),
    }


def load_hf_folder(path: str | Path, device=None) -> VJEPA2VisionTransformer:
    """Our encoder from a Hugging Face `VJEPA2Model.save_pretrained` folder (`config.json` +
    `model.safetensors`), read without running any code from it.

    Note: Hugging Face derives rotary rows and columns from its config's `crop_size`, the release
    (and this module) from the input; they agree when the input is `crop_size` square.
    """
    from safetensors.torch import load_file

    from .checkpoint import load_state_strict

    path = Path(path)
    hf = json.loads((path / "config.json").read_text())
    try:
        arch = hf_arch(hf)
    except ValueError as e:
        raise ValueError(f"{path}/{e}") from None
    arch["num_frames"] = int(hf.get("frames_per_clip", 64))
    model = build_vjepa2({"name": f"hf:{path.name}", "modality": "video", "arch": arch}, device="meta")
    weights = path / "model.safetensors"
    state = checkpoint_filter(load_file(str(weights), device="cpu"))
    load_state_strict(model, state, {"path": str(weights), "key": None})
    return model.to(device or "cpu").eval()
