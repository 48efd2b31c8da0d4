"""Finishing a whole micro-batch on the compute device in a few batched tensor ops.

`TrainTransform.apply` and `EvalTransform.apply` finish one clip; a K400 training micro-batch
holds 32 clips (4 samples x 8 segments), and finishing them one by one issued ~1,200 tensor ops
(kernel launches, on a GPU) per training micro-batch and ~1,900 per evaluation one. Here:

* training, on a GPU (`_resize_gathered`): every clip's crop box and resize become per-clip
  source rows and columns with the weights of `F.interpolate(mode='bilinear',
  align_corners=False)` (ATen's, in float32, exactly: `_linear_taps`); the four neighbours are
  gathered from the uint8 frames, normalised (`tasks.transforms._normalise`'s float32 ops) and
  blended in ATen's order (`x[w0] * ww0 + x[w1] * ww1` per row, then the two rows); a
  horizontal flip reverses a clip's columns. Equal to `TrainTransform.apply` up to the rounding
  of fused multiply-adds in ATen's blend (tested <= 1e-5; 4.8e-7 measured). On the CPU, where a
  launch costs nothing and ATen's vectorised resize is faster than gathers, each clip is
  resized with `TrainTransform.apply`'s own ops into its slot of one output (identical values).
* erasing: each clip's boxes are filled from its own generator seeded with its `noise_seed`,
  draw for draw as `TrainTransform.apply` does, so the noise is identical; one `randn` per
  erased frame is the one per-clip work left (a quarter of the clips at p 0.25); the frames of
  one box are written with one copy.
* RandAugment on the device (`randaugment_backend: tensor`): per clip, before the crop
  (`_device_randaugment`), as each clip has its own ops.
* evaluation: clips of one decoded size go through `EvalTransform.finish` as one batch (resize,
  channels-first in uint8, each view normalised in place into one output); a micro-batch of
  mixed sizes makes one batch per size.

Transforms without a batched form (the image tasks', non-bilinear crop resizes) are finished
clip by clip with their own `apply`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .eval_transform import EvalTransform, device_stats
from .transforms import TrainTransform, _interpolate, _normalise


def _linear_taps(src: Sequence[int], dst: int):
    """Per clip, ATen's bilinear taps for resizing a length `src[k]` to `dst` (align_corners
    False, no antialias): first and second source index (the second clamped at the edge) and
    their weights, all `(K, dst)`; float32 as `upsample_bilinear2d` computes them on the CPU
    (`UpSample.h`): scale = src / dst, x = max(scale * (d + 0.5) - 0.5, 0),
    i0 = min(floor(x), src - 1), l1 = clamp(x - i0, 0, 1), l0 = 1 - l1."""
    size = torch.tensor([int(s) for s in src], dtype=torch.int64)[:, None]
    scale = size.to(torch.float32) / dst
    d = torch.arange(dst, dtype=torch.int64).to(torch.float32) + 0.5
    # ATen's `scale * (d + 0.5) - 0.5` is compiled to one fused multiply-add: the product of two
    # float32 is exact in float64, so float64 then one rounding gives the fused result.
    real = (scale.double() * d.double() - 0.5).to(torch.float32).clamp(min=0)
    i0 = torch.minimum(torch.floor(real).to(torch.int64), size - 1)
    l1 = (real - i0.to(torch.float32)).clamp(0, 1)
    i1 = i0 + (i0 < size - 1).to(torch.int64)
    return i0, i1, 1 - l1, l1


def _grid(params: Sequence[dict], r: int):
    """Absolute source rows and columns `(K, 2, r)` of each clip's crop box resized to r x r,
    and their weights `(K, 2, r)` float32; a flipped clip's columns are reversed."""
    boxes = [[int(v) for v in p["crop"]] for p in params]
    r0, r1, wr0, wr1 = _linear_taps([b[2] for b in boxes], r)
    c0, c1, wc0, wc1 = _linear_taps([b[3] for b in boxes], r)
    top = torch.tensor([b[0] for b in boxes], dtype=torch.int64)[:, None]
    left = torch.tensor([b[1] for b in boxes], dtype=torch.int64)[:, None]
    rows, wrows = torch.stack([r0 + top, r1 + top], 1), torch.stack([wr0, wr1], 1)
    cols, wcols = torch.stack([c0 + left, c1 + left], 1), torch.stack([wc0, wc1], 1)
    flips = [bool(p.get("flip")) for p in params]
    if any(flips):
        flip = torch.tensor(flips)[:, None, None]
        cols = torch.where(flip, cols.flip(-1), cols)
        wcols = torch.where(flip, wcols.flip(-1), wcols)
    return rows, wrows, cols, wcols


