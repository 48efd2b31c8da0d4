"""The clip reader: decode the frames of a video file that a clip sampler chooses.

`auto` tries decord, then torchcodec (only where the system FFmpeg libraries it loads exist),
then PyAV, and the result says which one produced the frames (`Decoded.backend`). Each backend
is reached through `tasks.backends` (opened with `exact=True`), the interface the seeking
reader (`tasks.seek`) uses too.

Frames are fetched as the sorted unique indices, once, and gathered back into the requested
order, duplicates included, in one copy (PyAV, decoding sequentially, stacks them in that order
directly); `Decoded.clips(T)` views them as `(S, T, H, W, 3)` without another copy, and
`read_many` gives several clips of one video (augmented copies) from one decode. The release's
index lists are overlapping and non-monotonic (K400: 8 clips that each restart near the
previous clip's start), and decord's `get_batch` given them
in that order seeks back to a keyframe and re-decodes at every step backwards: 3.2x slower on a
720p file with one keyframe (`benchmarks/decode.py`). The frames are the same either way.

Real files disagree with their headers: the frame count a container advertises (and decord's
`len()`) can exceed the frames that actually decode, so fetching the last indices fails. Indices
are therefore computed by the caller's `indices_fn(num_frames)` against a frame count, and when
fetching fails the count is corrected to the frames PyAV really decodes (sequential decoding is
the one reliable judge; decord's own answers vary after a decode error) and the indices are
recomputed, rather than failing the sample or silently reading another one.

Crafted headers are refused before any decoder sees them (`tasks.container`), and
`isolation="subprocess"` decodes in a child process (`tasks.isolation`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from . import backends, isolation
from .backends import ShortStream, short
from .container import check_file
from .errors import DecodeError

log = logging.getLogger(__name__)

BACKENDS = backends.CHOICES
# decord first: it is the release's decoder, so `auto` decodes the frames the published numbers
# saw (torchcodec's colour conversion differs by a few levels). Measured as the loader runs
# (`benchmarks/decode.py --loader-order`: one decoder thread inside a DataLoader worker, 6
# rounds, CPU-s per clip), torchcodec costs less: K400-like 340x256 H.264 0.0092 (decord
# 0.0113, PyAV 0.0108), SSv2-like 427x240 VP9 0.0121 (decord 0.0134, PyAV 0.0238), 64 px
# 0.0023 (decord 0.0028): about 0.002 CPU-s per K400 clip, 4% of the training loader's 0.058
# (`benchmarks/datapath.py`). Not worth other pixels than the release's; `decoder: torchcodec`
# takes it. Where decord is missing torchcodec comes next, then PyAV.
AUTO_ORDER = ("decord", "torchcodec", "pyav")
# "none" is the default: measured with `benchmarks/decode.py --rounds 3` (4 sample videos, 2
# loaded CPU cores), decoding in a child gave 0.76x / 0.56x the clips/s of decord / PyAV in
# process on the K400 protocol and 0.63x / 0.51x on SSv2 (the frames travel back through a
# socket: 354 MB per 720p K400 sample), plus a child start-up of seconds per process; the header
# check that stops the known crash costs under 1 ms a file.
ISOLATION = ("none", "subprocess")
# Default per-video limit under isolation: the slowest real sample here (a 720p K400-protocol
# read, 8x16 frames, PyAV) takes a few seconds; a minute is a hang, not a slow file.
DEFAULT_TIMEOUT_S = 60.0
# The function the isolated child runs (tasks.isolation starts it by this name).
CHILD_ENTRY = f"{__name__}:serve_isolated"
IndicesFn = Callable[[int], Sequence[int]]


class Decoded(tuple):
    """`(frames, num_frames)`, unpacking as a pair as before, plus `.backend`: who decoded them.

    `frames` is a uint8 torch tensor `(len(indices), H, W, 3)` (RGB); `num_frames` the frame
    count the indices were computed against (after any correction for a lying header);
    `backend` one of 'torchcodec', 'decord', 'pyav' (or 'frames' for a folder of images).
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

    def clips(self, frames_per_clip: int):
        """The frames as `(S, frames_per_clip, H, W, 3)`: a view, no copy (they are contiguous in
        clip order already; stacking per-clip slices would copy every frame once more)."""
        frames = self.frames
        if frames.shape[0] % frames_per_clip:
            raise ValueError(f"{frames.shape[0]} frames do not split into clips of {frames_per_clip}")
        return frames.view(-1, frames_per_clip, *frames.shape[1:])


