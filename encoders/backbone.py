"""A config's backbone and the conversion of a checkpoint onto it: the pieces that loading,
cost counting and wrong-family hints share.

`build_backbone(cfg, device)` calls the config's lazy `builder` ("module:function"), on the meta
device when asked (every tensor then comes from a checkpoint, so a ViT-g costs no memory);
`convert_state(cfg, state, model)` runs the config's `checkpoint_filter`, timm-style, which maps a
family's release or Hugging Face layout onto the module in one place.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from .registry import resolve_target


def build_backbone(cfg: Mapping[str, Any], device=None, *, force_device: bool = False):
    """The module `cfg['builder']` makes for `cfg` (a composed, validated encoder config).

    `device` is passed to builders that take it; others build on the CPU (their weights are then
    initialised, and loading copies over them), unless `force_device`, which builds them under
    `torch.device(device)` (cost counting on meta, where no tensor is ever read)."""
    builder = resolve_target(cfg["builder"])
    if device is not None and "device" in inspect.signature(builder).parameters:
        return builder(dict(cfg), device=device)
    if device is None or not force_device:
        return builder(dict(cfg))
    import torch

    with torch.device(device):
        return builder(dict(cfg))


def convert_state(cfg: Mapping[str, Any], state: Mapping[str, Any], model=None) -> dict[str, Any]:
    """`state` in the module's names: the config's `checkpoint_filter` applied (a filter that
    takes `model` sees the built module's exact names); unchanged when the config has none."""
    target = cfg.get("checkpoint_filter")
    if not target:
        return dict(state)
    convert = resolve_target(target)
    if "model" in inspect.signature(convert).parameters:
        return convert(state, model=model)
    return convert(state)
