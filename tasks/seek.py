"""Frames around a time in a long video, by seeking: never decoding from the first frame.

`tasks.clip_reader.read_frames` serves short clips (K400, SSv2) and decodes PyAV sequentially
from frame 0; on an AVA movie (15 or 120 minutes) that is thousands of frames per sample. Here
the same backends (`tasks.backends`) are opened with `exact=False`:

* PyAV seeks to the keyframe at or before the window's first frame, then decodes forward to the
  window's last frame, placing each frame by its presentation time: the frames a full decode
  yields at the same indices for a constant-frame-rate file (AVA's movies and their 15-minute
  cuts are). A seek that lands past the window is retried from further back, finally from the
  start.
* decord / torchcodec index directly (their own seek). torchcodec runs in `approximate` mode:
  the index -> time map from the header's rate, as PyAV's here; its `exact` mode would scan the
  whole file on every open. decord's reader also scans the file's packets (no decoding) when it
  opens it, which is why `auto` tries PyAV first here (decord is first in the clip reader,
  whose clips are seconds long).

Frame indices are computed once, from the PyAV header (`stream_info`), for every backend, so
all backends return the same `(T, H, W, 3)` uint8 frames at the same indices; indices past the
last frame that really decodes repeat that frame (the clip is clamped to the video).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import backends
from .backends import StreamInfo, stream_info
from .container import check_file
from .errors import DecodeError

__all__ = ["BACKENDS", "AUTO_ORDER", "StreamInfo", "Seeked", "stream_info", "frame_at",
           "centred_indices", "read_around", "read_at"]

BACKENDS = ("auto", "pyav", "decord", "torchcodec")
AUTO_ORDER = ("pyav", "decord", "torchcodec")


@dataclass
class Seeked:
    """`frames`: uint8 `(len(indices), H, W, 3)` RGB at `indices`; `decoded`: frames the decoder
    produced to get them (PyAV; None for backends that do not say)."""

    frames: torch.Tensor
    indices: list[int]
    info: StreamInfo
    backend: str
    decoded: int | None = None


def frame_at(time_s: float, fps: float) -> int:
    """Index of the frame on screen at `time_s` (file time): frame i shows from i / fps on.
    The small epsilon keeps 2.0 s x 25 fps at 50, not 49.999..."""
    return max(int(math.floor(time_s * fps + 1e-6)), 0)


def centred_indices(center: int, frames_per_clip: int, frame_step: int, num_frames: int) -> list[int]:
    """`frames_per_clip` indices `frame_step` apart around `center`, clamped to the video:
    offsets `-(T * step) // 2 + i * step` (SlowFast's `get_sequence` for AVA)."""
    half = (frames_per_clip * frame_step) // 2
    return [min(max(center - half + i * frame_step, 0), num_frames - 1) for i in range(frames_per_clip)]


def read_around(path: str | os.PathLike, time_s: float, *, frames_per_clip: int, frame_step: int,
                backend: str = "auto", num_threads: int = 1) -> Seeked:
    """The clip centred on the frame shown at `time_s` seconds into the file."""
    info = stream_info(path)
    center = min(frame_at(time_s, info.fps), info.num_frames - 1)
    indices = centred_indices(center, frames_per_clip, frame_step, info.num_frames)
    return read_at(path, indices, backend=backend, num_threads=num_threads, info=info)


def read_at(path: str | os.PathLike, indices: Sequence[int], *, backend: str = "auto",
            num_threads: int = 1, info: StreamInfo | None = None) -> Seeked:
    """Frames at `indices` (any order, repeats allowed), by seeking. `auto`: PyAV, then decord,
    then torchcodec, the first that decodes the file. Raises DecodeError with every reason."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = check_file(path)  # missing, empty, or a header known to crash a decoder outright
    info = info or stream_info(path)
    idx = [int(i) for i in indices]
    if not idx or min(idx) < 0:
        raise ValueError(f"indices must be non-empty and >= 0, got {idx[:5]}")
    unique = sorted(set(idx))
    names = AUTO_ORDER if backend == "auto" else (backend,)
    errors = []
    for name in names:
        if name != "pyav" and backends.problem(name) is not None:
            errors.append(f"{name}: {backends.problem(name)}")
            continue
        try:
            video = backends.get(name).open(path, num_threads=num_threads, exact=False)
            frames = video.get(unique, clamp=True)
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {str(e).strip()[:200]}")
            continue
        at = {i: k for k, i in enumerate(unique)}
        return Seeked(torch.from_numpy(frames[[at[i] for i in idx]]), idx, info, name, video.decoded)
    raise DecodeError(f"could not decode {path}: {'; '.join(errors)}")
