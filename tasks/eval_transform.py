"""The evaluation transform: uint8 frames `(T, H, W, 3)` (or a batch) in, V normalised views
`(3, T, r, r)` out, deterministic and wholly on the device.

It reproduces the V-JEPA release's `EvalVideoTransform` (facts in `tasks/transforms.py`'s
docstring, fixtures in `tests/fixtures/make_release_transforms.py`), including OpenCV's
fixed-point `INTER_LINEAR` resize: `cv2.resize` itself on the CPU, and bit for bit in integer
torch ops on other devices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from .errors import DataError
from .transforms import (
    EVAL_KEYS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _check,
    _check_frames,
    _interpolate,
    _mode,
    _stats,
)


@functools.lru_cache(maxsize=256)
def _cv2_linear_coeffs(src: int, dst: int, clamp_weight: bool):
    """Source indices and 11-bit weights of OpenCV's `resize(INTER_LINEAR)` along one axis
    (imgproc/src/resize.cpp): `fx = (float)((d + 0.5) * scale - 0.5)` with `scale = 1 / (dst / src)`
    in double, `sx = floor(fx)`, `fx -= sx`, weights `saturate_cast<short>((1 - fx) * 2048)` and
    `saturate_cast<short>(fx * 2048)` (round to nearest even). Along x an out-of-range source
    clamps both index and weight (fx = 0); along y only the row indices are clamped."""
    scale = 1.0 / (dst / src)
    f = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    s = torch.floor(f)
    f = f - s
    s = s.to(torch.int64)
    if clamp_weight:
        low, high = s < 0, s >= src - 1
        f = torch.where(low | high, torch.zeros_like(f), f)
        s = torch.where(low, torch.zeros_like(s), torch.where(high, torch.full_like(s, src - 1), s))
    a0 = torch.round((1 - f) * 2048).to(torch.int32)
    a1 = torch.round(f * 2048).to(torch.int32)
    return s.clamp(0, src - 1), (s + 1).clamp(0, src - 1), a0, a1


def _cv2_bilinear_uint8(x: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    """uint8 `(N, C, H, W)` -> uint8 `(N, C, oh, ow)`, bit-identical to `cv2.resize(img, (ow, oh),
    interpolation=cv2.INTER_LINEAR)` on uint8 images (checked over many sizes against OpenCV):
    the horizontal pass sums `src * weight` in int32; the vertical pass is OpenCV's SIMD
    `VResizeLinearVec_32s8u`: rows shifted `>> 4` (to int16), `mul_hi` with the 11-bit row
    weights (`(a * b) >> 16`), summed, then `(v + 2) >> 2` and saturated to 0..255."""
    H, W = x.shape[-2:]
    dev = x.device
    xs0, xs1, xa0, xa1 = (t.to(dev) for t in _cv2_linear_coeffs(W, ow, True))
    ys0, ys1, ya0, ya1 = (t.to(dev) for t in _cv2_linear_coeffs(H, oh, False))
    v = x.to(torch.int32)
    rows = (v[..., xs0] * xa0 + v[..., xs1] * xa1) >> 4  # (N, C, H, ow)
    out = ((rows[..., ys0, :] * ya0[:, None]) >> 16) + ((rows[..., ys1, :] * ya1[:, None]) >> 16)
    return ((out + 2) >> 2).clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=1)
def _cv2():
    """OpenCV when installed (an optional dependency: without it the CPU runs the emulation)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _opencv_resize(x: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    """CPU uint8 `(N, H, W, 3)` -> `(N, oh, ow, 3)` with `cv2.resize(INTER_LINEAR)` frame by
    frame, as the release resizes (written into one output array: no stacking copy)."""
    cv2 = _cv2()
    src = x.contiguous().numpy()
    out = np.empty((x.shape[0], oh, ow, 3), dtype=np.uint8)
    for k in range(x.shape[0]):
        cv2.resize(src[k], (ow, oh), dst=out[k], interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=32)
def device_stats(mean: tuple, std: tuple, device: torch.device, shape: tuple):
    """`tasks.transforms._stats` made once per device and shape: a fresh small tensor per
    micro-batch would be a host-to-device copy from pageable memory each time (which may wait
    for the device)."""
    return _stats(mean, std, device, shape)


def _short_side_size(H: int, W: int, size: int) -> tuple[int, int]:
    """The release's `get_resize_sizes`: the short side to `size`, the long one `int(size * long / short)`."""
    if W < H:
        return int(size * H / W), size
    return size, int(size * W / H)


class EvalTransform:
    """Deterministic evaluation views of one clip (or a batch of clips), as in the release.

    V > 1: resize the short side to `int(resolution * short_side_scale)` (release: 1.0), then V
    square crops spaced `(long - r) // (V - 1)` apart along the long side (centred on the short
    side). V = 1: resize the short side to `int(resolution * single_view_short_side_scale)`
    (release: 256/224; floor as the release's `int(crop * 256 / 224)`) and centre-crop.
    Config (`eval_transform`): also `interpolation` (bilinear), `antialias` (false, as OpenCV),
    `round_to_uint8` (true: the resized frames are uint8, as OpenCV returns them, before
    normalising). Bilinear + no antialias + uint8 reproduces OpenCV's INTER_LINEAR bit for bit;
    other settings use `F.interpolate`.
    """

    def __init__(
        self,
        resolution: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        views: int = 1,
        **cfg,
    ):
        _check("eval_transform", cfg, EVAL_KEYS)
        if views < 1:
            raise DataError(f"eval views must be >= 1, got {views}")
        self.resolution = int(resolution)
        self.views = int(views)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.interpolation = _mode("eval_transform.interpolation", cfg.get("interpolation", "bilinear"))
        self.antialias = bool(cfg.get("antialias", False))
        self.round_to_uint8 = bool(cfg.get("round_to_uint8", True))
        scale = float(cfg.get("short_side_scale", 1.0) if views > 1
                      else cfg.get("single_view_short_side_scale", 256 / 224))
        # floor, with a little slack so that 1.1428571428571428 (256/224 in YAML) gives 256 at 224
        self.short_side = max(self.resolution, int(math.floor(self.resolution * scale + 1e-6)))

    @property
    def opencv_exact(self) -> bool:
        """The release's resize: OpenCV's uint8 `INTER_LINEAR` (bilinear, no antialias, uint8)."""
        return self.interpolation == "bilinear" and not self.antialias and self.round_to_uint8

    def _resize(self, x: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
        """uint8 frames `(N, H, W, 3)` -> `(N, oh, ow, 3)` (uint8, or float32 without
        `round_to_uint8`). The OpenCV-exact resize is `cv2.resize` itself on the CPU (40x faster
        than its emulation there) and the integer-op emulation on other devices (bit-identical,
        tested); other settings use `F.interpolate`."""
        if self.opencv_exact and x.device.type == "cpu" and _cv2() is not None:
            return _opencv_resize(x, oh, ow)
        chw = x.permute(0, 3, 1, 2).contiguous()
        if self.opencv_exact:
            # On a CPU without OpenCV, a few frames at a time keep the int32 passes in cache.
            step = 16 if x.device.type == "cpu" else chw.shape[0]
            parts = [_cv2_bilinear_uint8(part, oh, ow) for part in chw.split(max(step, 1))]
            return (parts[0] if len(parts) == 1 else torch.cat(parts)).permute(0, 2, 3, 1)
        y = _interpolate(chw.to(torch.float32), (oh, ow), self.interpolation,
                         antialias=self.antialias and self.interpolation != "nearest")
        y = y.round().clamp(0, 255).to(torch.uint8) if self.round_to_uint8 else y
        return y.permute(0, 2, 3, 1)

    def finish(self, frames: torch.Tensor) -> torch.Tensor:
        """Any device: uint8 clips `(B, T, H, W, 3)` -> float32 `(B, V, 3, T, r, r)`, every view
        of every clip in one tensor (what `tasks.finishing` hands the encoder)."""
        _check_frames(frames[0])
        B, T, H, W, _ = frames.shape
        x = frames.reshape(B * T, H, W, 3)
        oh, ow = _short_side_size(H, W, self.short_side)
        if (oh, ow) != (H, W):  # the release skips the resize when the short side already fits
            x = self._resize(x, oh, ow)
        r = self.resolution
        if self.views == 1:  # the release's CenterCrop: int(round(...)), half to even
            starts = [(int(round((oh - r) / 2)), int(round((ow - r) / 2)))]
        else:
            step = (max(oh, ow) - r) // (self.views - 1)
            if oh > ow:
                starts = [(k * step, int(round((ow - r) / 2))) for k in range(self.views)]
            else:
                starts = [(int(round((oh - r) / 2)), k * step) for k in range(self.views)]
        # Channels first while still uint8 (a quarter of the bytes of the floats), then each
        # view is normalised in place into its slot: `_normalise`'s float32 ops, value for value.
        x = x.reshape(B, T, oh, ow, 3).permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, T, oh, ow)
        mean, std = device_stats(self.mean, self.std, x.device, (1, 3, 1, 1, 1))
        out = torch.empty((B, len(starts), 3, T, r, r), dtype=torch.float32, device=x.device)
        for v, (top, left) in enumerate(starts):
            view = out[:, v]
            view.copy_(x[..., top:top + r, left:left + r])
            view.div_(255).sub_(mean).div_(std)
        return out

    def apply(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Any device: uint8 `(T, H, W, 3)` -> V float32 `(3, T, r, r)`; a batch `(B, T, H, W, 3)`
        gives V `(B, 3, T, r, r)`."""
        batched = frames.ndim == 5
        _check_frames(frames[0] if batched else frames)
        out = self.finish(frames if batched else frames[None])
        return [v.contiguous() for v in out.unbind(1)] if batched else list(out[0].unbind(0))

    def __call__(self, frames: torch.Tensor) -> list[torch.Tensor]:
        return self.apply(frames)
