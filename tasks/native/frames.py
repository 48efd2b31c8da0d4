"""Videos shipped as folders of numbered JPEG frames (Jester: `20bn-jester-v1/<id>/00001.jpg`).

A frame folder is a video source in its own right: its frames are the folder's images in the
order of the number in their names (`00001.jpg`, `img_00002.jpg`, ...), so sampling, transforms
and the check treat it exactly as a decoded file. Only the frames a clip needs are read.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from ..clip_reader import Decoded
from ..errors import DecodeError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
_NUMBER = re.compile(r"(\d+)(?=\.[^.]+$)")


def frame_files(folder: str) -> list[str]:
    """The folder's frame images ordered by the number in their names (not lexically: a folder
    with `9.jpg` and `10.jpg` is in that order)."""
    try:
        names = [n for n in os.listdir(folder) if n.lower().endswith(FRAME_EXTENSIONS) and not n.startswith(".")]
    except OSError as e:
        raise DecodeError(f"frame folder {folder} cannot be listed: {e}") from None
    numbered = []
    for n in names:
        m = _NUMBER.search(n)
        if m is None:
            raise DecodeError(f"frame folder {folder}: {n} has no frame number in its name")
        numbered.append((int(m.group(1)), n))
    return [os.path.join(folder, n) for _, n in sorted(numbered)]


def read_frame_folder(folder: str, indices_fn: Callable[[int], Sequence[int]], **_ignored):
    """`tasks.clip_reader.Decoded` of the frames `indices_fn(num_frames)` selects, backend 'frames'."""
    import torch
    from PIL import Image


    files = frame_files(folder)
    if not files:
        raise DecodeError(f"frame folder {folder} holds no {'/'.join(FRAME_EXTENSIONS)} frames")
    indices = list(indices_fn(len(files)))
    bad = [i for i in indices if not 0 <= i < len(files)]
    if bad:
        raise DecodeError(f"frame folder {folder}: index {bad[0]} outside its {len(files)} frames")
    cache: dict[int, np.ndarray] = {}
    for i in dict.fromkeys(indices):
        try:
            with Image.open(files[i]) as im:
                cache[i] = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DecodeError(f"frame {files[i]} is unreadable: {type(e).__name__}: {e}") from None
    shapes = {a.shape for a in cache.values()}
    if len(shapes) > 1:
        raise DecodeError(f"frame folder {folder}: frames differ in size {sorted(shapes)}")
    frames = torch.from_numpy(np.stack([cache[i] for i in indices]))
    return Decoded(frames, len(files), "frames")
