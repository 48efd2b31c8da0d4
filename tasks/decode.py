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

Native decoders can take the whole process down: decord throws `std::bad_alloc` and aborts
(SIGABRT) on an mp4 whose time-to-sample table claims 0x7FFFFFF0 samples. Two defences, each
turning such a file into one DecodeError (counted like any unreadable file, so
`max_failure_fraction` applies): `check_container` reads the MP4 box tree / the WebM EBML header
first and refuses sample tables that cannot fit in the file, naming the reason; and
`isolation="subprocess"` decodes in a child process that is restarted after a crash and stopped
after `timeout_s` (a hang), at the cost `benchmarks/decode.py` prints.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .errors import DecodeError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torchcodec", "decord", "pyav")
# decord first: measured on these CPUs (benchmarks/decode.py, K400 protocol) torchcodec was
# 0.54x decord's clips/s overall (about 10x slower on 176x144 files, faster on 640 px ones);
# it stays available as backend=torchcodec, and where decord is missing it comes next.
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
    isolation: str = "none",
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    check_header: bool = True,
) -> Decoded:
    """Decode the frames `indices_fn(num_frames)` selects; returns `Decoded(frames, num_frames)`.

    `backend`: 'auto' (torchcodec, decord, PyAV: the first usable one; a failure on the file
    passes it to the next, ending with PyAV, whose sequential decoding also corrects a lying
    header), or one of them alone ('torchcodec' and 'decord' then retry once with the frame count
    corrected). Raises DecodeError with the reason when the file cannot be decoded.

    `check_header`: refuse MP4/WebM files whose container header cannot be true
    (`check_container`) before any decoder sees them. `isolation`: 'none' decodes in this
    process; 'subprocess' in a child process (one per process, reused), so that a decoder that
    crashes or runs past `timeout_s` seconds (None: no limit) costs this sample, not the run.
    `timeout_s` applies only under 'subprocess': a native hang cannot be interrupted in-process.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isolation not in ISOLATION:
        raise ValueError(f"decode isolation must be one of {ISOLATION}, got {isolation!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"decode timeout_s must be positive or None, got {timeout_s!r}")
    path = check_file(path, check_header=check_header)
    if isolation == "subprocess":
        return _isolated_worker().read(path, indices_fn, backend=backend, num_threads=num_threads,
                                       timeout_s=timeout_s)

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


def check_file(path: str | os.PathLike, *, check_header: bool = True) -> str:
    """The path as a string, once it names a non-empty file whose container header can be true
    (`check_container`); else DecodeError saying which. Every reader calls this first."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        # decord can hang on empty files; there is nothing to decode anyway.
        raise DecodeError(f"video file is empty: {path}")
    if check_header:
        check_container(path)
    return path


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
             num_threads: int = 1, **isolation) -> Decoded:
        """As `read_frames` (the same keyword arguments: `isolation`, `timeout_s`,
        `check_header`), served from memory when the whole video is cached (`.backend` is the
        backend that decoded it)."""
        path = os.path.abspath(os.fspath(path))  # one entry per file, however it was named
        hit = self._videos.get(path)
        if hit is None:
            if self.full:
                return read_frames(path, indices_fn, backend=backend, num_threads=num_threads,
                                   **isolation)
            hit = read_frames(path, lambda n: range(n), backend=backend, num_threads=num_threads,
                              **isolation)
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


# ----- container sanity, before any decoder sees the file -------------------------------------
# Top-level ISO-BMFF (MP4/MOV) box types a file may start with.
_ISO_FIRST = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"styp", b"pnot", b"uuid"}
# Boxes whose payload is a list of boxes, on the way from moov down to the sample tables.
_ISO_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
_MAX_MOOV = 1 << 30  # a moov holds tables of a few bytes per sample; 1 GiB is hours of video