def read_frames(
    path: str | os.PathLike,
    indices_fn: IndicesFn,
    *,
    backend: str = "auto",
    num_threads: int = 1,
    isolation: str = "none",
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    check_header: bool = True,
) -> Decoded:
    """Decode the frames `indices_fn(num_frames)` selects; returns `Decoded(frames, num_frames)`.

    `backend`: 'auto' (decord, torchcodec, PyAV: the first usable one; a failure on the file
    passes it to the next, ending with PyAV, whose sequential decoding also corrects a lying
    header), or one of them alone ('torchcodec' and 'decord' then retry once with the frame count
    corrected). Raises DecodeError with the reason when the file cannot be decoded.

    `check_header`: refuse MP4/WebM files whose container header cannot be true
    (`tasks.container.check_container`) before any decoder sees them. `isolation`: 'none'
    decodes in this process; 'subprocess' in a child process (one per process, reused), so that a
    decoder that crashes or runs past `timeout_s` seconds (None: no limit) costs this sample, not
    the run. `timeout_s` applies only under 'subprocess': a native hang cannot be interrupted
    in-process.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isolation not in ISOLATION:
        raise ValueError(f"decode isolation must be one of {ISOLATION}, got {isolation!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"decode timeout_s must be positive or None, got {timeout_s!r}")
    path = check_file(path, check_header=check_header)
    if isolation == "subprocess":
        return Decoded(*isolated_worker().read(path, indices_fn, backend=backend,
                                               num_threads=num_threads, timeout_s=timeout_s))
    return Decoded(*read_in_process(path, indices_fn, backend, num_threads))


def read_in_process(path: str, indices_fn: IndicesFn, backend: str, num_threads: int = 1):
    """`(frames, num_frames, backend that decoded them)`, decoding here (no header check)."""
    if backend != "auto":
        problem = backends.problem(backend)
        if problem is not None:
            raise DecodeError(f"{backend} could not decode {path}: {problem}; install it "
                              f"({backends.install_hint(backend)}) or use decoder auto")
        try:
            frames, n = _read_with(backends.get(backend), path, indices_fn, num_threads, correct=True)
        except Exception as e:
            raise DecodeError(f"{backend} could not decode {path}: {short(e)}") from e
        return frames, n, backend

    errors = []
    for name in [b for b in AUTO_ORDER if b == "pyav" or backends.usable(b)]:
        try:
            # Only PyAV corrects a lying header here: the fast readers leave any failure to it.
            frames, n = _read_with(backends.get(name), path, indices_fn, num_threads,
                                   correct=name == "pyav")
            return frames, n, name
        except Exception as e:
            errors.append(f"{name}: {short(e)}")
            log.debug("%s failed on %s (%s); trying the next backend", name, path, short(e))
    raise DecodeError(f"could not decode {path}: {'; '.join(errors)}")


def serve_isolated(fd: int) -> None:
    """The isolated child's entry (`CHILD_ENTRY`): decode here whatever the parent sends."""
    isolation.serve(fd, read_in_process)


def isolated_worker() -> isolation.IsolatedWorker:
    """This process's decoding child (started on first use)."""
    return isolation.worker(CHILD_ENTRY)


def count_frames(path: str | os.PathLike, *, backend: str = "pyav") -> int:
    """Frames the backend reports: decord's or torchcodec's index length, or frames PyAV decodes."""
    path = os.fspath(path)
    if backend == "pyav":
        return backends.decode_sequential(path, set(), None)[1]
    if backend not in ("decord", "torchcodec"):
        raise ValueError(f"count_frames backend must be 'torchcodec', 'decord' or 'pyav', got {backend!r}")
    return len(backends.get(backend).open(path))


