"""Decode chosen frames of a video file: torchcodec, decord (the release's reader) or PyAV.

`auto` tries torchcodec (only where the system FFmpeg libraries it loads exist), then decord,
then PyAV, and the result says which one produced the frames (`Decoded.backend`).

Frames are fetched as the sorted unique indices, once, and gathered back into the requested
order, duplicates included. The release's index lists are overlapping and non-monotonic (K400:
8 clips that each restart near the previous clip's start), and decord's `get_batch` given them
in that order seeks back to a keyframe and re-decodes at every step backwards: 3.2x slower on a
720p file with one keyframe (`benchmarks/decode.py`). The frames are the same either way.

Real files disagree with their headers: the frame count a container advertises (and decord's
`len()`) can exceed the frames that actually decode, so fetching the last indices fails. Indices
are therefore computed by the caller's `indices_fn(num_frames)` against a frame count, and when
fetching fails the count is corrected to the frames PyAV really decodes (sequential decoding is
the one reliable judge; decord's own answers vary after a decode error) and the indices are
recomputed, rather than failing the sample or silently reading another one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from .errors import DecodeError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torchcodec", "decord", "pyav")
# decord first: measured on these CPUs (benchmarks/decode.py, K400 protocol) torchcodec was
# 0.54x decord's clips/s overall (about 10x slower on 176x144 files, faster on 640 px ones);
# it stays available as backend=torchcodec, and where decord is missing it comes next.
AUTO_ORDER = ("decord", "torchcodec", "pyav")
IndicesFn = Callable[[int], Sequence[int]]


class Decoded(tuple):
    """`(frames, num_frames)`, unpacking as a pair as before, plus `.backend`: who decoded them.

    `frames` is a uint8 torch tensor `(len(indices), H, W, 3)` (RGB); `num_frames` the frame
    count the indices were computed against (after any correction for a lying header);
    `backend` one of 'torchcodec', 'decord', 'pyav'.
    """

    def __new__(cls, frames, num_frames: int, backend: str):
        self = super().__new__(cls, (frames, int(num_frames)))
        self.backend = backend
        return self

    def __getnewargs__(self):  # pickles (DataLoader workers) with its backend
        return (self[0], self[1], self.backend)

    @property
    def frames(self):
        return self[0]

    @property
    def num_frames(self) -> int:
        return self[1]


def decord_available() -> bool:
    return backend_problem("decord") is None


def torchcodec_available() -> bool:
    return backend_problem("torchcodec") is None


def backend_problem(name: str) -> str | None:
    """Why backend `name` cannot run here (None when it can): missing package or FFmpeg libraries."""
    if name not in AUTO_ORDER:
        raise ValueError(f"backend must be one of {AUTO_ORDER}, got {name!r}")
    module = {"torchcodec": "torchcodec", "decord": "decord", "pyav": "av"}[name]
    try:
        mod = __import__(module)
    except Exception as e:  # ImportError, or a broken native library
        return f"{module} is not importable ({_short(e)})"
    if name == "torchcodec" and getattr(mod, "ffmpeg_major_version", None) is None:
        # torchcodec ships no FFmpeg; it loads the system's shared libraries (major 4-9) at import.
        return (f"torchcodec {getattr(mod, '__version__', '?')} found no FFmpeg shared libraries "
                "(libavcodec/libavformat/libavutil, FFmpeg 4-9; on Debian 12: apt-get install "
                "libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 "
                "libavfilter8)")
    return None


_told: set[str] = set()


def _usable(name: str) -> bool:
    problem = backend_problem(name)
    if problem is not None and name not in _told:
        _told.add(name)  # once per process: the reason is visible, the log is not flooded
        log.info("decoding backend %s unavailable, 'auto' skips it: %s", name, problem)
    return problem is None


def read_frames(
    path: str | os.PathLike,
    indices_fn: IndicesFn,
    *,
    backend: str = "auto",
    num_threads: int = 1,
) -> Decoded:
    """Decode the frames `indices_fn(num_frames)` selects; returns `Decoded(frames, num_frames)`.

    `backend`: 'auto' (torchcodec, decord, PyAV: the first usable one; a failure on the file
    passes it to the next, ending with PyAV, whose sequential decoding also corrects a lying
    header), or one of them alone ('torchcodec' and 'decord' then retry once with the frame count
    corrected). Raises DecodeError with the reason when the file cannot be decoded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        # decord can hang on empty files; there is nothing to decode anyway.
        raise DecodeError(f"video file is empty: {path}")

    if backend != "auto":
        problem = backend_problem(backend)
        if problem is not None:
            raise DecodeError(f"{backend} could not decode {path}: {problem}")
        try:
            frames, n = _READERS[backend](path, indices_fn, num_threads, correct=True)
        except Exception as e:
            raise DecodeError(f"{backend} could not decode {path}: {_short(e)}") from e
        return Decoded(frames, n, backend)

    errors = []
    for name in [b for b in AUTO_ORDER if b == "pyav" or _usable(b)]:
        try:
            # Only PyAV corrects a lying header here: the fast readers leave any failure to it.
            frames, n = _READERS[name](path, indices_fn, num_threads, correct=name == "pyav")
            return Decoded(frames, n, name)
        except Exception as e:
            errors.append(f"{name}: {_short(e)}")
            log.debug("%s failed on %s (%s); trying the next backend", name, path, _short(e))
    raise DecodeError(f"could not decode {path}: {'; '.join(errors)}")


