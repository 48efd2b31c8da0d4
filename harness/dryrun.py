"""`harness run --dry-run`: what a run will cost, before it starts.

Prints the composed protocol's shape (global batch, micro-batch, clips per sample), the number of
clips and encoder forwards, the host and device memory one micro-batch needs, and a time
estimate from a short measured warm-up (the encoder with random weights, so no checkpoint is
read; the data loading of real samples). Memory figures are estimates from the tensor sizes
(stated in the output): the encoder's activations are taken as ~10 x tokens x width per clip in
flight (the peak inside one transformer block), attention as memory-efficient on CUDA and as
materialised (clips x heads x tokens^2) on CPU.

Loader against encoder: the loader's CPU cost per sample is measured on real samples of the
task, in this process with one torch thread (as each loader worker runs), by
`time.process_time`; with the workers the run will start that gives the clips/s the loader can
supply, printed against the clips/s the encoder can consume (its forward measured here, or,
for a device this machine lacks, its GFLOPs per clip at an assumed sustained rate, labelled as
an estimate), and which side bounds the run.
"""
from __future__ import annotations

import math
import time

_BYTES = {"fp32": 4, "bf16": 2}
# Sustained encoder FLOP/s assumed for a CUDA device this machine lacks (an H100 in bf16 runs a
# ViT-L/16 16x224 clip forward, ~1.2 TFLOP, at about 330 clips/s: ~4e14). An estimate, labelled.
ASSUMED_CUDA_FLOPS = 4.0e14
LOADER_SAMPLES = 2  # real samples timed per split (after one untimed warm-up sample)


def loader_cpu_seconds(dataset, seed: int, epoch: int, samples: int = LOADER_SAMPLES) -> float:
    """CPU-s one sample costs the loader (decoding, augmentation draws), measured here with one
    torch thread, as a loader worker runs (`time.process_time`: every thread of this process)."""
    import torch

    from tasks.loading import SeededItems

    items = SeededItems(dataset, seed, epoch)
    n = min(samples, len(items))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            items[0]  # untimed: imports, decoder libraries, the page cache
            start = time.process_time()
            for i in range(n):
                items[(i + 1) % len(items)]
            return (time.process_time() - start) / max(n, 1)
    finally:
        torch.set_num_threads(threads)


