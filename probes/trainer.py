"""Probe trainer: a frozen encoder feeds a trainable probe; AdamW + per-step cosine; resumable.

Batches are the dicts of `tasks.collate_clips`: `video` (B, S, V, 3, T, H, W) floats (S temporal
segments, V spatial views), `label` (B,) long, `failures` [(path, error), ...] for the samples of
the batch that could not be read (already dropped from `video`/`label`).

Per clip the encoder returns tokens (B, N, D). The tokens of all S segments of one view are
concatenated to (B, S*N, D) and go through the probe in one pass (the release's "attend across
segments"); at evaluation the softmaxes of the V spatial views are averaged. Training uses view 0
only (training loaders give V = 1).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from probes.feature_cache import TokenBatches, encode_copies, encode_loader
from probes.optim import CosineSchedule, build_adamw
from probes.problems import DataProblemError, DataProblems

_log = logging.getLogger(__name__)

STATE_VERSION = 1
SAVE_EVERY_S = 30.0  # resumable state is written at most this often (and after the last epoch)


@dataclass
class OptimConfig:
    """Optimisation of one probe. batch_size and num_workers are read by whoever builds loaders."""

    epochs: int
    batch_size: int
    lr: float
    final_lr: float = 0.0
    warmup_epochs: float = 0
    weight_decay: float = 0.01
    bf16: bool = True
    num_workers: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 (got epochs={self.epochs}, "
                             f"batch_size={self.batch_size})")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OptimConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown optimisation keys {unknown}; valid keys: {sorted(known)}")
        required = [f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"optimisation config lacks required keys {missing}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    probe: nn.Module
    data_problems: DataProblems
    timings: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# forward: encoder (frozen, chunked) -> per-view token sequences -> probe


def _autocast(device: torch.device, bf16: bool) -> Callable:
    # bf16 autocast only on CUDA. On CPU we run fp32: CPU bf16 matmuls are slow on CPUs without
    # native bf16 units (these machines) and would make CPU results numerically differ from the
    # fp32 reference for no gain; the flag is honest: bf16 means bf16, never fp16.
    if bf16 and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def encode_views(encoder: nn.Module, video: torch.Tensor, *, chunk: int | None = None,
                 autocast: Callable = contextlib.nullcontext) -> torch.Tensor:
    """(B, S, V, 3, T, H, W) -> tokens (B, V, S*N, D): segments concatenated per view.

    `autocast` is a zero-argument factory of the precision context (a fresh one per use)."""
    if video.ndim != 7:
        raise ValueError(f"expected video (B, S, V, 3, T, H, W), got {tuple(video.shape)}")
    b, s, v = video.shape[:3]
    clips = video.flatten(0, 2)  # S and V flattened into the batch: one encoder call per chunk
    chunk = chunk or b
    with torch.no_grad(), autocast():
        parts = [encoder(c) for c in clips.split(chunk)]
    tokens = torch.cat(parts).float()
    if tokens.ndim != 3 or tokens.shape[0] != b * s * v:
        raise ValueError(f"encoder returned {tuple(tokens.shape)} for {b * s * v} clips; "
                         f"expected tokens (clips, N, D)")
    n, d = tokens.shape[1:]
    return tokens.reshape(b, s, v, n, d).transpose(1, 2).reshape(b, v, s * n, d)


def probe_views(probe: nn.Module, tokens: torch.Tensor,
                autocast: Callable = contextlib.nullcontext) -> torch.Tensor:
    """tokens (B, V, L, D) -> logits (B, V, C): one probe pass per view."""
    b, v = tokens.shape[:2]
    with autocast():
        logits = probe(tokens.flatten(0, 1))
    return logits.float().reshape(b, v, -1)


def merge_views(logits: torch.Tensor) -> torch.Tensor:
    """Mean over spatial views of the softmax (release protocol): (B, V, C) -> (B, C)."""
    return logits.softmax(dim=-1).mean(dim=1)


# --------------------------------------------------------------------------------------------
# data-problem accounting for one pass over a loader


class _PassCounter:
    def __init__(self, problems: DataProblems, phase: str, where: str, loader,
                 max_fraction: float):
        self.problems, self.phase, self.where = problems, phase, where
        self.max_fraction = max_fraction
        self.seen = self.failed = 0
        try:
            self.expected = len(loader.dataset)
        except (AttributeError, TypeError):
            self.expected = None

    def add(self, num_ok: int, failures: list) -> None:
        self.problems.add(self.phase, num_ok, failures)
        self.seen += num_ok + len(failures)
        self.failed += len(failures)
        # Once the failures exceed the threshold of the whole pass the verdict is certain:
        # stop now rather than after decoding the rest (e.g. a wrong data root).
        if self.expected and self.failed > self.max_fraction * self.expected:
            self.problems.check(self.where, self.expected, self.failed, self.max_fraction)

    def finish(self) -> None:
        self.problems.check(self.where, self.seen, self.failed, self.max_fraction)


def _unpack(batch: dict, device: torch.device):
    """(video or cached tokens, label, failures) of a batch; None when nothing in it loaded."""
    failures = list(batch.get("failures") or [])
    video = batch["tokens"] if "tokens" in batch else batch.get("video")
    if video is None or video.shape[0] == 0:
        return None, None, failures
    label = torch.as_tensor(batch["label"]).long()
    if label.shape[0] != video.shape[0]:
        raise ValueError(f"batch has {video.shape[0]} videos but {label.shape[0]} labels")
    return video.to(device, non_blocking=True), label.to(device, non_blocking=True), failures


# --------------------------------------------------------------------------------------------
# progress display


class _Progress:
    """rich progress bar per pass (description, bar, batches, samples/s, loss); no-op if off."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]:>7.1f} samples/s"),
                                TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), TimeRemainingColumn(), transient=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, description: str, total: int | None):
        if self.bar is None:
            return None
        return self.bar.add_task(description, total=total, rate=0.0, info="")

    def update(self, task, *, rate: float, info: str):
        if self.bar is not None and task is not None:
            self.bar.update(task, advance=1, rate=rate, info=info)


