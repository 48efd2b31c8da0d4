"""Clip transforms: uint8 frames `(T, H, W, 3)` in, normalised views `(3, T, r, r)` out.

Clips travel from the data loader as uint8 and are resized and normalised on the device, so the
training transform has two halves: `TrainTransform.draw` runs on the CPU in a loader worker
(every random draw of the clip, returned as plain-python params; with `randaugment_backend: pil`,
the release's, also RandAugment's pixel work on PIL frames), `TrainTransform.apply` runs on any
device (with `randaugment_backend: tensor`, RandAugment on the uint8 clip (`tasks/randaugment.py`,
the same draws and, measured per op, the same pixels as timm's PIL ops); then normalise, crop +
resize, flip, erase). The
evaluation transform (`tasks/eval_transform.py`) is deterministic and runs wholly on the device.

Both reproduce the V-JEPA release's frozen-evaluation transforms (facebookresearch/jepa @ 51c59d5,
`evals/video_classification_frozen/utils.py`: `VideoTransform`, `EvalVideoTransform`, as built by
`eval.py`'s `make_dataloader`); `tests/fixtures/make_release_transforms.py` records the release's
outputs and `tests/test_tasks_transforms.py` checks ours against them. Facts used:

* train, per clip: timm-style RandAugment `rand-m7-n4-mstd0.5-inc1`, bicubic, on PIL frames, one
  draw per clip applied to every frame (`randaugment.py` `AugmentOp.__call__` on a list) ->
  ToTensor -> normalise -> random resized crop of the normalised `(C, T, H, W)` tensor
  (`_get_param_spatial_crop`, then `F.interpolate(mode='bilinear', align_corners=False)` with the
  T frames as channels) -> random erasing, pixel mode, p 0.25, on the `(T, C, r, r)` clip.
  The release's `RandomErasing` keeps its default `cube=True`: ONE box per clip, shared by all
  frames, each frame filled with its own N(0, 1) noise (`erasing_per_frame: false` here; `true`
  gives the release's `cube=False` variant: an independent draw and box per frame).
  No horizontal flip (motion classes such as "pushing something left to right" would swap).
* eval, V > 1 views: resize the short side to the crop size with OpenCV's `INTER_LINEAR`
  (uint8 out, not antialiased), V crops spaced `(long - crop) // (V - 1)` apart along the long
  side, ToTensor, normalise. V = 1: resize the short side to `int(crop * 256 / 224)`, centre crop
  at `int(round((size - crop) / 2))` (Python's half-to-even round), ToTensor, normalise.
  Ours reproduces OpenCV's fixed-point bilinear resize bit for bit in integer torch ops.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRAIN_AUG_KEYS = {"random_resized_crop", "randaugment", "randaugment_interpolation", "randaugment_backend",
                  "random_erasing", "erasing_per_frame", "horizontal_flip", "interpolation"}
# Where RandAugment's pixel work runs: "pil" (the release: timm's PIL ops in the loader worker) or
# "tensor" (tasks/randaugment.py on the compute device, from the same draws; its own protocol).
RANDAUGMENT_BACKENDS = ("pil", "tensor")
EVAL_KEYS = {"short_side_scale", "single_view_short_side_scale", "interpolation", "antialias", "round_to_uint8"}
RESIZE_MODES = ("bilinear", "bicubic", "nearest")
RELEASE_RANDAUGMENT = "rand-m7-n4-mstd0.5-inc1"

# The release's RandomErasing arguments (`randerase.py` defaults; `utils.py` sets mode 'pixel',
# max_count 1): area fraction in [0.02, 1/3], log-uniform aspect in [0.3, 1/0.3], one box.
_ERASE_AREA = (0.02, 1 / 3)
_ERASE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))


def _check(where: str, cfg: Mapping, allowed: set[str]) -> None:
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _mode(where: str, name) -> str:
    if name not in RESIZE_MODES:
        raise DataError(f"{where}: unknown interpolation {name!r}; use one of {', '.join(RESIZE_MODES)}")
    return name


def _check_frames(frames) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 \
            or frames.dtype != torch.uint8:
        got = f"{tuple(frames.shape)} {frames.dtype}" if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {got}")


def _normalise(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 values (or floats on the 0..255 scale) -> float32 `(x / 255 - mean) / std`.

    The same float32 operations, in the same order, as the release's ToTensor (`x / 255`) and
    `tensor_normalize` / `Normalize` (`(x - mean) / std`), so values are bit-identical on the CPU."""
    return (frames.to(torch.float32) / 255 - mean) / std


