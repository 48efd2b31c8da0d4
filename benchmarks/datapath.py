"""The data path's CPU cost per sample and per clip, harness against the V-JEPA release, side by side.

    .venv/bin/python benchmarks/datapath.py --release /tmp/jepa      # K400 and SSv2, a few minutes
    .venv/bin/python benchmarks/datapath.py --release /tmp/jepa --videos 6 --reps 4
    .venv/bin/python benchmarks/datapath.py --k400-dir DIR --ssv2-dir DIR   # videos given
    .venv/bin/python benchmarks/datapath.py --release /tmp/jepa --keep-freed-memory  # as a run

`--release DIR`: the release's code, unpacked (facebookresearch/jepa, e.g. `git --git-dir <bare
repo> archive HEAD | tar -x -C /tmp/jepa`); its own `src/datasets/video_dataset.py`
(`VideoDataset.__getitem__`: decord with its `num_threads=-1`, then its transforms) and
`evals/video_classification_frozen/utils.py` (`make_transforms` as its `eval.py` builds them:
RandAugment, reprob 0.25, scale (0.08, 1), 3 views in evaluation) are imported from that folder,
never copied here. Without it the release's column is n/a.

Videos: made here unless given (`--k400-dir`, `--ssv2-dir`: folders of videos): K400-like, 10 s at
30 fps, 340x256, H.264 (libx264 crf 23, default GOP); SSv2-like, 4 s at 12 fps, 427x240, VP9
webm. A drifting smooth texture, a moving disc and mild noise, so the codec has real work.

What is measured, per sample, in this one process with one torch thread (a DataLoader worker's
setting), by `time.process_time` (every thread of the process: the release's decord threads are
counted): the loader's work (`SeededItems(dataset)[i]`, `device_finish=True`: decoding and the
augmentation draws; the release: its whole `__getitem__`), and the finishing step that turns a
harness item into the encoder's float clips (`tasks.kinds` finisher on the CPU: crops, resizes,
normalisation, erasing; with `randaugment_backend: tensor` also RandAugment). "finish on CPU"
adds the two (a CPU-only run); "finish off CPU" counts the loader alone (the finishing runs on the
GPU). The release does everything in its loader: both columns are its `__getitem__`. Not
counted: handing a sample to the main process (shared memory).

Sides run alternated: every rep visits every video, each video every side in an order rotated
from video to video, so drift and cache effects fall on all sides alike. Clips per sample: train
S segments, eval S x 3 views (the encoder's forwards). The cores needed to feed ViT-L at 330
clips/s (an H100 in bf16) are CPU-s per clip x 330. The last line reads
`k400 train loader CPU-s per clip: tensor X, pil Y, release Z` (finishing off the CPU).
Speed is claimed here, never in tests.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tasks  # noqa: E402
from tasks.kinds import for_task  # noqa: E402
from tasks.loading import EVAL_EPOCH, SeededItems  # noqa: E402
from tasks.transforms import TRAIN_AUG_KEYS  # noqa: E402

VITL_CLIPS_PER_S = 330.0   # ViT-L/16 16x224 forward, bf16, one H100 (issue 26)
PROTOCOLS = {  # task, segments, eval views; the videos made for it
    "k400": dict(segments=8, views=3, seconds=10, fps=30, size=(340, 256), codec="libx264",
                 ext="mp4"),
    "ssv2": dict(segments=2, views=3, seconds=4, fps=12, size=(427, 240), codec="libvpx-vp9",
                 ext="webm"),
}
TENSOR = "randaugment_backend" in TRAIN_AUG_KEYS  # the on-device RandAugment (issue 26 item 1)


def make_video(path: Path, seconds: int, fps: int, size: tuple[int, int], codec: str,
               seed: int) -> Path:
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    # A smooth texture twice the frame, drifting; a disc crossing it; noise at +-6 levels.
    small = rng.integers(0, 256, (h // 8 + 1, w // 4 + 1, 3), dtype=np.uint8)
    texture = np.kron(small, np.ones((16, 8, 1), np.uint8))[: 2 * h, : 2 * w]
    yy, xx = np.mgrid[:h, :w]
    options = {"crf": "23", "preset": "veryfast"} if codec == "libx264" else \
        {"deadline": "realtime", "cpu-used": "8", "crf": "32"}
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", options
        n = seconds * fps
        for i in range(n):
            dx, dy = (i * 2) % w, (i // 2) % h
            frame = texture[dy:dy + h, dx:dx + w].astype(np.int16)
            cx, cy = int(w * (0.2 + 0.6 * i / n)), int(h * (0.5 + 0.3 * np.sin(i / 9)))
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (h // 6) ** 2] = (230, 60, 40)
            frame += rng.integers(-6, 7, frame.shape, dtype=np.int16)
            frame = np.clip(frame, 0, 255).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def videos_for(protocol: str, count: int, given: Path | None, work: Path) -> list[Path]:
    if given is not None:
        found = sorted(p for p in given.iterdir() if p.suffix.lower() in (".mp4", ".webm", ".avi", ".mkv"))
        if not found:
            raise SystemExit(f"no videos (.mp4, .webm, .avi, .mkv) in {given}")
        return found[:count]
    p = PROTOCOLS[protocol]
    folder = work / protocol
    folder.mkdir(parents=True, exist_ok=True)
    return [make_video(folder / f"v{i}.{p['ext']}", p["seconds"], p["fps"], p["size"],
                       p["codec"], seed=i) for i in range(count)]


def harness_task(protocol: str, videos: list[Path], root: Path, randaugment_backend: str | None):
    """The built-in task on these videos (two classes), as `harness run` loads it."""
    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{v} {i % 2}\n" for i, v in enumerate(videos))
    for name in ("train.csv", "val.csv"):
        (root / name).write_text(lines)
    (root / "classes.txt").write_text("a\nb\n")
    cfg = tasks.config(protocol)
    cfg = {**cfg, "num_classes": 2, "data": {**cfg["data"], "root": str(root)}}
    if randaugment_backend is not None:
        cfg["train_aug"] = {**cfg["train_aug"], "randaugment_backend": randaugment_backend}
    return tasks.from_config(cfg)


class HarnessSide:
    """One split of the harness's loader + finishing, one sample at a time."""

    def __init__(self, task, train: bool, seed: int = 0):
        split = "train" if train else task.eval_split
        self.dataset = task.dataset(split, train=train, device_finish=True, resolution=224)
        kind = for_task(task)
        self.collate, self.finish = kind.collate(self.dataset), kind.finisher(self.dataset)
        self.train, self.seed = train, seed

    def __call__(self, index: int, rep: int) -> tuple[float, float]:
        epoch = rep if self.train else EVAL_EPOCH + rep
        t0 = time.process_time()
        item = SeededItems(self.dataset, self.seed, epoch)[index]
        t1 = time.process_time()
        if item.get("error"):
            raise SystemExit(f"harness could not load {item['path']}: {item['error']}")
        out = self.finish(self.collate([item]), torch.device("cpu"))
        t2 = time.process_time()
        assert out is not None and out.shape[-1] == 224
        return t1 - t0, t2 - t1


