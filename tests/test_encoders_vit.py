"""ViT backbone and FrozenEncoder: parameter names, shapes, masks, image frame-wise tokens, frozenness."""

import pytest
import torch

import encoders
from encoders.pos_embed import sincos_3d
from encoders.vit import VisionTransformer


@pytest.fixture(scope="module")
def tiny():
    return encoders.build("vjepa_tiny", random_init=True, depth=2)


def test_release_parameter_names(tiny):
    keys = set(tiny.backbone.state_dict())
    expected = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias"}
    for i in range(2):
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            expected |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
    assert keys == expected
    assert isinstance(tiny.backbone.patch_embed.proj, torch.nn.Conv3d)
    assert tiny.backbone.patch_embed.proj.kernel_size == (2, 8, 8)
    assert tiny.backbone.norm.eps == 1e-6 and tiny.backbone.blocks[0].norm1.eps == 1e-6


def test_pos_embed_is_fixed_sincos_in_state_dict(tiny):
    pe = tiny.backbone.pos_embed
    assert isinstance(pe, torch.nn.Parameter) and not pe.requires_grad
    assert pe.shape == (1, 4 * 4 * 4, 96)
    torch.testing.assert_close(pe, sincos_3d(96, 4, 4, uniform_power=True).unsqueeze(0))


def test_video_forward_shapes_and_interpolation(tiny):
    assert tiny(torch.randn(2, 3, 8, 32, 32)).shape == (2, 64, 96)
    # Other frame counts and resolutions interpolate the position embedding.
    assert tiny(torch.randn(1, 3, 4, 48, 40)).shape == (1, 2 * 6 * 5, 96)
    with pytest.raises(ValueError, match="tubelet"):
        tiny(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="expects normalised video"):
        tiny(torch.randn(1, 3, 32, 32))


def test_masks_keep_the_indexed_tokens():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=48, depth=0, num_heads=4,
                            uniform_power=True).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    idx = torch.tensor([[0, 5, 31], [7, 2, 9]])
    full, kept = vit(x), vit(x, masks=idx)
    # With no blocks, tokens are independent: the masked output is the full output, gathered.
    torch.testing.assert_close(kept, torch.stack([full[0, idx[0]], full[1, idx[1]]]))
    # A list of masks stacks along the batch, mask-major (the release's apply_masks order).
    both = vit(x, masks=[idx, idx.flip(1)])
    assert both.shape == (4, 3, 48)
    torch.testing.assert_close(both[2], full[0, idx[0].flip(0)])
    with pytest.raises(ValueError, match="token indices"):
        vit(x, masks=idx.float())


def test_masks_with_blocks_change_context(tiny):
    x = torch.randn(1, 3, 8, 32, 32)
    idx = torch.arange(0, 64, 4).unsqueeze(0)
    out = tiny.backbone(x, masks=idx)
    assert out.shape == (1, 16, 96)
    assert not torch.allclose(out, tiny.backbone(x)[:, idx[0]])  # attention sees only the kept tokens


def test_image_encoder_runs_frame_by_frame():
    enc = encoders.build("ijepa_tiny", random_init=True, depth=2)
    assert isinstance(enc.backbone.patch_embed.proj, torch.nn.Conv2d)  # the I-JEPA layout
    assert enc.backbone.pos_embed.shape == (1, 16, 96)
    video = torch.randn(2, 3, 3, 32, 32)
    tokens = enc(video)
    assert tokens.shape == (2, 3 * 16, 96)
    for t in range(3):
        torch.testing.assert_close(tokens[:, 16 * t:16 * (t + 1)], enc.backbone(video[:, :, t]), atol=1e-5, rtol=1e-5)
    assert enc.backbone(video[:, :, :1]).shape == (2, 16, 96)  # (B, C, 1, H, W) also accepted


def test_frozen_encoder_has_no_grads_and_stays_in_eval(tiny):
    assert all(not p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.training and not tiny.backbone.training
    assert all(not m.training for m in tiny.modules())
    x = torch.randn(1, 3, 8, 32, 32, requires_grad=True)
    out = tiny(x)
    assert not out.requires_grad and out.grad_fn is None


def test_out_layers_returns_normed_intermediate_blocks(tiny):
    x = torch.randn(1, 3, 8, 32, 32)
    outs = tiny(x, out_layers=[0, -1])
    assert len(outs) == 2 and outs[0].shape == (1, 64, 96)
    torch.testing.assert_close(outs[1], tiny(x))
    assert not torch.allclose(outs[0], outs[1])
    with pytest.raises(ValueError, match="out of range"):
        tiny(x, out_layers=[2])