def _stats(mean: Sequence[float], std: Sequence[float], device, shape) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor([float(v) for v in mean], dtype=torch.float32, device=device).view(shape)
    s = torch.tensor([float(v) for v in std], dtype=torch.float32, device=device).view(shape)
    return m, s


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = False) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)


# --------------------------------------------------------------------------------------------
# Random draws (CPU, Python's `random` and numpy's legacy global RNG, in the release's order)
# --------------------------------------------------------------------------------------------

def _np_seed(seed: int):
    """numpy's legacy seeding takes 32-bit ints; larger seeds go in as 32-bit words."""
    if seed < 2**32:
        return seed
    words = []
    while seed:
        words.append(seed & 0xFFFFFFFF)
        seed >>= 32
    return np.array(words, dtype=np.uint32)


def _crop_box(H: int, W: int, scale: Sequence[float], ratio: Sequence[float], attempts: int = 10):
    """The release's `_get_param_spatial_crop(scale, ratio, H, W)` draw sequence (its defaults:
    10 attempts, log-uniform ratio, no h/w switch): per attempt `random.uniform` for the area,
    `random.uniform` for the log ratio, then ONE `np.random.uniform()` (its `np.random.uniform()
    < 0.5 and switch_hw` evaluates the draw before seeing that switch_hw is off), then, when the
    box fits, `random.randint` for the top and the left. Falls back to a central crop."""
    area = H * W
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = random.uniform(*scale) * area
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        np.random.uniform()
        if 0 < w <= W and 0 < h <= H:
            return random.randint(0, H - h), random.randint(0, W - w), h, w
    in_ratio = W / H
    if in_ratio < min(ratio):
        w, h = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = H, int(round(H * max(ratio)))
    else:
        h, w = H, W
    return (H - h) // 2, (W - w) // 2, h, w


def _centre_box(H: int, W: int):
    """No random resized crop: the central square (resized to the resolution in `apply`)."""
    s = min(H, W)
    return int(round((H - s) / 2)), int(round((W - s) / 2)), s, s


def _erase_box(img_h: int, img_w: int, attempts: int):
    """One box as the release's `RandomErasing._erase` / `_erase_cube` draw it (count 1): per
    attempt `random.uniform` area, `random.uniform` log aspect; when it fits (strictly smaller than
    the image), `random.randint` top then left. None when no attempt fits."""
    area = img_h * img_w
    for _ in range(attempts):
        target_area = random.uniform(*_ERASE_AREA) * area / 1
        aspect = math.exp(random.uniform(*_ERASE_LOG_ASPECT))
        h = int(round(math.sqrt(target_area * aspect)))
        w = int(round(math.sqrt(target_area / aspect)))
        if w < img_w and h < img_h:
            return random.randint(0, img_h - h), random.randint(0, img_w - w), h, w
    return None


def _erase_boxes(T: int, img_h: int, img_w: int, p: float, per_frame: bool) -> list[list[int]]:
    """Erase boxes `[t, top, left, h, w]` drawn on the `(T, 3, r, r)` cropped clip.

    per_frame False: the release's `_erase_cube` (one `random.random() > p` test, up to 100
    attempts, the box shared by every frame). True: its `cube=False` path, `_erase` per frame
    (a test and up to 10 attempts for each frame)."""
    if not per_frame:
        if random.random() > p:
            return []
        box = _erase_box(img_h, img_w, 100)
        return [] if box is None else [[t, *box] for t in range(T)]
    out = []
    for t in range(T):
        if random.random() > p:
            continue
        box = _erase_box(img_h, img_w, 10)
        if box is not None:
            out.append([t, *box])
    return out


_PIL_MODES = {"bilinear": 2, "bicubic": 3, "nearest": 0}  # PIL.Image.Resampling values


