"""timm's RandAugment on uint8 clip tensors: timm's random draws, PIL's arithmetic, any device.

The release augments each training clip with timm's `rand-m7-n4-mstd0.5-inc1` on PIL frames in
the loader worker (one draw per clip, applied to every frame), which costs most of the loader's
CPU time. Here the two halves are apart:

* `draw_ops(ra)` makes exactly the draws `timm.data.auto_augment.RandAugment.__call__` and
  `AugmentOp.__call__` make, in the same order, from the same global streams (numpy's
  `np.random.choice` of the ops, then per op Python's `random.random()` apply test,
  `random.gauss` magnitude noise, and the level function's sign flip), and returns the ops that
  fire with their arguments as plain Python: `[[name, [arg, ...]], ...]`.
* `apply_ops(frames, ops, resample=)` runs them on a uint8 `(T, H, W, 3)` tensor, the whole clip at
  once, on whatever device the frames are on.

The pixel ops follow Pillow's C code (`libImaging`: Blend.c, Filter.c, Convert.c, Geometry.c) and
`PIL.ImageOps` / `PIL.ImageEnhance` operation by operation, in the same float widths and the same
order of operations, so the outputs equal timm's PIL outputs (tests/test_tasks_randaugment.py
counts the differing pixels per op on timm's own draws):

* colour ops: `Invert`, `Posterize`, `Solarize`, `SolarizeAdd` and `Equalize` are integer LUTs;
  `AutoContrast` is PIL's float64 LUT; `Brightness`, `Color`, `Contrast`, `Sharpness` (and
  `Desaturate`) are `ImagingBlend` in float32 (`in1 + alpha * (in2 - in1)`, truncated) against
  PIL's degenerate image: black; the ITU-R 601 integer luma `(19595 R + 38470 G + 7471 B +
  0x8000) >> 16`; the rounded mean of that luma; the 3x3 SMOOTH filter (kernel 1/13, centre 5/13,
  float32, +0.5, border pixels kept).
* affine ops (`ShearX/Y`, `TranslateX/Y[Rel]`, `Rotate`): `ImagingGenericTransform` in float64:
  source point `a*(x+0.5) + b*(y+0.5) + c`, points outside the frame take the fill colour, the
  others Pillow's bicubic (its a = -1 cubic, edge-clamped taps) or bilinear kernel, truncated.

Pillow computes without fused multiply-adds (x86-64 builds), and every torch op here is a
separate kernel, so nothing fuses on either side; a Pillow built with FMA contraction (some ARM
builds) could differ by a level at rounding boundaries.

Not here: timm's `GaussianBlur` / `GaussianBlurRand` (the `t3a` sets) and PIL's NEAREST affine
resampling (a different code path in Pillow); `check_supported` names them.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from .errors import DataError

_LEVEL_DENOM = 10.0  # timm's magnitude scale (auto_augment._LEVEL_DENOM)
FILL = (128, 128, 128)  # timm's default fill (no img_mean in the release's hparams)
AFFINE_RESAMPLE = ("bicubic", "bilinear")

_COLOUR = {"AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing",
           "PosterizeOriginal", "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color",
           "ColorIncreasing", "Contrast", "ContrastIncreasing", "Brightness", "BrightnessIncreasing",
           "Sharpness", "SharpnessIncreasing", "Desaturate"}
_AFFINE = {"ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel", "Rotate"}
SUPPORTED_OPS = frozenset(_COLOUR | _AFFINE)


def check_supported(ra, resample: str) -> None:
    """DataError unless every op of the timm RandAugment `ra` has a tensor version here."""
    missing = sorted({op.name for op in ra.ops} - SUPPORTED_OPS)
    if missing:
        raise DataError(f"train_aug.randaugment_backend: tensor has no version of {', '.join(missing)}; "
                        f"use randaugment_backend: pil for this RandAugment string")
    if resample not in AFFINE_RESAMPLE and {op.name for op in ra.ops} & _AFFINE:
        raise DataError(f"train_aug.randaugment_backend: tensor reproduces PIL's "
                        f"{' and '.join(AFFINE_RESAMPLE)} affine resampling, not {resample!r}; "
                        f"use randaugment_backend: pil for it")


# --------------------------------------------------------------------------------------------
# Draws: timm's, in timm's order
# --------------------------------------------------------------------------------------------

def draw_ops(ra) -> list[list]:
    """The ops timm's RandAugment `ra` would apply to one image, and their arguments.

    Consumes the global numpy and `random` streams exactly as `ra(img)` does (the ops' resample
    is fixed by our hparams, so timm's `_interpolation` draws nothing). Returns `[[name, [args]],
    ...]` for the ops whose apply test passed, in order; the args are what timm passes to its op
    function (e.g. Rotate's degrees, TranslateXRel's fraction of the width)."""
    ops = np.random.choice(ra.ops, ra.num_layers, replace=ra.choice_weights is None, p=ra.choice_weights)
    out = []
    for op in ops:
        if op.prob < 1.0 and random.random() > op.prob:
            continue
        magnitude = op.magnitude
        if op.magnitude_std > 0:
            if op.magnitude_std == float("inf"):
                magnitude = random.uniform(0, magnitude)
            else:
                magnitude = random.gauss(magnitude, op.magnitude_std)
        magnitude = max(0.0, min(magnitude, op.magnitude_max or _LEVEL_DENOM))
        args = op.level_fn(magnitude, op.hparams) if op.level_fn is not None else ()
        out.append([op.name, [a if isinstance(a, int) else float(a) for a in args]])
    return out


# --------------------------------------------------------------------------------------------
# Pixel ops on uint8 (T, H, W, 3)
# --------------------------------------------------------------------------------------------

def apply_ops(frames: torch.Tensor, ops, *, resample: str = "bicubic", fill=FILL) -> torch.Tensor:
    """uint8 `(T, H, W, 3)` -> uint8 `(T, H, W, 3)`: `draw_ops`'s ops, each on every frame (the
    statistics of AutoContrast, Equalize and Contrast per frame, as PIL sees one frame)."""
    x = frames
    for name, args in ops:
        x = _OPS[name](x, *args, resample=resample, fill=fill)
    return x


def _lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per frame and channel 256-entry tables: lut `(256,)` or `(T, 3, 256)`, values 0..255."""
    lut = lut.to(device=x.device, dtype=torch.uint8)
    if lut.ndim == 1:
        return lut[x.to(torch.int32)]
    T = x.shape[0]
    base = (torch.arange(T * 3, device=x.device, dtype=torch.int32) * 256).view(T, 1, 1, 3)
    return lut.reshape(-1)[x.to(torch.int32) + base]


def _histograms(x: torch.Tensor) -> torch.Tensor:
    """int64 `(T, 3, 256)`: each frame's per-channel histogram (PIL's `histogram()` of RGB)."""
    T = x.shape[0]
    base = (torch.arange(T * 3, device=x.device) * 256).view(T, 1, 1, 3)
    return torch.bincount((x.long() + base).reshape(-1), minlength=T * 3 * 256).view(T, 3, 256)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    """Pillow's ImagingBlend: float32 `in1 + alpha * (in2 - in1)` (alpha the C float of the
    factor), clipped to 0..255 and truncated."""
    # The float32 value of the factor as a Python number: no tensor to copy to the device, and
    # float32 x float32 products are exact in double, so torch's scalar path rounds them the same.
    alpha = float(np.float32(factor))
    diff = (image.to(torch.int16) - degenerate.to(torch.int16)).to(torch.float32)
    out = degenerate.to(torch.float32) + alpha * diff
    return out.clamp_(0, 255).trunc_().to(torch.uint8)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L (Convert.c L24): int32 `(T, H, W)`."""
    x = x.to(torch.int32)
    return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def _invert(x, **_):
    return 255 - x


def _posterize(x, bits, **_):
    # 0 bits (timm's PosterizeIncreasing at magnitude 10) gives black, as Pillow's LUT did up to
    # 12.x; Pillow 13's ImageOps.posterize refuses bits < 1, so the PIL path raises there.
    if bits >= 8:
        return x
    mask = ~(2 ** (8 - int(bits)) - 1) & 0xFF
    return x & mask


def _solarize(x, thresh, **_):
    thresh = int(thresh)
    if thresh > 255:
        return x
    return torch.where(x < max(thresh, 0), x, 255 - x)


def _solarize_add(x, add, thresh=128, **_):
    added = (x.to(torch.int16) + int(add)).clamp_(0, 255).to(torch.uint8)
    return torch.where(x < min(max(int(thresh), 0), 255), added, x) if thresh <= 255 else added


def _auto_contrast(x, **_):
    """ImageOps.autocontrast (no cutoff): per frame and channel lo/hi, Python-float LUT."""
    lo = x.amin(dim=(1, 2)).to(torch.float64)  # (T, 3)
    hi = x.amax(dim=(1, 2)).to(torch.float64)
    ix = torch.arange(256, dtype=torch.float64, device=x.device)
    # a tensor numerator: `255.0 / t` would be torch's reciprocal-then-multiply, not Python's division
    scale = torch.full_like(lo, 255.0) / (hi - lo).clamp(min=1)
    offset = -lo * scale
    lut = (ix * scale[..., None] + offset[..., None]).trunc().clamp(0, 255)
    lut = torch.where((hi > lo)[..., None], lut, ix)
    return _lut(x, lut)


def _equalize(x, **_):
    """ImageOps.equalize: step = (pixels - count of the last used level) // 255; the LUT is
    (step // 2 + pixels below) // step, clipped by `point`; identity with <= 1 used level or step 0."""
    h = _histograms(x)
    used = h > 0
    last_idx = 255 - used.flip(-1).to(torch.uint8).argmax(-1, keepdim=True)
    step = (h.sum(-1, keepdim=True) - h.gather(-1, last_idx)) // 255
    below = h.cumsum(-1) - h
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(0, 255)
    ident = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where((used.sum(-1, keepdim=True) > 1) & (step > 0), lut, ident)
    return _lut(x, lut)


def _brightness(x, factor, **_):
    return _blend(torch.zeros((), dtype=torch.uint8, device=x.device), x, factor)


def _color(x, factor, **_):
    return _blend(_luma(x).to(torch.uint8)[..., None], x, factor)


def _desaturate(x, factor, **_):
    return _color(x, min(1.0, max(0.0, 1.0 - factor)))


def _contrast(x, factor, **_):
    """ImageEnhance.Contrast: the degenerate is grey at int(mean of the L histogram + 0.5)."""
    luma = _luma(x)
    n = luma.shape[1] * luma.shape[2]
    mean = luma.sum(dim=(1, 2), dtype=torch.int64).to(torch.float64) / n
    grey = (mean + 0.5).floor().to(torch.uint8).view(-1, 1, 1, 1)
    return _blend(grey, x, factor)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """ImageFilter.SMOOTH (Filter.c ImagingFilter3x3): float32 kernel 1/13 (centre 5/13), the sum
    started at 0.5 and taken row y+1, y, y-1 as the C code does, clipped and truncated; the
    outermost rows and columns copied."""
    H, W = x.shape[1:3]
    if H < 3 or W < 3:
        return x
    f = x.to(torch.float32)
    ke = float(np.float32(1) / np.float32(13))  # the C code's float kernel, 1/13 and 5/13
    kc = float(np.float32(5) / np.float32(13))

    def row(r, kmid):
        return (r[:, :, :-2] * ke + r[:, :, 1:-1] * kmid) + r[:, :, 2:] * ke

    ss = 0.5 + row(f[:, 2:], ke)
    ss = ss + row(f[:, 1:-1], kc)
    ss = ss + row(f[:, :-2], ke)
    out = x.clone()
    out[:, 1:-1, 1:-1] = ss.clamp_(0, 255).trunc_().to(torch.uint8)
    return out


def _sharpness(x, factor, **_):
    return _blend(_smooth(x), x, factor)


# ----- affine ---------------------------------------------------------------------------------

def _cubic(v1, v2, v3, v4, d):
    """Geometry.c's BICUBIC macro (its a = -1 cubic) in float64: `v2 + d * (p2 + d * (p3 + d * p4))`.
    `-v1 + v3` is written `v3 - v1` (the same IEEE result), and so on."""
    p2 = v3 - v1
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = ((v2 - v1) - v3) + v4
    return _horner(v2, p2, p3, p4, d)


def _lerp(v1, v2, d):
    """Geometry.c's BILINEAR macro: `a + (b - a) * d`."""
    return v1 + (v2 - v1) * d


def _horner(p1, p2, p3, p4, d):
    return p1 + d * (p2 + d * (p3 + d * p4))


def _cubic_taps(v1, v2, v3, v4, d):
    """The first (horizontal) pass on integer taps: Pillow's p2..p4 are then small integers, exact
    in int16 as in double, so only the Horner step needs float64 (same result, less work)."""
    v1, v2, v3, v4 = (v.to(torch.int16) for v in (v1, v2, v3, v4))
    p2 = v3 - v1
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = ((v2 - v1) - v3) + v4
    f64 = torch.float64
    return _horner(v2.to(f64), p2.to(f64), p3.to(f64), p4.to(f64), d)


def _affine(x: torch.Tensor, matrix, resample: str, fill) -> torch.Tensor:
    """PIL `img.transform(size, AFFINE, matrix, resample, fillcolor=fill)` for BICUBIC/BILINEAR:
    output pixel (x, y) samples the input at `(a x' + b y' + c, d x' + e y' + f)`, x' = x + 0.5."""
    a0, a1, a2, a3, a4, a5 = (float(v) for v in matrix)
    T, H, W, C = x.shape
    dev = x.device
    xo = torch.arange(W, dtype=torch.float64, device=dev) + 0.5
    yo = torch.arange(H, dtype=torch.float64, device=dev) + 0.5
    xin = ((xo * a0)[None, :] + (yo * a1)[:, None]) + a2  # (H, W)
    yin = ((xo * a3)[None, :] + (yo * a4)[:, None]) + a5
    inside = (xin >= 0) & (xin < W) & (yin >= 0) & (yin < H)
    xin, yin = xin - 0.5, yin - 0.5
    fx, fy = xin.floor(), yin.floor()
    dx, dy = (xin - fx).view(-1, 1), (yin - fy).view(-1, 1)
    fx, fy = fx.long().view(-1), fy.long().view(-1)
    # source pixels as rows of T*C values, so a tap is one row gather for the whole clip
    src = x.permute(1, 2, 0, 3).reshape(H * W, T * C)
    cubic = resample == "bicubic"
    first, taps = (-1, 4) if cubic else (0, 2)
    # Where the matrix keeps a coordinate on the integer grid (ShearX / TranslateX keep rows,
    # ShearY / TranslateY columns) that pass's fraction is 0 everywhere and Pillow's kernel gives
    # the centre tap exactly (`v2 + 0 * (...)`, `v1 + (v2 - v1) * 0`): read only that tap.
    rows_on_grid = a3 == 0 and a4 == 1 and a5.is_integer()
    cols_on_grid = a0 == 1 and a1 == 0 and a2.is_integer()
    centre = -first
    col_taps = [centre] if cols_on_grid else range(taps)
    cols = {k: (fx + (first + k)).clamp_(0, W - 1) for k in col_taps}

    def row(k):
        """Row tap k after the horizontal pass: uint8 when the columns are on the grid, else float64."""
        r = (fy + (first + k)).clamp_(0, H - 1) * W
        vals = [src.index_select(0, r + cols[c]) for c in col_taps]
        if cols_on_grid:
            return vals[0]
        if cubic:
            return _cubic_taps(*vals, dx)
        return _lerp(vals[0].to(torch.float64), vals[1].to(torch.float64), dx)

    if rows_on_grid:
        v = row(centre).to(torch.float64)
    else:
        rows = [row(k) for k in range(taps)]
        if cols_on_grid:  # integer taps: the vertical pass takes the integer route too
            v = _cubic_taps(*rows, dy) if cubic else _lerp(*(t.to(torch.float64) for t in rows), dy)
        else:
            v = _cubic(*rows, dy) if cubic else _lerp(*rows, dy)
    if cubic:
        v = v.clamp_(0, 255)
    out = v.trunc_().to(torch.uint8)
    fill = [int(c) for c in fill]
    if len(set(fill)) == 1:  # timm's grey: a scalar, no tensor to copy to the device
        out = torch.where(inside.view(-1, 1), out, fill[0])
    else:
        out = torch.where(inside.view(-1, 1), out, torch.tensor(fill, dtype=torch.uint8).repeat(T).to(dev))
    return out.view(H, W, T, C).permute(2, 0, 1, 3).contiguous()


def _check_resample(resample: str) -> None:
    if resample not in AFFINE_RESAMPLE:
        raise ValueError(f"affine resampling must be one of {AFFINE_RESAMPLE}, got {resample!r}")


def _shear_x(x, factor, *, resample, fill):
    _check_resample(resample)
    return _affine(x, (1, factor, 0, 0, 1, 0), resample, fill)


def _shear_y(x, factor, *, resample, fill):
    _check_resample(resample)
    return _affine(x, (1, 0, 0, factor, 1, 0), resample, fill)


def _translate_x_abs(x, pixels, *, resample, fill):
    _check_resample(resample)
    return _affine(x, (1, 0, pixels, 0, 1, 0), resample, fill)


def _translate_y_abs(x, pixels, *, resample, fill):
    _check_resample(resample)
    return _affine(x, (1, 0, 0, 0, 1, pixels), resample, fill)


def _translate_x_rel(x, pct, *, resample, fill):
    return _translate_x_abs(x, pct * x.shape[2], resample=resample, fill=fill)  # timm: pct * img.size[0]


def _translate_y_rel(x, pct, *, resample, fill):
    return _translate_y_abs(x, pct * x.shape[1], resample=resample, fill=fill)


def rotate_matrix(degrees: float, width: int, height: int) -> list[float]:
    """PIL `Image.rotate(degrees)`'s inverse matrix (no expand, centre, or translate), computed
    with the same Python float operations."""
    cx, cy = width / 2, height / 2
    angle = -math.radians(degrees)
    m = [round(math.cos(angle), 15), round(math.sin(angle), 15), 0.0,
         round(-math.sin(angle), 15), round(math.cos(angle), 15), 0.0]
    a, b, c, d, e, f = m
    m[2], m[5] = a * (-cx - 0) + b * (-cy - 0) + c, d * (-cx - 0) + e * (-cy - 0) + f
    m[2] += cx
    m[5] += cy
    return m


def _rotate(x, degrees, *, resample, fill):
    _check_resample(resample)
    # PIL copies the image when degrees % 360 == 0; the transform below gives the same pixels
    # (integer source points, weights 0/1), as it does for 90/180/270 on square frames.
    return _affine(x, rotate_matrix(degrees, x.shape[2], x.shape[1]), resample, fill)


_OPS = {
    "AutoContrast": _auto_contrast, "Equalize": _equalize, "Invert": _invert,
    "Posterize": _posterize, "PosterizeIncreasing": _posterize, "PosterizeOriginal": _posterize,
    "Solarize": _solarize, "SolarizeIncreasing": _solarize, "SolarizeAdd": _solarize_add,
    "Color": _color, "ColorIncreasing": _color, "Contrast": _contrast, "ContrastIncreasing": _contrast,
    "Brightness": _brightness, "BrightnessIncreasing": _brightness,
    "Sharpness": _sharpness, "SharpnessIncreasing": _sharpness, "Desaturate": _desaturate,
    "ShearX": _shear_x, "ShearY": _shear_y, "TranslateX": _translate_x_abs, "TranslateY": _translate_y_abs,
    "TranslateXRel": _translate_x_rel, "TranslateYRel": _translate_y_rel, "Rotate": _rotate,
}
