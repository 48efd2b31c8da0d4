"""RoI probe (AVA): shapes, which tokens a box reads, time pooling, batch indexing, what trains,
and the pooled features against values worked out by hand on ramp feature maps."""
import pytest
import torch

import probes
from encoders.vit import PatchEmbed3D
from probes.roi import RoIProbe

GRID = (2, 4, 6)  # t, h, w: non-square, so x must scale by w and y by h
T, H, W = GRID
N = T * H * W


def _tokens_from_map(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, t, h, w) -> (B, t*h*w, C) in the ViT's order (t-major, then h, then w)."""
    return fmap.flatten(2).transpose(1, 2)


def _probe(embed_dim=4, num_classes=3, grid=GRID, out_layers=(-1,), **kw) -> RoIProbe:
    torch.manual_seed(0)
    return RoIProbe(embed_dim, num_classes, token_grid=grid, out_layers=out_layers, **kw).eval()


def test_output_shapes_and_config():
    probe = probes.build("roi_linear", 8, 5, token_grid=GRID)
    assert probe.out_layers == (-7, -5, -3, -1) and probe.trainable
    assert probe.linear.in_features == 8 * 4
    tokens = torch.randn(3, N, 8 * 4)
    boxes = torch.tensor([[0, 0.1, 0.1, 0.5, 0.9], [2, 0.0, 0.0, 1.0, 1.0],
                          [2, 0.3, 0.2, 0.4, 0.3], [1, 0.5, 0.5, 0.6, 0.6]])
    assert probe(tokens, boxes=boxes).shape == (4, 5)  # the trainer passes boxes by keyword
    assert probe(tokens, boxes[:0]).shape == (0, 5)

    cfg = probes.config("roi_linear")
    assert cfg["kind"] == "roi_linear" and cfg["out_layers"] == [-7, -5, -3, -1]
    assert (cfg["roi_size"], cfg["pool"], cfg["aligned"]) == (7, "max", True)
    kw = {k: v for k, v in cfg.items() if k not in ("kind", *probes.registry.GRID_KEYS)}
    built = probes.build("roi_linear", 8, 5, token_grid=GRID, **kw)
    assert built.out_layers == (-7, -5, -3, -1) and built.dropout.p == cfg["dropout"]


