"""`ImageDataset`: a `path label` manifest of images -> items laid out as `VideoDataset`'s.

An image is a one-segment, one-view clip: items are `frames` uint8 `(1, 1, r, r, 3)` (+ the
training draw's params) for device finishing, or `video` float `(1, V=1, 3, T, r, r)`, where the
transform repeats the image to T frames (the encoder's frame count, as the release does; T=1
for an image encoder). So the probe trainer, the loaders and `collate_clips` serve images
unchanged. An unreadable image gives `error`, never a substitute.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .items import ManifestItems

log = logging.getLogger(__name__)


class ImageDataset(ManifestItems):
    def __init__(self, entries: Sequence[tuple[str, int]], *, transform, split: str = "",
                 class_names: Sequence[str] | None = None, device_finish: bool = False):
        self.entries = list(entries)
        self.transform = transform
        self.split = split
        self.class_names = list(class_names) if class_names is not None else None
        self.device_finish = bool(device_finish)
        self.backend = "pil"

    def _load(self, path: str, label: int = 0) -> dict:
        from PIL import Image

        with Image.open(path) as im:
            image = im.convert("RGB")
        draw = getattr(self.transform, "draw", None)
        if draw is not None:
            # Seeded by the loader's per-item torch seed (tasks.loading.SeededItems).
            frames, params = draw(image, int(torch.randint(0, 2**62, ()).item()))
            if self.device_finish:
                return {"frames": frames.unsqueeze(0), "params": [params], "backend": "pil"}
            return {"video": torch.stack([self.transform.apply(frames, params)]).unsqueeze(0),
                    "backend": "pil"}
        frames = self.transform.prepare(image)
        if self.device_finish:
            return {"frames": frames.unsqueeze(0), "params": None, "backend": "pil"}
        return {"video": torch.stack(self.transform.apply(frames)).unsqueeze(0), "backend": "pil"}