class ReleaseSide:
    """The release's `VideoDataset` with its `make_transforms`, as its frozen `eval.py` builds
    them, imported from its own folder."""

    def __init__(self, release: Path, csv: Path, segments: int, views: int, train: bool):
        if str(release) not in sys.path:
            sys.path.insert(0, str(release))
        from evals.video_classification_frozen.utils import make_transforms
        from src.datasets.video_dataset import VideoDataset

        transform = make_transforms(
            training=train, num_views_per_clip=1 if train else views,
            random_horizontal_flip=False, random_resize_aspect_ratio=(0.75, 4 / 3),
            random_resize_scale=(0.08, 1.0), reprob=0.25, auto_augment=True, motion_shift=False,
            crop_size=224)
        self.dataset = VideoDataset(data_paths=[str(csv)], frames_per_clip=16, frame_step=4,
                                    num_clips=segments, random_clip_sampling=True,
                                    allow_clip_overlap=True, transform=transform)

    def __call__(self, index: int, rep: int) -> tuple[float, float]:
        seed = 1000 * rep + index
        np.random.seed(seed)
        random.seed(seed)
        torch.manual_seed(seed)
        t0 = time.process_time()
        buffer, _, _ = self.dataset[index]
        t1 = time.process_time()
        assert len(buffer) == self.dataset.num_clips
        return t1 - t0, 0.0


