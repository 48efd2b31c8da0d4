"""`harness run --dry-run`: what a run will cost, before it starts.

Prints the composed protocol's shape (global batch, micro-batch, clips per sample), the number of
clips and encoder forwards, the host and device memory one micro-batch needs, and a time
estimate from a short measured warm-up (the encoder with random weights, so no checkpoint is
read; the data loading of real samples). Memory figures are estimates from the tensor sizes
(stated in the output): the encoder's activations are taken as ~10 x tokens x width per clip in
flight (the peak inside one transformer block), attention as memory-efficient on CUDA and as
materialised (clips x heads x tokens^2) on CPU.
"""
from __future__ import annotations

import math
import time

_BYTES = {"fp32": 4, "bf16": 2}


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
        return params * bytes_ + video + tokens + acts + probe

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
        out["note"] = "no CUDA device here: memory estimated for it, time not measured"
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
        t0 = time.perf_counter()
        ds = plan.eval_data.dataset
        for i in range(min(2, len(ds))):
            SeededItems(ds, plan.seed, EVAL_EPOCH)[i]
        per_sample_load = (time.perf_counter() - t0) / min(2, len(ds))
        load_s = per_sample_load * (optim.epochs * n_train + n_eval) / max(plan.train_data.num_workers, 1)
        enc_s = per_clip * (forwards_train + forwards_eval)
        out.update(seconds_per_clip=per_clip, seconds_per_sample_loading=per_sample_load,
                   estimated_seconds=max(enc_s, load_s), encoder_seconds=enc_s,
                   loading_seconds=load_s)
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
    if "estimated_seconds" in e:
        say(f"  time        ~{_duration(e['estimated_seconds'])} (measured: "
            f"{e['seconds_per_clip']:.3f} s per clip forward, {e['seconds_per_sample_loading']:.2f}"
            f" s to load a sample; encoder {_duration(e['encoder_seconds'])}, loading "
            f"{_duration(e['loading_seconds'])} over the workers)")
