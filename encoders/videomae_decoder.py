"""The VideoMAE pretraining decoder as a frozen "predictor" of normalised pixels (pixel surprise).

VideoMAE pretraining files (`MCG-NJU/VideoMAE` `modeling_pretrain.py`, `PretrainVisionTransformer`;
key `model`) carry, beside `encoder.*`, the decoder that reconstructs masked tubelets:

    x_vis = encoder_to_decoder(encoder(visible tokens))              (Linear, no bias)
    x     = [x_vis + table[visible] | mask_token + table[masked]]    (table: the 1-D sinusoid over
                                                                      the flat token index)
    out   = head(norm(blocks(x)[:, -n_masked:]))                     (tubelet * patch^2 * 3 pixels)

in the space of its targets: each tubelet of the un-normalised clip standardised per channel
(`normlize_target=True`, the released setting). `FrozenDecoder.predict` has the interface of
`encoders.predictors.FrozenPredictor`, so `encoders.surprise` scores it with `target="pixels"`:
the visible tokens are the context frames, the masked ones the future frames.

Decoder head counts are not in the weights: the released sizes use 3 (192 wide), 6 (384),
8 (512 and 640); other widths take width // 64 unless `decoder_heads` is given.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .checkpoint import fit_problems, read_checkpoint_hashed, select_state, strip_prefixes
from .errors import CheckpointError
from .registry import compose
from .videomae import Block, sinusoid_table
from .vit import gather_tokens

RELEASE_HEADS = {192: 3, 384: 6, 512: 8, 640: 8}
DECODER_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")


@dataclass(frozen=True)
class DecoderSpec:
    encoder: str
    embed_dim: int
    width: int
    depth: int
    num_heads: int
    out_dim: int
    patch_size: int
    tubelet_size: int
    target: str = "pixels"
    family: str = "videomae"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Decoder(nn.Module):
    def __init__(self, width: int, depth: int, num_heads: int, mlp_hidden: int, out_dim: int,
                 init_values: float, qkv_bias: bool):
        super().__init__()
        self.blocks = nn.ModuleList([Block(width, num_heads, mlp_hidden, qkv_bias=qkv_bias, init_values=init_values)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, out_dim)


class VideoMAEDecoder(nn.Module):
    """Release names: `encoder_to_decoder`, `mask_token`, `decoder.{blocks, norm, head}`."""

    def __init__(self, embed_dim: int, width: int, depth: int, num_heads: int, mlp_hidden: int, out_dim: int,
                 init_values: float = 0.0, qkv_bias: bool = True):
        super().__init__()
        self.encoder_to_decoder = nn.Linear(embed_dim, width, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder = _Decoder(width, depth, num_heads, mlp_hidden, out_dim, init_values, qkv_bias)


class FrozenDecoder(nn.Module):
    """`predict(context_tokens, context_index, target_index, grid)` -> `(B, Kt, out_dim)`
    normalised pixels of the target tubelets."""

    def __init__(self, module: VideoMAEDecoder, spec: DecoderSpec, checkpoint_info: Mapping[str, Any]):
        super().__init__()
        self.module, self.spec, self.checkpoint_info = module, spec, dict(checkpoint_info)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenDecoder":
        return super().train(False)

    @torch.no_grad()
    def predict(self, context_tokens, context_index, target_index, grid, mask_index: int = 0):
        m = self.module
        t, h, w = (int(g) for g in grid)
        x = m.encoder_to_decoder(context_tokens)
        table = sinusoid_table(t * h * w, self.spec.width).to(device=x.device, dtype=x.dtype)
        table = table.unsqueeze(0).expand(x.shape[0], -1, -1)
        x = torch.cat([x + gather_tokens(table, context_index),
                       m.mask_token.to(x.dtype) + gather_tokens(table, target_index)], dim=1)
        for blk in m.decoder.blocks:
            x = blk(x)
        return m.decoder.head(m.decoder.norm(x[:, -target_index.shape[1]:]))


def build_videomae_decoder(name: str, checkpoint, *, checkpoint_key: str = "model|module",
                           trust_checkpoint: bool = False, decoder_heads: int | None = None,
                           **encoder_overrides: Any) -> FrozenDecoder:
    """The decoder of a VideoMAE pretraining file for encoder entry `name` (a videomae_* entry)."""
    from .predictors import no_predictor_error

    cfg = compose(name, **encoder_overrides)
    if cfg.get("family") != "videomae":
        raise CheckpointError(f"encoder {name!r} is not a VideoMAE entry; pixel surprise from a decoder needs a "
                              f"videomae_* entry and its pretraining checkpoint")
    path = Path(checkpoint).expanduser()
    obj, _, sha = read_checkpoint_hashed(path, trust_checkpoint)
    state, key_used = select_state(obj, checkpoint_key, path)
    state = {k: v for k, v in strip_prefixes(state).items() if k.startswith(DECODER_PREFIXES)}
    if "encoder_to_decoder.weight" not in state or "decoder.head.weight" not in state:
        raise no_predictor_error(path, obj, checkpoint_key)
    arch = cfg["arch"]
    width, embed = (int(s) for s in state["encoder_to_decoder.weight"].shape)
    if embed != int(arch["embed_dim"]):
        raise CheckpointError(f"checkpoint {path}: its decoder reads {embed}-wide tokens but encoder {name!r} "
                              f"makes {arch['embed_dim']}-wide ones")
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.blocks."))
    heads = int(decoder_heads or RELEASE_HEADS.get(width, max(1, width // 64)))
    out_dim = int(state["decoder.head.weight"].shape[0])
    patch, tub = int(arch["patch_size"]), int(arch.get("tubelet_size", 2))
    if out_dim != 3 * tub * patch * patch:
        raise CheckpointError(f"checkpoint {path}: decoder head gives {out_dim} values per token, not the "
                              f"3 x {tub} x {patch}^2 pixels of a tubelet of {name!r}")
    gamma = state.get("decoder.blocks.0.gamma_1")
    module = VideoMAEDecoder(embed, width, depth, heads, int(state["decoder.blocks.0.mlp.fc1.weight"].shape[0]),
                             out_dim, init_values=1.0 if gamma is not None else 0.0,
                             qkv_bias="decoder.blocks.0.attn.q_bias" in state)
    missing, unexpected, mismatched = fit_problems(module.state_dict(), state)
    if missing or unexpected or mismatched:
        raise CheckpointError(f"decoder of checkpoint {path} does not fit: missing {missing[:10]}, "
                              f"unexpected {unexpected[:10]}, mis-shaped {mismatched[:10]}")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    spec = DecoderSpec(encoder=str(cfg["name"]), embed_dim=embed, width=width, depth=depth, num_heads=heads,
                       out_dim=out_dim, patch_size=patch, tubelet_size=tub)
    return FrozenDecoder(module, spec, {"path": str(path.resolve()), "sha256": sha, "key": key_used,
                                        "random_init": False})
