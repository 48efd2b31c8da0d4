"""Video decoding backends behind one interface: torchcodec, decord and PyAV.

A backend opens a file (`backend.open(path, num_threads=, exact=)`) and gives a `Video`: its
frame count (`len(video)`) and the frames at sorted, unique indices (`video.get(indices)`,
uint8 `(N, H, W, 3)` RGB). Both readers use this interface and nothing else of a library:

* the clip reader (`tasks.clip_reader`, short clips of K400 / SSv2 files) opens with
  `exact=True`: frame indices as a scan of the file finds them (decord's, torchcodec's `exact`
  seek mode), and PyAV decodes sequentially from the first frame, the one reliable judge of how
  many frames a file really has;
* the seeking reader (`tasks.seek`, clips around a time in a long film) opens with
  `exact=False`: torchcodec maps indices to times from the header's rate (`approximate`: no scan
  of a 2-hour file), and PyAV seeks to the keyframe before the first wanted frame, placing each
  decoded frame by its timestamp. It asks `get(..., clamp=True)`: indices past the last frame
  that decodes repeat that frame.

`problem(name)` says why a backend cannot run here (package missing, or torchcodec without the
system FFmpeg libraries); `require(name)` turns that into a DataError that says what to install.
"""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from .errors import DataError, DecodeError

log = logging.getLogger(__name__)

NAMES = ("torchcodec", "decord", "pyav")
CHOICES = ("auto", *NAMES)
# Seconds before the window a retried seek starts from, growing per retry, then 0 (the start).
RETRY_MARGINS_S = (2.0, 10.0, 60.0)
FFMPEG_LIBS = ("libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 "
               "libavfilter8")


class ShortStream(DecodeError):
    """The stream ended before a wanted frame: `decoded` frames are all it really has."""

    def __init__(self, decoded: int, wanted: int):
        super().__init__("no frame could be decoded" if decoded < 1 else
                         f"the stream ends after {decoded} frames, before frame {wanted}")
        self.decoded = decoded


@dataclass(frozen=True)
class StreamInfo:
    """What the container header says of its first video stream (nothing decoded)."""

    fps: float
    num_frames: int       # the header's frame count, or duration x fps where it has none
    duration_s: float
    width: int
    height: int


class Video(ABC):
    """One opened file. `decoded`: frames the decoder produced so far (PyAV; None: unknown).
    `any_order`: `get` also takes unsorted indices with repeats, at no extra cost (a sequential
    decoder keeps frames by index), so the caller need not gather its order afterwards."""

    num_frames: int
    decoded: int | None = None
    any_order = False

    def __len__(self) -> int:
        return self.num_frames

    @abstractmethod
    def get(self, indices: list[int], *, clamp: bool = False) -> np.ndarray:
        """uint8 `(len(indices), H, W, 3)` at `indices` (sorted, unique). `clamp`: an index past
        the last frame gives the last frame; otherwise it is an error."""


class Backend(ABC):
    name: str
    module: str    # what `import` loads
    install: str   # what to install where it is missing

    def problem(self) -> str | None:
        """Why this backend cannot run here (None when it can)."""
        try:
            __import__(self.module)
        except Exception as e:  # ImportError, or a broken native library
            return f"{self.module} is not importable ({short(e)})"
        return None

    @abstractmethod
    def open(self, path: str, *, num_threads: int = 1, exact: bool = True) -> Video:
        ...


# ----- random access: decord and torchcodec -----------------------------------------------------

class _Indexed(Video):
    def __init__(self, reader, num_frames: int, fetch):
        self.reader, self.num_frames, self._fetch = reader, int(num_frames), fetch

    def get(self, indices: list[int], *, clamp: bool = False) -> np.ndarray:
        if self.num_frames < 1:
            raise DecodeError("the reader reports 0 frames")
        if not clamp:
            return self._fetch(self.reader, list(indices))
        last = self.num_frames - 1
        inside = sorted({min(i, last) for i in indices})
        frames = self._fetch(self.reader, inside)
        at = {i: k for k, i in enumerate(inside)}
        return frames[[at[min(i, last)] for i in indices]]


class Decord(Backend):
    name, module = "decord", "decord"
    install = "pip install decord (wheels for x86-64 only)"

    def open(self, path, *, num_threads=1, exact=True):
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=max(int(num_threads), 1))
        return _Indexed(vr, len(vr), lambda r, u: r.get_batch(u).asnumpy())


class TorchCodec(Backend):
    name, module = "torchcodec", "torchcodec"
    install = f"pip install torchcodec, plus the system FFmpeg 4-9 libraries (Debian 12: {FFMPEG_LIBS})"

    def problem(self):
        problem = super().problem()
        if problem is not None:
            return problem
        import torchcodec

        if getattr(torchcodec, "ffmpeg_major_version", None) is None:
            # torchcodec ships no FFmpeg; it loads the system's shared libraries at import.
            return (f"torchcodec {getattr(torchcodec, '__version__', '?')} found no FFmpeg shared "
                    "libraries (libavcodec/libavformat/libavutil, FFmpeg 4-9; on Debian 12: "
                    f"apt-get install {FFMPEG_LIBS})")
        return None

    def open(self, path, *, num_threads=1, exact=True):
        from torchcodec.decoders import VideoDecoder

        # "exact": indices from a scan of the file, as decord's; "approximate": from the header's
        # rate, so a long film is not scanned on every open.
        dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=max(int(num_threads), 1),
                           seek_mode="exact" if exact else "approximate")
        # `.data.numpy()` is a view; the caller's gather or ascontiguousarray copies.
        return _Indexed(dec, len(dec), lambda d, u: d.get_frames_at(u).data.numpy())