def count_frames(path: str | os.PathLike, *, backend: str = "pyav") -> int:
    """Frames the backend reports: decord's or torchcodec's index length, or frames PyAV decodes."""
    path = os.fspath(path)
    if backend == "decord":
        import decord

        return len(decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1))
    if backend == "torchcodec":
        return _open_torchcodec(path, 1)[1]
    if backend != "pyav":
        raise ValueError(f"count_frames backend must be 'torchcodec', 'decord' or 'pyav', got {backend!r}")
    return _decode_pyav(path, set(), stop_after=None, num_threads=1)[1]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _checked(indices: Sequence[int], n: int) -> list[int]:
    idx = [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices_fn returned {bad[:5]} outside [0, {n}) for a {n}-frame video")
    if not idx:
        raise ValueError("indices_fn returned no indices")
    return idx


def _fetch_in_order(fetch: Callable[[list[int]], np.ndarray], idx: list[int]):
    """`fetch(sorted unique indices)` once, gathered back to `idx`'s order (duplicates repeated).

    One forward pass instead of a seek back to a keyframe at every decreasing index. The gather
    is numpy's: torch's uint8 indexing was 10x slower at this size (0.5 s for 128 720p frames)."""
    import torch

    order = np.asarray(idx, dtype=np.int64)
    unique, inverse = np.unique(order, return_inverse=True)
    frames = fetch(unique.tolist())
    if not (len(unique) == len(order) and np.array_equal(unique, order)):  # else nothing to gather
        frames = frames[inverse.reshape(-1)]
    return torch.from_numpy(np.ascontiguousarray(frames))


def _read_indexed(path: str, indices_fn: IndicesFn, num_threads: int, *, correct: bool, open_reader,
                  fetch) -> tuple[object, int]:
    """Random-access readers (decord, torchcodec): index length, fetch, correct a lying header."""
    reader, n = open_reader(path, num_threads)
    if n < 1:
        raise DecodeError("the reader reports 0 frames")
    idx = _checked(indices_fn(n), n)
    try:
        return _fetch_in_order(lambda u: fetch(reader, u), idx), n
    except Exception as first:
        if not correct:
            raise
        # The header may promise frames that do not decode. decord cannot be trusted to find the
        # true end itself (after a decode error its answers vary from call to call), so count the
        # frames that really decode with PyAV, recompute the indices and retry with a fresh reader.
        true_n = _decode_pyav(path, set(), stop_after=None, num_threads=num_threads)[1]
        if true_n < 1 or true_n >= n:
            raise first
        log.debug("%s: the reader reports %d frames but only %d decode", path, n, true_n)
        idx = _checked(indices_fn(true_n), true_n)
        reader, _ = open_reader(path, num_threads)
        return _fetch_in_order(lambda u: fetch(reader, u), idx), true_n


def _open_decord(path: str, num_threads: int):
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    return vr, len(vr)


def _fetch_decord(vr, unique: list[int]) -> np.ndarray:
    return vr.get_batch(unique).asnumpy()


def _open_torchcodec(path: str, num_threads: int):
    from torchcodec.decoders import VideoDecoder

    # "exact": frame indices from a scan of the file, as decord's, not from the header's rate.
    dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=max(int(num_threads), 1),
                       seek_mode="exact")
    return dec, len(dec)


