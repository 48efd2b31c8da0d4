"""I-JEPA family (Assran et al., CVPR 2023): the released image ViTs, from their own files or from HF.

Facts about the release (`facebookresearch/ijepa`, `src/models/vision_transformer.py`,
`src/train.py`) that this module relies on:

* A checkpoint is `{'encoder', 'predictor', 'target_encoder', 'opt', 'scaler', 'epoch', 'loss',
  'batch_size', 'world_size', 'lr'}`; `encoder` and `target_encoder` are the state dicts of the
  DDP-wrapped context encoder and its EMA copy, so every key starts with `module.` (stripped by
  `checkpoint.strip_prefixes`). The registry entries read `target_encoder` (the EMA encoder, the
  one the paper evaluates); `--checkpoint-key encoder` picks the context encoder.
* The encoder's parameter names are ours (`encoders.vit.VisionTransformer` with `video=False`):
  `patch_embed.proj` (Conv2d, kernel = stride = patch), `pos_embed`, `blocks.{i}.{norm1, attn.qkv
  (bias), attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm` (LayerNorm eps 1e-6, applied to the output).
  No cls token, no head. So a release file loads strictly with no key conversion.
* `pos_embed` is a fixed 2-D sin-cos table held in an `nn.Parameter(requires_grad=False)`, hence
  saved in the file and loaded strictly like any weight (the release writes the w coordinate in
  the first half of the width, our `sincos_2d` the h coordinate; only fresh models see the
  difference). The release's `interpolate_pos_encoding` assumes a cls token and cannot run at
  another resolution; here the table is resampled bicubically (`pos_embed.interpolate_pos_embed`,
  the same resampling as HF's `interpolate_pos_encoding`), at load time when the model is built at
  another `resolution`, or per forward for another input size.
* ViT-H: 1280 wide, 32 blocks, 16 heads, MLP 4x; ViT-g: 1408 wide, 40 blocks, 16 heads, MLP ratio
  48/11 (hidden 6144).
* Images are normalised with the ImageNet mean/std (`src/transforms.py`).

HF `transformers` also hosts these weights (`IJepaModel`; its conversion script took the
release's `encoder` entry, not `target_encoder`). `checkpoint_filter` maps an HF `model.safetensors`
onto our keys, so either file loads into the same registry entry, and `load_hf_folder` builds an
encoder from a folder written by `save_pretrained` (its `config.json` + `model.safetensors`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
LAYER_NORM_EPS = 1e-6  # what encoders.vit.VisionTransformer (and the release) use

_HF_PREFIXES = ("ijepa.",)  # IJepaForImageClassification wraps the model as `ijepa`
_HF_DROP = ("classifier.", "pooler.")  # heads, not part of a frozen encoder

# HF names per block -> ours. Both the on-disk (legacy ViT) names, which `save_pretrained` writes,
# and the in-memory names of transformers 5.x.
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_QKV = {
    "attention.attention.query": "q", "attention.attention.key": "k", "attention.attention.value": "v",
    "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v",
}
_HF_TOP = {
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")


def is_hf_layout(state: Mapping[str, Any]) -> bool:
    return any(k.startswith(("embeddings.", "ijepa.embeddings.")) for k in state)


def hf_state_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An HF `IJepaModel` state dict (on-disk or in-memory names) in our (the release's) keys.

    Query/key/value projections are concatenated into `attn.qkv` in that order. A key that maps to
    nothing is an error naming it, never dropped silently (heads `classifier.*`/`pooler.*` excepted).
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        for p in _HF_PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
        if key.startswith(_HF_DROP) or key == "embeddings.mask_token":
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_LAYER.match(key)
        if m is None:
            unknown.append(key)
            continue
        i, inner, kind = int(m.group(1)), m.group(2), m.group(3)
        if inner in _HF_BLOCK:
            out[f"blocks.{i}.{_HF_BLOCK[inner]}.{kind}"] = value
        elif inner in _HF_QKV:
            qkv.setdefault((i, kind), {})[_HF_QKV[inner]] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"HF I-JEPA state dict has {len(unknown)} keys with no counterpart here: "
                              f"{', '.join(sorted(unknown)[:10])}")
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"HF I-JEPA layer {i}: {kind} of attention has only {sorted(parts)} of q, k, v")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def checkpoint_filter(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Release files pass unchanged (same keys as ours); HF-layout files are converted."""
    return hf_state_to_ours(state) if is_hf_layout(state) else dict(state)


