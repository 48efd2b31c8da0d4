"""JEPA predictors as frozen registry objects: the network that fills in masked tokens from context.

Four checkpoint sources, one interface (`FrozenPredictor.predict`):

* V-JEPA release files (`facebookresearch/jepa`, `src/models/predictor.py`) and `harness
  pretrain` outputs (`latest.pth.tar`, release layout; `encoders/jepa/predictor.py` is the same
  module): `predictor_embed`, `mask_tokens.{i}`, a fixed sin-cos `predictor_pos_embed` on the
  nominal token grid, timm-style `predictor_blocks`, `predictor_norm`, `predictor_proj`.
* V-JEPA 2 files (`facebookresearch/vjepa2`, `src/models/predictor.py` with `use_rope=True`): the
  same names without a position table; every block rotates queries and keys by the tokens' grid
  coordinates (the encoder's 3-D RoPE blocks of `encoders.vjepa2`, imported). A stored
  `predictor_pos_embed` is dropped, as the release's hub loader ignores it.
* V-JEPA 2.1 files (`app/vjepa_2_1/models/predictor.py`, as its hub builds it for
  `vjepa2_1_vit_*_384`): `encoders.vjepa2_1_predictor.VJEPA21Predictor`, sizes from
  `predictor_arch`, 12 heads, positions on the input's grid. Its input is the encoder's last
  `num_inputs` hierarchical taps concatenated on channels (`spec.input_layers`; the release's
  `training=True` output), and with the encoder's width times `num_inputs` out it predicts the
  target encoder's same taps; a distilled file (ViT-B/L, 1664 out) predicts its ViT-G teacher's
  features (`target` "teacher"). Mask token 1 by default, the one 2.1's training uses.

Architecture: width, depth, MLP ratio, mask-token count and output width are read from the
checkpoint's shapes; the head count (not visible in shapes) follows the family: the V-JEPA
release ties it to the encoder's (`init_video_model`), V-JEPA 2's hub uses 12, and a `harness
pretrain` file states its own in its saved `config`. `predictor_overrides` may set any of them.

Safety and identity as for encoders: the file is read once (`weights_only=True` unless trusted),
its sha256 is of the bytes parsed, and loading is strict (missing, unexpected and mis-shaped
keys are listed), with a hint when the file belongs to another family.

Other grids: V-JEPA's table is resampled to the input's token grid with the same function the
encoder's loader uses for its `pos_embed` (`pos_embed.interpolate_pos_embed`), so encoder and
predictor see the same geometry; V-JEPA 2's rotary positions are the integer coordinates of the
actual grid (the release's predictor assumes a square grid of its nominal size; for that input
the two agree).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .checkpoint import fit_problems, read_checkpoint_hashed, select_state, strip_prefixes
from .errors import CheckpointError
from .jepa.predictor import Predictor, gather_tokens
from .pos_embed import interpolate_pos_embed
from .registry import compose
from .vjepa2 import LN_EPS, Block as RopeBlock, Rotary3D, entries_of, grid_positions, rope_split
from .vjepa2_1 import hierarchical_layers
from .vjepa2_1_predictor import HUB_NUM_HEADS, VJEPA21Predictor, predictor_arch, wrong_version

log = logging.getLogger(__name__)

PREDICTOR_KEY = "predictor"
# Per family: width, depth, heads, mask tokens and the mask token surprise uses by default
# (`mask_index`) of the released predictors. "encoder" heads: the encoder's count, as the V-JEPA
# release's init_video_model passes it. Mask token 0: jepa-intuitive-physics' wrapper passes it;
# 1 for 2.1: its training calls the predictor with the forward's default, 1. A {encoder depth:
# value} mapping is per entry: 2.1's hub gives the distilled ViT-B/L (depths 12, 24) a 12-block
# predictor reading one layer and ViT-g/G (40, 48) a 24-block one reading four.
FAMILY_DEFAULTS = {
    "vjepa": {"width": 384, "depth": 12, "num_heads": "encoder", "num_mask_tokens": 2, "mask_index": 0},
    "ijepa": {"width": 384, "depth": 12, "num_heads": "encoder", "num_mask_tokens": 1, "mask_index": 0},
    "vjepa2": {"width": 384, "depth": 12, "num_heads": 12, "num_mask_tokens": 10, "mask_index": 0},
    "vjepa2_1": {"width": 384, "depth": {12: 12, 24: 12, 40: 24, 48: 24}, "num_heads": HUB_NUM_HEADS,
                 "num_mask_tokens": 8, "mask_index": 1, "num_inputs": {12: 1, 24: 1, 40: 4, 48: 4}},
}
OVERRIDE_KEYS = ("width", "depth", "num_heads", "num_mask_tokens", "mlp_ratio", "out_dim", "num_inputs")


@dataclass(frozen=True)
class PredictorSpec:
    """What a predictor is: its encoder entry, layout and the sizes read from its weights."""

    encoder: str                 # registry entry whose tokens it predicts
    family: str                  # vjepa | ijepa | vjepa2 | vjepa2_1
    rope: bool                   # 3-D RoPE in attention (V-JEPA 2, 2.1) instead of a sin-cos table
    embed_dim: int               # encoder token width (its input: embed_dim * num_inputs)
    width: int
    depth: int
    num_heads: int
    mlp_ratio: float
    num_mask_tokens: int
    out_dim: int                 # embed_dim * num_inputs for latent targets; tubelet * patch^2 * 3 for pixels
    target: str                  # latent | pixels | teacher (a distilled 2.1 predictor: its teacher's features)
    patch_size: int
    tubelet_size: int
    grid: tuple[int, int, int]   # nominal token grid (t, h, w) of its position table
    num_inputs: int = 1          # encoder layers it reads, concatenated on channels
    # Encoder blocks whose normed outputs, concatenated, are its input and its latent target
    # (what surprise asks for); () = the encoder's output.
    input_layers: tuple[int, ...] = ()
    mask_index: int = 0          # the mask token it fills targets with unless told otherwise

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        d["input_layers"] = list(self.input_layers)
        return d


class RopePredictor(nn.Module):
    """The V-JEPA 2 predictor (release names, no position table): forward as `Predictor`'s,
    with rotary positions from the token indices on `grid`."""

    def __init__(self, embed_dim: int, width: int, depth: int, num_heads: int, mlp_ratio: float,
                 num_mask_tokens: int, out_dim: int):
        super().__init__()
        if width % num_heads or rope_split(width // num_heads) < 2:
            raise ValueError(f"predictor width {width} with {num_heads} heads cannot carry 3-D RoPE")
        self.predictor_embed = nn.Linear(embed_dim, width)
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, width)) for _ in range(num_mask_tokens)])
        self.predictor_blocks = nn.ModuleList(
            [RopeBlock(width, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.predictor_norm = nn.LayerNorm(width, eps=LN_EPS)
        self.predictor_proj = nn.Linear(width, out_dim)
        self.split = rope_split(width // num_heads)

    def forward(self, context, context_index, target_index, grid, mask_index: int = 0):
        b, n_ctx, _ = context.shape
        x = self.predictor_embed(context)
        token = self.mask_tokens[mask_index % len(self.mask_tokens)].to(x.dtype)
        x = torch.cat([x, token.expand(b, target_index.shape[1], -1)], dim=1)
        # Attention is order-free, so the release's sort of tokens by position (and its undo)
        # changes nothing; the positions travel with the tokens.
        ids = torch.cat([context_index, target_index], dim=1).to(device=x.device, dtype=torch.int64)
        rope = Rotary3D(grid_positions(tuple(grid), ids), self.split)
        for blk in self.predictor_blocks:
            x = blk(x, rope)
        return self.predictor_proj(self.predictor_norm(x[:, n_ctx:]))


class FrozenPredictor(nn.Module):
    """A loaded predictor in eval mode without gradients, with its spec and provenance.

    `predict(context_tokens (B, Kc, D * num_inputs), context_index (B, Kc), target_index (B, Kt),
    grid)` -> `(B, Kt, out_dim)`: the predicted tokens at `target_index` of the (t, h, w) token
    `grid` the indices refer to (the grid of the clip the encoder saw). The context tokens are
    what `spec.input_layers` names: the encoder's output, or those layers concatenated.
    """

    def __init__(self, module: nn.Module, spec: PredictorSpec, checkpoint_info: Mapping[str, Any]):
        super().__init__()
        self.module = module
        self.spec = spec
        self.checkpoint_info = dict(checkpoint_info)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenPredictor":
        return super().train(False)

    def _pos_table(self, grid: tuple[int, int, int], dtype) -> torch.Tensor:
        table = self.module.predictor_pos_embed
        nominal = self.spec.grid
        if tuple(grid) != nominal:
            own = nominal if self.spec.family != "ijepa" else nominal[1:]
            dst = tuple(grid) if self.spec.family != "ijepa" else tuple(grid)[1:]
            table = interpolate_pos_embed(table.float(), own, dst)
        return table.to(dtype)

    @torch.no_grad()
    def predict(self, context_tokens: torch.Tensor, context_index: torch.Tensor, target_index: torch.Tensor,
                grid, mask_index: int | None = None) -> torch.Tensor:
        grid = tuple(int(g) for g in grid)
        if len(grid) != 3:
            raise ValueError(f"grid must be (t, h, w), got {grid}")
        n = grid[0] * grid[1] * grid[2]
        for name, idx in (("context_index", context_index), ("target_index", target_index)):
            if idx.ndim != 2 or idx.shape[0] != context_tokens.shape[0]:
                raise ValueError(f"{name} must be (B, K) with B = {context_tokens.shape[0]}, got {tuple(idx.shape)}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"{name} holds indices outside the {n} tokens of grid {grid}")
        width = self.spec.embed_dim * self.spec.num_inputs
        if context_tokens.shape[-1] != width:
            layers = (f" (encoder layers {list(self.spec.input_layers)} concatenated)"
                      if self.spec.input_layers else "")
            raise ValueError(f"predictor of {self.spec.encoder!r} takes {width}-wide tokens{layers}, "
                             f"got {context_tokens.shape[-1]}")
        if mask_index is None:
            mask_index = self.spec.mask_index
        if self.spec.family == "vjepa2_1":
            return self.module(context_tokens, context_index, target_index, mask_index=mask_index, grid=grid)[0]
        if self.spec.rope:
            return self.module(context_tokens, context_index, target_index, grid, mask_index=mask_index)
        m = self.module
        pos = self._pos_table(grid, context_tokens.dtype).expand(context_tokens.shape[0], -1, -1)
        x = m.predictor_embed(context_tokens) + gather_tokens(pos, context_index)
        token = m.mask_tokens[mask_index % len(m.mask_tokens)].to(x.dtype)
        queries = token + gather_tokens(pos, target_index)
        x = torch.cat([x, queries], dim=1)
        for blk in m.predictor_blocks:
            x = blk(x)
        return m.predictor_proj(m.predictor_norm(x[:, context_tokens.shape[1]:]))

    def extra_repr(self) -> str:
        src = "random init" if self.checkpoint_info.get("random_init") else self.checkpoint_info.get("path")
        return f"encoder={self.spec.encoder!r}, family={self.spec.family!r}, weights={src}"


# ----- reading a predictor's state ------------------------------------------------------------
def _count(state: Mapping[str, Any], prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".")[0]) for k in state
           if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
    return max(ids) + 1 if ids else 0


def _decoder_present(obj: Any) -> bool:
    """A VideoMAE pretraining file: its model holds `decoder.*`, `encoder_to_decoder`, `mask_token`."""
    if not isinstance(obj, Mapping):
        return False
    for node in [obj, *(v for v in obj.values() if isinstance(v, Mapping))]:
        keys = [str(k) for k in node]
        if any(k.startswith("decoder.") for k in keys) and any("encoder_to_decoder" in k for k in keys):
            return True
    return False


def no_predictor_error(path, obj: Any, key: str) -> CheckpointError:
    """The one error for a file without a predictor, saying which evaluations it supports."""
    top = sorted(map(str, obj)) if isinstance(obj, Mapping) else []
    shown = ", ".join(top[:10]) + (f", ... ({len(top)} in all)" if len(top) > 10 else "")
    if _decoder_present(obj):
        supports = ("frozen-probe evaluations (`harness run`), and pixel surprise from its VideoMAE "
                    "decoder (reconstruction error of masked future frames)")
    else:
        supports = "frozen-probe evaluations (`harness run`) only"
    return CheckpointError(
        f"checkpoint {path} holds no predictor (no {key!r} entry of predictor weights; top-level "
        f"keys: {shown or '(none)'}). The surprise (intuitive-physics) evaluation needs a JEPA "
        f"pretraining checkpoint with its predictor: a V-JEPA, V-JEPA 2 or V-JEPA 2.1 release file, or the "
        f"latest.pth.tar of `harness pretrain`. This file supports: {supports}.")


def _family_hint(spec_family: str, state: Mapping[str, Any]) -> str:
    has_table = "predictor_pos_embed" in state
    if spec_family in ("vjepa", "ijepa") and not has_table:
        return ("(this predictor has no predictor_pos_embed: a RoPE predictor of the V-JEPA 2 layout; "
                "use a vjepa2_* entry)")
    if spec_family == "vjepa2" and has_table and _count(state, "mask_tokens.") == 2:
        return ("(this predictor has a sin-cos predictor_pos_embed and 2 mask tokens, the V-JEPA "
                "release's layout; use a vjepa_* entry)")
    return ""


def family_defaults(family: str, encoder_depth: int) -> dict[str, Any]:
    """`FAMILY_DEFAULTS[family]` with per-entry values taken for an encoder of `encoder_depth` blocks."""
    out = {}
    for key, value in FAMILY_DEFAULTS[family].items():
        if isinstance(value, Mapping):
            if encoder_depth not in value:
                raise ValueError(f"{family} predictors have a default {key} for encoder depths {sorted(value)} "
                                 f"only, not {encoder_depth}: pass predictor_overrides={{{key!r}: ...}}")
            value = value[encoder_depth]
        out[key] = value
    return out


def _arch_from_state(state: Mapping[str, Any], family: str, enc_heads: int, defaults: Mapping[str, Any],
                     saved_cfg: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    if family == "vjepa2_1":
        try:  # sizes from shapes
            read = predictor_arch(state)
        except ValueError:  # no predictor_embed: the strict load lists what is missing
            read = {}
        arch = {**defaults, **{k: v for k, v in read.items() if v is not None}}
        for key in ("depth", "num_mask_tokens"):  # none in the file: the strict load lists them
            arch[key] = arch[key] or defaults[key]
        arch["num_heads"] = defaults["num_heads"]  # not in shapes: the hub's
        arch.update({k: v for k, v in overrides.items() if v is not None})
        return arch
    arch: dict[str, Any] = {"width": defaults["width"], "mask_index": defaults["mask_index"]}
    if "predictor_embed.weight" in state:
        w = state["predictor_embed.weight"]
        arch.update(width=int(w.shape[0]), embed_dim=int(w.shape[1]))
    if "predictor_proj.weight" in state:
        arch["out_dim"] = int(state["predictor_proj.weight"].shape[0])
    arch["depth"] = _count(state, "predictor_blocks.") or defaults["depth"]
    arch["num_mask_tokens"] = _count(state, "mask_tokens.") or defaults["num_mask_tokens"]
    fc1 = state.get("predictor_blocks.0.mlp.fc1.weight")
    if fc1 is not None and arch.get("width"):
        arch["mlp_ratio"] = fc1.shape[0] / arch["width"]
    heads = defaults["num_heads"]
    if isinstance(saved_cfg, Mapping):  # a harness pretrain file states its predictor's heads
        heads = (saved_cfg.get("predictor") or {}).get("num_heads", heads)
    arch["num_heads"] = heads
    arch.update({k: v for k, v in overrides.items() if v is not None})
    if arch["num_heads"] == "encoder":
        arch["num_heads"] = enc_heads
    return arch


def _spec(cfg: Mapping[str, Any], arch: Mapping[str, Any]) -> PredictorSpec:
    enc = cfg["arch"]
    family = str(cfg.get("family") or "vjepa")
    patch, tub = int(enc["patch_size"]), int(enc.get("tubelet_size", 1))
    res, frames = int(enc["resolution"]), int(enc.get("num_frames", 1))
    embed = int(enc["embed_dim"])
    grid = (1 if cfg["modality"] == "image" else frames // tub, res // patch, res // patch)
    num_inputs, layers = int(arch.get("num_inputs", 1)), ()
    if family == "vjepa2_1":
        taps = hierarchical_layers(int(enc["depth"]))
        if not 1 <= num_inputs <= len(taps):
            raise ValueError(f"a V-JEPA 2.1 predictor reads 1 to {len(taps)} of the encoder's hierarchical "
                             f"layers {list(taps)}, not {num_inputs}")
        layers = tuple(taps[-num_inputs:])  # the release's out_layers_distillation
    elif num_inputs != 1:
        raise ValueError(f"a {family} predictor reads the encoder's output (num_inputs 1), not {num_inputs} layers")
    out_dim = int(arch.get("out_dim") or embed * num_inputs)
    if out_dim == embed * num_inputs:
        target = "latent"
    else:  # 2.1's distilled models predict their teacher; other families' wide outputs are pixels
        target = "teacher" if family == "vjepa2_1" else "pixels"
    return PredictorSpec(
        encoder=str(cfg["name"]), family=family, rope=family in ("vjepa2", "vjepa2_1"), embed_dim=embed,
        width=int(arch["width"]), depth=int(arch["depth"]), num_heads=int(arch["num_heads"]),
        mlp_ratio=float(arch.get("mlp_ratio", 4.0)), num_mask_tokens=int(arch["num_mask_tokens"]),
        out_dim=out_dim, target=target, patch_size=patch, tubelet_size=tub, grid=grid,
        num_inputs=num_inputs, input_layers=layers, mask_index=int(arch["mask_index"]))


def build_predictor(name: str, checkpoint=None, *, checkpoint_key: str = PREDICTOR_KEY, trust_checkpoint: bool = False,
                    random_init: bool = False, seed: int = 0, predictor_overrides: Mapping[str, Any] | None = None,
                    **encoder_overrides: Any) -> FrozenPredictor:
    """The predictor of encoder entry `name`, from `checkpoint` (its `predictor` entry) or a seeded
    random init. `predictor_overrides` sets width, depth, num_heads, num_mask_tokens, mlp_ratio or
    out_dim (random init, or a head count the file does not state); `encoder_overrides` go to
    `encoders.compose` (e.g. `resolution=...`)."""
    cfg = compose(name, **encoder_overrides)
    return predictor_from_config(cfg, checkpoint, checkpoint_key=checkpoint_key, trust_checkpoint=trust_checkpoint,
                                 random_init=random_init, seed=seed, predictor_overrides=predictor_overrides)


def predictor_from_config(cfg: Mapping[str, Any], checkpoint=None, *, checkpoint_key: str = PREDICTOR_KEY,
                          trust_checkpoint: bool = False, random_init: bool = False, seed: int = 0,
                          predictor_overrides: Mapping[str, Any] | None = None) -> FrozenPredictor:
    """`build_predictor` for an already-composed encoder config."""
    family = str(cfg.get("family") or "vjepa")
    if family not in FAMILY_DEFAULTS:
        raise CheckpointError(
            f"encoder {cfg['name']!r} (family {family}) has no JEPA predictor: the surprise evaluation "
            f"supports the families {', '.join(sorted(FAMILY_DEFAULTS))}; a VideoMAE pretraining "
            f"checkpoint with its decoder is scored by pixel surprise, and any encoder by frozen probes")
    overrides = dict(predictor_overrides or {})
    bad = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if bad:
        from common.names import did_you_mean

        raise ValueError(f"unknown predictor setting {bad[0]!r}.{did_you_mean(bad[0], list(OVERRIDE_KEYS))} "
                         f"Known: {', '.join(OVERRIDE_KEYS)}")
    enc_heads = int(cfg["arch"]["num_heads"])
    defaults = family_defaults(family, int(cfg["arch"]["depth"]))
    if checkpoint is not None and random_init:
        raise ValueError(f"predictor of {cfg['name']!r}: pass either a checkpoint or random_init, not both")
    if checkpoint is None:
        if not random_init:
            raise ValueError(f"predictor of {cfg['name']!r} needs weights: pass a checkpoint or random_init=True")
        arch = {**defaults, **overrides}
        if arch["num_heads"] == "encoder":
            arch["num_heads"] = enc_heads
        spec = _spec(cfg, arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            module = _build_module_for(cfg, spec, arch)
        return FrozenPredictor(module, spec, {"path": None, "sha256": None, "key": None, "random_init": True,
                                              "seed": int(seed)})

    path = Path(checkpoint).expanduser()
    obj, _, sha = read_checkpoint_hashed(path, trust_checkpoint)
    if isinstance(obj, Mapping) and checkpoint_key not in obj and not any(
            str(k).removeprefix("module.").removeprefix("backbone.").startswith("predictor_") for k in obj):
        raise no_predictor_error(path, obj, checkpoint_key)
    state, key_used = select_state(obj, checkpoint_key, path)
    state = strip_prefixes(state)
    if not any(k.startswith("predictor_") for k in state):
        raise no_predictor_error(path, obj, checkpoint_key)
    saved_cfg = obj.get("config") if isinstance(obj, Mapping) else None
    arch = _arch_from_state(state, family, enc_heads, defaults, saved_cfg, overrides)
    info: dict[str, Any] = {"path": str(path.resolve()), "sha256": sha, "key": key_used, "random_init": False}
    for k in ("epoch", "step", "itr"):
        v = obj.get(k) if isinstance(obj, Mapping) else None
        if isinstance(v, int) and not isinstance(v, bool):
            info[k] = v
    problems = []
    if arch.get("embed_dim") is not None and arch["embed_dim"] != int(cfg["arch"]["embed_dim"]):
        fits = entries_of(family, arch["embed_dim"])
        problems.append(f"its predictor takes {arch['embed_dim']}-wide tokens but encoder {cfg['name']!r} "
                        f"makes {cfg['arch']['embed_dim']}-wide ones"
                        + (f"; entries of that width: {', '.join(fits)}" if fits else ""))
    version = wrong_version(family, state, int(cfg["arch"]["embed_dim"]))
    if version:
        problems.append(version)
    hint = "" if version else _family_hint(family, state)
    if hint and family == "vjepa2" and "num_mask_tokens" not in overrides:
        # Its keys would load (the table is dropped), silently scoring a V-JEPA predictor with
        # rotary positions it never learnt; a deliberate choice says so with the override.
        problems.append("it looks like a V-JEPA release predictor, not a V-JEPA 2 one (pass "
                        "predictor_overrides={'num_mask_tokens': 2} if it really is a RoPE predictor)")
    if problems:
        raise CheckpointError(f"checkpoint {path} (key {key_used!r}) does not fit {cfg['name']!r}: "
                              + "; ".join(problems) + (f" {hint}" if hint else ""))
    spec = _spec(cfg, arch)
    module = _build_module_for(cfg, spec, arch)
    if spec.family == "vjepa2" and "predictor_pos_embed" in state:
        state = dict(state)
        log.info("V-JEPA 2 predictor: dropped the stored predictor_pos_embed %s (RoPE reads no table)",
                 tuple(state.pop("predictor_pos_embed").shape))
    _load_strict(module, state, info, hint)
    return FrozenPredictor(module, spec, info)


def _build_module_for(cfg: Mapping[str, Any], spec: PredictorSpec, arch: Mapping[str, Any]) -> nn.Module:
    if spec.family == "vjepa2_1":  # a random init gets the released layout's optional parts
        return VJEPA21Predictor(
            embed_dim=spec.embed_dim, num_inputs=spec.num_inputs, width=spec.width, depth=spec.depth,
            num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio, num_mask_tokens=spec.num_mask_tokens,
            out_dim=spec.out_dim, context_proj=bool(arch.get("context_proj", True)),
            modality_embedding=bool(arch.get("modality_embedding", True)), grid_size=spec.grid[1])
    if spec.rope:
        return RopePredictor(spec.embed_dim, spec.width, spec.depth, spec.num_heads, spec.mlp_ratio,
                             spec.num_mask_tokens, spec.out_dim)
    return Predictor(spec.grid, spec.embed_dim, width=spec.width, depth=spec.depth, num_heads=spec.num_heads,
                     mlp_ratio=spec.mlp_ratio, num_mask_tokens=spec.num_mask_tokens, out_dim=spec.out_dim,
                     uniform_power=bool(cfg["arch"].get("uniform_power", False)),
                     video=spec.family != "ijepa")


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], info: Mapping[str, Any], hint: str) -> None:
    expected = module.state_dict()
    missing, unexpected, mismatched = fit_problems(expected, state)
    if missing or unexpected or mismatched:
        def listing(items):
            return ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10 else "")

        parts = [f"predictor of checkpoint {info.get('path')} (key {info.get('key')!r}) does not fit the model:"]
        if missing:
            parts.append(f"{len(missing)} missing keys: {listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {listing(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {listing(mismatched)}")
        if hint:
            parts.append(hint)
        raise CheckpointError("\n  ".join(parts))
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"checkpoint {info.get('path')} holds NaN or infinite values in its predictor: "
                              f"{', '.join(bad[:10])}")
    module.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, strict=True)


def predictor_summary(cfg: Mapping[str, Any]) -> str:
    """One line on what predictor an encoder entry (a composed config) has, for `harness encoders
    --verbose`: the family's defaults (a checkpoint's own shapes win) or what it has instead."""
    family, video = cfg.get("family"), cfg.get("modality") == "video"
    if family == "videomae":
        return "none; pixel surprise uses the pretraining file's VideoMAE decoder"
    if family not in FAMILY_DEFAULTS:
        return "none (frozen-probe evaluations only)"
    d = family_defaults(family, int(cfg["arch"]["depth"]))
    heads = f"the encoder's {cfg['arch']['num_heads']}" if d["num_heads"] == "encoder" else d["num_heads"]
    reads = "the encoder's output"
    if family == "vjepa2_1":
        taps = list(hierarchical_layers(int(cfg["arch"]["depth"]))[-d["num_inputs"]:])
        reads = f"encoder block {taps[0]}" if len(taps) == 1 else f"encoder blocks {taps} concatenated"
    line = (f"{family} from the checkpoint's {PREDICTOR_KEY!r} (defaults: {d['width']} wide, {d['depth']} blocks, "
            f"{heads} heads, {d['num_mask_tokens']} mask tokens, token {d['mask_index']}; reads {reads})")
    return line if video else line + "; no surprise evaluation (an image encoder)"
