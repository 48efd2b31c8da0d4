"""JEPA mask generators: statistics, bounds, temporal extent, determinism, collation."""
import math

import pytest
import torch

from encoders.jepa.masks import (MaskCollator, MultiBlockMask2D, MultiBlockMask3D, RandomMask,
                                 TubeMask, build_mask_generator)

RELEASE_MASKS = [
    {"type": "multiblock3d", "num_blocks": 8, "spatial_scale": [0.15, 0.15], "aspect_ratio": [0.75, 1.5]},
    {"type": "multiblock3d", "num_blocks": 2, "spatial_scale": [0.7, 0.7], "aspect_ratio": [0.75, 1.5]},
]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _check_partition(mb, n_tokens):
    """Context and target are disjoint, sorted, inside the grid, per sample."""
    for b in range(mb.context.shape[0]):
        ctx = mb.context[b].tolist()
        assert ctx == sorted(ctx) and len(set(ctx)) == len(ctx)
        for tgt in mb.targets:
            t = tgt[b].tolist()
            assert t == sorted(t)
            assert not set(ctx) & set(t), "a context token is also a target"
            assert min(ctx + t) >= 0 and max(ctx + t) < n_tokens


@pytest.mark.parametrize("grid", [(8, 14, 14), (4, 4, 4)])
def test_release_multiblock_masked_fraction_bands(grid):
    # Per-sample union of blocks (before the batch truncation), over many draws.
    n = math.prod(grid)
    g = _gen(1)
    means = []
    for cfg in RELEASE_MASKS:
        spec = dict(cfg)
        spec.pop("type")
        m = MultiBlockMask3D(grid, **spec)
        fracs = []
        for _ in range(300):
            keep = m._sample_keep(m.block_size(g), g)
            fracs.append(1.0 - keep.float().mean().item())
        means.append(sum(fracs) / len(fracs))
        assert 0.0 < min(fracs) and max(fracs) <= 1.0
    # 8 blocks of 15%: union well above one block, below independent coverage 1 - 0.85^8 = 0.73
    assert 0.45 < means[0] < 0.73, means
    # 2 blocks of 70%: at least one block's area, clearly above the short-range config
    assert 0.70 <= means[1] < 0.95 and means[1] > means[0] + 0.1, means


def test_multiblock_blocks_span_full_time_and_stay_in_grid():
    grid = (8, 14, 14)
    m = MultiBlockMask3D(grid, spatial_scale=(0.15, 0.15), num_blocks=8)
    g = _gen(2)
    for _ in range(50):
        keep = m._sample_keep(m.block_size(g), g)
        assert keep.shape == grid
        # temporal_scale (1, 1): every time step has the same spatial mask (tubes through time)
        assert torch.equal(keep, keep[:1].expand_as(keep))
    coll = MaskCollator(RELEASE_MASKS, grid, seed=0)
    for _ in range(5):
        for mb in coll(4):
            _check_partition(mb, math.prod(grid))
            assert mb.context.shape[0] == 4 and len(mb.targets) == 1
            # batch truncation: every sample keeps the same number of tokens
            assert mb.context.shape[1] + mb.targets[0].shape[1] <= math.prod(grid)


def test_block_size_fixed_within_batch_and_bounded():
    m = MultiBlockMask3D((4, 6, 6), spatial_scale=(0.2, 0.2), aspect_ratio=(0.75, 1.5), num_blocks=1)
    g = _gen(3)
    for _ in range(30):
        t, h, w = m.block_size(g)
        assert t == 4 and 1 <= h <= 6 and 1 <= w <= 6
        assert abs(h * w - int(36 * 0.2)) <= 3
    # One block per sample: the target of each sample is one h x w rectangle, same size for all
    mb = m(6, g)
    assert mb.targets[0].shape[1] % 4 == 0  # full time extent


