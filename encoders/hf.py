"""Hugging Face folders: the folder's `config.json` decides the architecture.

A folder written by `transformers`' `save_pretrained` names its family in `model_type` and its
sizes in the rest of `config.json`. `resolve_config(cfg, checkpoint)` turns the requested encoder
config into the one that folder needs, before anything is built:

* the family must be the requested entry's (a VideoMAE folder given to `vjepa2_vitl` is an error
  naming the VideoMAE entry of its size);
* every architecture fact the folder states replaces the entry's in `arch` (width, depth, heads,
  MLP width, patch and tubelet, channels, biases, LayerNorm eps, whether a final norm exists), so
  a folder of a size no entry has still runs, under the requested entry's name, and a caller can
  label what differs by comparing `arch` with `encoders.config(name)["arch"]`;
* the nominal input (`num_frames`, `resolution`) is the folder's too, except where the caller
  overrode it (an `encoder.arch.*` override that differs from the registry entry), and except
  V-JEPA 2's `frames_per_clip`, the pretraining clip length (its rotary positions follow the
  input; the entry's probe clip stays);
* an override of an architecture fact that contradicts `config.json` is an error, not a guess.

Each family reads its own `config.json` (`hf_arch(config, weight_names)` in the family's module,
named below as a lazy target, so this module imports no model code).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Mapping

from .checkpoint_files import is_hf_folder, weight_names
from .errors import CheckpointError
from .registry import config, names, resolve_target

# model_type -> (the registry family whose entries read such folders, its config.json reader)
HF_FAMILIES = {
    "videomae": ("videomae", "encoders.videomae_checkpoint:hf_arch"),
    "vjepa2": ("vjepa2", "encoders.vjepa2:hf_arch"),
    "ijepa": ("ijepa", "encoders.ijepa:hf_arch"),
}
# V-JEPA 2.1 folders share model_type vjepa2 (transformers PR #45497); their config.json's
# `use_rope_interleave` tells them apart, the only metadata that does.
HF_VJEPA2_1 = ("vjepa2_1", "encoders.vjepa2_1:hf_arch")
INPUT_KEYS = ("num_frames", "resolution")  # the nominal input: a caller's override wins
SIZE_KEYS = ("embed_dim", "depth", "num_heads", "patch_size", "tubelet_size", "mlp_ratio")
# What the builders assume when a key is absent: written into `arch` only when the folder differs
# (or the entry names the key), so a folder equal to an entry gives that entry's `arch`.
ARCH_DEFAULTS = {"in_chans": 3, "qkv_bias": True, "final_norm": True, "cos_attn": False,
                 "init_values": 0.0, "use_rope": True}


def plain_config(cfg: Any) -> dict[str, Any]:
    """A plain dict (a copy) from a dict or an OmegaConf config (Hydra composes the latter)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return copy.deepcopy(dict(cfg))


def read_hf_config(folder) -> dict[str, Any]:
    path = Path(folder).expanduser() / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return hf


def family_of(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get("family", "")).lower()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _is_default(key: str, value: Any, arch: Mapping[str, Any]) -> bool:
    if key == "mlp_hidden_dim":  # derived from width and ratio unless stated
        return int(arch["embed_dim"] * float(arch.get("mlp_ratio", 4.0))) == int(value)
    if key == "final_norm_eps":  # the blocks' eps unless stated
        return value is None or _same(value, arch.get("norm_eps", 1e-6))
    return key in ARCH_DEFAULTS and _same(ARCH_DEFAULTS[key], value)


def entries_for(family: str, arch: Mapping[str, Any] | None = None) -> list[str]:
    """Registry entries of `family`; with `arch`, only those of its size (width, depth, heads,
    patch, tubelet, MLP ratio)."""
    out = []
    for name in names():
        try:
            cfg = config(name)
        except Exception:  # noqa: BLE001 - a broken entry is the registry tests' business
            continue
        if family_of(cfg) != family:
            continue
        if arch is None or all(_same(cfg["arch"].get(k, ARCH_DEFAULTS.get(k)), arch[k])
                               for k in SIZE_KEYS if k in arch):
            out.append(name)
    return out


def _size(arch: Mapping[str, Any]) -> str:
    return (f"width {arch.get('embed_dim')}, depth {arch.get('depth')}, {arch.get('num_heads')} heads, "
            f"patch {arch.get('patch_size')}")


def folder_arch(folder) -> tuple[str, dict[str, Any]]:
    """`(family, arch)` a Hugging Face folder's `config.json` (and weight names) describe."""
    folder = Path(folder).expanduser()
    hf = read_hf_config(folder)
    model_type = hf.get("model_type")
    if model_type not in HF_FAMILIES:
        raise CheckpointError(
            f"{folder}/config.json has model_type {model_type!r}; Hugging Face folders are read for "
            f"{', '.join(sorted(HF_FAMILIES))}. Pass the weights file with --checkpoint and choose "
            f"the architecture with --encoder and encoder.arch.* overrides")
    interleaved = model_type == "vjepa2" and bool(hf.get("use_rope_interleave"))
    family, reader = HF_VJEPA2_1 if interleaved else HF_FAMILIES[model_type]
    return family, dict(resolve_target(reader)(hf, weight_names(folder)))


def resolve_config(cfg: Mapping[str, Any], checkpoint=None) -> dict[str, Any]:
    """The encoder config to build for `checkpoint`: `cfg` with the architecture of a Hugging Face
    folder's `config.json` (see the module doc); `cfg` unchanged (as a plain dict) for anything else.

    `name` stays the requested entry's. Idempotent: resolving a resolved config changes nothing.
    """
    cfg = plain_config(cfg)
    if checkpoint is None or not is_hf_folder(checkpoint):
        return cfg
    folder = Path(checkpoint).expanduser()
    family, found = folder_arch(folder)
    name = str(cfg.get("name", "<unnamed>"))
    if family_of(cfg) != family:
        fits = entries_for(family, found)
        what = f"a Hugging Face {family} folder ({_size(found)})"
        if fits:
            advice = f"use --encoder {' or '.join(fits)}"
        else:
            others = sorted(entries_for(family), key=lambda n: abs(int(config(n)["arch"]["embed_dim"])
                                                                   - int(found.get("embed_dim", 0))))
            advice = (f"no {family} entry has its size; use --encoder {others[0]} (any {family} entry "
                      f"runs it with the folder's config.json architecture)" if others
                      else f"no registry entry is of family {family!r}")
        raise CheckpointError(f"checkpoint {folder} is {what}, but encoder {name!r} is of family "
                              f"{cfg.get('family')!r}: {advice}")
    try:
        base = config(name)["arch"]
    except (KeyError, ValueError):
        base = {}
    arch = dict(cfg.get("arch") or {})

    def overridden(k: str) -> bool:
        return k in arch and (k not in base or not _same(base[k], arch[k]))

    conflicts = []
    derived = ("mlp_hidden_dim", "final_norm_eps")
    for k in [k for k in found if k not in derived] + [k for k in derived if k in found]:
        v = found[k]
        if k in INPUT_KEYS and overridden(k):
            continue  # the caller's input size
        if k in arch:
            if overridden(k) and not _same(arch[k], v):
                conflicts.append(f"encoder.arch.{k}={arch[k]} (config.json: {v})")
            elif not _same(arch[k], v):
                arch[k] = v
        elif not _is_default(k, v, arch):
            arch[k] = v
    if conflicts:
        raise CheckpointError(f"checkpoint {folder}: {', '.join(conflicts)} contradicts the folder's "
                              f"config.json; drop the override(s), the folder's architecture is used")
    return {**cfg, "arch": arch}
