"""Synthetic video tasks made from scikit-learn's bundled handwritten digits (nothing downloaded).

Two tasks share one generator and the release's data layout (mp4 files in class folders whose
names contain spaces, exactly like Kinetics, and `path label` manifests):

* `digits_motion`: 8 classes, the motion (move left/right/up/down, rotate clockwise /
  counter-clockwise, grow, shrink) of an arbitrary digit from a random start position and size.
  A single frame cannot tell the class: it takes temporal modelling.
* `digits_appearance`: 10 classes, the digit itself; its motion is a random nuisance drawn from
  the same 8 motions.

Each split draws its digits from its own disjoint set of source images, and every video's
randomness comes from (seed, task, split, class, index), so a seed always gives the same files.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from common import failpoints
from common.atomic import atomic_write_text

from .errors import DataError
from .manifest import manifest_sha256, output_folder, own_folder, read_manifest, write_manifest

MOTIONS = [
    "move left",
    "move right",
    "move up",
    "move down",
    "rotate clockwise",
    "rotate counter-clockwise",
    "grow",
    "shrink",
]
DIGIT_CLASSES = [f"digit {d}" for d in range(10)]
TASKS = {"digits_motion": MOTIONS, "digits_appearance": DIGIT_CLASSES}
SPLITS = ("train", "val", "test")
# Videos per class (train, val, test): 4,050 small videos, about 100 CPU-s to write. The test
# splits hold 800 and 1,000 videos so a top-1 of ~90% (~40%) has a standard error of about 1.0
# (1.5) points; the earlier 160-video test splits had ~3.2, more than the differences between
# encoders the demo is about. 100 labelled videos per class keep appearance learnable: with 48,
# every frozen encoder sat near 22% whatever its features.
DEFAULT_PER_CLASS = {"digits_motion": (100, 25, 100), "digits_appearance": (100, 25, 100)}
# Share of each digit's source images given to each split (disjoint).
SOURCE_FRACTIONS = (0.6, 0.15, 0.25)


def _source_pools(seed: int) -> tuple[np.ndarray, dict[str, dict[int, np.ndarray]]]:
    """Digit images (N, 8, 8) in [0, 1] and, per split and digit, disjoint index pools."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    target = digits.target
    rng = np.random.default_rng([seed, 7919])
    pools: dict[str, dict[int, np.ndarray]] = {s: {} for s in SPLITS}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(target == d))
        a = int(round(len(idx) * SOURCE_FRACTIONS[0]))
        b = a + int(round(len(idx) * SOURCE_FRACTIONS[1]))
        for split, part in zip(SPLITS, (idx[:a], idx[a:b], idx[b:])):
            pools[split][d] = part
    return images, pools