def feed(load_s_per_clip: float, workers: int, encoder_clips_per_s: float) -> dict:
    """What the loader supplies against what the encoder consumes, and which side bounds."""
    supply = max(workers, 1) / load_s_per_clip if load_s_per_clip > 0 else math.inf
    bound = "encoder" if supply >= encoder_clips_per_s else "loader"
    return {"loader_clips_per_s": supply, "encoder_clips_per_s": encoder_clips_per_s,
            "bound": bound, "cores_to_feed_encoder": encoder_clips_per_s * load_s_per_clip,
            "encoder_busy_fraction": min(1.0, supply / encoder_clips_per_s)}


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(plan, *, warmup: bool = True, say=print) -> dict:
    import torch

    import encoders
    from tasks.loading import EVAL_EPOCH, SeededItems

    c, task = plan.c, plan.task
    s = task.spec.sampling
    optim = plan.optim
    enc_cfg = dict(plan.encoder_cfg)
    spec_enc = encoders.from_config(enc_cfg, random_init=True, seed=0)
    spec = spec_enc.spec
    res = task.spec.resolution or spec.resolution
    T = s.frames_per_clip
    t, h, w = spec.grid_for(T, res, res)
    n_tok, d = t * h * w, spec.embed_dim
    bytes_ = _BYTES[plan.precision]
    micro = plan.train_data.micro_batch_size
    eval_micro = plan.eval_data.micro_batch_size
    n_train, n_eval = len(plan.train_data.dataset), len(plan.eval_data.dataset)
    train_clips = micro * s.train_segments
    eval_clips = eval_micro * s.eval_segments * s.eval_views
    chunk = c.get("encoder_chunk")
    params = sum(p.numel() for p in spec_enc.parameters())

    # Host: uint8 frames at their decoded size, measured on the first sample.
    first = SeededItems(plan.train_data.dataset, plan.seed, 0)[0]
    frames = first.get("frames")
    per_sample_host = frames.numel() if frames is not None else 0
    prefetch = max(plan.train_data.num_workers, 1) * 2  # DataLoader prefetch_factor 2
    host = per_sample_host * micro * prefetch

    def device_bytes(clips: int, samples: int, views: int, segments: int, train: bool) -> float:
        video = clips * 3 * T * res * res * 4                     # finished float clips
        tokens = samples * views * segments * n_tok * d * bytes_  # kept in the run's precision
        in_flight = min(chunk or clips, clips)
        acts = in_flight * n_tok * d * bytes_ * 10
        if str(plan.device).startswith("cpu"):
            acts += in_flight * spec.num_heads * n_tok * n_tok * 4
        probe = samples * segments * n_tok * d * 4 * (4 if train else 1)
        # The batched training finisher (tasks.finishing, gathers on a GPU) briefly holds about
        # three copies of the float clips; they are freed before the encoder runs.
        finishing = 3 * video if train and not str(plan.device).startswith("cpu") else video
        return params * bytes_ + tokens + probe + max(finishing, video + acts)

    dev_train = device_bytes(train_clips, micro, 1, s.train_segments, True)
    dev_eval = device_bytes(eval_clips, eval_micro, s.eval_views, s.eval_segments, False)
    forwards_train = optim.epochs * n_train * s.train_segments
    forwards_eval = n_eval * s.eval_segments * s.eval_views
    if plan.cache:
        forwards_train = n_train * s.train_segments * max(1, plan.copies)

    out = {
        "encoder": spec.name, "task": task.name, "device": plan.device, "precision": plan.precision,
        "protocol_id": plan.protocol_id, "global_batch": optim.batch_size, "micro_batch": micro,
        "accumulation_steps": math.ceil(optim.batch_size / micro),
        "steps_per_epoch": len(plan.train_data), "epochs": optim.epochs,
        "train_videos": n_train, "eval_videos": n_eval,
        "clips_per_train_sample": s.train_segments,
        "clips_per_eval_sample": s.eval_segments * s.eval_views,
        "tokens_per_clip": n_tok, "encoder_params": params,
        "encoder_forwards_train": forwards_train, "encoder_forwards_eval": forwards_eval,
        "host_bytes_per_micro_batch": per_sample_host * micro,
        "host_bytes_in_flight": host,
        "device_bytes_train_micro_batch": dev_train,
        "device_bytes_eval_micro_batch": dev_eval,
    }
    device = torch.device(plan.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        warmup = False
        out["note"] = ("no CUDA device here: memory estimated for it, the encoder's rate from "
                       "its FLOPs (not measured)")
    workers = plan.train_data.num_workers
    out["loader_workers"] = workers
    if warmup:
        model = spec_enc.to(device).eval()
        if plan.precision == "bf16":
            model.to(torch.bfloat16)
        clips = 2 if device.type == "cpu" else min(max(train_clips, 4), 16)
        x = torch.randn(clips, 3, T, res, res, device=device,
                        dtype=torch.bfloat16 if plan.precision == "bf16" else torch.float32)
        with torch.no_grad():
            model(x[:1])  # warm-up: kernels, allocator
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
        per_clip = (time.perf_counter() - t0) / clips
        out["encoder_rate_source"] = "measured"
    else:
        from encoders.metadata import cost

        gflops = cost(enc_cfg, frames=T, resolution=res)["gflops_per_clip"]
        rate = ASSUMED_CUDA_FLOPS if device.type == "cuda" and gflops > 0 else None
        per_clip = gflops * 1e9 / rate if rate else None
        out["encoder_gflops_per_clip"] = gflops
        out["encoder_rate_source"] = (f"estimated: {gflops:.0f} GFLOPs per clip at an assumed "
                                      f"{ASSUMED_CUDA_FLOPS / 1e12:.0f} TFLOP/s" if rate else None)
    train_cpu = loader_cpu_seconds(plan.train_data.dataset, plan.seed, 0)
    eval_cpu = loader_cpu_seconds(plan.eval_data.dataset, plan.seed, EVAL_EPOCH)
    train_loads = n_train * max(1, plan.copies) if plan.cache else optim.epochs * n_train
    load_s = (train_cpu * train_loads + eval_cpu * n_eval) / max(workers, 1)
    out.update(loader_cpu_s_per_train_sample=train_cpu, loader_cpu_s_per_eval_sample=eval_cpu,
               loader_cpu_s_per_train_clip=train_cpu / s.train_segments,
               loading_seconds=load_s)
    if per_clip is not None:
        enc_s = per_clip * (forwards_train + forwards_eval)
        # In-process loading (0 workers) alternates with the encoder: the times add.
        total = enc_s + load_s if workers == 0 else max(enc_s, load_s)
        out.update(seconds_per_clip=per_clip, estimated_seconds=total, encoder_seconds=enc_s,
                   **feed(train_cpu / s.train_segments, workers, 1.0 / per_clip))
    _print(out, say)
    return out


def _print(e: dict, say) -> None:
    say(f"dry run: {e['encoder']} on {e['task']} ({e['device']}, {e['precision']}), "
        f"protocol {e['protocol_id']}")
    say(f"  batches     global {e['global_batch']} = {e['accumulation_steps']} x micro "
        f"{e['micro_batch']}; {e['steps_per_epoch']} steps/epoch x {e['epochs']} epochs")
    say(f"  data        train {e['train_videos']} videos x {e['clips_per_train_sample']} clips, "
        f"eval {e['eval_videos']} x {e['clips_per_eval_sample']} clips; "
        f"{e['tokens_per_clip']} tokens/clip")
    say(f"  forwards    {e['encoder_forwards_train']:,} train + {e['encoder_forwards_eval']:,} "
        f"eval clip forwards ({e['encoder_params'] / 1e6:.0f}M-parameter encoder)")
    say(f"  host        {_gib(e['host_bytes_per_micro_batch'])} uint8 frames per micro-batch, "
        f"~{_gib(e['host_bytes_in_flight'])} in flight with prefetching")
    say(f"  device      ~{_gib(e['device_bytes_train_micro_batch'])} per training micro-batch, "
        f"~{_gib(e['device_bytes_eval_micro_batch'])} per evaluation micro-batch (estimates)")
    if "note" in e:
        say(f"  note        {e['note']}")
    say(f"  loader      {e['loader_cpu_s_per_train_sample']:.3f} CPU-s per training sample "
        f"({e['loader_cpu_s_per_train_clip']:.3f} per clip), "
        f"{e['loader_cpu_s_per_eval_sample']:.3f} per evaluation sample (measured, one thread); "
        f"{e['loader_workers']} worker(s)" + (" (in-process)" if e['loader_workers'] == 0 else ""))
    if "bound" in e:
        source = e["encoder_rate_source"]
        say(f"  feed        training: the loader supplies ~{e['loader_clips_per_s']:.0f} clips/s, "
            f"the encoder consumes ~{e['encoder_clips_per_s']:.1f} clips/s ({source}); "
            f"{e['bound']}-bound" + (
                f": the encoder busy ~{100 * e['encoder_busy_fraction']:.0f}% of the time, "
                f"~{e['cores_to_feed_encoder']:.0f} cores would feed it"
                if e["bound"] == "loader" else ""))
    if "estimated_seconds" in e:
        how = "measured" if e["encoder_rate_source"] == "measured" else "estimated"
        say(f"  time        ~{_duration(e['estimated_seconds'])} ({how}: "
            f"{e['seconds_per_clip']:.3f} s per clip forward; encoder "
            f"{_duration(e['encoder_seconds'])}, loading {_duration(e['loading_seconds'])} "
            f"over the workers)")
