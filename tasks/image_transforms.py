"""Image transforms of the V-JEPA release's frozen image evaluation, split loader | device.

The release (facebookresearch/jepa, `evals/image_classification_frozen/eval.py`,
`make_dataloader`) trains with timm's `create_transform(is_training=True, auto_augment='original',
interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)` (so: random resized crop
scale (0.08, 1) ratio (3/4, 4/3), bicubic; horizontal flip p 0.5; AutoAugment 'original';
ToTensor, normalise; random erasing) and evaluates with Resize(int(r * 256 / 224)) (bilinear,
PIL), CenterCrop(r), ToTensor, normalise. The image is then repeated to the encoder's frame
count (`input.unsqueeze(2).repeat(1, 1, frames_per_clip, 1, 1)`).

Here, as for clips, the PIL half runs in the loader worker and yields uint8 `(1, r, r, 3)`; the
device half normalises, erases (seeded by the worker's draw) and repeats the frame. Built from
timm's own `create_transform(..., separate=True)`, so the augmentation is timm's, not a copy.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .errors import DataError

TRAIN_KEYS = {"auto_augment", "interpolation", "random_erasing", "erasing_mode", "erasing_count",
              "horizontal_flip", "random_resized_crop"}
EVAL_KEYS = {"resize_ratio", "interpolation"}


def _check(where: str, cfg: Mapping, allowed: set[str]) -> None:
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)} for an image task; "
                        f"allowed: {', '.join(sorted(allowed))}")


def _to_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def _uint8(pil) -> torch.Tensor:
    return torch.from_numpy(np.array(pil, dtype=np.uint8, copy=True)).unsqueeze(0)  # (1, r, r, 3)


class _Normalise:
    def __init__(self, mean: Sequence[float], std: Sequence[float], num_frames: int):
        if int(num_frames) < 1:
            raise DataError(f"an image is repeated to at least 1 frame, got num_frames={num_frames}")
        self.mean, self.std, self.num_frames = tuple(mean), tuple(std), int(num_frames)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (1, r, r, 3) -> float (3, r, r), normalised."""
        x = frames[0].permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        return (x - mean) / std

    def repeat(self, image: torch.Tensor) -> torch.Tensor:
        """(3, r, r) -> (3, T, r, r): the release feeds a video encoder the image T times."""
        return image.unsqueeze(1).repeat(1, self.num_frames, 1, 1)


class ImageTrainTransform(_Normalise):
    """`draw(image, seed) -> (uint8 (1, r, r, 3), params)` in the worker; `apply(frames, params)
    -> (3, T, r, r)` on any device."""

    def __init__(self, resolution: int, mean: Sequence[float], std: Sequence[float], *,
                 num_frames: int = 1, auto_augment: str | None = "original",
                 interpolation: str = "bicubic", random_erasing: float = 0.25,
                 erasing_mode: str = "pixel", erasing_count: int = 1, horizontal_flip: float = 0.5,
                 random_resized_crop: Mapping | None = None):
        super().__init__(mean, std, num_frames)
        from timm.data import create_transform

        rrc = dict(random_resized_crop or {})
        self.resolution = int(resolution)
        self.primary, self.auto, _ = create_transform(
            input_size=self.resolution, is_training=True, auto_augment=auto_augment,
            interpolation=interpolation, hflip=float(horizontal_flip),
            scale=tuple(rrc.get("scale", (0.08, 1.0))), ratio=tuple(rrc.get("ratio", (3 / 4, 4 / 3))),
            re_prob=0.0, mean=self.mean, std=self.std, separate=True)
        self.erase_p, self.erase_mode, self.erase_count = float(random_erasing), erasing_mode, int(erasing_count)

    def draw(self, image, seed: int):
        state = random.getstate()
        try:
            random.seed(seed)  # timm's crop, flip and AutoAugment draw from `random` and torch
            with torch.random.fork_rng(devices=[]):  # the CPU generator only (tasks.loading)
                torch.default_generator.manual_seed(seed % 2**63)
                pil = self.auto(self.primary(_to_pil(image)))
        finally:
            random.setstate(state)
        return _uint8(pil), {"erase_seed": int(seed) ^ 0x5EED}

    def apply(self, frames: torch.Tensor, params: Mapping | None = None):
        x = self.normalise(frames)
        if self.erase_p > 0 and params is not None:
            from timm.data.random_erasing import RandomErasing

            erase = RandomErasing(probability=self.erase_p, mode=self.erase_mode,
                                  max_count=self.erase_count, device=str(x.device))
            state = random.getstate()
            devices = [x.device.index or 0] if x.device.type == "cuda" else []
            try:
                random.seed(params["erase_seed"])
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(params["erase_seed"])
                    if x.device.type == "cuda":
                        torch.cuda.manual_seed(params["erase_seed"])
                    x = erase(x)
            finally:
                random.setstate(state)
        out = self.repeat(x)
        return out if params is not None else [out]

    def __call__(self, image, seed: int | None = None):
        frames, params = self.draw(image, random.randrange(2**62) if seed is None else seed)
        return [self.apply(frames, params)]


class ImageEvalTransform(_Normalise):
    """Resize the short side to int(r * resize_ratio), centre crop r (PIL, in the worker);
    `apply(frames) -> [(3, T, r, r)]` (one view)."""

    def __init__(self, resolution: int, mean: Sequence[float], std: Sequence[float], *,
                 num_frames: int = 1, resize_ratio: float = 256 / 224, interpolation: str = "bilinear"):
        super().__init__(mean, std, num_frames)
        from torchvision import transforms

        modes = {"bilinear": transforms.InterpolationMode.BILINEAR,
                 "bicubic": transforms.InterpolationMode.BICUBIC}
        if interpolation not in modes:
            raise DataError(f"eval_transform.interpolation must be one of {', '.join(modes)}")
        self.resolution = int(resolution)
        self.pil = transforms.Compose([
            transforms.Resize(int(self.resolution * float(resize_ratio)), interpolation=modes[interpolation]),
            transforms.CenterCrop(self.resolution)])

    def prepare(self, image) -> torch.Tensor:
        return _uint8(self.pil(_to_pil(image)))

    def apply(self, frames: torch.Tensor, params=None):
        return [self.repeat(self.normalise(frames))]

    def __call__(self, image):
        return self.apply(self.prepare(image))


def build_image_transform(train: bool, resolution: int, mean, std, *, num_frames: int,
                          train_aug: Mapping, eval_transform: Mapping):
    if train:
        _check("train_aug", train_aug, TRAIN_KEYS)
        return ImageTrainTransform(resolution, mean, std, num_frames=num_frames, **train_aug)
    _check("eval_transform", eval_transform, EVAL_KEYS)
    return ImageEvalTransform(resolution, mean, std, num_frames=num_frames, **eval_transform)
