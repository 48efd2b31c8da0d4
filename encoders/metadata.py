"""What an encoder entry is, beyond its architecture: publication, weights, licence, data, and
the cost of one clip at its expected input (parameters; GFLOPs counted by
`torch.utils.flop_counter` on the meta device, so even ViT-g costs no memory or compute).

The static facts live in each YAML's `metadata:` mapping; `describe()` adds the measured ones.
`harness encoders --verbose` prints them, and every record copies them.
"""
from __future__ import annotations

from typing import Any, Mapping

from .registry import METADATA_KEYS, check_metadata  # noqa: F401  (the checks live with the registry)
from .spec import EncoderSpec


def expected_input(cfg: Mapping[str, Any]) -> dict[str, Any]:
    arch = cfg["arch"]
    frames = int(arch.get("num_frames", 1))
    return {"frames": frames, "resolution": int(arch["resolution"]),
            "mean": list(cfg["mean"]), "std": list(cfg["std"])}


def cost(cfg: Mapping[str, Any], frames: int | None = None, resolution: int | None = None) -> dict:
    """Parameters and GFLOPs of one clip (frames x resolution^2; image encoders: every frame)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .backbone import build_backbone  # torch-heavy: only when measuring
    from .frozen import FrozenEncoder

    inp = expected_input(cfg)
    frames = int(frames or inp["frames"])
    res = int(resolution or inp["resolution"])
    backbone = build_backbone(cfg, device="meta", force_device=True)
    enc = FrozenEncoder(backbone.to("meta"), EncoderSpec.from_config(cfg))
    clip = torch.empty(1, len(cfg["mean"]), frames, res, res, device="meta")
    with FlopCounterMode(display=False) as counter:
        enc(clip)
    return {"parameters": sum(p.numel() for p in backbone.parameters()),
            "gflops_per_clip": round(counter.get_total_flops() / 1e9, 3),
            "clip": f"{frames}x{res}x{res}"}


def describe(cfg: Mapping[str, Any], *, measure: bool = True) -> dict[str, Any]:
    """The entry's metadata, expected input and (with `measure`) parameters and GFLOPs."""
    out = {"name": cfg["name"], "family": cfg.get("family", ""),
           **check_metadata(cfg["name"], cfg.get("metadata")), "input": expected_input(cfg)}
    if measure:
        out.update(cost(cfg))
    return out
