"""The GPU check of issue 26, one script for one lent GPU, under 5 minutes (`gpu_check.sh` runs it).

    benchmarks/gpu_check.sh                  # everything below, ViT-L and ViT-H
    .venv/bin/python benchmarks/gpu_check.py --encoders vjepa_vitl --videos 8

Prints, each part on its own (one failing part says why and the others still run):

1. encoder alone: clips/s of ViT-L and ViT-H (random weights) in bf16, 16x224 clips, no grad;
2. a K400-protocol run (`harness.runner.run_evaluation`: attentive probe, 8 segments x 3 views,
   RandAugment, one epoch) on a miniature set made here (K400-like videos, 10 s, 340x256,
   H.264), per encoder: training and evaluation clips/s from the record's timings, the
   GPU-busy fraction over the run (`nvidia-smi` utilization sampled every 100 ms: the share of
   time a kernel ran), and the peak GPU memory against the dry run's per-micro-batch estimate;
3. the loader at this machine's core count (`harness.plan.loader_workers('auto')` workers,
   finishing on the GPU): clips/s with `pil` and, where the checkout has it, `tensor`
   RandAugment;
4. decoding: torchcodec on CUDA (NVDEC) against torchcodec and decord on the CPU (one thread),
   K400 clips (8 x 16 frames) per second.

Without a CUDA device it stops at once with exit status 2 and says so. `--smoke` runs every
part on the CPU with a tiny encoder and two videos: it proves the script runs (its figures mean
nothing) where no GPU is lent.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

K400 = dict(seconds=10, fps=30, size=(340, 256), codec="libx264")
DEVICE = "cuda"  # "cpu" under --smoke


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def say(text: str = "") -> None:
    print(text, flush=True)


def need_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        say("gpu_check: no CUDA device here (torch.cuda.is_available() is False): this check "
            "needs one GPU; nothing was measured")
        raise SystemExit(2)


class BusySampler:
    """`nvidia-smi` GPU utilization every 100 ms while running: the mean of the samples."""

    def __init__(self, index: int = 0):
        self.index, self.samples, self.proc = index, [], None

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)

    @property
    def busy(self) -> str:
        if not self.samples:
            return "n/a (nvidia-smi gave no samples)"
        return f"{statistics.mean(self.samples):.0f}% ({len(self.samples)} samples)"


def make_set(root: Path, videos: int, repeats: int) -> Path:
    """K400-like videos and a two-class K400 layout; train.csv lists them `repeats` times."""
    from datapath import make_video

    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"v{i}.mp4" for i in range(videos)]
    with ProcessPoolExecutor(max_workers=min(videos, os.cpu_count() or 1)) as pool:
        list(pool.map(make_video, paths, [K400["seconds"]] * videos, [K400["fps"]] * videos,
                      [K400["size"]] * videos, [K400["codec"]] * videos, range(videos)))
    # The loader's set lists every video `repeats` times, through hard links (a manifest that
    # repeats a path is warned about).
    lines = []
    for r in range(repeats):
        for i, p in enumerate(paths):
            q = p if r == 0 else p.with_name(f"{p.stem}_r{r}.mp4")
            if r:
                os.link(p, q)
            lines.append(f"{q} {i % 2}\n")
    (root / "train.csv").write_text("".join(lines))
    (root / "val.csv").write_text("".join(f"{p} {i % 2}\n" for i, p in enumerate(paths)))
    (root / "classes.txt").write_text("a\nb\n")
    return root


def encoder_alone(name: str, clips: int = 16, repeats: int = 5) -> None:
    import torch

    import encoders

    enc = encoders.build(name, random_init=True, seed=0).to(DEVICE, torch.bfloat16).eval()
    spec = enc.spec
    x = torch.randn(clips, 3, spec.num_frames, spec.resolution, spec.resolution,
                    device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        for _ in range(2):
            enc(x)
        sync()
        with BusySampler() as busy:
            t = time.perf_counter()
            for _ in range(repeats):
                enc(x)
            sync()
            dt = time.perf_counter() - t
    say(f"  {name:<12} encoder alone: {clips * repeats / dt:7.1f} clips/s "
        f"({spec.num_frames}x{spec.resolution}^2, batch {clips}, bf16); GPU busy {busy.busy}")
    del enc, x
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def k400_run(name: str, root: Path, out: Path, micro: int) -> None:
    import torch

    from harness.config import compose_run
    from harness.dryrun import estimate
    from harness.plan import plan_run
    from harness.runner import run_evaluation

    overrides = [f"encoder={name}", "task=k400", "random_init=true", f"task.data.root={root}",
                 "task.num_classes=2", "task.optim.epochs=1", f"task.optim.batch_size={2 * micro}",
                 f"micro_batch_size={micro}", "task.optim.num_workers=auto", f"out={out}",
                 "progress=false", "resume=false", "cache_features=false", f"device={DEVICE}"]
    lines: list[str] = []
    est = estimate(plan_run(compose_run(overrides), estimate_only=True), warmup=False,
                   say=lines.append)
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with BusySampler() as busy:
        t = time.perf_counter()
        record = run_evaluation(compose_run(overrides)).record
        wall = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0
    tm = record["timings"]
    train_cps = tm.get("train_samples_per_s", 0) * 8
    eval_cps = tm.get("eval_samples_per_s", 0) * 24
    gib = 2**30
    say(f"  {name:<12} K400 run ({est['loader_workers']} loader workers, micro-batch {micro}): "
        f"train {train_cps:6.1f} clips/s, eval {eval_cps:6.1f} clips/s, wall {wall:.0f} s; "
        f"GPU busy {busy.busy}")
    say(f"  {'':<12} peak GPU memory {peak / gib:.2f} GiB; dry-run estimate per micro-batch: "
        f"train {est['device_bytes_train_micro_batch'] / gib:.2f} GiB, eval "
        f"{est['device_bytes_eval_micro_batch'] / gib:.2f} GiB")
    for line in lines:
        if line.lstrip().startswith(("loader", "feed")):
            say(f"  {'':<12} dry run: {line.strip()}")


def loader_rate(root: Path, backend: str | None, micro: int) -> None:
    import torch

    import tasks
    from harness.plan import loader_workers
    from tasks.kinds import for_task
    from tasks.loading import EpochBatches

    cfg = tasks.config("k400")
    cfg = {**cfg, "num_classes": 2, "data": {**cfg["data"], "root": str(root)}}
    if backend is not None:
        cfg["train_aug"] = {**cfg["train_aug"], "randaugment_backend": backend}
    task = tasks.from_config(cfg)
    ds = task.dataset("train", train=True, device_finish=True, resolution=224)
    kind = for_task(task)
    workers = loader_workers("auto")
    data = EpochBatches(ds, batch_size=micro, micro_batch_size=micro, seed=0, shuffle=False,
                        num_workers=workers, collate_fn=kind.collate(ds), pin_memory=DEVICE == "cuda",
                        finish=kind.finisher(ds))
    samples, first = 0, None
    t = time.perf_counter()
    for batch in data.micro_batches(epoch=0):
        clips = data.finish(batch, torch.device(DEVICE))
        sync()
        if first is None:  # workers started and the first batch through: time from here
            first = time.perf_counter()
        else:
            samples += clips.shape[0]
    dt = time.perf_counter() - first
    say(f"  randaugment {backend or 'pil (default)':<14} {workers} workers: "
        f"{samples * 8 / dt:7.1f} clips/s ({samples} samples after the first micro-batch; "
        f"start-up {first - t:.1f} s)")


def loader_part(root: Path, micro: int) -> None:
    from datapath import TENSOR

    loader_rate(root, "pil" if TENSOR else None, micro)
    if TENSOR:
        loader_rate(root, "tensor", micro)
    else:
        say("  randaugment tensor: n/a (train_aug.randaugment_backend is not in this checkout)")


def decode_rates(root: Path) -> None:
    import numpy as np

    from tasks.sampling import ClipSampler

    videos = sorted(p for p in root.glob("v*.mp4") if "_r" not in p.stem)
    sampler = ClipSampler(16, 4, 8, placement="random")

    def indices(n, seed):
        return sorted({i for seg in sampler.indices(n, np.random.RandomState(seed)) for i in seg})

    def run(label, open_fn, get_fn):
        try:
            open_fn(videos[0])  # warm: libraries, CUDA context
            t = time.perf_counter()
            for k, v in enumerate(videos):
                dec = open_fn(v)
                get_fn(dec, indices(len(dec), k))
            dt = time.perf_counter() - t
            say(f"  {label:<28} {8 * len(videos) / dt:7.1f} K400 clips/s")
        except Exception as e:  # a backend without CUDA support: say so, go on
            say(f"  {label:<28} FAILED: {type(e).__name__}: {str(e).strip()[:200]}")

    from torchcodec.decoders import VideoDecoder

    def tc(device, threads=1):
        kw = {"device": device} if device != "cpu" else {"num_ffmpeg_threads": threads}
        return lambda p: VideoDecoder(str(p), dimension_order="NHWC", seek_mode="exact", **kw)

    def tc_get(d, idx):
        out = d.get_frames_at(idx).data
        if out.is_cuda:
            import torch

            torch.cuda.synchronize()
        return out

    if DEVICE == "cuda":
        run("torchcodec cuda", tc("cuda"), tc_get)
    run("torchcodec cpu, 1 thread", tc("cpu"), tc_get)
    import decord

    run("decord cpu, 1 thread", lambda p: decord.VideoReader(str(p), num_threads=1),
        lambda d, idx: d.get_batch(idx).asnumpy())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", default="vjepa_vitl,vjepa_vith")
    ap.add_argument("--videos", type=int, default=16, help="miniature K400 videos (default 16)")
    ap.add_argument("--micro", type=int, default=4, help="micro-batch (the release's 4)")
    ap.add_argument("--skip", default="", help="parts to skip: encoder,run,loader,decode")
    ap.add_argument("--smoke", action="store_true",
                    help="on the CPU, vjepa_tiny, 2 videos: proves the script runs, measures nothing")
    args = ap.parse_args(argv)
    global DEVICE
    if args.smoke:
        DEVICE, args.encoders, args.videos = "cpu", "vjepa_tiny", 2
    else:
        need_cuda()
    import torch

    skip = set(args.skip.split(","))
    start = time.perf_counter()
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "SMOKE RUN on the CPU"
    say(f"gpu_check: {gpu}, {len(os.sched_getaffinity(0))} CPUs, "
        f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        # Videos first: once decord is loaded, its bundled FFmpeg shadows PyAV's encoders.
        root = make_set(tmp / "k400", args.videos, repeats=4)
        run_root = tmp / "k400_run"
        run_root.mkdir()
        for name in ("val.csv", "classes.txt"):
            (run_root / name).write_text((root / name).read_text())
        (run_root / "train.csv").write_text((root / "val.csv").read_text())
        say(f"miniature K400: {args.videos} videos made in {time.perf_counter() - start:.0f} s")
        parts = [
            ("encoder", "1. encoder alone (bf16)",
             lambda: [encoder_alone(n) for n in args.encoders.split(",")]),
            ("run", "2. K400-protocol run on the miniature set (1 epoch, then evaluation)",
             lambda: [k400_run(n, run_root, tmp / "runs", args.micro)
                      for n in args.encoders.split(",")]),
            ("loader", "3. loader at this machine's core count, finishing on the GPU",
             lambda: loader_part(root, args.micro)),
            ("decode", "4. decoding, K400 clips (8 x 16 frames)", lambda: decode_rates(root)),
        ]
        for key, title, fn in parts:
            if key in skip:
                continue
            say(f"\n{title}  [{time.perf_counter() - start:.0f} s]")
            try:
                fn()
            except Exception as e:
                say(f"  FAILED: {type(e).__name__}: {str(e).strip()[:300]}")
    say(f"\ngpu_check done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