def motion_params(motion: str, rng: np.random.Generator, size: int) -> dict:
    """Start/end centre (px), digit size (px) and angle (degrees) for one video.

    Nuisances (start position, size, initial tilt) are random; the class is only the change.
    Angles grow clockwise on screen (image y points down).
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; motions: {MOTIONS}")
    s = size / 64.0  # every length below is for a 64 px canvas
    base = rng.uniform(18, 26) * s
    tilt = rng.uniform(-15, 15)
    scale0 = scale1 = 1.0
    angle0 = angle1 = tilt
    if motion in ("grow", "shrink"):
        small, big = rng.uniform(0.55, 0.75), rng.uniform(1.25, 1.5)
        scale0, scale1 = (small, big) if motion == "grow" else (big, small)
    if motion.startswith("rotate"):
        turn = rng.uniform(90, 150)
        angle1 = tilt + (turn if motion == "rotate clockwise" else -turn)
    # Keep the whole digit (rotated corners included) inside the canvas throughout.
    half = base * max(scale0, scale1) * 0.5 * (math.sqrt(2) if motion.startswith("rotate") else 1.1)
    lo, hi = half + 1, size - half - 1
    if motion.startswith("move"):
        dist = min(rng.uniform(18, 28) * s, hi - lo)
        dx, dy = {"move left": (-1, 0), "move right": (1, 0), "move up": (0, -1), "move down": (0, 1)}[motion]
        along0 = rng.uniform(lo + dist, hi) if dx + dy < 0 else rng.uniform(lo, hi - dist)
        across = rng.uniform(lo, hi)
        if dx:
            c0, c1 = (along0, across), (along0 + dx * dist, across)
        else:
            c0, c1 = (across, along0), (across, along0 + dy * dist)
    else:
        c0 = c1 = (rng.uniform(lo, hi), rng.uniform(lo, hi))
    return {
        "center0": c0,
        "center1": c1,
        "size0": base * scale0,
        "size1": base * scale1,
        "angle0": angle0,
        "angle1": angle1,
    }


def render_video(image: np.ndarray, params: dict, rng: np.random.Generator, *, num_frames: int, size: int) -> np.ndarray:
    """Render a digit (8x8 in [0, 1]) moving as `params` says: uint8 RGB frames (T, size, size, 3).

    The 8x8 image is sampled bicubically straight onto the canvas (smooth upscaling, sub-pixel
    motion) over a dim random gradient background with mild per-frame noise.
    """
    import torch
    import torch.nn.functional as F

    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    c0, c1 = np.asarray(params["center0"]), np.asarray(params["center1"])
    centers = c0 + (c1 - c0) * t  # (T, 2) as (x, y) in px
    sizes = params["size0"] + (params["size1"] - params["size0"]) * t[:, 0]
    angles = np.deg2rad(params["angle0"] + (params["angle1"] - params["angle0"]) * t[:, 0])

    f32 = np.float32  # float32 throughout: half the memory traffic, plenty of precision here
    ys, xs = np.mgrid[0:size, 0:size].astype(f32) + f32(0.5)  # pixel centres
    dx = xs[None] - centers[:, 0, None, None].astype(f32)
    dy = ys[None] - centers[:, 1, None, None].astype(f32)
    cos, sin = np.cos(angles).astype(f32)[:, None, None], np.sin(angles).astype(f32)[:, None, None]
    inv_half = (2.0 / sizes).astype(f32)[:, None, None]
    # Inverse rotation takes a canvas point back into the digit's own [-1, 1] square.
    grid = np.empty((num_frames, size, size, 2), f32)
    grid[..., 0] = (cos * dx + sin * dy) * inv_half
    grid[..., 1] = (cos * dy - sin * dx) * inv_half
    src = torch.from_numpy(image.astype(f32))[None, None].expand(num_frames, 1, 8, 8)
    ink = F.grid_sample(src, torch.from_numpy(grid), mode="bicubic", padding_mode="zeros", align_corners=False)
    ink = np.clip(ink[:, 0].numpy(), 0.0, 1.0)

    gy, gx = rng.uniform(-1, 1, size=2)
    background = rng.uniform(0.05, 0.2) + 0.08 * (gx * (xs / size - 0.5) + gy * (ys / size - 0.5))
    color = f32(rng.uniform(0.75, 1.0))
    frames = background.astype(f32)[None] + (color - background.astype(f32)[None]) * ink
    frames += rng.standard_normal(size=frames.shape, dtype=f32) * f32(0.02)
    frames = np.clip(np.rint(frames * f32(255)), 0, 255).astype(np.uint8)
    return np.repeat(frames[..., None], 3, axis=-1)


# Part of what makes the files: the same frames give the same bytes in any process on any CPU.
X264_PARAMS = "threads=1:asm=0"


def pick_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_mp4(path: str | os.PathLike, frames: np.ndarray, *, fps: int, codec: str | None = None) -> None:
    """Write uint8 RGB frames (T, H, W, 3) as an mp4 (H.264 yuv420p if libx264 exists, else MPEG-4)."""
    import contextlib
    import tempfile

    from common.atomic import _umask

    codec = codec or pick_codec()
    # A fresh temp file of our own (mkstemp: O_EXCL, never an existing file or a link planted
    # under a predictable `.part` name), renamed over `path`: a link standing there is replaced,
    # never written through, and no half-written video is ever under its final name. (Not
    # common.atomic's fsync per file: 4,050 fsyncs would add ~20 s to a 60 s job, for
    # synthetic files a re-run makes again.)
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600: a shared data folder needs the usual mode
    os.close(fd)
    try:
        _encode(tmp, frames, fps=fps, codec=codec)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _encode(tmp: str, frames: np.ndarray, *, fps: int, codec: str) -> None:
    import av

    T, H, W, _ = frames.shape
    with av.open(tmp, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        # One encoder thread, and x264's portable C code (`asm=0`): its output then depends only
        # on its input, on every machine. With its assembly, x264 on a CPU with AVX-512 wrote
        # different bytes for the same frames in two processes (28 of 40 test videos, up to 28
        # grey levels apart once decoded; deterministic with the assembly capped at AVX2, and
        # with asm=0), and the SSE/AVX2 and C paths differ from each other. C costs about 10 ms
        # more per 64x64x24 video (~40 s of CPU for the 4,050 videos).
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast", "x264-params": X264_PARAMS}
        else:
            stream.bit_rate = 400_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_digits(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    per_class_train: int | None = None,
    per_class_val: int | None = None,
    per_class_test: int | None = None,
    num_frames: int = 24,
    size: int = 64,
    fps: int = 8,
    tasks: tuple[str, ...] = ("digits_motion", "digits_appearance"),
    progress: bool = True,
) -> dict:
    """Write the digits tasks under `out_dir/<task>/`: mp4 videos, `{train,val,test}.csv`, `classes.txt`.

    `per_class_*` default to `DEFAULT_PER_CLASS` (100/25/100 for both tasks). Returns a summary:
    root, codec, and per task its classes, label map and per split the manifest path, video
    count and manifest sha256.
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise DataError(f"unknown digits task(s) {unknown}; choose from {sorted(TASKS)}")
    if num_frames < 2 or size < 16:
        raise DataError(f"need num_frames >= 2 and size >= 16, got num_frames={num_frames}, size={size}")
    out = output_folder(out_dir)
    for task in tasks:  # before anything is written: a foreign link is refused up front
        own_folder(out, task, create=False)
    codec = pick_codec()
    images, pools = _source_pools(seed)

    plan = []  # (task, split, videos per class)
    for task in tasks:
        defaults = DEFAULT_PER_CLASS[task]
        counts = [c if c is not None else d for c, d in zip((per_class_train, per_class_val, per_class_test), defaults)]
        for split, n in zip(SPLITS, counts):
            if n < 0:
                raise DataError(f"per-class count for {split} must be >= 0, got {n}")
            plan.append((task, split, n))
    total = sum(len(TASKS[t]) * n for t, _, n in plan)

    summary = {"root": str(out.resolve()), "seed": seed, "codec": codec, "num_frames": num_frames,
               "size": size, "fps": fps, "tasks": {}}
    start = time.perf_counter()
    import torch

    # Each frame batch is tiny: torch's intra-op threads cost more than they save (about 2.5x
    # slower on 2 busy cores), so render single-threaded and restore the setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _write_all(tasks, plan, seed, images, pools, out, codec, num_frames, size, fps, progress, total, summary)
    finally:
        torch.set_num_threads(threads)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def _write_all(tasks, plan, seed, images, pools, out, codec, num_frames, size, fps, progress, total, summary):
    with _progress(progress, total) as advance:
        for task in tasks:
            task_dir = own_folder(out, task)
            classes = TASKS[task]
            atomic_write_text(task_dir / "classes.txt", "\n".join(classes) + "\n")
            info = {"classes": classes, "labels": str(task_dir / "classes.txt"), "splits": {}}
            for t_task, split, n in plan:
                if t_task != task:
                    continue
                entries = _make_split(task, split, n, seed, images, pools[split], task_dir, codec,
                                      num_frames, size, fps, advance)
                manifest = task_dir / f"{split}.csv"
                write_manifest(manifest, entries)
                info["splits"][split] = {
                    "manifest": str(manifest),
                    "videos": len(entries),
                    "sha256": manifest_sha256(read_manifest(manifest), out),  # as in Task.protocol
                }
            summary["tasks"][task] = info