def test_wrong_grid_or_width_is_a_clear_error():
    probe = _probe(embed_dim=4, out_layers=(-3, -1))
    boxes = torch.tensor([[0, 0.1, 0.1, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"tokens \(B, 48, 8\).*grid \(2, 4, 6\)"):
        probe(torch.randn(1, N - 6, 8), boxes)  # a clip of another length / resolution
    with pytest.raises(ValueError, match="2 taps of width 4"):
        probe(torch.randn(1, N, 4), boxes)  # one tap, not the two concatenated
    with pytest.raises(ValueError, match="token grid"):
        probes.build("roi_linear", 4, 3)
    with pytest.raises(ValueError, match=r"\(t, h, w\)"):
        probes.build("roi_linear", 4, 3, token_grid=(4, 6))
    with pytest.raises(ValueError, match="pool"):
        probes.build("roi_linear", 4, 3, token_grid=GRID, pool="mean")


def test_bad_boxes_are_clear_errors():
    probe = _probe()
    tokens = torch.randn(2, N, 4)
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        probe(tokens, torch.tensor([[0, 10.0, 20.0, 100.0, 200.0]]))  # pixel boxes
    with pytest.raises(ValueError, match=r"batch indices .* \[0, 1\]"):
        probe(tokens, torch.tensor([[2, 0.1, 0.1, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="x1 <= x2"):
        probe(tokens, torch.tensor([[0, 0.5, 0.1, 0.1, 0.5]]))
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        probe(tokens, torch.tensor([[0.1, 0.1, 0.5, 0.5]]))


def test_vit_patch_order_is_t_then_h_then_w():
    # The ViT's PatchEmbed3D with each output channel the mean of one input channel over its
    # 1x2x2 tubelet: channel 0 = pixel x, 1 = pixel y, 2 = frame index. The probe's time-pooled
    # map must then hold, at token (i, j), that token's centre and the clip's mean frame index.
    patch, frames = 2, 3
    embed = PatchEmbed3D(patch, 1, 3, 3)
    with torch.no_grad():
        embed.proj.weight.zero_()
        embed.proj.bias.zero_()
        for c in range(3):
            embed.proj.weight[c, c] = 1.0 / patch ** 2
    h, w = 4, 5
    ys, xs = torch.meshgrid(torch.arange(h * patch) + 0.5, torch.arange(w * patch) + 0.5,
                            indexing="ij")
    video = torch.stack([xs.expand(frames, -1, -1), ys.expand(frames, -1, -1),
                         torch.arange(frames, dtype=torch.float)[:, None, None]
                         .expand(-1, h * patch, w * patch)])[None]  # (1, 3, T, H, W)
    with torch.no_grad():
        tokens = embed(video)
    fmap = _probe(embed_dim=3, grid=(frames, h, w)).feature_map(tokens)[0]
    centres_x = (torch.arange(w) + 0.5) * patch
    centres_y = (torch.arange(h) + 0.5) * patch
    torch.testing.assert_close(fmap[0], centres_x.expand(h, -1))
    torch.testing.assert_close(fmap[1], centres_y[:, None].expand(-1, w))
    torch.testing.assert_close(fmap[2], torch.full((h, w), (frames - 1) / 2))


def test_box_reads_only_its_tokens():
    probe = _probe()
    tokens = torch.randn(1, N, 4)
    # The top-left quadrant (h 0-1, w 0-2) from its first token centres to its last ones: the
    # bilinear samples then fall between those centres only.
    box = torch.tensor([[0, 0.5 / W, 0.5 / H, 2.5 / W, 1.5 / H]])
    fmap = tokens.transpose(1, 2).reshape(1, 4, T, H, W)
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[:2, :3] = True
    with torch.no_grad():
        ref = probe(tokens, box)
        outside_changed = torch.where(inside, fmap, fmap + 5 * torch.randn_like(fmap))
        inside_changed = torch.where(inside, fmap + 5, fmap)
        assert torch.equal(probe(_tokens_from_map(outside_changed), box), ref)
        assert not torch.allclose(probe(_tokens_from_map(inside_changed), box), ref)

        # A box on the quadrant's edges also reads the next token row/column (bilinear
        # interpolation between centres) but nothing two or more tokens beyond.
        edge_box = torch.tensor([[0, 0.0, 0.0, 3.0 / W, 2.0 / H]])
        near = torch.zeros(H, W, dtype=torch.bool)
        near[:3, :4] = True
        ref = probe(tokens, edge_box)
        far_changed = torch.where(near, fmap, fmap + 5 * torch.randn_like(fmap))
        assert torch.equal(probe(_tokens_from_map(far_changed), edge_box), ref)


def test_time_pooling_is_a_mean():
    probe = _probe()
    probe_1 = _probe(grid=(1, H, W))
    probe_1.load_state_dict(probe.state_dict())
    tokens = torch.randn(2, N, 4)
    boxes = torch.tensor([[0, 0.1, 0.2, 0.7, 0.9], [1, 0.0, 0.0, 1.0, 1.0]])
    mean_tokens = tokens.reshape(2, T, H * W, 4).mean(dim=1)
    with torch.no_grad():
        torch.testing.assert_close(probe(tokens, boxes), probe_1(mean_tokens, boxes))
        # Moving content between frames without changing the per-token mean changes nothing.
        shifted = tokens.reshape(2, T, H * W, 4).clone()
        delta = torch.randn(2, H * W, 4)
        shifted[:, 0] += delta
        shifted[:, 1] -= delta
        torch.testing.assert_close(probe(shifted.reshape(2, N, 4), boxes), probe(tokens, boxes))


def test_boxes_read_their_own_batch_item():
    probe = _probe()
    tokens = torch.randn(3, N, 4)
    box = [0.2, 0.1, 0.8, 0.6]
    boxes = torch.tensor([[1, *box], [2, *box], [1, *box]])
    with torch.no_grad():
        out = probe(tokens, boxes)
        for k, b in enumerate([1, 2, 1]):
            alone = probe(tokens[b:b + 1], torch.tensor([[0, *box]]))
            torch.testing.assert_close(out[k:k + 1], alone)
        other = tokens.clone()
        other[0] = torch.randn(N, 4)  # no box reads item 0
        assert torch.equal(probe(other, boxes), out)
    assert not torch.allclose(out[0], out[1])


def test_only_the_linear_layer_trains():
    probe = _probe(dropout=0.5).train()
    assert [n for n, _ in probe.named_parameters()] == ["linear.weight", "linear.bias"]
    tokens = torch.randn(2, N, 4, requires_grad=True)
    boxes = torch.tensor([[0, 0.1, 0.1, 0.9, 0.9], [1, 0.2, 0.3, 0.4, 0.5]])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        probe(tokens, boxes), torch.ones(2, 3))
    loss.backward()
    assert probe.linear.weight.grad.abs().sum() > 0 and probe.linear.bias.grad is not None
    # Dropout acts in training only: in eval mode the output is deterministic.
    probe.eval()
    with torch.no_grad():
        assert torch.equal(probe(tokens, boxes), probe(tokens, boxes))


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_matches_hand_computed_roi_align_on_ramps(pool):
    # Channels: x ramp (each token holds its centre's normalised x), y ramp, a constant, and a
    # constant that differs between frames (mean 2). Inside the token centres, bilinear
    # interpolation of a ramp returns the sampling point's coordinate, and a 7x7 aligned RoIAlign
    # bin's samples average to the bin centre: bin p of a box [a, b] reads a + (p + 0.5) / 7 *
    # (b - a). So the avg pool is the box centre, the max pool (ramps rise) the last bin's.
    x = (torch.arange(W) + 0.5) / W
    y = (torch.arange(H) + 0.5) / H
    fmap = torch.stack([x.expand(T, H, W), y[:, None].expand(T, H, W),
                        torch.full((T, H, W), 0.25),
                        torch.tensor([1.0, 3.0])[:, None, None].expand(T, H, W)])[None]
    tokens = _tokens_from_map(fmap)
    probe = _probe(embed_dim=2, num_classes=3, out_layers=(-3, -1), pool=pool)
    x1, y1, x2, y2 = 0.15, 0.2, 0.8, 0.75  # within the first/last token centres
    boxes = torch.tensor([[0, x1, y1, x2, y2]])
    f = 0.5 if pool == "avg" else 6.5 / 7
    expected_features = torch.tensor([[x1 + f * (x2 - x1), y1 + f * (y2 - y1), 0.25, 2.0]])
    with torch.no_grad():
        torch.testing.assert_close(probe.features(tokens, boxes), expected_features)
        expected = expected_features @ probe.linear.weight.T + probe.linear.bias
        torch.testing.assert_close(probe(tokens, boxes), expected)