# ----- PyAV: sequential decoding, or seeking by timestamps -----------------------------------------

class PyAV(Backend):
    name, module = "pyav", "av"
    install = "pip install av"

    def open(self, path, *, num_threads=1, exact=True):
        return _Sequential(path, num_threads) if exact else _Seeking(path, num_threads)


def decode_sequential(path: str, wanted: set[int], stop_after: int | None, num_threads: int = 1):
    """Decode from the first frame, keeping the wanted ones: (frames by index, frames decoded)."""
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


def _gathered(got: dict[int, np.ndarray], indices: list[int], clamp: bool, decoded: int) -> np.ndarray:
    if clamp:
        got = clamped(got, indices)
    missing = [i for i in indices if i not in got]
    if missing:
        raise ShortStream(decoded, missing[0])
    return np.stack([got[i] for i in indices])


class _Sequential(Video):
    any_order = True  # decodes from frame 0 up to max(indices), keeping the wanted ones by index

    def __init__(self, path: str, num_threads: int):
        import av

        self.path, self.num_threads = path, num_threads
        with av.open(path) as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            stream = container.streams.video[0]
            n = stream.frames
            if not n and stream.duration and stream.average_rate:
                n = int(round(float(stream.duration * stream.time_base * stream.average_rate)))
        if not n:  # the header says nothing: count what decodes
            _, n = decode_sequential(path, set(), None, num_threads)
            if n < 1:
                raise DecodeError("no frame could be decoded")
        self.num_frames = int(n)

    def get(self, indices, *, clamp=False):
        got, self.decoded = decode_sequential(self.path, set(indices), max(indices), self.num_threads)
        return _gathered(got, list(indices), clamp, self.decoded)


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


class _Seeking(Video):
    """Seek to the keyframe at or before the first wanted frame, decode forward to the last. Each
    frame's index comes from its presentation time (`round((pts - start) * fps)`): for a
    constant-frame-rate file the frames a full decode yields at the same indices. A seek that
    lands past the window (coarse indexes) is retried from further back, finally from the start."""

    def __init__(self, path: str, num_threads: int, info: StreamInfo | None = None):
        self.path, self.num_threads = path, num_threads
        self.info = info or stream_info(path)
        self.num_frames = self.info.num_frames

    def get(self, indices, *, clamp=False):
        import av

        first, last, wanted = indices[0], indices[-1], set(indices)
        fps = self.info.fps
        self.decoded = 0
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_count = max(int(self.num_threads), 1)
            tb, start = stream.time_base, stream.start_time or 0
            for margin in (0.0, *RETRY_MARGINS_S, None):
                target_s = 0.0 if margin is None else max(first / fps - margin, 0.0)
                container.seek(start + int(target_s / tb), stream=stream, backward=True,
                               any_frame=False)
                got: dict[int, np.ndarray] = {}
                first_seen = None
                for frame in container.decode(stream):
                    self.decoded += 1
                    if frame.pts is None:
                        raise DecodeError("a frame without a timestamp: cannot place it after a seek")
                    i = int(round(float((frame.pts - start) * tb) * fps))
                    if first_seen is None:
                        first_seen = i
                        if i > first and target_s > 0:
                            break  # the seek landed past the window: retry from further back
                    if i in wanted:
                        got[i] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
                if first_seen is not None and (first_seen <= first or target_s == 0):
                    return _gathered(got, list(indices), clamp, self.decoded)
        raise DecodeError("no frame decoded after seeking")


def clamped(got: dict[int, np.ndarray], wanted: list[int]) -> dict[int, np.ndarray]:
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


# ----- the registry -------------------------------------------------------------------------------

BACKENDS: dict[str, Backend] = {b.name: b for b in (TorchCodec(), Decord(), PyAV())}


def get(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {NAMES}, got {name!r}")
    return BACKENDS[name]


def problem(name: str) -> str | None:
    """Why backend `name` cannot run here (None when it can): missing package or FFmpeg libraries."""
    return get(name).problem()


def install_hint(name: str) -> str:
    return get(name).install


def require(name: str, context: str = "") -> None:
    """Nothing when `name` ('auto' or a backend) can run here; else a DataError (prefixed with
    `context`) saying what to install, or to let `auto` pick what is installed."""
    if name == "auto":
        return
    why = problem(name)
    if why is not None:
        found = ", ".join(n for n in NAMES if problem(n) is None) or "nothing"
        raise DataError(f"{context}decoder {name!r} was requested but cannot run here: {why}. "
                        f"Install it ({install_hint(name)}), or use decoder auto "
                        f"(`task.decoder=auto`) to decode with what is installed ({found})")


_told: set[str] = set()


def usable(name: str) -> bool:
    """For `auto`: whether to try `name`; the reason it is skipped is logged once per process."""
    why = problem(name)
    if why is not None and name not in _told:
        _told.add(name)
        log.debug("decoding backend %s unavailable, 'auto' skips it: %s", name, why)
    return why is None


def short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]