def check_container(path: str | os.PathLike) -> None:
    """Refuse an MP4 or WebM file whose container header cannot be true, naming the reason.

    MP4: the box tree from `moov` down to each track's sample tables (`stts`, `stsz`, `stsc`,
    `stco`/`co64`, `stss`, `ctts`) is read; entry counts must fit in their boxes, the time-to-
    sample and composition tables may not count more samples than the sample-size table sizes,
    and no table may claim more samples than the file has bytes. These are the counts decoders allocate for up front (decord
    aborts the process on 0x7FFFFFF0). WebM/Matroska: the EBML header and the Segment's
    top-level elements before the first Cluster must parse and fit in the file. Other formats,
    and truncated media data (the decoders handle those), pass; the decoders judge the rest.
    Reads only headers (the moov box, a few KiB per minute of video).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        if len(head) >= 8 and head[4:8] in _ISO_FIRST:
            _check_isobmff(f, size, path)
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            _check_ebml(f, size, path)


def _corrupt(path: str, reason: str) -> DecodeError:
    return DecodeError(f"corrupt or crafted container header in {path}: {reason}; the file was "
                       f"not handed to a decoder")


def _iso_boxes(read_at: Callable[[int, int], bytes], start: int, end: int, path: str,
               where: str) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, offset, header length, size) of the boxes in [start, end); size 0 runs to `end`."""
    pos = start
    while pos + 8 <= end:
        size, typ = struct.unpack(">I4s", read_at(pos, 8))
        header = 8
        if size == 1:
            raw = read_at(pos + 8, 8)
            if len(raw) < 8:
                return
            size, header = struct.unpack(">Q", raw)[0], 16
        elif size == 0:
            size = end - pos
        name = typ.decode("latin-1")
        if size < header:
            raise _corrupt(path, f"box {name!r} at byte {pos} {where} has size {size}, less than its "
                                 f"own header")
        yield typ, pos, header, size
        pos += size


def _check_isobmff(f, file_size: int, path: str) -> None:
    def read_file(pos: int, n: int) -> bytes:
        f.seek(pos)
        return f.read(n)

    moov = None
    for typ, pos, header, size in _iso_boxes(read_file, 0, file_size, path, "at the top level"):
        if typ == b"moov":
            if pos + size > file_size:
                raise _corrupt(path, f"the moov box (the index of every sample) claims {size} bytes "
                                     f"but only {file_size - pos} remain in the file: truncated")
            if size > _MAX_MOOV:
                raise _corrupt(path, f"the moov box claims {size} bytes")
            moov = read_file(pos + header, size - header)
            break
    if moov is None:  # fragmented or truncated files: the decoders say what they make of them
        return

    def read_moov(pos: int, n: int) -> bytes:
        return moov[pos : pos + n]

    track = 0

    def walk(start: int, end: int, trail: str) -> None:
        nonlocal track
        tables: dict[bytes, tuple[int, int]] = {}
        for typ, pos, header, size in _iso_boxes(read_moov, start, end, path, f"in {trail or 'moov'}"):
            if pos + size > end:
                raise _corrupt(path, f"box {typ.decode('latin-1')!r} in {trail or 'moov'} claims "
                                     f"{size} bytes, more than its parent holds ({end - pos})")
            if typ == b"trak":
                track += 1
            if typ in _ISO_CONTAINERS:
                walk(pos + header, pos + size, f"{trail}/{typ.decode()}" if trail else typ.decode())
            else:
                tables[typ] = (pos + header, pos + size)
        if trail.endswith("stbl"):
            _check_sample_tables(moov, tables, file_size, path, f"track {track}")

    walk(0, len(moov), "moov")