def _make_split(task, split, per_class, seed, images, pool, task_dir, codec, num_frames, size, fps, advance):
    classes = TASKS[task]
    task_id, split_id = list(TASKS).index(task), SPLITS.index(split)
    if task == "digits_motion":
        # Any digit: cycle through this split's images of all digits, shuffled, so every video
        # uses a different source image for as long as the pool lasts.
        all_idx = np.concatenate([pool[d] for d in range(10)])
        order = np.random.default_rng([seed, task_id, split_id]).permutation(all_idx)
    entries = []
    k = 0
    own_folder(task_dir, split)
    for label, name in enumerate(classes):
        own_folder(task_dir, f"{split}/{name}")
        for j in range(per_class):
            rng = np.random.default_rng([seed, task_id, split_id, label, j])
            if task == "digits_motion":
                image = images[order[(label * per_class + j) % len(order)]]
                motion = name
            else:
                digit_pool = pool[label]
                image = images[digit_pool[j % len(digit_pool)]]
                motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
            params = motion_params(motion, rng, size)
            frames = render_video(image, params, rng, num_frames=num_frames, size=size)
            rel = f"{split}/{name}/{k:06d}.mp4"
            write_mp4(task_dir / rel, frames, fps=fps, codec=codec)
            entries.append((rel, label))
            k += 1
            advance()
            failpoints.hit("digits.video")
    return entries


class _progress:
    """A rich progress bar when asked for, else a no-op; yields an `advance()` callable."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("digits videos"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar.__enter__()
        task = self.bar.add_task("digits", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