def bench(protocol: str, videos: list[Path], reps: int, release: Path | None, work: Path) -> dict:
    p = PROTOCOLS[protocol]
    S, V = p["segments"], p["views"]
    sides = {}
    pil = harness_task(protocol, videos, work / f"{protocol}_pil", "pil" if TENSOR else None)
    sides["train", "harness pil"] = HarnessSide(pil, train=True)
    if TENSOR:
        tensor = harness_task(protocol, videos, work / f"{protocol}_tensor", "tensor")
        sides["train", "harness tensor"] = HarnessSide(tensor, train=True)
    sides["eval", "harness"] = HarnessSide(pil, train=False)
    if release is not None:
        sides["train", "release"] = ReleaseSide(release, work / f"{protocol}_pil/train.csv", S, V, True)
        sides["eval", "release"] = ReleaseSide(release, work / f"{protocol}_pil/val.csv", S, V, False)
    names = list(sides)
    for name in names:  # untimed: imports, decoder libraries, the page cache
        sides[name](0, 0)
    loader, finish, count = defaultdict(float), defaultdict(float), defaultdict(int)
    for rep in range(reps):
        for i in range(len(videos)):
            k = (rep * len(videos) + i) % len(names)
            order = names[k:] + names[:k]
            for name in order:
                a, b = sides[name](i, rep + 1)
                loader[name] += a
                finish[name] += b
                count[name] += 1
    w, h = p["size"]
    print(f"\n== {protocol}: {S} segments x 16 frames (step 4); clips per sample: train {S}, "
          f"eval {S * V} ({V} views); {len(videos)} videos, {reps} reps ==")
    print(f"  {'':<22}{'------- CPU-s per sample -------':>38}{'-- CPU-s per clip --':>20}"
          f"{'- cores, ViT-L@330 -':>22}")
    print(f"  {'split':<6}{'side':<16}{'loader':>9}{'finish':>9}{'on CPU':>10}{'off CPU':>10}"
          f"{'on CPU':>10}{'off CPU':>10}{'on CPU':>11}{'off CPU':>11}")
    out = {}
    for split, name in names:
        n = count[split, name]
        ld, fn = loader[split, name] / n, finish[split, name] / n
        clips = S if split == "train" else S * V
        on, off = (ld + fn) / clips, ld / clips
        out[split, name] = {"loader": ld, "finish": fn, "per_clip_on": on, "per_clip_off": off}
        fin = f"{fn:9.3f}" if name != "release" else f"{'(in it)':>9}"
        print(f"  {split:<6}{name:<16}{ld:9.3f}{fin}{ld + fn:10.3f}{ld:10.3f}{on:10.4f}"
              f"{off:10.4f}{on * VITL_CLIPS_PER_S:11.1f}{off * VITL_CLIPS_PER_S:11.1f}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--release", type=Path, default=None,
                    help="the V-JEPA release's code, unpacked (facebookresearch/jepa)")
    ap.add_argument("--videos", type=int, default=3, help="videos per protocol (default 3)")
    ap.add_argument("--reps", type=int, default=2, help="timed passes over the videos (default 2)")
    ap.add_argument("--protocols", default="k400,ssv2")
    ap.add_argument("--k400-dir", type=Path, default=None, help="use these videos for K400")
    ap.add_argument("--ssv2-dir", type=Path, default=None, help="use these videos for SSv2")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="glibc keeps freed blocks for reuse, as a run's loader workers do "
                         "(harness.host_memory); every side of this process, the release's too")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        from harness.host_memory import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("--keep-freed-memory: not set (not glibc, or "
                             "HARNESS_KEEP_FREED_MEMORY=0)")
    if args.release is not None:
        args.release = args.release.resolve()
        if not (args.release / "src/datasets/video_dataset.py").is_file():
            raise SystemExit(f"--release {args.release}: no src/datasets/video_dataset.py there")
    protocols = [p for p in args.protocols.split(",") if p]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise SystemExit(f"unknown protocol(s) {unknown}; known: {', '.join(PROTOCOLS)}")
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    from importlib.metadata import version

    print(f"machine: {len(os.sched_getaffinity(0))} CPUs available ({platform.processor() or platform.machine()}); "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, CPU kernels "
          f"{torch.backends.cpu.get_cpu_capability()}; decord {version('decord')}")
    if not TENSOR:
        print("note: train_aug.randaugment_backend does not exist in this checkout: 'tensor' is n/a")
    results = {}
    with tempfile.TemporaryDirectory(prefix="datapath_") as tmp:
        work = Path(tmp)
        made = {}
        # Every video first: once decord is loaded, its bundled FFmpeg shadows PyAV's encoders.
        for protocol in protocols:
            t = time.perf_counter()
            given = args.k400_dir if protocol == "k400" else args.ssv2_dir
            made[protocol] = videos_for(protocol, args.videos, given, work)
            print(f"{protocol}: {len(made[protocol])} videos ready in "
                  f"{time.perf_counter() - t:.1f} s ({'given' if given else 'made here'}, "
                  f"{made[protocol][0].suffix})")
        for protocol in protocols:
            results[protocol] = bench(protocol, made[protocol], args.reps, args.release, work)
    if "k400" not in results:
        return 0
    k = results["k400"]

    def cell(name):
        r = k.get(("train", name))
        return "n/a" if r is None else f"{r['per_clip_off']:.4f}"

    print(f"\nViT-L at {VITL_CLIPS_PER_S:.0f} clips/s: cores = CPU-s per clip x "
          f"{VITL_CLIPS_PER_S:.0f} (on CPU: finishing in the loader's budget too)")
    print(f"k400 train loader CPU-s per clip: tensor {cell('harness tensor')}, "
          f"pil {cell('harness pil')}, release {cell('release')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
