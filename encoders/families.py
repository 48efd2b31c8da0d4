"""Which registry entry a checkpoint probably belongs to, judged from its keys and shapes.

Used to turn "does not fit the model" into "this is a VideoMAE ViT-L file: try videomae_vitl".
Each family leaves marks in its files: the patch embedding's kernel (5-D for video tubelets,
4-D for images) and width, a stored or absent position table, VideoMAE's separate `q_bias` /
`v_bias`, a timm `cls_token`. Marks only pick the candidates: an entry is offered only after the
file was tried against that entry's model on the meta device (its checkpoint filter, then every
key and shape), so a hint never names an entry that fails the same way, and two entries never
point at each other. Where no entry fits, the `encoder.arch.*` overrides read off the state dict
(width, depth, MLP, patch, tubelet, final norm) are tried the same way and offered when they fit.
The hint is a message, never a load decision.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import Any, Mapping

from .backbone import build_backbone, convert_state
from .checkpoint import adapt_pos_embed, fit_problems
from .registry import apply_overrides, config, names, validate_config

_WRAPPERS = ("module.", "backbone.", "_orig_mod.", "encoder.", "model.")
_FAMILIES = ("videomae", "vjepa2_1", "vjepa2", "ijepa", "vjepa", "timm")  # a name before its prefixes


def _clean(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPERS:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def signature(state: Mapping) -> dict | None:
    """(family, width, patch, video) read from a state dict, or None when nothing is recognised."""
    keys = {_clean(str(k)): v for k, v in state.items() if hasattr(v, "shape")}
    patch = next((v for k, v in keys.items() if k.endswith(("patch_embed.proj.weight", "patch_embeddings.proj.weight",
                                                              "patch_embeddings.projection.weight"))), None)
    if patch is None or len(patch.shape) not in (4, 5):
        return None
    video = len(patch.shape) == 5
    joined = " ".join(keys)
    if "q_bias" in joined:
        family = "videomae"
    elif "cls_token" in joined:
        family = "timm"
    elif video and any(k.startswith("norms_block.") or k.endswith("video_mod_embed") for k in keys):
        family = "vjepa2_1"  # per-layer norms and modality embeddings: V-JEPA 2.1's layout
    elif video:
        family = "vjepa" if any(k.endswith("pos_embed") for k in keys) else "vjepa2"
    else:
        family = "ijepa"
    return {"family": family, "width": int(patch.shape[0]), "patch": int(patch.shape[-1]),
            "video": video}


def _family_of(cfg: Mapping) -> str:
    fam = str(cfg.get("family", "")).lower()
    for name in _FAMILIES:
        if name in fam:
            return name
    return fam


def fits(cfg: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """Would `state` load strictly into the model `cfg` describes? Tried on the meta device:
    the entry's checkpoint filter, the position-table resampling, then every key and shape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_backbone(cfg, device="meta")
            converted = dict(convert_state(cfg, dict(state), model=model))
            adapt_pos_embed(converted, model, {})
            missing, unexpected, mismatched = fit_problems(model.state_dict(), converted)
    except Exception:  # noqa: BLE001 - any failure means "does not fit", which is all a hint needs
        return False
    return not (missing or unexpected or mismatched)


def likely_entries(state: Mapping, exclude: str | None = None) -> tuple[dict | None, list[str]]:
    """The checkpoint's signature and the registry entries it loads into (tried, not guessed)."""
    sig = signature(state)
    if sig is None:
        return None, []
    found = []
    for name in names():
        if name == exclude:
            continue
        cfg = config(name)
        arch = cfg.get("arch", {})
        if _family_of(cfg) == sig["family"] and int(arch.get("embed_dim", -1)) == sig["width"] \
                and int(arch.get("patch_size", -1)) == sig["patch"] and fits(cfg, state):
            found.append(name)
    return sig, found


def read_arch(state: Mapping[str, Any]) -> dict[str, Any]:
    """Architecture facts a state dict in our names states: width, depth, MLP, patch, tubelet,
    channels, qkv bias, final norm. Not the number of heads, which no weight's shape records."""
    patch = state.get("patch_embed.proj.weight")
    if patch is None or len(patch.shape) not in (4, 5):
        return {}
    width = int(patch.shape[0])
    out: dict[str, Any] = {"embed_dim": width, "in_chans": int(patch.shape[1]), "patch_size": int(patch.shape[-1])}
    if len(patch.shape) == 5:
        out["tubelet_size"] = int(patch.shape[2])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    if blocks:
        out["depth"] = max(blocks) + 1
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        hidden = int(fc1.shape[0])
        ratio = hidden / width
        if int(width * ratio) != hidden:
            ratio = math.nextafter(ratio, math.inf)
        out["mlp_ratio"], out["mlp_hidden_dim"] = ratio, hidden
    if blocks:
        out["qkv_bias"] = any(f"blocks.0.attn.{b}" in state for b in ("qkv.bias", "q_bias"))
    if not any(k.startswith("norms_block.") for k in state):  # V-JEPA 2.1 has per-layer norms instead
        out["final_norm"] = "norm.weight" in state
    return out