def _check_sample_tables(moov: bytes, tables: dict, file_size: int, path: str, track: str) -> None:
    """The counts of one track's sample tables, against their boxes and against each other."""

    def counted(name: bytes, entry_bytes: int, count_at: int = 4) -> tuple[int, int, int] | None:
        if name not in tables:
            return None
        start, end = tables[name]
        if end - start < count_at + 4:
            raise _corrupt(path, f"{track}: the {name.decode()} box is too short for its entry count")
        count = struct.unpack_from(">I", moov, start + count_at)[0]
        room = end - start - count_at - 4
        if entry_bytes and count * entry_bytes > room:
            raise _corrupt(path, f"{track}: the {name.decode()} table claims {count} entries of "
                                 f"{entry_bytes} bytes but its box holds {room} bytes")
        return count, start + count_at + 4, end

    sizes = None
    if b"stsz" in tables:
        start, end = tables[b"stsz"]
        if end - start < 12:
            raise _corrupt(path, f"{track}: the stsz box is too short")
        constant, n = struct.unpack_from(">II", moov, start + 4)
        if constant == 0 and n * 4 > end - start - 12:
            raise _corrupt(path, f"{track}: the sample-size table (stsz) claims {n} samples but its "
                                 f"box holds sizes for {(end - start - 12) // 4}")
        if constant and n * constant > file_size:
            raise _corrupt(path, f"{track}: the sample-size table (stsz) claims {n} samples of "
                                 f"{constant} bytes, more than the file's {file_size} bytes")
        sizes = n
    elif b"stz2" in tables:
        sizes = counted(b"stz2", 0, count_at=8)[0]

    stts = counted(b"stts", 8)
    if stts is not None:
        count, at, _ = stts
        total = sum(struct.unpack_from(">I", moov, at + 8 * i)[0] for i in range(count))
        # More times than sizes: the count a decoder allocates for cannot be real. (Fewer is
        # left to the decoders: muxers get the tail wrong and FFmpeg copes.)
        if sizes is not None and total > sizes:
            raise _corrupt(path, f"{track}: the time-to-sample table (stts) counts {total} samples "
                                 f"but the sample-size table (stsz) lists {sizes}")
        if total > file_size:
            raise _corrupt(path, f"{track}: the time-to-sample table (stts) counts {total} samples, "
                                 f"more than the file's {file_size} bytes")
    ctts = counted(b"ctts", 8)
    if ctts is not None and sizes is not None:
        count, at, _ = ctts
        total = sum(struct.unpack_from(">I", moov, at + 8 * i)[0] for i in range(count))
        if total > sizes:
            raise _corrupt(path, f"{track}: the composition-offset table (ctts) counts {total} "
                                 f"samples but the sample-size table (stsz) lists {sizes}")
    for name, entry in ((b"stsc", 12), (b"stco", 4), (b"co64", 8), (b"stss", 4)):
        got = counted(name, entry)
        if got is not None and sizes is not None and name == b"stss" and got[0] > sizes:
            raise _corrupt(path, f"{track}: the sync-sample table (stss) lists {got[0]} keyframes "
                                 f"of only {sizes} samples")


