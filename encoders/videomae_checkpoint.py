"""VideoMAE / VideoMAEv2 checkpoints: the release, pretraining and Hugging Face layouts mapped onto
`encoders.videomae.VideoMAEViT`, and a Hugging Face folder's config.json read as our `arch`.

Checkpoint layouts handled by `checkpoint_filter` (after the generic `module.` / `backbone.`
stripping): fine-tuned `{'model'|'module': {patch_embed, blocks, fc_norm|norm, head}}` (`head.`
dropped), pretraining `{'model': {'encoder.…', 'decoder.…', 'encoder_to_decoder.weight',
'mask_token'}}` (decoder dropped, `encoder.` stripped), VideoMAEv2's `_orig_mod.` (torch.compile)
prefix, and the Hugging Face `transformers` layout (a saved HF folder's config.json gives the architecture,
`hf_arch`, with its eps values: HF's default `layer_norm_eps` is 1e-12 where the release
uses 1e-6, and its classifier `fc_norm` has nn.LayerNorm's 1e-5; a hub `model.safetensors` given
to a registry entry as `--checkpoint` runs with the release's 1e-6 instead).

Final norm of a Hugging Face folder (decided by the keys the weights hold, as transformers does):
`VideoMAEModel(use_mean_pooling=False)` has `layernorm` (its own eps); `use_mean_pooling=True`, the
transformers default, has none, and its `last_hidden_state` is un-normed (`final_norm: false`); a
`VideoMAEForVideoClassification` with mean pooling has `fc_norm` (nn.LayerNorm's 1e-5), applied
per token here.

This module does not import the model (it is built from a config by name): the registry names
`encoders.videomae_checkpoint:checkpoint_filter` in each VideoMAE entry's YAML.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----- checkpoint layouts ---------------------------------------------------------------------
WRAPPER_PREFIXES = ("_orig_mod.", "module.", "backbone.")
PRETRAIN_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token", "pos_embed")  # pretraining, not the encoder
HF_MARKERS = ("embeddings.patch_embeddings.", "videomae.", "encoder.layer.")


def _strip_wrappers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from .checkpoint import strip_prefixes

    return strip_prefixes(state, WRAPPER_PREFIXES)


def _is_hf_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(HF_MARKERS) for k in state)


def _final_norm(state: dict[str, torch.Tensor], names: Sequence[str]) -> None:
    """Rename whichever final norm the file has (`names`, in priority order) to `norm.*`."""
    present = [n for n in names if f"{n}.weight" in state]
    if len(present) > 1:
        raise CheckpointError(f"checkpoint has both {present[0]!r} and {present[1]!r} final norms; "
                              "VideoMAE files hold one of them (fc_norm: mean-pooling fine-tuned; norm: otherwise)")
    if present and present[0] != "norm":
        for suffix in ("weight", "bias"):
            if f"{present[0]}.{suffix}" in state:
                state[f"norm.{suffix}"] = state.pop(f"{present[0]}.{suffix}")


def convert_hf_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face `transformers` VideoMAE keys -> ours.

    Accepts `VideoMAEModel` (no prefix), `VideoMAEForPreTraining` / `VideoMAEForVideoClassification`
    (`videomae.` prefix; decoder / classifier dropped). The q and v biases are stored as
    `attention.attention.q_bias` / `v_bias` (what transformers writes, also v5) or, in v5's in-memory
    names, `query.bias` / `value.bias`; both are read. Keys we do not know are passed through, so the
    strict load names them.
    """
    src = {}
    for k, v in state.items():
        k = k[len("videomae."):] if k.startswith("videomae.") else k
        if k.startswith(("decoder.", "encoder_to_decoder.", "classifier.")) or k in ("mask_token", "position_embeddings"):
            continue
        src[k] = v
    out: dict[str, torch.Tensor] = {}

    def move(old: str, new: str) -> None:
        if old in src:
            out[new] = src.pop(old)

    for s in ("weight", "bias"):
        move(f"embeddings.patch_embeddings.projection.{s}", f"patch_embed.proj.{s}")
    layers = sorted({int(m.group(1)) for k in src if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in layers:
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        att = p + "attention.attention."
        names = [att + f"{n}.weight" for n in ("query", "key", "value")]
        if all(n in src for n in names):
            out[q + "attn.qkv.weight"] = torch.cat([src.pop(n) for n in names], dim=0)
        if att + "key.bias" in src:
            raise CheckpointError(f"{att}key.bias: VideoMAE's key projection has no bias; this is not a VideoMAE file")
        for ours, names_ in (("q_bias", ("q_bias", "query.bias")), ("v_bias", ("v_bias", "value.bias"))):
            found = [n for n in names_ if att + n in src]
            if len(found) > 1:
                raise CheckpointError(f"{att}: both {found[0]!r} and {found[1]!r} present")
            if found:
                out[q + f"attn.{ours}"] = src.pop(att + found[0])
        for s in ("weight", "bias"):
            move(p + f"attention.output.dense.{s}", q + f"attn.proj.{s}")
            move(p + f"layernorm_before.{s}", q + f"norm1.{s}")
            move(p + f"layernorm_after.{s}", q + f"norm2.{s}")
            move(p + f"intermediate.dense.{s}", q + f"mlp.fc1.{s}")
            move(p + f"output.dense.{s}", q + f"mlp.fc2.{s}")
    _final_norm(src, ("layernorm", "fc_norm"))
    out.update(src)  # the final norm, and anything unknown (reported by the strict load)
    return out


def checkpoint_filter(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A VideoMAE / VideoMAEv2 release (or HF) state dict -> `VideoMAEViT` keys (timm-style filter)."""
    state = _strip_wrappers(state)
    if _is_hf_layout(state):
        return convert_hf_state(state)
    if any(k.startswith("encoder.") for k in state):  # pretraining file: encoder + decoder
        out = {}
        for k, v in state.items():
            if k.startswith("encoder."):
                k = k[len("encoder."):]
                if k.startswith("head."):  # Identity in the released models; a real one is not ours
                    continue
                out[k] = v
            elif not k.startswith(PRETRAIN_ONLY):
                out[k] = v  # unknown: the strict load names it
        state = out
    if "pos_embed" in state:
        raise CheckpointError(
            "checkpoint stores a learned `pos_embed` (use_learnable_pos_emb=True); the released VideoMAE / "
            "VideoMAEv2 models use the fixed sinusoid table, which is all this encoder supports")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}  # the classifier
    _final_norm(state, ("norm", "fc_norm"))
    return state


# ----- Hugging Face folders -------------------------------------------------------------------
def hf_arch(config: Mapping[str, Any], state: Iterable[str]) -> dict[str, Any]:
    """Our `arch` for a transformers `VideoMAEConfig` dict (eps values as HF uses them); `state`:
    the weights' names (or a state dict), which decide the final norm."""
    if config.get("model_type") != "videomae":
        raise CheckpointError(f"config.json has model_type {config.get('model_type')!r}, not 'videomae'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act {config['hidden_act']!r} is not supported (VideoMAE uses gelu)")
    size = config.get("image_size", 224)
    patch = config.get("patch_size", 16)
    size = size if isinstance(size, (list, tuple)) else (size, size)
    patch = patch if isinstance(patch, (list, tuple)) else (patch, patch)
    if size[0] != size[1] or patch[0] != patch[1]:
        raise CheckpointError(f"non-square image_size {size} / patch_size {patch} is not supported")
    qkv_bias = config.get("qv_bias", config.get("qkv_bias", True))
    keys = {k[len("videomae."):] if k.startswith("videomae.") else k for k in state}
    eps = float(config.get("layer_norm_eps", 1e-12))
    width, hidden = int(config["hidden_size"]), int(config["intermediate_size"])
    arch = {
        "embed_dim": width, "depth": int(config["num_hidden_layers"]),
        "num_heads": int(config["num_attention_heads"]), "mlp_hidden_dim": hidden, "mlp_ratio": hidden / width,
        "patch_size": int(patch[0]), "tubelet_size": int(config.get("tubelet_size", 2)),
        "num_frames": int(config.get("num_frames", 16)), "resolution": int(size[0]),
        "in_chans": int(config.get("num_channels", 3)), "qkv_bias": bool(qkv_bias), "norm_eps": eps,
    }
    if "layernorm.weight" in keys:  # VideoMAEModel with use_mean_pooling=False: its own eps
        arch.update(final_norm=True, final_norm_eps=eps)
    elif "fc_norm.weight" in keys:  # VideoMAEForVideoClassification: nn.LayerNorm default eps
        arch.update(final_norm=True, final_norm_eps=1e-5)
    else:  # use_mean_pooling=True VideoMAEModel: last_hidden_state is not normed
        arch.update(final_norm=False)
    return arch


def load_hf_folder(path: str | Path, name: str | None = None):
    """A `FrozenEncoder` from a saved `transformers` VideoMAE folder (`config.json` + weights), offline.

    The architecture is the folder's config.json (`hf_arch`), the normalisation its
    `preprocessor_config.json` when present; the weights (safetensors, shards, or
    `pytorch_model.bin` with weights_only) load strictly through the usual checkpoint path: q and v
    biases are taken from whichever name the file uses, and a config that says `qv_bias` while the
    file has none is an error naming the missing keys, never zeros.
    The tokens equal the HF model's `last_hidden_state` (un-normed for a `use_mean_pooling`
    `VideoMAEModel`, which has no final norm; `fc_norm` per token for a classification model).
    """
    from .checkpoint_files import weight_names
    from .frozen import from_config

    folder = Path(path)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder} is not a Hugging Face model folder: no config.json")
    arch = hf_arch(json.loads(cfg_path.read_text()), weight_names(folder))
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
    cfg = {"name": name or f"hf:{folder.name}", "family": "videomae", "modality": "video",
           "builder": "encoders.videomae:build_videomae",
           "checkpoint_filter": "encoders.videomae_checkpoint:checkpoint_filter",
           "arch": arch, "mean": list(mean), "std": list(std),
           "description": f"Hugging Face VideoMAE folder {folder}"}
    enc = from_config(cfg, checkpoint=folder)
    biases = [p for n, p in enc.backbone.named_parameters() if n.endswith(("attn.q_bias", "attn.v_bias"))]
    if biases and all(not torch.any(b) for b in biases):
        warnings.warn(f"{enc.checkpoint_info['path']}: every q/v bias is exactly zero. Trained VideoMAE weights "
                      "never are; the folder may have been re-saved from a loader that dropped them.", stacklevel=2)
    return enc