def _square(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"HF I-JEPA config: only square {what} is supported, got {value}")
        value = value[0]
    return int(value)


def hf_config_to_cfg(hf: Mapping[str, Any], name: str = "ijepa_hf") -> dict[str, Any]:
    """Our encoder config for an HF `IJepaConfig` (a `config.json` as a dict).

    Settings our ViT cannot reproduce (another activation, LayerNorm eps or an MLP width that is
    not `int(width * ratio)`) are errors, not approximations.
    """
    if hf.get("model_type", "ijepa") != "ijepa":
        raise ValueError(f"not an I-JEPA config: model_type {hf.get('model_type')!r}")
    width, hidden = int(hf["hidden_size"]), int(hf["intermediate_size"])
    mlp_ratio = hidden / width
    if int(width * mlp_ratio) != hidden:  # rounding: the next float up gives int(width * ratio) == hidden
        mlp_ratio = math.nextafter(mlp_ratio, math.inf)
    problems = []
    if int(width * mlp_ratio) != hidden:
        problems.append(f"intermediate_size {hidden} is not int(hidden_size * mlp_ratio) for a float mlp_ratio")
    if hf.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act {hf.get('hidden_act')!r} (ours: exact GELU, HF 'gelu')")
    eps = float(hf.get("layer_norm_eps", 1e-12))
    if abs(eps - LAYER_NORM_EPS) > 1e-12:
        problems.append(f"layer_norm_eps {eps:g} (ours and the release's: {LAYER_NORM_EPS:g})")
    if problems:
        raise ValueError("HF I-JEPA config does not fit encoders.vit.VisionTransformer: " + "; ".join(problems))
    resolution, patch = _square(hf.get("image_size", 224), "image_size"), _square(hf.get("patch_size", 16), "patch_size")
    return {
        "name": name,
        "family": "ijepa",
        "modality": "image",
        "builder": "encoders.vjepa:build_vit",
        "checkpoint_filter": "encoders.ijepa:checkpoint_filter",
        "description": f"I-JEPA ViT from an HF IJepaModel folder ({width} wide, {hf['num_hidden_layers']} blocks, "
                       f"patch {patch}, {resolution}px)",
        "arch": {"embed_dim": width, "depth": int(hf["num_hidden_layers"]),
                 "num_heads": int(hf["num_attention_heads"]), "mlp_ratio": mlp_ratio, "patch_size": patch,
                 "tubelet_size": 1, "num_frames": 1, "resolution": resolution,
                 "in_chans": int(hf.get("num_channels", 3)), "qkv_bias": bool(hf.get("qkv_bias", True))},
        "mean": list(IMAGENET_MEAN),  # the release's normalisation (HF's ViTImageProcessor default is 0.5)
        "std": list(IMAGENET_STD),
    }


def hf_arch(hf: Mapping[str, Any], weight_names: Any = ()) -> dict[str, Any]:
    """Our `arch` for an HF `IJepaConfig` dict (the reader `encoders.hf.resolve_config` calls);
    the weights' names are not needed: every fact is in config.json."""
    return hf_config_to_cfg(hf)["arch"]


def load_hf_folder(path: str | Path, *, name: str = "ijepa_hf", **overrides: Any):
    """A `FrozenEncoder` from a local HF folder (`config.json` + `model.safetensors`, as
    `IJepaModel.save_pretrained` writes it), loaded strictly through the usual checkpoint path.

    `overrides` are encoder settings (e.g. `resolution=448`) applied to the config read from the folder.
    """
    from .frozen import from_config
    from .registry import apply_overrides

    folder = Path(path)
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json (expected a save_pretrained folder)")
    if not weights.is_file():
        sharded = folder / "model.safetensors.index.json"
        hint = " (it is sharded; save it with a larger max_shard_size)" if sharded.is_file() else ""
        raise FileNotFoundError(f"{folder} has no model.safetensors{hint}")
    cfg = hf_config_to_cfg(json.loads(config_file.read_text()), name=name)
    return from_config(apply_overrides(cfg, **overrides), checkpoint=folder)
