"""V-JEPA / I-JEPA family: the release's ViT built from an encoder config.

Checkpoints of this family need no key conversion beyond the generic prefix stripping in
`checkpoint.py`: `vit.VisionTransformer` uses the release's parameter names.
"""

from __future__ import annotations

from typing import Any, Mapping

from .vit import VisionTransformer


def build_vit(cfg: Mapping[str, Any], device=None) -> VisionTransformer:
    """The backbone described by `cfg['arch']` (a composed encoder config)."""
    arch = dict(cfg["arch"])
    video = cfg["modality"] == "video"
    return VisionTransformer(
        img_size=int(arch["resolution"]),
        patch_size=int(arch["patch_size"]),
        num_frames=int(arch.get("num_frames", 1)),
        tubelet_size=int(arch.get("tubelet_size", 1)),
        video=video,
        in_chans=int(arch.get("in_chans", 3)),
        embed_dim=int(arch["embed_dim"]),
        depth=int(arch["depth"]),
        num_heads=int(arch["num_heads"]),
        mlp_ratio=float(arch.get("mlp_ratio", 4.0)),
        qkv_bias=bool(arch.get("qkv_bias", True)),
        uniform_power=bool(arch.get("uniform_power", False)),
        drop_path_rate=float(arch.get("drop_path_rate", 0.0)),
        init_std=float(arch.get("init_std", 0.02)),
        device=device,
    )
