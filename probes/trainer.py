"""Probe trainer: a frozen encoder feeds a trainable probe; AdamW + per-step cosine; resumable.

Training data is an `EpochBatches`-like object (`tasks.loading`): `steps(epoch, start_step)`
yields one `Step` per optimiser update, whose global batch (the protocol's `batch_size`, the
paper's 256) arrives as micro-batches (`micro_batch_size`, a memory knob) whose gradients are
accumulated. Every draw is a function of (seed, epoch, sample index), so a run killed anywhere
and resumed from its saved state ends with the same weights and metrics. A plain iterable of
batches (a DataLoader) also works: each batch is one step, and state is resumed at epoch
boundaries with the global RNG restored.

Micro-batches are the dicts of `tasks.collate_clips`: `video` (B, S, V, 3, T, H, W) floats (S
temporal segments, V spatial views), or uint8 `frames` that the data object's `finish(batch,
device)` turns into that on the compute device; `label` (B,) long; `failures` [(path, error)].

Per clip the encoder returns tokens (B, N, D). The tokens of all S segments of one view are
concatenated to (B, S*N, D) and go through the probe in one pass (the release's "attend across
segments"); at evaluation the softmaxes of the V spatial views are averaged. Training uses view 0
only (training loaders give V = 1).

Optimisation follows the release's `eval.py`: AdamW, lr cosine (schedulers stepped *before*
each update, so update k uses the value at k+1), weight decay cosine from `weight_decay` to
`final_weight_decay` (the release's 1e-6) on the decayed group, gradient norm clipped at
`clip_grad_norm` (1.0). On CUDA with `bf16` the frozen encoder's weights are cast to bfloat16
once and its tokens stay bfloat16; the probe trains under bf16 autocast with fp32 weights. (The
release's flag `use_bfloat16` actually autocasts to float16 with a GradScaler; we run bf16,
which needs no scaler, and record the precision that really ran.) On CPU everything is fp32.
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
from probes.optim import CosineSchedule, build_adamw, cosine_value
from probes.problems import DataProblemError, DataProblems

_log = logging.getLogger(__name__)

STATE_VERSION = 2
# Besides after every epoch, state is saved mid-epoch when this many seconds have passed since
# the last save (at a step boundary): a K400 epoch takes hours.
SAVE_EVERY_S = 300.0


@dataclass
class OptimConfig:
    """Optimisation of one probe. `batch_size` is the global batch (protocol);
    `micro_batch_size` (memory) and `num_workers` (throughput) are not protocol."""

    epochs: int
    batch_size: int
    lr: float
    final_lr: float = 0.0
    warmup_epochs: float = 0
    weight_decay: float = 0.01
    final_weight_decay: float = 1e-6
    clip_grad_norm: float | None = 1.0
    bf16: bool = True
    micro_batch_size: int | None = None
    num_workers: int = 0

    NOT_PROTOCOL = ("micro_batch_size", "num_workers")

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        mb = self.micro_batch_size
        if mb is not None and (not isinstance(mb, int) or isinstance(mb, bool) or mb < 1):
            raise ValueError(f"micro_batch_size must be an integer >= 1 or null, got {mb!r}")
        for name in ("lr", "final_lr", "weight_decay", "final_weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}")

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

    def protocol(self) -> dict[str, Any]:
        """The fields that change the numbers (`bf16` is a request; the precision that ran is
        recorded by the runner)."""
        d = self.to_dict()
        for k in self.NOT_PROTOCOL + ("bf16",):
            d.pop(k)
        return d


class Preempted(Exception):
    """Training stopped on request (a SIGTERM from SLURM): state saved, re-run to resume."""

    def __init__(self, epoch: int, step: int, state_path):
        self.epoch, self.step, self.state_path = epoch, step, state_path
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        saved = (f"training state saved after {where} in {state_path}" if state_path is not None
                 else "no state path was given, nothing was saved")
        super().__init__(f"stopped on request (SIGTERM): {saved}; re-run the same command to "
                         f"resume")


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    probe: nn.Module
    data_problems: DataProblems
    timings: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    num_evaluated: int = 0
    predictions: dict | None = None  # per evaluated sample: path, label, topk_index, topk_prob
    heads: list[dict] | None = None  # a grid: every head's point and selection score
    chosen_head: int | None = None


def resolve_precision(device, bf16: bool) -> str:
    """The precision a run really uses: bf16 only on CUDA (CPU bf16 is slow on CPUs without bf16
    units and would make CPU numbers differ from the fp32 reference); never fp16."""
    return "bf16" if bf16 and torch.device(device).type == "cuda" else "fp32"


# --------------------------------------------------------------------------------------------
# forward: encoder (frozen, chunked) -> per-view token sequences -> probe


def _autocast(device: torch.device, precision: str) -> Callable:
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def encode_views(encoder: nn.Module, video: torch.Tensor, *, chunk: int | None = None,
                 autocast: Callable = contextlib.nullcontext) -> torch.Tensor:
    """(B, S, V, 3, T, H, W) -> tokens (B, V, S*N, D): segments concatenated per view.

    The tokens keep the encoder's dtype (bfloat16 when its weights were cast): the segment
    tokens of a whole micro-batch are never copied to fp32. `autocast` is a zero-argument factory
    of the precision context (a fresh one per use)."""
    if video.ndim != 7:
        raise ValueError(f"expected video (B, S, V, 3, T, H, W), got {tuple(video.shape)}")
    b, s, v = video.shape[:3]
    clips = video.flatten(0, 2)  # S and V flattened into the batch: one encoder call per chunk
    dtype = next((p.dtype for p in encoder.parameters()), clips.dtype)
    if dtype.is_floating_point and clips.dtype != dtype:
        clips = clips.to(dtype)
    chunk = chunk or b * s * v
    with torch.no_grad(), autocast():
        parts = [encoder(c) for c in clips.split(chunk)]
    tokens = torch.cat(parts)
    if tokens.ndim != 3 or tokens.shape[0] != b * s * v:
        raise ValueError(f"encoder returned {tuple(tokens.shape)} for {b * s * v} clips; "
                         f"expected tokens (clips, N, D)")
    n, d = tokens.shape[1:]
    return tokens.reshape(b, s, v, n, d).transpose(1, 2).reshape(b, v, s * n, d)


def probe_views(probe: nn.Module, tokens: torch.Tensor,
                autocast: Callable = contextlib.nullcontext) -> torch.Tensor:
    """tokens (B, V, L, D) -> logits (B, V, C) (a `ProbeGrid`: (B, V, H, C)): one pass per view."""
    b, v = tokens.shape[:2]
    with autocast():
        logits = probe(tokens.flatten(0, 1))
    return logits.float().reshape(b, v, *logits.shape[1:])  # (B, V, C), or (B, V, H, C) for a grid


def merge_views(logits: torch.Tensor) -> torch.Tensor:
    """Mean over spatial views of the softmax (release protocol): (B, V, [H,] C) -> (B, [H,] C)."""
    return logits.softmax(dim=-1).mean(dim=1)


# --------------------------------------------------------------------------------------------
# data-problem accounting for one pass over a loader


class _PassCounter:
    def __init__(self, problems: DataProblems, phase: str, where: str, loader,
                 max_fraction: float):
        self.problems, self.phase, self.where = problems, phase, where
        self.max_fraction = max_fraction
        self.seen = self.failed = 0
        self.expected = _expected_samples(loader)

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


def _unpack(batch: dict, device: torch.device, finish: Callable | None = None):
    """(video or cached tokens, label, failures) of a batch; None when nothing in it loaded."""
    failures = list(batch.get("failures") or [])
    if "tokens" in batch:
        video = batch["tokens"]
    elif "frames" in batch:
        if finish is None:
            raise ValueError("batch holds uint8 frames but the data object has no finish()")
        video = finish(batch, device)
    else:
        video = batch.get("video")
    if video is None or video.shape[0] == 0:
        return None, None, failures
    label = torch.as_tensor(batch["label"]).long()
    if label.shape[0] != video.shape[0]:
        raise ValueError(f"batch has {video.shape[0]} videos but {label.shape[0]} labels")
    return video.to(device, non_blocking=True), label.to(device, non_blocking=True), failures


def _micro_batches(data) -> Iterable[dict]:
    return data.micro_batches() if hasattr(data, "micro_batches") else data


def _num_micro_batches(data) -> int | None:
    if hasattr(data, "num_micro_batches"):
        return data.num_micro_batches()
    return _len_or_none(data)


def _expected_samples(data) -> int | None:
    for attr in ("num_samples",):
        if hasattr(data, attr):
            return int(getattr(data, attr))
    try:
        return len(data.dataset)
    except (AttributeError, TypeError):
        return None


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
def _evaluate(encoder, probe, data, *, device, topk, precision, encoder_chunk, problems,
              max_failure_fraction, bar: _Progress, predictions: dict | None = None,
              head: int | None = None) -> tuple[dict[str, float], float, int]:
    """Metrics over one pass; with `predictions` (a dict), fills it with per-sample `path`,
    `label`, `topk_index` and `topk_prob` (top 5 of the view-merged probabilities)."""
    encoder.eval()
    probe.eval()
    autocast = _autocast(device, precision)
    finish = getattr(data, "finish", None)
    counter = _PassCounter(problems, "eval", "evaluation", data, max_failure_fraction)
    metrics = None
    task = bar.start("eval", _num_micro_batches(data))
    start, samples = time.perf_counter(), 0
    kept = predictions if predictions is not None else {}
    for batch in _micro_batches(data):
        video, label, failures = _unpack(batch, device, finish)
        counter.add(0 if video is None else video.shape[0], failures)
        if video is not None:
            tokens = video if "tokens" in batch else encode_views(
                encoder, video, chunk=encoder_chunk, autocast=autocast)
            probs = merge_views(probe_views(probe, tokens, autocast))
            if probs.ndim == 3:  # a grid: score one head
                if head is None:
                    raise ValueError("evaluating a probe grid needs the chosen head")
                probs = probs[:, head]
            if metrics is None:
                metrics = _metric_set(probs.shape[-1], topk, device)
            for m in metrics.values():
                m.update(probs, label)
            samples += video.shape[0]
            if predictions is not None:  # per-sample, for statistics after the fact
                k = min(5, probs.shape[-1])
                top = probs.topk(k, dim=-1)
                kept.setdefault("path", []).extend(batch.get("path") or [""] * video.shape[0])
                kept.setdefault("label", []).append(label.cpu())
                kept.setdefault("topk_index", []).append(top.indices.cpu())
                kept.setdefault("topk_prob", []).append(top.values.float().cpu())
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
    if predictions is not None:
        for key in ("label", "topk_index", "topk_prob"):
            predictions[key] = torch.cat(predictions[key]).numpy()
    return result, time.perf_counter() - start, samples


@torch.no_grad()
def _evaluate_heads(encoder, probe, data, *, device, precision, encoder_chunk, problems,
                    max_failure_fraction, phase: str) -> list[float]:
    """Top-1 (%) of every head of a grid over one pass of `data` (selection)."""
    autocast = _autocast(device, precision)
    finish = getattr(data, "finish", None)
    counter = _PassCounter(problems, phase, f"head selection on {phase}", data,
                           max_failure_fraction)
    correct, seen = None, 0
    for batch in _micro_batches(data):
        video, label, failures = _unpack(batch, device, finish)
        counter.add(0 if video is None else video.shape[0], failures)
        if video is None:
            continue
        tokens = video if "tokens" in batch else encode_views(
            encoder, video, chunk=encoder_chunk, autocast=autocast)
        probs = merge_views(probe_views(probe, tokens, autocast))  # (B, H, C)
        hits = (probs.argmax(-1) == label[:, None]).sum(0).double()
        correct = hits if correct is None else correct + hits
        seen += label.shape[0]
    counter.finish()
    if not seen:
        raise DataProblemError(f"head selection saw no readable sample in {phase}", problems)
    return (100.0 * correct / seen).tolist()


def _prepare_encoder(encoder: nn.Module, device: torch.device, precision: str) -> nn.Module:
    # Frozen weights are cast once (not per forward by autocast) in bf16 runs.
    encoder.to(device).eval()
    if precision == "bf16":
        encoder.to(torch.bfloat16)
    return encoder


def evaluate(encoder: nn.Module, probe: nn.Module, loader, *, device="cpu",
             topk: Iterable[int] = (1, 5), bf16: bool = True, encoder_chunk: int | None = None,
             max_failure_fraction: float = 0.05, progress: bool = False
             ) -> tuple[dict[str, float], DataProblems]:
    """Top-k (and mean-class) accuracy in percent of `probe` over `loader` (a DataLoader or an
    `EpochBatches`), views merged by the mean of their softmaxes. Returns (metrics, problems)."""
    metrics, problems, _ = evaluate_full(encoder, probe, loader, device=device, topk=topk,
                                         bf16=bf16, encoder_chunk=encoder_chunk,
                                         max_failure_fraction=max_failure_fraction,
                                         progress=progress)
    return metrics, problems


def evaluate_full(encoder, probe, loader, *, device="cpu", topk=(1, 5), bf16=True,
                  encoder_chunk=None, max_failure_fraction=0.05, progress=False):
    """`evaluate` plus a dict {precision, eval_s, samples} for the record."""
    device = torch.device(device)
    precision = resolve_precision(device, bf16)
    _prepare_encoder(encoder, device, precision)
    probe.to(device)
    problems = DataProblems()
    predictions: dict = {}
    with _Progress(progress) as bar:
        metrics, seconds, samples = _evaluate(
            encoder, probe, loader, device=device, topk=topk, precision=precision,
            encoder_chunk=encoder_chunk, problems=problems,
            max_failure_fraction=max_failure_fraction, bar=bar, predictions=predictions)
    return metrics, problems, {"precision": precision, "eval_s": round(seconds, 3),
                               "samples": samples, "predictions": predictions}


# --------------------------------------------------------------------------------------------
# resumable state


def _fingerprint(probe: nn.Module, optim: OptimConfig, steps_per_epoch: int) -> dict:
    # What must match for a saved state to be continued; memory and throughput knobs
    # (micro_batch_size, num_workers) do not change the maths beyond float summation order.
    cfg = optim.to_dict()
    for k in OptimConfig.NOT_PROTOCOL:
        cfg.pop(k)
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
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION \
            or state.get("fingerprint") != fingerprint:
        theirs = (state.get("fingerprint") if isinstance(state, dict) else None) or {}
        differ = sorted(k for k in set(theirs) | set(fingerprint)
                        if theirs.get(k) != fingerprint.get(k))
        raise ValueError(f"probe training state {path} was written by a different run or "
                         f"version (differs in {differ or ['version']}); delete it or use another "
                         f"state path to start over.")
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


class _LoaderSteps:
    """A plain iterable of batches as steps: one batch = one step (no mid-epoch resume)."""

    mid_epoch_resume = False

    def __init__(self, loader):
        self.loader = loader
        self.finish = getattr(loader, "finish", None)

    def __len__(self):
        return _len_or_none(self.loader) or 0

    def steps(self, epoch: int, start_step: int = 0):
        from types import SimpleNamespace

        for i, batch in enumerate(self.loader):
            n = int(batch["tokens"].shape[0]) if "tokens" in batch else (
                len(batch.get("label", [])) + len(batch.get("failures") or []))
            yield SimpleNamespace(index=i, size=max(n, 1), micro_batches=iter([batch]))


def _as_steps(data):
    # Objects with steps() (tasks.loading.EpochBatches, TokenBatches) draw every epoch from
    # (seed, epoch), so they resume mid-epoch; they say so with `mid_epoch_resume`.
    return data if hasattr(data, "steps") else _LoaderSteps(data)


def train_probe(encoder: nn.Module, probe: nn.Module, train_loader, eval_loader,
                optim: OptimConfig, *, device="cpu", max_failure_fraction: float = 0.05,
                topk: Iterable[int] = (1, 5), state_path: str | os.PathLike | None = None,
                progress: bool = True, log: Callable[[str], None] | None = None,
                encoder_chunk: int | None = None, cache_features: bool = False,
                cache_copies: int = 0, cache_seed: int | None = None,
                save_every_s: float = SAVE_EVERY_S,
                selection: str = "val", selection_data=None,
                stop: Callable[[], bool] | None = None,
                on_epoch_end: Callable[[int, dict], None] | None = None,
                on_step_end: Callable[[int, int], None] | None = None) -> ProbeResult:
    """Train `probe` on the frozen `encoder`'s tokens, then evaluate it once on `eval_loader`.

    - `train_loader`: an `EpochBatches`-like object (steps of micro-batches, exact resume
      anywhere) or a plain iterable of batches (one batch per step).
    - `optim` may be an OptimConfig or a dict of its fields.
    - `state_path`: {probe, optimizer, epoch, step, history, data_problems, rng} is written there
      atomically after every epoch, and mid-epoch at a step boundary once `save_every_s` seconds
      have passed since the last save; an existing file (from the same configuration) is
      resumed from the step after it.
    - `encoder_chunk`: clips per encoder call (S*V clips per sample are flattened into the
      micro-batch); default: all clips of the micro-batch.
    - `cache_features`: encode the training split once and train every epoch on those tokens
      (`probes.feature_cache`); only sound when the training data draws fixed clips without
      random augmentation, which the caller arranges (and records in the protocol).
    - `cache_copies` (with `cache_features`): instead, encode this many augmented passes of an
      augmenting, unshuffled training set and train each step on one copy per sample.
    - a `probes.grid.ProbeGrid` trains all its heads on each encoder pass; `selection` "val"
      chooses the head on `selection_data` (held out from training) before the evaluation split
      is read, "eval_max" on the evaluation split itself. The result keeps every head's score.
    - `stop()`: polled after every step; when it returns True (a SIGTERM arrived), state is saved
      at that step (mid-epoch where the data resumes exactly, else the last epoch's save stands)
      and `Preempted` is raised.
    - `on_epoch_end(epoch, stats)` / `on_step_end(epoch, step)`: hooks (tests), after any save.
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
                            cache_copies=cache_copies, cache_seed=cache_seed,
                            save_every_s=save_every_s, selection=selection,
                            selection_data=selection_data, stop=stop,
                            on_epoch_end=on_epoch_end, on_step_end=on_step_end)
    finally:
        torch.set_flush_denormal(False)  # back to the process default