def _device_randaugment(transform, frames: torch.Tensor, params: Sequence[dict]) -> torch.Tensor:
    """The one per-clip step left before the batched crop: RandAugment drawn in the loader and
    applied on the device (`randaugment_backend: tensor`: params carry its ops, which
    `tasks.randaugment.apply_ops` runs, as `TrainTransform.apply` does). Clips differ in their
    ops, so each is augmented on its own; with the release's PIL backend the loader did it."""
    todo = [k for k, p in enumerate(params) if p.get("randaugment")]
    if not todo:
        return frames
    from .randaugment import apply_ops

    frames = frames.clone()  # the loader's batch stays as it came
    for k in todo:
        frames[k] = apply_ops(frames[k], params[k]["randaugment"],
                              resample=transform.randaugment_resample)
    return frames


def _erase(x: torch.Tensor, params: Sequence[dict]) -> None:
    """Fill every clip's erase boxes in place with its own seeded N(0, 1) noise, in
    `TrainTransform.apply`'s draw order (one `randn((3, h, w))` per box, each into a contiguous
    buffer: the same values). Consecutive frames erased at the same place (the release's one box
    per clip) are written with one copy."""
    for k, p in enumerate(params):
        runs: list[list] = []  # [first frame, frames, top, left, h, w]
        for t, top, left, bh, bw in (p.get("erase") or []):
            last = runs[-1] if runs else None
            if last is not None and last[2:] == [top, left, bh, bw] and t == last[0] + last[1]:
                last[1] += 1
            else:
                runs.append([t, 1, top, left, bh, bw])
        if not runs:
            continue
        gen = None
        if x.device.type != "meta":
            gen = torch.Generator(device=x.device)
            gen.manual_seed(int(p["noise_seed"]))
        for t0, n, top, left, bh, bw in runs:
            block = torch.empty((n, 3, bh, bw), device=x.device, dtype=x.dtype)
            for i in range(n):
                torch.randn((3, bh, bw), generator=gen, out=block[i])
            x[k, :, t0:t0 + n, top:top + bh, left:left + bw] = block.transpose(0, 1)


def finish_train(transform: TrainTransform, frames: torch.Tensor, params: Sequence[dict], *,
                 gather: bool | None = None) -> torch.Tensor:
    """uint8 clips `(K, T, H, W, 3)` on the device + their drawn params -> float32
    `(K, 3, T, r, r)`, equal to `TrainTransform.apply` clip by clip.

    `gather` (default: on any device but the CPU) crops, resizes, normalises and flips every
    clip at once with gathers (`_resize_gathered`: ~20 ops for the micro-batch instead of ~10
    per clip). On the CPU a launch costs nothing and ATen's vectorised `F.interpolate` is 2.8x
    faster than the gathers (K400 micro-batch, one thread: 0.64 vs 1.78 CPU-s), so there each
    clip is resized on its own, into its slot of one output."""
    frames = _device_randaugment(transform, frames, params)
    if gather is None:
        gather = frames.device.type != "cpu"
    out = (_resize_gathered if gather else _resize_per_clip)(transform, frames, params)
    _erase(out, params)
    return out


