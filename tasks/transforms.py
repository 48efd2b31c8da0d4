"""Clip transforms: uint8 frames `(T, H, W, 3)` in, a list of normalised views `(3, T, H, W)` out.

Frames are wrapped as a `tv_tensors.Video`, so torchvision.transforms.v2 draws each random
parameter (crop box, RandAugment ops, erased box) once per clip and applies it to every frame:
the augmentation never invents motion. No horizontal flip by default: motion classes ("move
left", "pushing something from left to right") would swap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRAIN_AUG_KEYS = {"random_resized_crop", "randaugment", "random_erasing", "horizontal_flip", "interpolation"}
EVAL_KEYS = {"short_side_scale", "single_view_short_side_scale", "interpolation"}


def _interp(name: str) -> v2.InterpolationMode:
    try:
        return v2.InterpolationMode(name)
    except ValueError:
        raise DataError(
            f"unknown interpolation {name!r}; use one of {[m.value for m in v2.InterpolationMode]}"
        ) from None


def _check(where: str, cfg: Mapping, allowed: set[str]) -> None:
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _as_video(frames: torch.Tensor) -> tv_tensors.Video:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    return tv_tensors.Video(frames.permute(0, 3, 1, 2))  # (T, 3, H, W)


def _finish(video: torch.Tensor) -> torch.Tensor:
    return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()  # (3, T, H, W)


class TrainTransform:
    """Release-style training augmentation for one clip; returns a single view.

    Order as in the release: RandAugment on uint8 frames, random resized crop, scale to [0, 1],
    normalise, random erasing (pixel mode: the box is filled with N(0, 1) noise).
    `randaugment.num_magnitude_bins` defaults to 11 so `magnitude` is on timm's 0-10 scale
    ("rand-m7-n4"); timm's magnitude noise (mstd0.5) has no torchvision equivalent.
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
        interp = _interp(aug.get("interpolation", "bilinear"))
        steps: list = []
        ra = aug.get("randaugment")
        if ra:
            _check("train_aug.randaugment", ra, {"num_ops", "magnitude", "num_magnitude_bins"})
            steps.append(
                v2.RandAugment(
                    num_ops=int(ra.get("num_ops", 2)),
                    magnitude=int(ra.get("magnitude", 9)),
                    num_magnitude_bins=int(ra.get("num_magnitude_bins", 11)),
                    interpolation=interp,
                )
            )
        rrc = aug.get("random_resized_crop")
        if rrc:
            _check("train_aug.random_resized_crop", rrc, {"scale", "ratio"})
            steps.append(
                v2.RandomResizedCrop(
                    self.resolution,
                    scale=tuple(rrc.get("scale", (0.08, 1.0))),
                    ratio=tuple(rrc.get("ratio", (3 / 4, 4 / 3))),
                    interpolation=interp,
                    antialias=True,
                )
            )
        else:
            steps += [v2.Resize(self.resolution, interpolation=interp, antialias=True), v2.CenterCrop(self.resolution)]
        if aug.get("horizontal_flip", False):
            steps.append(v2.RandomHorizontalFlip(0.5))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        p_erase = float(aug.get("random_erasing", 0.0) or 0.0)
        if p_erase > 0:
            steps.append(v2.RandomErasing(p=p_erase, value="random"))  # N(0, 1) fill, like timm's "pixel" mode
        self.pipeline = v2.Compose(steps)

    def __call__(self, frames: torch.Tensor) -> list[torch.Tensor]:
        return [_finish(self.pipeline(_as_video(frames)))]


class EvalTransform:
    """Deterministic evaluation views of one clip, as in the release.

    V > 1: resize the short side to `resolution * short_side_scale` (aspect kept), then V square
    crops evenly spaced along the long side (centred on the short side). V = 1: resize the short
    side to `resolution * single_view_short_side_scale` (release: 256/224) and centre-crop.
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
        self.interp = _interp(cfg.get("interpolation", "bilinear"))
        scale = cfg.get("short_side_scale", 1.0) if views > 1 else cfg.get("single_view_short_side_scale", 256 / 224)
        self.short_side = max(self.resolution, int(round(self.resolution * float(scale))))
        self.to_float = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def __call__(self, frames: torch.Tensor) -> list[torch.Tensor]:
        video = v2.functional.resize(_as_video(frames), self.short_side, interpolation=self.interp, antialias=True)
        H, W = video.shape[-2:]
        r = self.resolution
        top, left = (H - r) // 2, (W - r) // 2
        if self.views == 1:
            starts = [(top, left)]
        else:
            long_h = H > W
            step = (max(H, W) - r) // (self.views - 1)
            starts = [(i * step, left) if long_h else (top, i * step) for i in range(self.views)]
        out = []
        for t, l in starts:
            crop = v2.functional.crop(video, t, l, r, r)
            out.append(_finish(self.to_float(crop)))
        return out