def _heads(width: int, wanted: int, family: str) -> int:
    """A head count for `width`: the entry's when it divides, else one of width 64 (the common
    head width), else the largest divisor up to 16. RoPE needs heads at least 6 wide."""
    smallest = 6 if family in ("vjepa2", "vjepa2_1") else 1
    for h in (wanted, width // 64):
        if h and width % h == 0 and width // h >= smallest:
            return h
    return next(h for h in range(16, 0, -1) if width % h == 0 and width // h >= smallest)


def _text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)


def suggest_overrides(state: Mapping, base: Mapping[str, Any]) -> dict[str, Any] | None:
    """`encoder.arch.*` overrides (relative to the registry entry `base['name']`) under which
    `state` fits `base`'s family, tried before they are offered; None when none fit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_backbone(base, device="meta")
            facts = read_arch(convert_state(base, dict(state), model=model))
    except Exception:  # noqa: BLE001
        return None
    if "embed_dim" not in facts:
        return None
    arch = dict(base["arch"])
    facts["num_heads"] = _heads(facts["embed_dim"], int(arch.get("num_heads", 0)), _family_of(base))
    if "mlp_hidden_dim" not in arch:
        facts.pop("mlp_hidden_dim", None)
    if "tubelet_size" in facts and int(arch.get("num_frames", 1)) % facts["tubelet_size"]:
        facts["num_frames"] = facts["tubelet_size"] * max(1, int(arch.get("num_frames", 1)) // facts["tubelet_size"])
    if int(arch["resolution"]) % facts["patch_size"]:
        facts["resolution"] = facts["patch_size"] * max(1, int(arch["resolution"]) // facts["patch_size"])
    change = {k: v for k, v in facts.items() if k not in arch or arch[k] != v}
    change = {k: v for k, v in change.items()
              if not (k not in arch and v == {"in_chans": 3, "qkv_bias": True, "final_norm": True}.get(k))}
    try:
        trial = validate_config(apply_overrides(base, arch=change))
    except (ValueError, KeyError):
        return None
    if not fits(trial, state):
        return None
    try:
        registry_arch = config(base["name"])["arch"]
    except (KeyError, ValueError):
        registry_arch = {}
    return {k: v for k, v in trial["arch"].items() if registry_arch.get(k) != v}


def hint(state: Mapping, exclude: str | None = None, requested: Mapping[str, Any] | None = None,
         key: str | None = None) -> str:
    """One sentence for an error message, or '' when the checkpoint is not recognised.

    `exclude`: the entry that just failed; `requested`: its composed config (the base of
    suggested overrides when it is of the checkpoint's family); `key`: the checkpoint key the
    state came from, added to a suggestion whose entry reads another key by default."""
    sig, found = likely_entries(state, exclude)
    if sig is None:
        return ""
    article = "an" if sig["family"][0] in "aeiou" else "a"
    what = (f"{article} {sig['family']} {'video' if sig['video'] else 'image'} encoder checkpoint "
            f"(width {sig['width']}, patch {sig['patch']})")

    def key_flag(name: str) -> str:
        wanted = str(config(name).get("checkpoint_key") or "").split("|")
        return f" --checkpoint-key {key}" if key and key not in wanted else ""

    if found:
        return f"It looks like {what}: try " + " or ".join(f"--encoder {n}{key_flag(n)}" for n in found) + "."
    bases = [config(n) for n in names() if n != exclude and _family_of(config(n)) == sig["family"]]
    if requested is not None and _family_of(requested) == sig["family"]:
        bases.insert(0, dict(requested))
    # Entries of the checkpoint's width first (their head count is the likely one); the
    # requested entry first among equals (stable sort).
    bases.sort(key=lambda c: abs(int(c["arch"]["embed_dim"]) - sig["width"]))
    for base in bases:
        change = suggest_overrides(state, base)
        if change is None:
            continue
        flags = " ".join(f"encoder.arch.{k}={_text(v)}" for k, v in sorted(change.items()))
        heads = (f" (num_heads {change.get('num_heads', base['arch'].get('num_heads'))} is assumed: no "
                 f"weight records it; set encoder.arch.num_heads to the value it was trained with)"
                 if "embed_dim" in change else "")
        return (f"It looks like {what}, which no registry entry matches as it is: "
                f"--encoder {base['name']}{key_flag(base['name'])} {flags}".rstrip() + f" fits it{heads}.")
    return f"It looks like {what}, which no registry entry matches."
