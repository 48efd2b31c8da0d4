"""Frames around a time in a long video, by seeking: never decoding from the first frame.

`tasks.decode.read_frames` serves short clips (K400, SSv2) and decodes PyAV sequentially from
frame 0; on an AVA movie (15 or 120 minutes) that is thousands of frames per sample. Here:

* PyAV: `container.seek` to the keyframe at or before the window's first frame, then decode
  forward to the window's last frame. Each decoded frame's index comes from its presentation
  time (`round((pts - stream start) * fps)`), so the result is the frames a full decode yields at
  the same indices for a constant-frame-rate file (AVA's movies and their 15-minute cuts are).
  When a seek lands past the window (some containers' indexes are coarse) it is retried from
  further back, and finally from the start.
* decord / torchcodec index directly (their own seek). torchcodec runs in `approximate` mode:
  the index -> time map from the header's rate, as PyAV's here; its `exact` mode would scan the
  whole file on every open. decord's reader also scans the file's packets (no decoding) when it
  opens it, which is why `auto` tries PyAV first here (decord is first in `tasks.decode`, whose
  clips are seconds long).

Frame indices are computed once, from the PyAV header (`stream_info`), for every backend, so
all backends return the same `(T, H, W, 3)` uint8 frames at the same indices; indices past the
last frame that really decodes repeat that frame (the clip is clamped to the video).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .decode import backend_problem, check_file
from .errors import DecodeError

BACKENDS = ("auto", "pyav", "decord", "torchcodec")
AUTO_ORDER = ("pyav", "decord", "torchcodec")
# Seconds before the window a retried seek starts from, growing per retry, then 0 (the start).
_RETRY_MARGINS_S = (2.0, 10.0, 60.0)


@dataclass(frozen=True)
class StreamInfo:
    """What the container header says of its first video stream (nothing decoded)."""

    fps: float
    num_frames: int       # the header's frame count, or duration x fps where it has none
    duration_s: float
    width: int
    height: int


@dataclass
class Seeked:
    """`frames`: uint8 `(len(indices), H, W, 3)` RGB at `indices`; `decoded`: frames the decoder
    produced to get them (PyAV; None for backends that do not say)."""

    frames: torch.Tensor
    indices: list[int]
    info: StreamInfo
    backend: str
    decoded: int | None = None


def stream_info(path: str | os.PathLike) -> StreamInfo:
    """Frame rate, frame count, duration and size from the container header (PyAV); no decoding."""
    import av

    path = os.fspath(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            s = container.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            fps = float(rate) if rate else 0.0
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            elif container.duration is not None:  # in av.time_base (microseconds)
                duration = container.duration / 1e6
            else:
                duration = 0.0
            frames = int(s.frames or 0) or int(round(duration * fps))
            width, height = int(s.codec_context.width), int(s.codec_context.height)
    except DecodeError:
        raise
    except Exception as e:  # av.error.*: not a video container PyAV can open
        raise DecodeError(f"cannot open {path}: {type(e).__name__}: {e}") from None
    if not fps > 0 or frames < 1:
        raise DecodeError(f"{path}: the header gives no frame rate or length (fps {fps}, "
                          f"{frames} frames)")
    return StreamInfo(fps=fps, num_frames=frames, duration_s=duration, width=width, height=height)


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
        if name != "pyav" and backend_problem(name) is not None:
            errors.append(f"{name}: {backend_problem(name)}")
            continue
        try:
            got, decoded = _READERS[name](path, unique, info, num_threads)
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {str(e).strip()[:200]}")
            continue
        frames = np.stack([got[i] for i in idx])
        return Seeked(torch.from_numpy(frames), idx, info, name, decoded)
    raise DecodeError(f"could not decode {path}: {'; '.join(errors)}")


def _clamped(got: dict[int, np.ndarray], wanted: list[int]) -> dict[int, np.ndarray]:
    """Fill indices past the last decoded frame with that frame (a header that over-counts)."""
    if not got:
        raise DecodeError("no frame could be decoded in the window")
    last = max(got)
    missing = [i for i in wanted if i not in got]
    if any(i < last for i in missing):  # a hole inside the stream is a decoding fault, not the end
        raise DecodeError(f"frames {[i for i in missing if i < last][:5]} did not decode")
    for i in missing:
        got[i] = got[last]
    return got


def _read_pyav(path: str, unique: list[int], info: StreamInfo, num_threads: int):
    import av

    first, last = unique[0], unique[-1]
    wanted = set(unique)
    decoded = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = max(int(num_threads), 1)
        tb = stream.time_base
        start = stream.start_time or 0
        for margin in (0.0, *_RETRY_MARGINS_S, None):
            target_s = 0.0 if margin is None else max(first / info.fps - margin, 0.0)
            container.seek(start + int(target_s / tb), stream=stream, backward=True, any_frame=False)
            got: dict[int, np.ndarray] = {}
            first_seen = None
            for frame in container.decode(stream):
                decoded += 1
                if frame.pts is None:
                    raise DecodeError("a frame without a timestamp: cannot place it after a seek")
                i = int(round(float((frame.pts - start) * tb) * info.fps))
                if first_seen is None:
                    first_seen = i
                    if i > first and target_s > 0:
                        break  # the seek landed past the window: retry from further back
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
            if first_seen is not None and (first_seen <= first or target_s == 0):
                return _clamped(got, unique), decoded
    raise DecodeError("no frame decoded after seeking")


def _read_decord(path: str, unique: list[int], info: StreamInfo, num_threads: int):
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=max(int(num_threads), 1))
    n = len(vr)
    if n < 1:
        raise DecodeError("the reader reports 0 frames")
    inside = sorted({min(i, n - 1) for i in unique})
    frames = vr.get_batch(inside).asnumpy()
    got = dict(zip(inside, frames))
    return {i: got[min(i, n - 1)] for i in unique}, None


def _read_torchcodec(path: str, unique: list[int], info: StreamInfo, num_threads: int):
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=max(int(num_threads), 1),
                       seek_mode="approximate")
    n = len(dec)
    if n < 1:
        raise DecodeError("the reader reports 0 frames")
    inside = sorted({min(i, n - 1) for i in unique})
    frames = dec.get_frames_at(inside).data.numpy()
    got = dict(zip(inside, frames))
    return {i: got[min(i, n - 1)] for i in unique}, None


_READERS = {"pyav": _read_pyav, "decord": _read_decord, "torchcodec": _read_torchcodec}