def test_max_temporal_keep_limits_context_in_time():
    grid = (4, 4, 4)
    m = MultiBlockMask3D(grid, spatial_scale=(0.15, 0.15), num_blocks=1, max_temporal_keep=0.5)
    mb = m(8, _gen(4))
    assert int(mb.context.max()) < 2 * 16  # context only in the first 2 of 4 time steps


def test_collator_deterministic_and_state_roundtrip():
    a = MaskCollator(RELEASE_MASKS, (4, 4, 4), seed=7)
    b = MaskCollator(RELEASE_MASKS, (4, 4, 4), seed=7)
    c = MaskCollator(RELEASE_MASKS, (4, 4, 4), seed=8)
    first_a, first_b, first_c = a(4), b(4), c(4)
    for x, y in zip(first_a, first_b):
        assert torch.equal(x.context, y.context) and torch.equal(x.targets[0], y.targets[0])
    assert any(not torch.equal(x.context, y.context) or x.context.shape != y.context.shape
               for x, y in zip(first_a, first_c))
    state = a.state_dict()
    nxt = a(4)
    a.load_state_dict(state)
    again = a(4)
    for x, y in zip(nxt, again):
        assert torch.equal(x.context, y.context) and torch.equal(x.targets[0], y.targets[0])


def test_tube_and_random_masks():
    grid = (4, 4, 4)
    tube = TubeMask(grid, ratio=0.75)(3, _gen(5))
    _check_partition(tube, 64)
    assert tube.context.shape == (3, 4 * 4)  # 4 of 16 spatial positions kept, at each of 4 steps
    spatial = tube.context % 16
    for b in range(3):  # the same spatial positions at every time step
        per_t = spatial[b].view(4, 4)
        assert all(torch.equal(per_t[0], per_t[i]) for i in range(4))
    rnd = RandomMask(grid, ratio=0.9)(3, _gen(6))
    _check_partition(rnd, 64)
    assert rnd.context.shape == (3, 6) and rnd.targets[0].shape == (3, 58)
    with pytest.raises(ValueError, match="ratio"):
        TubeMask(grid, ratio=1.0)


def test_multiblock2d_ijepa_masks():
    grid = (1, 14, 14)
    m = MultiBlockMask2D(grid, num_targets=4, pred_scale=(0.15, 0.2), enc_scale=(0.85, 1.0), min_keep=10)
    g = _gen(7)
    for _ in range(20):
        mb = m(4, g)
        assert len(mb.targets) == 4
        _check_partition(mb, 196)
        k = mb.targets[0].shape[1]
        assert all(t.shape == (4, k) for t in mb.targets)
        assert int(196 * 0.15) - 8 <= k <= int(196 * 0.2) + 8
        assert mb.context.shape[1] >= 10
    # tiny grid still works with a small min_keep
    mb = build_mask_generator({"type": "multiblock2d", "min_keep": 4}, (1, 4, 4))(8, g)
    _check_partition(mb, 16)


def test_unknown_mask_type_is_clear():
    with pytest.raises(ValueError, match="unknown mask type 'blocks'"):
        build_mask_generator({"type": "blocks"}, (4, 4, 4))
    with pytest.raises(ValueError, match="bad options"):
        build_mask_generator({"type": "tube", "num_blocks": 3}, (4, 4, 4))


def test_2d_targets_never_swallow_the_whole_small_grid():
    # 4 blocks of 2x2 on a 4x4 grid can tile it exactly; positions are redrawn so that a
    # context always remains (this once stopped the demo's image pretraining at step 18).
    from encoders.jepa.masks import MultiBlockMask2D

    gen = MultiBlockMask2D((1, 4, 4), pred_scale=(0.25, 0.25), aspect_ratio=(1.0, 1.0),
                           num_targets=4, min_keep=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = gen(8, g)
        assert batch.context.shape[1] >= 1
        for ctx, *tgts in zip(batch.context, *batch.targets):
            assert not set(ctx.tolist()) & set(torch.cat(tgts).tolist())