def _train_probe(encoder, probe, train_loader, eval_loader, optim, *, device, max_failure_fraction,
                 topk, state_path, progress, log, encoder_chunk, cache_features, cache_copies,
                 cache_seed, save_every_s, selection, selection_data, stop, on_epoch_end,
                 on_step_end) -> ProbeResult:
    if isinstance(optim, dict):
        optim = OptimConfig.from_dict(optim)
    device = torch.device(device)
    precision = resolve_precision(device, optim.bf16)
    _prepare_encoder(encoder, device, precision)
    probe.to(device)
    autocast = _autocast(device, precision)
    problems, cache_stats = DataProblems(), None
    if cache_features:
        # Before any saved RNG state is restored: caching draws nothing from the RNG that the
        # epochs use, so resumed and uninterrupted runs shuffle the cached tokens alike.
        counter = _PassCounter(problems, "train", "feature caching", train_loader,
                               max_failure_fraction)
        finish = getattr(train_loader, "finish", None)

        def encode(enc, batch):
            video, _, _ = _unpack(batch, device, finish)
            if video is None:
                return None
            return encode_views(enc, video[:, :, :1], chunk=encoder_chunk,
                                autocast=autocast).float()

        seed = torch.initial_seed() if cache_seed is None else int(cache_seed)
        if cache_copies > 0:
            cache = encode_copies(encoder, train_loader, cache_copies, seed=seed,
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
                                    pick_copy=cache_copies > 0, seed=seed)
    data = _as_steps(train_loader)
    steps_per_epoch = len(data)
    if not steps_per_epoch:
        raise ValueError("the training data must have a length >= 1 (a map-style dataset) so "
                         "the cosine schedule knows the number of steps")
    total_steps = optim.epochs * steps_per_epoch
    schedule = CosineSchedule(optim.lr, optim.final_lr, total_steps,
                              warmup_steps=round(optim.warmup_epochs * steps_per_epoch))
    from probes.grid import ProbeGrid, grid_param_groups

    is_grid = isinstance(probe, ProbeGrid)
    if is_grid:
        opt = torch.optim.AdamW(grid_param_groups(probe))
        if selection not in ("val", "eval_max"):
            raise ValueError(f"selection must be val or eval_max, got {selection!r}")
        if selection == "val" and selection_data is None:
            raise ValueError("a probe grid with selection=val needs selection_data (a validation "
                             "split held out from the training data)")
    else:
        opt = build_adamw(probe, optim.lr, optim.weight_decay)
    history, start_epoch, start_step, partial = [], 0, 0, None
    fingerprint = _fingerprint(probe, optim, steps_per_epoch)
    if cache_features and cache_copies > 0:  # other augmented copies would make another run
        fingerprint["feature_cache"] = {"copies": int(cache_copies), "seed": int(seed)}
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        state = _load_state(state_path, fingerprint)
        probe.load_state_dict(state["probe"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, start_step = int(state["epoch"]), int(state.get("step", 0))
        history, partial = list(state["history"]), state.get("partial")
        problems = DataProblems.from_dict(state["data_problems"])
        _set_rng_state(state["rng"])
        where = f"epoch {start_epoch}/{optim.epochs}" + (
            f", step {start_step}/{steps_per_epoch}" if start_step else "")
        log(f"resuming probe training from {state_path} after {where}")

    def save(epoch: int, step: int, partial_stats: dict | None) -> None:
        _save_state(state_path, {
            "version": STATE_VERSION, "fingerprint": fingerprint,
            "probe": probe.state_dict(), "optimizer": opt.state_dict(),
            "epoch": epoch, "step": step, "partial": partial_stats, "history": history,
            "data_problems": problems.to_dict(), "rng": _rng_state()})

    t_start = time.perf_counter()
    train_seconds, train_samples = 0.0, 0
    clock = {"last_save": time.perf_counter()}
    with _Progress(progress) as bar:
        for epoch in range(start_epoch, optim.epochs):
            first = start_step if epoch == start_epoch else 0
            carried = partial if epoch == start_epoch else None

            def step_done(step: int, stats: dict) -> None:
                stopping = stop is not None and stop()
                resumable = getattr(data, "mid_epoch_resume", False) and step < steps_per_epoch
                if state_path is not None and resumable and (
                        stopping or time.perf_counter() - clock["last_save"] >= save_every_s):
                    clock["last_save"] = time.perf_counter()
                    save(epoch, step, stats)
                if on_step_end is not None:
                    on_step_end(epoch, step)
                if stopping and step < steps_per_epoch:
                    if resumable:
                        raise Preempted(epoch, step, state_path)
                    raise Preempted(epoch, 0, state_path)  # the last epoch's save stands

            stats = _train_epoch(encoder, probe, opt, schedule, data, optim=optim, epoch=epoch,
                                 start_step=first, carried=carried,
                                 steps_per_epoch=steps_per_epoch, device=device,
                                 autocast=autocast, encoder_chunk=encoder_chunk,
                                 problems=problems, max_failure_fraction=max_failure_fraction,
                                 bar=bar, step_done=step_done)
            train_seconds += stats["seconds"]
            train_samples += stats["samples"]
            history.append(stats)
            log(f"epoch {epoch + 1}/{optim.epochs}: loss {stats['loss']:.4f}, train top1 "
                f"{stats['train_top1']:.1f}%, {stats['samples_per_s']:.1f} samples/s")
            if state_path is not None:
                clock["last_save"] = time.perf_counter()
                save(epoch + 1, 0, None)
            if on_epoch_end is not None:
                on_epoch_end(epoch, stats)
            if stop is not None and stop() and epoch + 1 < optim.epochs:
                raise Preempted(epoch + 1, 0, state_path)
        heads, chosen = None, None
        if is_grid:
            # Honest selection: the evaluation split is not read until the head is chosen
            # (selection=val); eval_max, the V-JEPA 2 release's practice, picks it there.
            source = selection_data if selection == "val" else eval_loader
            scores = _evaluate_heads(encoder, probe, source, device=device, precision=precision,
                                     encoder_chunk=encoder_chunk, problems=problems,
                                     max_failure_fraction=max_failure_fraction,
                                     phase="select" if selection == "val" else "eval")
            chosen = max(range(len(scores)), key=lambda h: (scores[h], -h))
            heads = [{**point, f"{selection}_top1": score}
                     for point, score in zip(probe.points, scores)]
            log(f"head {chosen} chosen on {'the held-out validation split' if selection == 'val' else 'the evaluation split (eval_max)'}: "
                f"lr {probe.points[chosen]['lr']:g}, wd {probe.points[chosen]['weight_decay']:g}, top1 {scores[chosen]:.2f}")
        predictions: dict = {}
        metrics, eval_seconds, eval_samples = _evaluate(
            encoder, probe, eval_loader, device=device, topk=topk, precision=precision,
            encoder_chunk=encoder_chunk, problems=problems,
            max_failure_fraction=max_failure_fraction, bar=bar, predictions=predictions,
            head=chosen)
    timings = {
        "total_s": round(time.perf_counter() - t_start, 3),
        "train_s": round(train_seconds, 3),
        "eval_s": round(eval_seconds, 3),
        "train_samples_per_s": round(train_samples / train_seconds, 2) if train_seconds else 0.0,
        "eval_samples_per_s": round(eval_samples / eval_seconds, 2) if eval_seconds else 0.0,
        "resumed_from_epoch": start_epoch,
        "resumed_from_step": start_step,
    }
    if cache_stats is not None:
        timings["feature_cache"] = cache_stats
    log("evaluation: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return ProbeResult(metrics=metrics, probe=probe, data_problems=problems, timings=timings,
                       history=history, precision=precision, num_evaluated=eval_samples,
                       predictions=predictions, heads=heads, chosen_head=chosen)


def _train_epoch(encoder, probe, opt, schedule, data, *, optim, epoch, start_step, carried,
                 steps_per_epoch, device, autocast, encoder_chunk, problems,
                 max_failure_fraction, bar: _Progress, step_done) -> dict[str, Any]:
    probe.train()
    encoder.eval()  # frozen: dropout/BN of the encoder must stay in inference behaviour
    counter = _PassCounter(problems, "train", f"training epoch {epoch + 1}", data,
                           max_failure_fraction)
    finish = getattr(data, "finish", None)
    task = bar.start(f"epoch {epoch + 1}/{optim.epochs}", steps_per_epoch)
    start = time.perf_counter()
    acc = {"loss_sum": 0.0, "correct": 0, "samples": 0, "failed": 0, "seconds": 0.0}
    if carried:  # a mid-epoch resume: what the steps before it added
        acc.update(carried)
        counter.seen, counter.failed = int(carried.get("seen", 0)), int(carried["failed"])
    lr = schedule(min(epoch * steps_per_epoch + 1, schedule.total_steps))
    total = schedule.total_steps
    decay_group = opt.param_groups[0]
    params = [p for p in probe.parameters() if p.requires_grad]
    heads = getattr(probe, "heads", None)
    clip_groups = ([[p for p in h.parameters() if p.requires_grad] for h in heads]
                   if heads is not None else [params])
    for step in data.steps(epoch, start_step):
        g = epoch * steps_per_epoch + step.index
        # The release steps its schedulers before each update: update g uses the value at g+1.
        lr = schedule(min(g + 1, total))
        factor = lr / optim.lr  # a grid head's schedule is the protocol's, scaled to its own lr
        for group in opt.param_groups:
            group["lr"] = group.get("base_lr", optim.lr) * factor
            if group.get("decay", group is decay_group):
                base = group.get("base_wd", optim.weight_decay)
                group["weight_decay"] = cosine_value(g + 1, total, base,
                                                     min(optim.final_weight_decay, base))
        opt.zero_grad(set_to_none=True)
        n_ok = 0
        for batch in step.micro_batches:
            video, label, failures = _unpack(batch, device, finish)
            counter.add(0 if video is None else video.shape[0], failures)
            if video is None:
                continue
            if "tokens" in batch:  # cached features: (B, V, L, D), already encoded
                tokens = video[:, :1]
            else:
                tokens = encode_views(encoder, video[:, :, :1], chunk=encoder_chunk,
                                      autocast=autocast)
            logits = probe_views(probe, tokens, autocast)[:, 0]
            # Sum over the micro-batch / size of the global batch: accumulated over the step's
            # micro-batches this is the global batch's mean loss, whatever the micro size.
            if logits.ndim == 3:  # a grid (B, H, C): the sum of the heads' own losses
                heads_n = logits.shape[1]
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       label.repeat_interleave(heads_n), reduction="sum") / step.size
            else:
                loss = F.cross_entropy(logits, label, reduction="sum") / step.size
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"probe loss is {loss.item()} at epoch {epoch + 1}, step {step.index}: the "
                    f"encoder's tokens or the probe diverged. Check that the checkpoint loads "
                    f"finite weights; if it does, lower task.optim.lr (now {lr:g})")
            loss.backward()
            n = label.shape[0]
            n_ok += n
            per_head = logits.shape[1] if logits.ndim == 3 else 1
            acc["loss_sum"] += loss.item() * step.size / per_head  # mean over heads
            hits = logits.argmax(dim=-1) == (label[:, None] if logits.ndim == 3 else label)
            acc["correct"] += hits.float().sum().item() / per_head
            acc["samples"] += n
        acc["failed"] = counter.failed
        if n_ok:
            if n_ok != step.size:  # unreadable samples: the mean over those that loaded
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(step.size / n_ok)
            if optim.clip_grad_norm is not None:
                for part in clip_groups:  # each head clipped on its own norm
                    torch.nn.utils.clip_grad_norm_(part, optim.clip_grad_norm)
            opt.step()
        elapsed = time.perf_counter() - start
        bar.update(task, rate=acc["samples"] / max(elapsed + acc["seconds"], 1e-9),
                   info=f"loss {acc['loss_sum'] / max(acc['samples'], 1):.4f}")
        step_done(step.index + 1, {**acc, "seen": counter.seen,
                                   "seconds": acc["seconds"] + time.perf_counter() - start})
    counter.finish()
    seconds = acc["seconds"] + time.perf_counter() - start
    samples = acc["samples"]
    return {"epoch": epoch + 1, "loss": acc["loss_sum"] / samples if samples else math.nan,
            "train_top1": 100.0 * acc["correct"] / samples if samples else math.nan, "lr": lr,
            "samples": samples, "failed": counter.failed, "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 2) if seconds else 0.0}
