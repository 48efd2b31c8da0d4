"""What an encoder entry is, beyond its architecture: publication, weights, licence, data, and
the cost of one clip at its expected input (parameters; GFLOPs counted by
`torch.utils.flop_counter` on the meta device, so even ViT-g costs no memory or compute).

The static facts live in each YAML's `metadata:` mapping; `describe()` adds the measured ones.
`harness encoders --verbose` prints them, and every record copies them.
"""
from __future__ import annotations

from typing import Any, Mapping

METADATA_KEYS = ("paper", "weights", "licence", "pretraining_data", "notes")


def check_metadata(label: str, metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"encoder config {label!r}: metadata must be a mapping of "
                         f"{', '.join(METADATA_KEYS)}")
    unknown = sorted(set(metadata) - set(METADATA_KEYS))
    if unknown:
        raise ValueError(f"encoder config {label!r}: unknown metadata key(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(METADATA_KEYS)}")
    return {str(k): str(v) for k, v in metadata.items()}


def expected_input(cfg: Mapping[str, Any]) -> dict[str, Any]:
    arch = cfg["arch"]
    frames = int(arch.get("num_frames", 1))
    return {"frames": frames, "resolution": int(arch["resolution"]),
            "mean": list(cfg["mean"]), "std": list(cfg["std"])}


def cost(cfg: Mapping[str, Any], frames: int | None = None, resolution: int | None = None) -> dict:
    """Parameters and GFLOPs of one clip (frames x resolution^2; image encoders: every frame)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .frozen import FrozenEncoder, _build_backbone
    from .registry import resolve_target
    from .spec import EncoderSpec

    inp = expected_input(cfg)
    frames = int(frames or inp["frames"])
    res = int(resolution or inp["resolution"])
    builder = resolve_target(cfg["builder"])
    with torch.device("meta"):  # builders that ignore device= still land on meta
        backbone = _build_backbone(builder, dict(cfg), device="meta")
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