def checked(indices: Sequence[int], n: int) -> list[int]:
    idx = [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices_fn returned {bad[:5]} outside [0, {n}) for a {n}-frame video")
    if not idx:
        raise ValueError("indices_fn returned no indices")
    return idx


def gather(frames: np.ndarray, rows) -> "torch.Tensor":
    """`frames[rows]` as a contiguous torch tensor, one copy (none when `rows` is every row in
    order). numpy's gather: torch's uint8 indexing was 10x slower at this size (0.5 s for 128
    720p frames)."""
    import torch

    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if not (len(rows) == len(frames) and np.array_equal(rows, np.arange(len(frames)))):
        frames = frames[rows]
    return torch.from_numpy(np.ascontiguousarray(frames))


def _fetch_in_order(video: backends.Video, idx: list[int]):
    """The frames at `idx` (any order, duplicates repeated), decoded in one forward pass.

    A random-access reader fetches the sorted unique indices once (not a seek back to a
    keyframe at every decreasing index) and they are gathered back to `idx`'s order: one copy.
    A sequential reader (PyAV) keeps the frames it decodes by index and stacks them straight in
    `idx`'s order: one copy, not a stack of the unique frames and a gather of those."""
    if video.any_order:
        return gather(video.get(idx), np.arange(len(idx)))
    unique, inverse = np.unique(np.asarray(idx, dtype=np.int64), return_inverse=True)
    return gather(video.get(unique.tolist()), inverse)


def read_many(path: str | os.PathLike, indices_fns: Sequence[IndicesFn], **options) -> list[Decoded]:
    """Several clips of one video from ONE decode: `indices_fns[k](num_frames)` picks clip k's
    frames (each as `read_frames`'s `indices_fn`); the union is decoded once, in order, and each
    clip gathered from it. The frames equal `read_frames(path, indices_fns[k], **options)`'s
    (same decoder, same indices). For augmented copies of a video (cached-copies mode): K copies
    then cost one decode, not K."""
    wanted: list[list[int]] = []

    def union(n: int) -> list[int]:
        # Called again with a corrected frame count when the header over-counts: recomputed.
        wanted[:] = [checked(fn(n), n) for fn in indices_fns]
        return sorted({i for idx in wanted for i in idx})

    decoded = read_frames(path, union, **options)
    frames = decoded.frames.numpy()
    at = {i: row for row, i in enumerate(sorted({i for idx in wanted for i in idx}))}
    return [Decoded(gather(frames, [at[i] for i in idx]), decoded.num_frames, decoded.backend)
            for idx in wanted]


def _read_with(backend: backends.Backend, path: str, indices_fn: IndicesFn, num_threads: int, *,
               correct: bool):
    """Open, compute the indices against the frame count, fetch; correct a lying header."""
    video = backend.open(path, num_threads=num_threads, exact=True)
    n = len(video)
    if n < 1:
        raise DecodeError("the reader reports 0 frames")
    idx = checked(indices_fn(n), n)
    try:
        return _fetch_in_order(video, idx), n
    except Exception as first:
        if not correct:
            raise
        # The header may promise frames that do not decode. PyAV's sequential decoding says how
        # many do (ShortStream); decord cannot be trusted to find the true end itself (after a
        # decode error its answers vary from call to call), so count them with PyAV, recompute
        # the indices and retry with a fresh reader.
        if isinstance(first, ShortStream):
            true_n = first.decoded
        elif backend.name == "pyav":
            raise
        else:
            true_n = backends.decode_sequential(path, set(), None, num_threads)[1]
        if true_n < 1 or true_n >= n:
            raise first
        log.debug("%s: the header says %d frames but only %d decode", path, n, true_n)
        idx = checked(indices_fn(true_n), true_n)
        video = backend.open(path, num_threads=num_threads, exact=True)
        return _fetch_in_order(video, idx), true_n