def _build_randaugment(ra, resolution: int, interpolation: str):
    if isinstance(ra, Mapping):
        raise DataError(
            "train_aug.randaugment: the dict form (num_ops, magnitude, num_magnitude_bins) is no longer "
            f"supported; give a timm RandAugment config string, e.g. {RELEASE_RANDAUGMENT!r} "
            "(the V-JEPA release's)")
    if not isinstance(ra, str) or not ra.startswith("rand"):
        raise DataError(f"train_aug.randaugment: expected a timm config string such as "
                        f"{RELEASE_RANDAUGMENT!r} or null, got {ra!r}")
    from timm.data.auto_augment import rand_augment_transform

    # The release's create_random_augment hparams: translate_const = int(0.45 * crop size) and a
    # fixed interpolation; no img_mean, so the fill is timm's default (128, 128, 128).
    hparams = {"translate_const": int(resolution * 0.45),
               "interpolation": _PIL_MODES[_mode("train_aug.randaugment_interpolation", interpolation)]}
    try:
        return rand_augment_transform(ra, hparams)
    except (AssertionError, ValueError, KeyError) as e:
        raise DataError(f"train_aug.randaugment: bad timm config string {ra!r} ({e or type(e).__name__})") from None


def _randaugment_clip(ra, frames: torch.Tensor) -> torch.Tensor:
    """timm's RandAugment with one draw per clip: the ops are chosen with numpy exactly as timm's
    `RandAugment.__call__` does; each op then runs on every frame from the same saved state of
    `random`, so all frames get the op's one draw (apply-or-not, magnitude noise, sign) and the
    stream ends where a single call leaves it -- the release's `AugmentOp` on a list draws once
    and consumes the same numbers (with a fixed interpolation no draw is made per frame)."""
    from PIL import Image

    imgs = [Image.fromarray(f) for f in frames.contiguous().numpy()]
    ops = np.random.choice(ra.ops, ra.num_layers, replace=ra.choice_weights is None, p=ra.choice_weights)
    for op in ops:
        state = random.getstate()
        for k in range(len(imgs)):
            random.setstate(state)
            imgs[k] = op(imgs[k])
    return torch.from_numpy(np.stack([np.asarray(im) for im in imgs]))


# --------------------------------------------------------------------------------------------
# Training transform
# --------------------------------------------------------------------------------------------