def _len_or_none(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


# --------------------------------------------------------------------------------------------
# evaluation


def _metric_set(num_classes: int, topk: Iterable[int], device: torch.device) -> dict:
    from torchmetrics.classification import MulticlassAccuracy

    metrics = {}
    for k in topk:
        k = min(int(k), num_classes)  # top-k beyond the class count is meaningless; name the k used
        metrics.setdefault(f"top{k}", MulticlassAccuracy(num_classes=num_classes, top_k=k,
                                                         average="micro"))
    metrics["mean_class_acc"] = MulticlassAccuracy(num_classes=num_classes, top_k=1,
                                                   average="macro")
    return {name: m.to(device) for name, m in metrics.items()}


@torch.no_grad()
def _evaluate(encoder, probe, loader, *, device, topk, bf16, encoder_chunk, problems,
              max_failure_fraction, bar: _Progress) -> tuple[dict[str, float], float, int]:
    encoder.eval()
    probe.eval()
    autocast = _autocast(device, bf16)
    counter = _PassCounter(problems, "eval", "evaluation", loader, max_failure_fraction)
    metrics = None
    task = bar.start("eval", _len_or_none(loader))
    start, samples = time.perf_counter(), 0
    for batch in loader:
        video, label, failures = _unpack(batch, device)
        counter.add(0 if video is None else video.shape[0], failures)
        if video is not None:
            tokens = encode_views(encoder, video, chunk=encoder_chunk, autocast=autocast)
            probs = merge_views(probe_views(probe, tokens, autocast))
            if metrics is None:
                metrics = _metric_set(probs.shape[-1], topk, device)
            for m in metrics.values():
                m.update(probs, label)
            samples += video.shape[0]
        elapsed = time.perf_counter() - start
        if bar.bar is not None:  # compute() syncs the device: only when someone watches
            first = next(iter(metrics)) if metrics else None
            info = f"{first} {100 * metrics[first].compute().item():.1f}" if first else ""
            bar.update(task, rate=samples / max(elapsed, 1e-9), info=info)
    counter.finish()
    if metrics is None:
        raise DataProblemError("evaluation saw no readable sample (the loader was empty or every "
                               "sample failed); check the evaluation split and its data root",
                               problems)
    result = {name: 100.0 * m.compute().item() for name, m in metrics.items()}
    return result, time.perf_counter() - start, samples


def evaluate(encoder: nn.Module, probe: nn.Module, loader, *, device="cpu",
             topk: Iterable[int] = (1, 5), bf16: bool = True, encoder_chunk: int | None = None,
             max_failure_fraction: float = 0.05, progress: bool = False
             ) -> tuple[dict[str, float], DataProblems]:
    """Top-k (and mean-class) accuracy in percent of `probe` over `loader`, views merged by the
    mean of their softmaxes. Returns (metrics, data problems met)."""
    device = torch.device(device)
    encoder.to(device)
    probe.to(device)
    problems = DataProblems()
    with _Progress(progress) as bar:
        metrics, _, _ = _evaluate(encoder, probe, loader, device=device, topk=topk, bf16=bf16,
                                  encoder_chunk=encoder_chunk, problems=problems,
                                  max_failure_fraction=max_failure_fraction, bar=bar)
    return metrics, problems


# --------------------------------------------------------------------------------------------
# resumable state


def _fingerprint(probe: nn.Module, optim: OptimConfig, steps_per_epoch: int) -> dict:
    # What must match for a saved state to be continued; num_workers does not change the maths.
    cfg = optim.to_dict()
    cfg.pop("num_workers")
    return {"probe": type(probe).__name__,
            "num_params": sum(p.numel() for p in probe.parameters()),
            "optim": cfg, "steps_per_epoch": steps_per_epoch}


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a preempted job leaves the old state or the new one
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _load_state(path: Path, fingerprint: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read probe training state {path}: {exc}. Delete the file to "
                         f"start the probe training over.") from exc
    if state.get("version") != STATE_VERSION or state.get("fingerprint") != fingerprint:
        theirs = state.get("fingerprint") or {}
        differ = sorted(k for k in set(theirs) | set(fingerprint)
                        if theirs.get(k) != fingerprint.get(k))
        raise ValueError(f"probe training state {path} was written by a different run (differs "
                         f"in {differ or ['version']}); delete it or use another state path to "
                         f"start over.")
    return state


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    # Restoring the global RNG makes a `shuffle=True` DataLoader draw the same order for the next
    # epoch as the uninterrupted run would (it seeds each epoch's iterator from this RNG).
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available() and \
            len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# training


def train_probe(encoder: nn.Module, probe: nn.Module, train_loader, eval_loader,
                optim: OptimConfig, *, device="cpu", max_failure_fraction: float = 0.05,
                topk: Iterable[int] = (1, 5), state_path: str | os.PathLike | None = None,
                progress: bool = True, log: Callable[[str], None] | None = None,
                encoder_chunk: int | None = None, cache_features: bool = False,
                cache_copies: int = 0,
                on_epoch_end: Callable[[int, dict], None] | None = None) -> ProbeResult:
    """Train `probe` on the frozen `encoder`'s tokens, then evaluate it once on `eval_loader`.

    - `optim` may be an OptimConfig or a dict of its fields.
    - `state_path`: after every epoch {probe, optimizer, epoch, history, data_problems, rng} is
      written there atomically; an existing file (from the same configuration) is resumed from
      the next epoch. Same seed + same per-epoch data order => same final weights as one run.
    - `encoder_chunk`: clips per encoder call (S*V clips per sample are flattened into the
      batch); default: the loader's batch size.
    - `cache_features`: encode the training split once and train every epoch on those tokens
      (`probes.feature_cache`); only sound when `train_loader` draws fixed clips without random
      augmentation, which the caller arranges (and records in the protocol).
    - `cache_copies` (with `cache_features`): instead, encode this many augmented passes of an
      augmenting, unshuffled `train_loader` (seeded by `torch.initial_seed()` and the pass) and
      train each step on one copy per sample, drawn at random (`probes.feature_cache`).
    - `on_epoch_end(epoch, stats)` is called after the state is saved (hooks, tests).
    The test split is evaluated once, after the last epoch: no selection on it.
    """
    log = log or _log.info
    # A probe that fits its training set drives gradients into the subnormal range, where CPU
    # float maths gets 10-100x slower (epochs slowed from 0.3 s to over 3 s here); flushing them
    # to zero changes nothing measurable and keeps epochs at a steady cost.
    torch.set_flush_denormal(True)
    try:
        return _train_probe(encoder, probe, train_loader, eval_loader, optim, device=device,
                            max_failure_fraction=max_failure_fraction, topk=topk,
                            state_path=state_path, progress=progress, log=log,
                            encoder_chunk=encoder_chunk, cache_features=cache_features,
                            cache_copies=cache_copies, on_epoch_end=on_epoch_end)
    finally:
        torch.set_flush_denormal(False)  # back to the process default


def _train_probe(encoder, probe, train_loader, eval_loader, optim, *, device, max_failure_fraction,
                 topk, state_path, progress, log, encoder_chunk, cache_features, cache_copies,
                 on_epoch_end) -> ProbeResult:
    if isinstance(optim, dict):
        optim = OptimConfig.from_dict(optim)
    device = torch.device(device)
    encoder.to(device).eval()
    probe.to(device)
    autocast = _autocast(device, optim.bf16)
    problems, cache_stats, cache_seed = DataProblems(), None, None
    if cache_features:
        # Before any saved RNG state is restored: caching draws nothing from the RNG that the
        # epochs use, so resumed and uninterrupted runs shuffle the cached tokens alike.
        counter = _PassCounter(problems, "train", "feature caching", train_loader,
                               max_failure_fraction)
        def encode(enc, video):
            return encode_views(enc, video[:, :, :1], chunk=encoder_chunk, autocast=autocast)

        if cache_copies > 0:
            cache_seed = torch.initial_seed()
            cache = encode_copies(encoder, train_loader, cache_copies, seed=cache_seed,
                                  device=device, encode=encode, on_batch=counter.add)
        else:
            cache = encode_loader(encoder, train_loader, device=device, on_batch=counter.add,
                                  encode=encode)
        counter.finish()
        cache_stats = {"samples": len(cache), "copies": max(1, int(cache_copies)),
                       "seconds": round(cache.seconds, 3),
                       "megabytes": round(cache.nbytes / 2**20, 1)}
        copies = f" x {cache_copies} augmented copies" if cache_copies > 0 else ""
        log(f"cached training features: {len(cache)} clips{copies} in {cache.seconds:.1f} s "
            f"({cache_stats['megabytes']} MB)")
        train_loader = TokenBatches(cache, optim.batch_size, shuffle=True,
                                    pick_copy=cache_copies > 0)
    steps_per_epoch = _len_or_none(train_loader)
    if not steps_per_epoch:
        raise ValueError("train_loader must have a length >= 1 (a map-style dataset loader) so "
                         "the cosine schedule knows the number of steps")
    total_steps = optim.epochs * steps_per_epoch
    schedule = CosineSchedule(optim.lr, optim.final_lr, total_steps,
                              warmup_steps=round(optim.warmup_epochs * steps_per_epoch))
    opt = build_adamw(probe, optim.lr, optim.weight_decay)
    history, start_epoch = [], 0
    fingerprint = _fingerprint(probe, optim, steps_per_epoch)
    if cache_seed is not None:  # other augmented copies would make a resumed run another run
        fingerprint["feature_cache"] = {"copies": int(cache_copies), "seed": int(cache_seed)}
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        state = _load_state(state_path, fingerprint)
        probe.load_state_dict(state["probe"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        problems = DataProblems.from_dict(state["data_problems"])
        _set_rng_state(state["rng"])
        log(f"resuming probe training from {state_path} after epoch {start_epoch}/{optim.epochs}")

    t_start = time.perf_counter()
    train_seconds, train_samples = 0.0, 0
    last_save = time.perf_counter()
    with _Progress(progress) as bar:
        for epoch in range(start_epoch, optim.epochs):
            stats = _train_epoch(encoder, probe, opt, schedule, train_loader, epoch=epoch,
                                 epochs=optim.epochs, steps_per_epoch=steps_per_epoch,
                                 device=device, autocast=autocast, encoder_chunk=encoder_chunk,
                                 problems=problems, max_failure_fraction=max_failure_fraction,
                                 bar=bar)
            train_seconds += stats["seconds"]
            train_samples += stats["samples"]
            history.append(stats)
            log(f"epoch {epoch + 1}/{optim.epochs}: loss {stats['loss']:.4f}, train top1 "
                f"{stats['train_top1']:.1f}%, {stats['samples_per_s']:.1f} samples/s")
            # Saving (with fsync) after every one of 100 sub-second cached-feature epochs would
            # cost more than the training: save when SAVE_EVERY_S has passed, and at the end.
            due = (time.perf_counter() - last_save >= SAVE_EVERY_S or epoch + 1 == optim.epochs
                   or on_epoch_end is not None)
            if state_path is not None and due:
                last_save = time.perf_counter()
                _save_state(state_path, {
                    "version": STATE_VERSION, "fingerprint": fingerprint,
                    "probe": probe.state_dict(), "optimizer": opt.state_dict(),
                    "epoch": epoch + 1, "history": history,
                    "data_problems": problems.to_dict(), "rng": _rng_state()})
            if on_epoch_end is not None:
                on_epoch_end(epoch, stats)
        metrics, eval_seconds, eval_samples = _evaluate(
            encoder, probe, eval_loader, device=device, topk=topk, bf16=optim.bf16,
            encoder_chunk=encoder_chunk, problems=problems,
            max_failure_fraction=max_failure_fraction, bar=bar)
    timings = {
        "total_s": round(time.perf_counter() - t_start, 3),
        "train_s": round(train_seconds, 3),
        "eval_s": round(eval_seconds, 3),
        "train_samples_per_s": round(train_samples / train_seconds, 2) if train_seconds else 0.0,
        "eval_samples_per_s": round(eval_samples / eval_seconds, 2) if eval_seconds else 0.0,
        "resumed_from_epoch": start_epoch,
    }
    if cache_stats is not None:
        timings["feature_cache"] = cache_stats
    log("evaluation: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return ProbeResult(metrics=metrics, probe=probe, data_problems=problems, timings=timings,
                       history=history)


def _train_epoch(encoder, probe, opt, schedule, loader, *, epoch, epochs, steps_per_epoch,
                 device, autocast, encoder_chunk, problems, max_failure_fraction,
                 bar: _Progress) -> dict[str, Any]:
    probe.train()
    encoder.eval()  # frozen: dropout/BN of the encoder must stay in inference behaviour
    counter = _PassCounter(problems, "train", f"training epoch {epoch + 1}", loader,
                           max_failure_fraction)
    task = bar.start(f"epoch {epoch + 1}/{epochs}", steps_per_epoch)
    start = time.perf_counter()
    loss_sum, correct, samples, lr = 0.0, 0, 0, schedule(epoch * steps_per_epoch)
    for i, batch in enumerate(loader):
        video, label, failures = _unpack(batch, device)
        counter.add(0 if video is None else video.shape[0], failures)
        if video is not None:
            # The schedule follows the loader's step index, so a batch lost entirely to
            # failures skips its update without shifting the rest of the schedule.
            lr = schedule.apply(opt, epoch * steps_per_epoch + i)
            if "tokens" in batch:  # cached features: (B, V, L, D), already encoded
                tokens = video[:, :1]
            else:
                tokens = encode_views(encoder, video[:, :, :1], chunk=encoder_chunk,
                                      autocast=autocast)
            logits = probe_views(probe, tokens, autocast)[:, 0]
            loss = F.cross_entropy(logits, label)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"probe loss is {loss.item()} at epoch {epoch + 1}, "
                                         f"step {i}; lower the learning rate (now {lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = label.shape[0]
            loss_sum += loss.item() * n
            correct += (logits.argmax(dim=-1) == label).sum().item()
            samples += n
        elapsed = time.perf_counter() - start
        bar.update(task, rate=samples / max(elapsed, 1e-9),
                   info=f"loss {loss_sum / max(samples, 1):.4f}")
    counter.finish()
    seconds = time.perf_counter() - start
    return {"epoch": epoch + 1, "loss": loss_sum / samples if samples else math.nan,
            "train_top1": 100.0 * correct / samples if samples else math.nan, "lr": lr,
            "samples": samples, "failed": counter.failed, "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 2) if seconds else 0.0}
