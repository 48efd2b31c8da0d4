"""Clip transforms: shapes, one set of random parameters per clip, eval views, normalisation."""

import pytest
import torch

from tasks import DataError
from tasks.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

PAPER_AUG = dict(random_resized_crop={"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
                 randaugment={"num_ops": 4, "magnitude": 7}, random_erasing=1.0, horizontal_flip=False)


def test_train_transform_shape_and_same_params_for_all_frames():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (1, 40, 56, 3), dtype=torch.uint8)
    clip = frame.expand(6, -1, -1, -1).contiguous()  # a still video
    tf = TrainTransform(32, **PAPER_AUG)
    for _ in range(5):
        (out,) = tf(clip)
        assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
        # identical frames stay identical: crop, RandAugment ops and erased box are per clip
        assert torch.equal(out[:, 0], out[:, -1])


def test_train_transform_is_random_and_seedable():
    clip = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8)
    tf = TrainTransform(24, **PAPER_AUG)
    torch.manual_seed(1); a = tf(clip)[0]
    torch.manual_seed(1); b = tf(clip)[0]
    torch.manual_seed(2); c = tf(clip)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_normalisation():
    mean, std = (0.5, 0.25, 0.75), (0.5, 0.25, 0.25)
    clip = torch.full((2, 16, 16, 3), 255, dtype=torch.uint8)
    (out,) = EvalTransform(16, mean, std, views=1)(clip)
    expected = torch.tensor([(1 - m) / s for m, s in zip(mean, std)])
    assert torch.allclose(out.mean(dim=(1, 2, 3)), expected, atol=1e-5)
    clip = torch.zeros((2, 16, 16, 3), dtype=torch.uint8)
    (out,) = TrainTransform(16, IMAGENET_MEAN, IMAGENET_STD)(clip)
    expected = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(out.mean(dim=(1, 2, 3)), expected, atol=1e-5)


def test_eval_views_span_the_long_side():
    # brightness grows left to right, so left/centre/right crops have increasing means
    W = 96
    ramp = torch.linspace(0, 255, W).round().to(torch.uint8)
    clip = ramp[None, None, :, None].expand(3, 48, W, 3).contiguous()
    views = EvalTransform(32, views=3)(clip)
    assert len(views) == 3 and all(v.shape == (3, 3, 32, 32) for v in views)
    means = [v.mean().item() for v in views]
    assert means[0] < means[1] < means[2]
    # the left view starts at the left edge: its first column is the darkest of the resized clip
    assert views[0][0, 0, :, 0].mean() == pytest.approx(views[0][0].min().item(), abs=0.1)
    # tall video: views go top to bottom
    tall = clip.permute(0, 2, 1, 3).contiguous()
    tv = EvalTransform(32, views=3)(tall)
    assert [v.shape for v in tv] == [(3, 3, 32, 32)] * 3
    assert tv[0].mean() < tv[2].mean()


def test_single_view_is_a_centre_crop():
    clip = torch.zeros((2, 64, 64, 3), dtype=torch.uint8)
    clip[:, 16:48, 16:48] = 255  # a centred bright square
    # short side 64 = 32 * 2: no resampling, so the centre crop is exactly the bright square
    (out,) = EvalTransform(32, (0, 0, 0), (1, 1, 1), views=1, single_view_short_side_scale=2.0)(clip)
    assert out.shape == (3, 2, 32, 32)
    assert torch.all(out == 1.0)
    (small,) = EvalTransform(32, (0, 0, 0), (1, 1, 1), views=1, single_view_short_side_scale=1.0)(clip)
    assert small[:, :, 10:22, 10:22].min() > 0.99 and small[:, :, :4, :4].max() < 0.01


def test_unknown_keys_rejected():
    with pytest.raises(DataError, match="flip"):
        TrainTransform(32, flip=True)
    with pytest.raises(DataError, match="crop"):
        EvalTransform(32, views=3, crop=1)