def _resize_per_clip(transform: TrainTransform, frames: torch.Tensor, params) -> torch.Tensor:
    """`TrainTransform.apply`'s crop, normalise, resize and flip, clip by clip (the same ops)."""
    K, T = frames.shape[:2]
    r = transform.resolution
    mean, std = device_stats(transform.mean, transform.std, frames.device, (3, 1, 1, 1))
    out = torch.empty((K, 3, T, r, r), dtype=torch.float32, device=frames.device)
    for k, p in enumerate(params):
        i, j, h, w = (int(v) for v in p["crop"])
        x = _normalise(frames[k, :, i:i + h, j:j + w].permute(3, 0, 1, 2), mean, std)
        if (h, w) != (r, r):
            x = _interpolate(x, (r, r), transform.interpolation)
        out[k] = x.flip(-1) if p.get("flip") else x
    return out


def _resize_gathered(transform: TrainTransform, frames: torch.Tensor, params) -> torch.Tensor:
    """Every clip's crop box resized to r x r in one set of ops: for the two source rows and
    the two source columns of each output pixel, gather the uint8 values, normalise them and
    blend them with the bilinear weights in ATen's order."""
    K = frames.shape[0]
    r = transform.resolution
    dev = frames.device
    rows, wrows, cols, wcols = _grid(params, r)
    # Two transfers, from pinned memory on CUDA (pageable memory may make the copy wait).
    index, weight = torch.stack([rows, cols]), torch.stack([wrows, wcols])
    if dev.type == "cuda":
        index, weight = index.pin_memory(), weight.pin_memory()
    (rows, cols), (wrows, wcols) = index.to(dev, non_blocking=True), weight.to(dev, non_blocking=True)
    mean, std = device_stats(transform.mean, transform.std, dev, (1, 3, 1, 1, 1))
    src = frames.permute(0, 4, 1, 2, 3)  # (K, 3, T, H, W), a view
    _, C, T, _, W = src.shape
    out = None
    for a in range(2):  # the two source rows of every output row
        idx = rows[:, a].view(K, 1, 1, r, 1).expand(K, C, T, r, W)
        picked = torch.gather(src, 3, idx)  # (K, 3, T, r, W) uint8
        line = None
        for b in range(2):  # the two source columns of every output column
            idx = cols[:, b].view(K, 1, 1, 1, r).expand(K, C, T, r, r)
            v = torch.gather(picked, 4, idx).to(torch.float32)
            v = v.div_(255).sub_(mean).div_(std)  # `_normalise`'s ops, in place
            v = v.mul_(wcols[:, b].view(K, 1, 1, 1, r))
            line = v if line is None else line.add_(v)
        line = line.mul_(wrows[:, a].view(K, 1, 1, r, 1))
        out = line if out is None else out.add_(line)
    return out


def _finish_group(transform, clips: torch.Tensor, params) -> torch.Tensor:
    """Clips of one size `(K, T, H, W, 3)` -> `(K, V, 3, T, r, r)`."""
    if params is None:
        if isinstance(transform, EvalTransform):
            return transform.finish(clips)
        return torch.stack([torch.stack(transform.apply(c)) for c in clips])
    if isinstance(transform, TrainTransform) and transform.interpolation == "bilinear":
        return finish_train(transform, clips, params)[:, None]
    return torch.stack([transform.apply(c, p) for c, p in zip(clips, params)])[:, None]


def finish_clips(transform, clips: torch.Tensor | Sequence[torch.Tensor],
                 params: Sequence[dict] | None) -> torch.Tensor:
    """uint8 clips on the device (a `(K, T, H, W, 3)` tensor, or a list of `(T, H, W, 3)` of any
    sizes) + their drawn params (None: evaluation) -> float32 `(K, V, 3, T, r, r)` (V = 1 in
    training), in batched ops per decoded size; transforms without a batched form clip by clip."""
    if isinstance(clips, torch.Tensor):
        return _finish_group(transform, clips, params)
    groups: dict[tuple, list[int]] = {}
    for k, c in enumerate(clips):
        groups.setdefault(tuple(c.shape), []).append(k)
    out = None
    for idx in groups.values():
        part = _finish_group(transform, torch.stack([clips[k] for k in idx]),
                             None if params is None else [params[k] for k in idx])
        if len(groups) == 1:
            return part
        if out is None:
            out = part.new_empty((len(clips), *part.shape[1:]))
        out[torch.tensor(idx, device=part.device)] = part
    return out