class TrainTransform:
    """Release-style training augmentation for one clip, split into a CPU `draw` and a device `apply`.

    Config (`train_aug`): `randaugment` (timm string such as "rand-m7-n4-mstd0.5-inc1", or null),
    `randaugment_interpolation` (bicubic), `randaugment_backend` (pil: the release, in `draw`;
    tensor: only its draws in `draw`, the pixels in `apply`), `random_resized_crop: {scale,
    ratio}` (null: central square resized), `interpolation` of the crop resize (bilinear, align_corners False as the
    release), `horizontal_flip` (false), `random_erasing` (probability), `erasing_per_frame`
    (false: the release's one box per clip; true: an independent box per frame).
    """

    def __init__(
        self,
        resolution: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **aug,
    ):
        _check("train_aug", aug, TRAIN_AUG_KEYS)
        self.resolution = int(resolution)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.interpolation = _mode("train_aug.interpolation", aug.get("interpolation", "bilinear"))
        ra = aug.get("randaugment")
        ra_interp = aug.get("randaugment_interpolation", "bicubic")
        self.randaugment = None if ra is None or ra is False else _build_randaugment(ra, self.resolution, ra_interp)
        self.randaugment_backend = aug.get("randaugment_backend", "pil")
        if self.randaugment_backend not in RANDAUGMENT_BACKENDS:
            raise DataError(f"train_aug.randaugment_backend: one of {', '.join(RANDAUGMENT_BACKENDS)}, "
                            f"got {self.randaugment_backend!r}")
        self.randaugment_resample = ra_interp
        if self.randaugment is not None and self.randaugment_backend == "tensor":
            from . import randaugment

            randaugment.check_supported(self.randaugment, ra_interp)
        rrc = aug.get("random_resized_crop")
        self.crop_scale = self.crop_ratio = None
        if rrc:
            _check("train_aug.random_resized_crop", rrc, {"scale", "ratio"})
            self.crop_scale = tuple(float(v) for v in rrc.get("scale", (0.08, 1.0)))
            self.crop_ratio = tuple(float(v) for v in rrc.get("ratio", (3 / 4, 4 / 3)))
            (s0, s1), (r0, r1) = self.crop_scale, self.crop_ratio
            if not (0 < s0 <= s1 and 0 < r0 <= r1):
                raise DataError(f"train_aug.random_resized_crop: need 0 < scale[0] <= scale[1] and "
                                f"0 < ratio[0] <= ratio[1], got {dict(rrc)}")
        self.horizontal_flip = bool(aug.get("horizontal_flip", False))
        self.p_erase = float(aug.get("random_erasing", 0.0) or 0.0)
        if not 0.0 <= self.p_erase <= 1.0:
            raise DataError(f"train_aug.random_erasing: a probability in [0, 1], got {self.p_erase}")
        self.erasing_per_frame = bool(aug.get("erasing_per_frame", False))

    def draw(self, frames: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict]:
        """CPU, in the loader: uint8 `(T, H, W, 3)` -> (uint8 `(T, H, W, 3)` after RandAugment, params).

        Every random draw of the clip happens here, in the release's order (RandAugment, crop
        box, flip, erase boxes), from Python's `random` and numpy's legacy global RNG seeded with
        `seed`; both global states are saved and restored, so callers' streams are untouched.
        params: `crop` [i, j, h, w] on the frames, `flip` bool, `erase` [[t, top, left, h, w], ...]
        on the `(T, 3, r, r)` crop, `noise_seed` (the seed of the erase fill in `apply`); with the
        tensor backend also `randaugment` ([[op, [args]], ...], applied in `apply`) and the frames
        come back untouched."""
        _check_frames(frames)
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(seed)
            np.random.seed(_np_seed(seed))
            out, params = self._draw_from_global_rngs(frames)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        params["noise_seed"] = seed
        return out, params

    def _draw_from_global_rngs(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """`draw`'s body: draws from the global `random` / numpy streams as they stand (the tests
        check it leaves them where the release's transform leaves them)."""
        ra_ops = None
        if self.randaugment is None:
            out = frames
        elif self.randaugment_backend == "tensor":
            from .randaugment import draw_ops

            # the same draws as the PIL path, and the frame size the crop draw needs is unchanged
            # (RandAugment keeps sizes), so every later draw is as with "pil"
            out, ra_ops = frames, draw_ops(self.randaugment)
        else:
            out = _randaugment_clip(self.randaugment, frames.cpu())
        T, H, W = out.shape[:3]
        crop = _crop_box(H, W, self.crop_scale, self.crop_ratio) if self.crop_scale else _centre_box(H, W)
        # the release's video_transforms.horizontal_flip(0.5, ...): np.random.uniform() < 0.5
        flip = bool(np.random.uniform() < 0.5) if self.horizontal_flip else False
        r = self.resolution
        erase = _erase_boxes(T, r, r, self.p_erase, self.erasing_per_frame) if self.p_erase > 0 else []
        params = {"crop": [int(v) for v in crop], "flip": flip, "erase": erase}
        if ra_ops is not None:
            params["randaugment"] = ra_ops
        return out, params

    def apply(self, frames: torch.Tensor, params: Mapping) -> torch.Tensor:
        """Any device: uint8 `(T, H, W, 3)` + params -> float32 `(3, T, r, r)`.

        RandAugment first when params carry its ops (tensor backend, on the frames' device).
        Crop (on the uint8 frames: the same values as the release's crop of the normalised clip),
        normalise, resize with `F.interpolate` as the release's random_resized_crop, flip, and
        fill the erase boxes with N(0, 1) noise from a `torch.Generator` on `frames.device`
        seeded with `params['noise_seed']` (so the fill differs from the release's, which comes
        from torch's global RNG, and between device types)."""
        _check_frames(frames)
        if params.get("randaugment"):
            from .randaugment import apply_ops

            frames = apply_ops(frames, params["randaugment"], resample=self.randaugment_resample)
        i, j, h, w = (int(v) for v in params["crop"])
        x = frames[:, i:i + h, j:j + w].permute(3, 0, 1, 2)  # (3, T, h, w)
        mean, std = _stats(self.mean, self.std, frames.device, (3, 1, 1, 1))
        x = _normalise(x, mean, std)
        r = self.resolution
        if (h, w) != (r, r):
            x = _interpolate(x, (r, r), self.interpolation)  # the T frames are channels, as in the release
        else:
            x = x.contiguous()
        if params.get("flip"):
            x = x.flip(-1)
        erase = params.get("erase") or []
        if erase:
            gen = None
            if frames.device.type != "meta":
                gen = torch.Generator(device=frames.device)
                gen.manual_seed(int(params["noise_seed"]))
            for t, top, left, bh, bw in erase:
                x[:, t, top:top + bh, left:left + bw] = torch.randn(
                    (3, bh, bw), generator=gen, device=x.device, dtype=x.dtype)
        return x

    def __call__(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Draw and apply in one call on the CPU, the seed from torch's global RNG (pretraining)."""
        seed = int(torch.randint(0, 2**62, ()))
        out, params = self.draw(frames, seed)
        return [self.apply(out, params)]