def _fetch_torchcodec(dec, unique: list[int]) -> np.ndarray:
    return dec.get_frames_at(unique).data.numpy()  # a view; the gather or ascontiguousarray copies


def _read_decord(path, indices_fn, num_threads, *, correct):
    return _read_indexed(path, indices_fn, num_threads, correct=correct, open_reader=_open_decord,
                         fetch=_fetch_decord)


def _read_torchcodec(path, indices_fn, num_threads, *, correct):
    return _read_indexed(path, indices_fn, num_threads, correct=correct,
                         open_reader=_open_torchcodec, fetch=_fetch_torchcodec)


def _read_pyav(path: str, indices_fn: IndicesFn, num_threads: int, *, correct: bool = True):
    """Sequential decoding up to the largest index, once; the wanted frames kept as they pass.

    Always corrects a lying header (`correct` is accepted for a uniform signature)."""
    import av
    import torch

    with av.open(path) as container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        n = stream.frames
        if not n and stream.duration and stream.average_rate:
            n = int(round(float(stream.duration * stream.time_base * stream.average_rate)))
    if n:
        idx = _checked(indices_fn(n), n)
        got, decoded = _decode_pyav(path, set(idx), stop_after=max(idx), num_threads=num_threads)
        if all(i in got for i in idx):
            return torch.from_numpy(np.stack([got[i] for i in idx])), n
        # The stream ended before the header said it would: `decoded` is the true count.
        log.debug("%s: header says %d frames but only %d decode", path, n, decoded)
    else:
        _, decoded = _decode_pyav(path, set(), stop_after=None, num_threads=num_threads)
    if decoded < 1:
        raise DecodeError("no frame could be decoded")
    idx = _checked(indices_fn(decoded), decoded)
    got, _ = _decode_pyav(path, set(idx), stop_after=max(idx), num_threads=num_threads)
    return torch.from_numpy(np.stack([got[i] for i in idx])), decoded


_READERS = {"torchcodec": _read_torchcodec, "decord": _read_decord, "pyav": _read_pyav}


def _decode_pyav(path: str, wanted: set[int], stop_after: int | None, num_threads: int):
    """Decode sequentially, keeping the wanted frames; returns (frames by index, frames decoded)."""
    import av

    got: dict[int, np.ndarray] = {}
    count = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = max(int(num_threads), 1)
        try:
            for i, frame in enumerate(container.decode(stream)):
                count = i + 1
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if stop_after is not None and i >= stop_after:
                    break
        except av.error.FFmpegError:
            # A damaged tail: keep what decoded; the caller recomputes indices on `count`.
            if count == 0:
                raise
    return got, count


class FrameCache:
    """Whole decoded videos kept in RAM, up to a byte budget, for small datasets read many times.

    Pretraining on the digits videos draws a new clip from every video each epoch; decoding was
    the bottleneck there (`benchmarks/measure.py pretrain`), so each video is decoded once, in
    full, and later clips are sliced from memory. Once the budget is spent, videos not yet cached
    are decoded per read as usual (nothing is evicted: a dataset that does not fit gains nothing
    from churning). Unreadable files are never cached, so each read reports them again.
    Each DataLoader worker process holds its own cache.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.used = 0
        self.full = False
        self._videos: dict[str, Decoded] = {}

    def __len__(self) -> int:
        return len(self._videos)

    def read(self, path: str | os.PathLike, indices_fn: IndicesFn, *, backend: str = "auto",
             num_threads: int = 1) -> Decoded:
        """As `read_frames`, served from memory when the whole video is cached (`.backend` is
        the backend that decoded it)."""
        path = os.path.abspath(os.fspath(path))  # one entry per file, however it was named
        hit = self._videos.get(path)
        if hit is None:
            if self.full:
                return read_frames(path, indices_fn, backend=backend, num_threads=num_threads)
            hit = read_frames(path, lambda n: range(n), backend=backend, num_threads=num_threads)
            size = hit[0].numel() * hit[0].element_size()
            if self.used + size <= self.max_bytes:
                self._videos[path] = hit
                self.used += size
            else:
                self.full = True
                log.info("decoded-frame cache full at %.0f MiB (%d videos); decoding the rest "
                         "per read", self.used / 2**20, len(self._videos))
        frames, n = hit
        return Decoded(frames[_checked(indices_fn(n), n)], n, hit.backend)
