"""Decode chosen frames of a video file: decord first (the release's reader), PyAV as fallback.

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

BACKENDS = ("auto", "decord", "pyav")
IndicesFn = Callable[[int], Sequence[int]]


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except Exception:  # ImportError, or a broken native library
        return False
    return True


def read_frames(
    path: str | os.PathLike,
    indices_fn: IndicesFn,
    *,
    backend: str = "auto",
    num_threads: int = 1,
):
    """Decode the frames `indices_fn(num_frames)` selects; returns `(frames, num_frames)`.

    `frames` is a uint8 torch tensor `(len(indices), H, W, 3)` (RGB); `num_frames` is the frame
    count the indices were computed against (after any correction for a lying header).
    `backend`: 'auto' (decord, falling back to PyAV if decord is missing or fails), 'decord' or
    'pyav'. Raises DecodeError with the reason when the file cannot be decoded.
    """
    import torch

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        # decord can hang on empty files; there is nothing to decode anyway.
        raise DecodeError(f"video file is empty: {path}")

    errors = []
    if backend in ("auto", "decord"):
        try:
            # 'auto' leaves any decord failure to PyAV, whose sequential decoding is reliable;
            # 'decord' retries decord once with the frame count corrected.
            frames, n = _read_decord(path, indices_fn, num_threads, clamp=backend == "decord")
            return torch.from_numpy(frames), n
        except Exception as e:
            if backend == "decord":
                raise DecodeError(f"decord could not decode {path}: {_short(e)}") from e
            errors.append(f"decord: {_short(e)}")
            log.debug("decord failed on %s (%s); trying PyAV", path, _short(e))
    try:
        frames, n = _read_pyav(path, indices_fn, num_threads)
        return torch.from_numpy(frames), n
    except Exception as e:
        errors.append(f"pyav: {_short(e)}")
        raise DecodeError(f"could not decode {path}: {'; '.join(errors)}") from e


def count_frames(path: str | os.PathLike, *, backend: str = "pyav") -> int:
    """Frames the backend reports: decord's index length, or frames PyAV actually decodes."""
    path = os.fspath(path)
    if backend == "decord":
        import decord

        return len(decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1))
    if backend != "pyav":
        raise ValueError(f"count_frames backend must be 'decord' or 'pyav', got {backend!r}")
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


def _read_decord(path: str, indices_fn: IndicesFn, num_threads: int, *, clamp: bool) -> tuple[np.ndarray, int]:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    n = len(vr)
    if n < 1:
        raise DecodeError("decord reports 0 frames")
    idx = _checked(indices_fn(n), n)
    try:
        return vr.get_batch(idx).asnumpy(), n
    except Exception as first:
        if not clamp:
            raise
        # The header may promise frames that do not decode. decord cannot be trusted to find the
        # true end itself (after a decode error its answers vary from call to call), so count the
        # frames that really decode with PyAV, recompute the indices and retry with a fresh reader.
        true_n = _decode_pyav(path, set(), stop_after=None, num_threads=num_threads)[1]
        if true_n < 1 or true_n >= n:
            raise first
        log.debug("%s: decord reports %d frames but only %d decode", path, n, true_n)
        idx = _checked(indices_fn(true_n), true_n)
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        return vr.get_batch(idx).asnumpy(), true_n


def _read_pyav(path: str, indices_fn: IndicesFn, num_threads: int) -> tuple[np.ndarray, int]:
    import av

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
            return np.stack([got[i] for i in idx]), n
        # The stream ended before the header said it would: `decoded` is the true count.
        log.debug("%s: header says %d frames but only %d decode", path, n, decoded)
    else:
        _, decoded = _decode_pyav(path, set(), stop_after=None, num_threads=num_threads)
    if decoded < 1:
        raise DecodeError("no frame could be decoded")
    idx = _checked(indices_fn(decoded), decoded)
    got, _ = _decode_pyav(path, set(idx), stop_after=max(idx), num_threads=num_threads)
    return np.stack([got[i] for i in idx]), decoded


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
        self._videos: dict[str, tuple[object, int]] = {}

    def __len__(self) -> int:
        return len(self._videos)

    def read(self, path: str | os.PathLike, indices_fn: IndicesFn, *, backend: str = "auto",
             num_threads: int = 1):
        """As `read_frames`, served from memory when the whole video is cached."""
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
        return frames[_checked(indices_fn(n), n)], n