def _ebml_vint(f, *, is_id: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer at the file's position: (value, length); None: unknown
    size (all value bits set). Raises ValueError on an invalid leading byte or end of file."""
    first = f.read(1)
    if not first:
        raise ValueError("the file ends inside an element header")
    b = first[0]
    length = 1
    while length <= 8 and not b & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError(f"invalid EBML length byte 0x{b:02x}")
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        raise ValueError("the file ends inside an element header")
    raw = int.from_bytes(first + rest, "big")
    if is_id:
        return raw, length
    value = raw & ((1 << (7 * length)) - 1)
    return (None if value == (1 << (7 * length)) - 1 else value), length


def _check_ebml(f, file_size: int, path: str) -> None:
    try:
        f.seek(0)
        _, _ = _ebml_vint(f, is_id=True)
        header_size, _ = _ebml_vint(f, is_id=False)
        if header_size is None or f.tell() + header_size > file_size:
            raise _corrupt(path, f"the EBML header claims {header_size} bytes, more than the file")
        f.seek(f.tell() + header_size)
        seg_id, _ = _ebml_vint(f, is_id=True)
        if seg_id != 0x18538067:
            raise _corrupt(path, f"the EBML header is followed by element 0x{seg_id:x}, not a Segment")
        _ebml_vint(f, is_id=False)  # a truncated file's Segment may overrun; the decoders cope
        # Top-level elements up to the first Cluster (SeekHead, Info, Tracks, Cues, ...): the
        # headers a decoder reads before any frame, so they must lie inside the file.
        while f.tell() < file_size:
            at = f.tell()
            eid, _ = _ebml_vint(f, is_id=True)
            if eid == 0x1F43B675:  # Cluster: media data from here on
                return
            esize, _ = _ebml_vint(f, is_id=False)
            if esize is None:
                raise _corrupt(path, f"element 0x{eid:x} at byte {at} has an unknown size")
            if f.tell() + esize > file_size:
                raise _corrupt(path, f"element 0x{eid:x} at byte {at} claims {esize} bytes, more "
                                     f"than the {file_size - f.tell()} left in the file")
            f.seek(f.tell() + esize)
    except ValueError as e:
        raise _corrupt(path, f"invalid EBML ({e})") from None


# ----- decoding in a child process ------------------------------------------------------------
# Test-only hook: seconds the child sleeps before decoding, to stand in for a decoder that hangs
# (no real file is known here that makes one hang). Never set outside tests.
TEST_ONLY_CHILD_STALL_S = 0.0
_START_TIMEOUT_S = 120.0  # the child's imports, on a loaded machine


class _IsolatedWorker:
    """One decoding child process, started on first use and again after it crashed or was
    stopped. It runs `read_frames(isolation='none')`; each `indices_fn(n)` call is a round trip
    to this process, so the caller's index logic (header corrections included) runs unchanged.
    Started with subprocess, not multiprocessing: DataLoader workers are daemonic processes,
    which multiprocessing forbids to have children."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.conn = None
        self.stderr = None
        self.starts = 0

    def _start(self) -> None:
        import socket
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        self.stderr = tempfile.TemporaryFile()
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [repo, *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tasks.decode import _child_main; "
                                   "_child_main(int(sys.argv[1]))", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.stderr, env=env, close_fds=True)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.starts += 1
        # The child imports torch and the decoders first (seconds); that is not the file's time.
        try:
            ready = self.conn.poll(_START_TIMEOUT_S) and self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            tail = self._stderr_tail()
            self.close()
            raise DecodeError(f"the isolated decoder process did not start"
                              f"{': ' + tail if tail else ''}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.conn is not None:
            self.conn.close()
        if self.stderr is not None:
            self.stderr.close()
        self.proc = self.conn = self.stderr = None

    def _stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            lines = [ln.strip() for ln in self.stderr.read().decode("utf-8", "replace").splitlines()]
        except (OSError, ValueError, AttributeError):
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else ""

    def read(self, path: str, indices_fn: IndicesFn, *, backend: str, num_threads: int,
             timeout_s: float | None) -> Decoded:
        import torch

        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.conn.send((path, backend, num_threads, float(TEST_ONLY_CHILD_STALL_S)))
        failed: BaseException | None = None
        while True:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                ready = self.conn.poll(wait)
                msg = self.conn.recv() if ready else None
            except (EOFError, OSError):
                msg, ready = None, True
            if not ready:  # past the limit: the decoder hangs or crawls; stop it, lose this sample
                self.close()
                raise DecodeError(f"decoding {path} took longer than {timeout_s:g} s "
                                  f"(decode_timeout_s); the decoder process was stopped")
            if msg is None:  # the child died: a native crash (abort, segfault, out of memory)
                code = self.proc.wait()
                tail = self._stderr_tail()
                self.close()
                how = (f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}")
                raise DecodeError(f"the decoder crashed on {path} ({how}"
                                  f"{': ' + tail if tail else ''}); the decoder process is restarted "
                                  f"for the next file")
            kind = msg[0]
            if kind == "indices":
                try:
                    reply = ("ok", [int(i) for i in indices_fn(msg[1])])
                except Exception as e:  # the caller's bug: re-raised here once the child is idle
                    failed, reply = e, ("fail", _short(e))
                self.conn.send(reply)
            elif kind == "frames":
                return Decoded(torch.from_numpy(msg[1]), msg[2], msg[3])
            else:
                if failed is not None:
                    raise failed
                raise DecodeError(msg[1])


_workers: dict[int, _IsolatedWorker] = {}


def _isolated_worker() -> _IsolatedWorker:
    # One per process: a DataLoader worker forked from a process holding a child must not talk
    # to that process's child.
    pid = os.getpid()
    if pid not in _workers:
        _workers[pid] = _IsolatedWorker()
    return _workers[pid]


@atexit.register
def _stop_workers() -> None:
    worker = _workers.pop(os.getpid(), None)
    if worker is not None:
        worker.close()


def _child_main(fd: int) -> None:
    """The decoding child: requests in, frames (numpy) or an error message out, until EOF."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    import torch  # noqa: F401  (imported before 'ready': the per-file clock starts after it)

    conn.send(("ready",))
    while True:
        try:
            path, backend, num_threads, stall = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if stall:
            time.sleep(stall)

        def remote_indices(n: int) -> list[int]:
            conn.send(("indices", int(n)))
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(f"indices_fn failed in the caller: {value}")
            return value

        try:
            out = read_frames(path, remote_indices, backend=backend, num_threads=num_threads,
                              check_header=False)
            conn.send(("frames", out.frames.numpy(), out.num_frames, out.backend))
        except Exception as e:
            conn.send(("error", str(e) if isinstance(e, DecodeError) else
                       f"could not decode {path}: {_short(e)}"))
