"""Which registry entry a checkpoint probably belongs to, judged from its keys and shapes.

Used to turn "does not fit the model" into "this is a VideoMAE ViT-L file: try videomae_vitl".
Each family leaves marks in its files: the patch embedding's kernel (5-D for video tubelets,
4-D for images) and width, a stored or absent position table, VideoMAE's separate `q_bias` /
`v_bias`, a timm `cls_token`. The guess is a hint in an error message, never a load decision.
"""
from __future__ import annotations

from typing import Mapping

_WRAPPERS = ("module.", "backbone.", "_orig_mod.", "encoder.", "model.")


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
    patch = next((v for k, v in keys.items() if k.endswith("patch_embed.proj.weight")
                  or k.endswith("patch_embeddings.projection.weight")), None)
    if patch is None or len(patch.shape) not in (4, 5):
        return None
    video = len(patch.shape) == 5
    names = " ".join(keys)
    if "q_bias" in names:
        family = "videomae"
    elif "cls_token" in names:
        family = "timm"
    elif video:
        family = "vjepa" if any(k.endswith("pos_embed") for k in keys) else "vjepa2"
    else:
        family = "ijepa"
    return {"family": family, "width": int(patch.shape[0]), "patch": int(patch.shape[-1]),
            "video": video}


def _family_of(cfg: Mapping) -> str:
    fam = str(cfg.get("family", "")).lower()
    for name in ("videomae", "vjepa2", "ijepa", "vjepa", "timm"):
        if name in fam:
            return name
    return fam


def likely_entries(state: Mapping, exclude: str | None = None) -> tuple[dict | None, list[str]]:
    """The checkpoint's signature and the registry entries it fits (same family, width, patch)."""
    from .registry import config, names

    sig = signature(state)
    if sig is None:
        return None, []
    fits = []
    for name in names():
        if name == exclude:
            continue
        cfg = config(name)
        arch = cfg.get("arch", {})
        if _family_of(cfg) == sig["family"] and int(arch.get("embed_dim", -1)) == sig["width"] \
                and int(arch.get("patch_size", -1)) == sig["patch"]:
            fits.append(name)
    return sig, fits


def hint(state: Mapping, exclude: str | None = None) -> str:
    """One sentence for an error message, or '' when the checkpoint is not recognised."""
    sig, fits = likely_entries(state, exclude)
    if sig is None:
        return ""
    what = (f"a {sig['family']} {'video' if sig['video'] else 'image'} encoder checkpoint "
            f"(width {sig['width']}, patch {sig['patch']})")
    if fits:
        return f"It looks like {what}: try --encoder {' or '.join(fits)}."
    return f"It looks like {what}, which no registry entry matches."
