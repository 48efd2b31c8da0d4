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
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

import parallel
from common import failpoints
from probes.digest import content_digest
from probes.feature_cache import TokenBatches, encode_copies, encode_loader
from probes.kinds import Classification, ClassificationScorer, Kind, head_scores
from probes.optim import CosineSchedule, build_adamw, cosine_value
from probes.problems import DataProblemError, DataProblems

_log = logging.getLogger(__name__)

STATE_VERSION = 3  # 3: states carry the digest of their contents
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


class StateInUseError(RuntimeError):
    """A second run of the same identity while the first still trains on its state file."""


class Preempted(Exception):
    """Training stopped on request (SIGTERM / SIGUSR1 from SLURM): state saved, re-run to resume."""

    def __init__(self, epoch: int, step: int, state_path):
        self.epoch, self.step, self.state_path = epoch, step, state_path
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        saved = (f"training state saved after {where} in {state_path}" if state_path is not None
                 else "no state path was given, nothing was saved")
        super().__init__(f"stopped on request (SIGTERM or SIGUSR1): {saved}; re-run the same command to "
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
                 autocast: Callable = contextlib.nullcontext,
                 layers: tuple[int, ...] | None = None) -> torch.Tensor:
    """(B, S, V, 3, T, H, W) -> tokens (B, V, S*N, D): segments concatenated per view.

    The tokens keep the encoder's dtype (bfloat16 when its weights were cast): the segment
    tokens of a whole micro-batch are never copied to fp32. `autocast` is a zero-argument factory
    of the precision context (a fresh one per use). `layers`: block indices whose (normed)
    outputs are concatenated on the channel axis instead of the last block's (AVA's probe reads
    four blocks: D becomes 4 x the width)."""
    if video.ndim != 7:
        raise ValueError(f"expected video (B, S, V, 3, T, H, W), got {tuple(video.shape)}")
    b, s, v = video.shape[:3]
    clips = video.flatten(0, 2)  # S and V flattened into the batch: one encoder call per chunk
    dtype = next((p.dtype for p in encoder.parameters()), clips.dtype)
    if dtype.is_floating_point and clips.dtype != dtype:
        clips = clips.to(dtype)
    chunk = chunk or b * s * v
    with torch.no_grad(), autocast():
        if layers:
            parts = [torch.cat(encoder(c, out_layers=list(layers)), dim=-1)
                     for c in clips.split(chunk)]
        else:
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
    return _CLASSIFICATION.forward(probe, tokens, {}, autocast)


def merge_views(logits: torch.Tensor) -> torch.Tensor:
    """Mean over spatial views of the softmax (release protocol): (B, V, [H,] C) -> (B, [H,] C)."""
    return Classification().merge(logits)


def probe_layers(probe: nn.Module) -> tuple[int, ...] | None:
    """The encoder blocks a probe reads (`out_layers`, e.g. AVA's four); None: the last block's
    output. A grid's heads read the same tokens."""
    heads = getattr(probe, "heads", None)
    head = heads[0] if heads is not None and len(heads) else probe
    layers = getattr(head, "out_layers", None)
    return tuple(int(i) for i in layers) if layers else None


def _forward(kind: Kind, encoder, probe, batch: dict, video: torch.Tensor, device, *, chunk,
             autocast, train: bool) -> torch.Tensor:
    """Logits of one micro-batch: (B, V, [H,] C), or (K, 1, [H,] C) for detection's boxes.
    Training reads view 0 only (training loaders give one view)."""
    if "tokens" in batch:  # cached features: (B, V, L, D), already encoded
        tokens = video[:, :1] if train else video
    else:
        tokens = encode_views(encoder, video[:, :, :1] if train else video, chunk=chunk,
                              autocast=autocast, layers=probe_layers(probe))
    return kind.forward(probe, tokens, kind.probe_inputs(batch, device), autocast)


# --------------------------------------------------------------------------------------------
# data-problem accounting for one pass over a loader


class _PassCounter:
    """Samples seen / failed over one pass, and the stop threshold.

    In one process each micro-batch is counted as it arrives, and a pass stops as soon as its
    failures exceed the threshold of the whole pass (e.g. a wrong data root). Under DDP a rank
    sees only its share: micro-batches are counted where all ranks meet (`settle`, after a
    step, or at the end of an evaluation pass), in the order one process would have met them,
    so counts, the failure list and the verdict are global and the same on every rank."""

    def __init__(self, problems: DataProblems, phase: str, where: str, loader,
                 max_fraction: float):
        self.problems, self.phase, self.where = problems, phase, where
        self.max_fraction = max_fraction
        self.seen = self.failed = 0
        self.expected = _expected_samples(loader)
        self.distributed = parallel.world_size() > 1
        self.pending: list = []

    def add(self, num_ok: int, failures: list) -> None:
        if self.distributed:
            self.pending.append((num_ok, list(failures)))
        else:
            self.count(num_ok, failures)

    def count(self, num_ok: int, failures: list) -> None:
        """Count a micro-batch that every rank knows of (already gathered)."""
        self.problems.add(self.phase, num_ok, failures)
        self.seen += num_ok + len(failures)
        self.failed += len(failures)
        # Once the failures exceed the threshold of the whole pass the verdict is certain:
        # stop now rather than after decoding the rest (e.g. a wrong data root).
        if self.expected and self.failed > self.max_fraction * self.expected:
            self.problems.check(self.where, self.expected, self.failed, self.max_fraction)

    def settle(self, num_micro: int) -> None:
        """Count every rank's pending micro-batches (collective; a no-op in one process)."""
        if not self.distributed:
            return
        mine, self.pending = self.pending, []
        for num_ok, failures in parallel.unshard(parallel.gather_objects(mine), num_micro):
            self.count(num_ok, failures)

    def finish(self) -> None:
        self.problems.check(self.where, self.seen, self.failed, self.max_fraction)


def _unpack(batch: dict, device: torch.device, finish: Callable | None = None,
            kind: Kind | None = None):
    """(video or cached tokens, target, failures) of a batch; None when nothing in it loaded.
    The target is the kind's (class indices by default; multi-hot rows; per-box rows)."""
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
    target = (kind or _CLASSIFICATION).target(batch, device)
    return video.to(device, non_blocking=True), target, failures


_CLASSIFICATION = Classification()


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


def _pass_size(data) -> int:
    """Micro-batches of one evaluation pass over every rank (this rank's share in one process)."""
    if parallel.world_size() > 1:
        if getattr(data, "world_size", 1) != parallel.world_size():
            raise ValueError("under DDP the data must be sharded over the ranks "
                             "(tasks.loading.EpochBatches with rank= and world_size=)")
        return data.num_micro_batches(all_ranks=True)
    return _num_micro_batches(data) or 0


@torch.no_grad()
def _evaluate(encoder, probe, data, *, device, topk, precision, encoder_chunk, problems,
              max_failure_fraction, bar: _Progress, predictions: dict | None = None,
              head: int | None = None, kind: Kind | None = None) -> tuple[dict[str, float], float, int]:
    """Metrics over one pass; with `predictions` (a dict), fills it with the kind's per-sample
    arrays (classification: `path`, `label`, `topk_index`, `topk_prob`, the top 5 of the
    view-merged probabilities).

    Under DDP every rank scores its share of the micro-batches; the metric states are summed (or
    the kept scores gathered) back into the order of one process, so every number and every
    per-sample prediction equals a single-process run's (same micro-batches, same maths)."""
    kind = kind or Classification(topk)
    encoder.eval()
    probe.eval()
    autocast = _autocast(device, precision)
    finish = getattr(data, "finish", None)
    counter = _PassCounter(problems, "eval", "evaluation", data, max_failure_fraction)
    total_micro = _pass_size(data)
    scorer = kind.scorer(device)
    task = bar.start("eval", _num_micro_batches(data))
    start, samples = time.perf_counter(), 0
    kept = []  # per micro-batch: what the predictions file keeps (None: nothing loaded)
    gathered = not isinstance(scorer, ClassificationScorer)  # keeps its own parts
    for batch in _micro_batches(data):
        failpoints.hit("eval")
        video, target, failures = _unpack(batch, device, finish, kind)
        counter.add(0 if video is None else video.shape[0], failures)
        if video is None:
            kept.append(None)
            if gathered:
                scorer.note_failed()
        else:
            scores = kind.merge(_forward(kind, encoder, probe, batch, video, device,
                                         chunk=encoder_chunk, autocast=autocast, train=False))
            if scores.ndim == 3:  # a grid: score one head
                if head is None:
                    raise ValueError("evaluating a probe grid needs the chosen head")
                scores = scores[:, head]
            scorer.update(scores, target, batch)
            samples += video.shape[0]
            if predictions is not None and not gathered:  # per-sample, for statistics later
                kept.append(scorer.kept(scores, target, batch))
        elapsed = time.perf_counter() - start
        if bar.bar is not None:  # compute() syncs the device: only when someone watches
            bar.update(task, rate=samples / max(elapsed, 1e-9), info=scorer.progress())
    counter.settle(total_micro)
    counter.finish()
    if parallel.world_size() > 1:
        scorer.merge_ranks(total_micro)
        samples = sum(parallel.gather_objects(samples))
        if not gathered:
            kept = parallel.unshard(parallel.gather_objects(kept), total_micro)
    if scorer.empty():
        raise DataProblemError("evaluation saw no readable sample (the loader was empty or every "
                               "sample failed); check the evaluation split and its data root",
                               problems)
    result = scorer.compute()
    if predictions is not None:
        parts = [k for k in (scorer.parts if gathered else kept) if k is not None]
        if parts:
            predictions.update(scorer.predictions(parts))
    return result, time.perf_counter() - start, samples


def _selection_part(batch: dict) -> dict:
    """What head selection keeps of a micro-batch besides its scores (no clips)."""
    return {k: batch[k] for k in ("path", "key", "boxes") if k in batch}


@torch.no_grad()
def _evaluate_heads(encoder, probe, data, *, device, precision, encoder_chunk, problems,
                    max_failure_fraction, phase: str, kind: Kind | None = None) -> list[float]:
    """The kind's primary metric (top-1 %, mAP) of every head of a grid over one pass of
    `data` (selection)."""
    kind = kind or _CLASSIFICATION
    autocast = _autocast(device, precision)
    finish = getattr(data, "finish", None)
    counter = _PassCounter(problems, phase, f"head selection on {phase}", data,
                           max_failure_fraction)
    total_micro = _pass_size(data)
    heads = len(getattr(probe, "heads", ())) or 1
    counting = isinstance(kind, Classification)
    correct = torch.zeros(heads, dtype=torch.float64, device=device)
    seen = torch.zeros(1, dtype=torch.float64, device=device)
    parts = []  # other kinds: (scores (n, H, C), target, batch part) per micro-batch
    for batch in _micro_batches(data):
        video, target, failures = _unpack(batch, device, finish, kind)
        counter.add(0 if video is None else video.shape[0], failures)
        if video is None:
            parts.append(None)
            continue
        scores = kind.merge(_forward(kind, encoder, probe, batch, video, device,
                                     chunk=encoder_chunk, autocast=autocast, train=False))
        if counting:
            correct += ClassificationScorer.head_correct(scores, target)
        else:
            parts.append((scores.cpu(), target.cpu(), _selection_part(batch)))
        seen += video.shape[0]
    counter.settle(total_micro)
    counter.finish()
    parallel.all_sum_(seen)
    if not seen.item():
        raise DataProblemError(f"head selection saw no readable sample in {phase}", problems)
    if counting:
        parallel.all_sum_(correct)  # counts: their sum is exact in any order
        return (100.0 * correct / seen).tolist()
    if parallel.world_size() > 1:
        parts = parallel.unshard(parallel.gather_objects(parts), total_micro)
    return head_scores(kind, lambda: kind.scorer(device), [p for p in parts if p is not None])


def _prepare_encoder(encoder: nn.Module, device: torch.device, precision: str) -> nn.Module:
    # Frozen weights are cast once (not per forward by autocast) in bf16 runs.
    encoder.to(device).eval()
    if precision == "bf16":
        encoder.to(torch.bfloat16)
    return encoder


def evaluate(encoder: nn.Module, probe: nn.Module, loader, *, device="cpu",
             topk: Iterable[int] = (1, 5), bf16: bool = True, encoder_chunk: int | None = None,
             max_failure_fraction: float = 0.05, progress: bool = False, kind: Kind | None = None
             ) -> tuple[dict[str, float], DataProblems]:
    """Top-k (and mean-class) accuracy in percent of `probe` over `loader` (a DataLoader or an
    `EpochBatches`), views merged by the mean of their softmaxes. Returns (metrics, problems)."""
    metrics, problems, _ = evaluate_full(encoder, probe, loader, device=device, topk=topk,
                                         bf16=bf16, encoder_chunk=encoder_chunk,
                                         max_failure_fraction=max_failure_fraction,
                                         progress=progress, kind=kind)
    return metrics, problems


def evaluate_full(encoder, probe, loader, *, device="cpu", topk=(1, 5), bf16=True,
                  encoder_chunk=None, max_failure_fraction=0.05, progress=False, kind=None):
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
            max_failure_fraction=max_failure_fraction, bar=bar, predictions=predictions,
            kind=kind)
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
    from common.atomic import atomic_write  # the project's one atomic writer (torch-free)

    state = {**state, "checksum": content_digest(state)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a preempted job leaves the old state or the new one, never a torn file
    atomic_write(path, lambda f: torch.save(state, f))


def _load_state(path: Path, fingerprint: dict) -> dict:
    start_over = "Delete the file to start the probe training over."
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read probe training state {path}: {exc}. {start_over}") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION \
            or state.get("fingerprint") != fingerprint:
        theirs = (state.get("fingerprint") if isinstance(state, dict) else None) or {}
        differ = sorted(k for k in set(theirs) | set(fingerprint)
                        if theirs.get(k) != fingerprint.get(k))
        raise ValueError(f"probe training state {path} was written by a different run or "
                         f"version (differs in {differ or ['version']}); delete it or use another "
                         f"state path to start over.")
    stored = state.pop("checksum", None)
    if stored != content_digest(state):
        raise ValueError(f"probe training state {path} is corrupt: its contents do not match the "
                         f"checksum saved with them (a damaged disk or a partial copy). "
                         f"{start_over}")
    return state


@contextlib.contextmanager
def state_lock(path: Path | None):
    """Hold an exclusive lock beside the state file for the run's lifetime: a second identical
    run (same state file) refuses to start instead of training on the same state. The kernel
    drops the lock when the process dies, so a killed run never leaves it stale."""
    if path is None:
        yield
        return
    import fcntl

    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StateInUseError(f"another run with the same identity is training on {path} "
                               f"({holder}); wait for it to finish (re-running the command then "
                               f"reuses its record) or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
                on_step_end: Callable[[int, int], None] | None = None,
                feature_store=None, feature_key: str | None = None,
                kind: Kind | None = None, selection_kind: Kind | None = None) -> ProbeResult:
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
    - `feature_store` + `feature_key` (with `cache_features`): the cached tokens live on disk
      (`probes.feature_store`, fp16): read back when present, only missing rows encoded.
    - a probe with `trainable = False` (`probes.knn.KNNProbe`) is fitted on the cached training
      tokens instead of trained (no epochs, no state file), then evaluated.
    - `cache_copies` (with `cache_features`): instead, encode this many augmented passes of an
      augmenting, unshuffled training set and train each step on one copy per sample.
    - a `probes.grid.ProbeGrid` trains all its heads on each encoder pass; `selection` "val"
      chooses the head on `selection_data` (held out from training) before the evaluation split
      is read, "eval_max" on the evaluation split itself. The result keeps every head's score.
    - `stop()`: polled after every step; when it returns True (a SIGTERM arrived), state is saved
      at that step (mid-epoch where the data resumes exactly, else the last epoch's save stands)
      and `Preempted` is raised.
    - `on_epoch_end(epoch, stats)` / `on_step_end(epoch, step)`: hooks (tests), after any save.
    - `kind` (`probes.kinds`): the task kind's loss, head input, view merge and metrics;
      default single-label classification with `topk`. `selection_kind`: how `selection_data`
      is scored when it differs (detection: against the held-out films' own boxes).
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
                            on_epoch_end=on_epoch_end, on_step_end=on_step_end,
                            feature_store=feature_store, feature_key=feature_key,
                            kind=kind or Classification(topk), selection_kind=selection_kind)
    finally:
        torch.set_flush_denormal(False)  # back to the process default


def _train_probe(encoder, probe, train_loader, eval_loader, optim, *, device, max_failure_fraction,
                 topk, state_path, progress, log, encoder_chunk, cache_features, cache_copies,
                 cache_seed, save_every_s, selection, selection_data, stop, on_epoch_end,
                 on_step_end, feature_store=None, feature_key=None,
                 kind: Kind = _CLASSIFICATION, selection_kind: Kind | None = None) -> ProbeResult:
    if isinstance(optim, dict):
        optim = OptimConfig.from_dict(optim)
    fit_only = getattr(probe, "trainable", True) is False  # k-NN: a bank of training features
    cache_features = cache_features or fit_only
    if cache_features and not isinstance(kind, Classification):
        raise ValueError(f"cached features and k-NN serve classification tasks; a {kind.name} "
                         f"task trains on its clips (set cache_features=false and another probe)")
    if feature_store is not None and not feature_key:
        raise ValueError("feature_store needs feature_key (probes.feature_store.feature_key)")
    if parallel.world_size() > 1:
        if cache_features:
            raise ValueError("cached features are not supported under DDP yet: run the cached "
                             "protocol in one process (its encoder cost is one pass over the "
                             "training split)")
        if getattr(train_loader, "world_size", 1) != parallel.world_size():
            raise ValueError("under DDP the training data must be sharded over the ranks "
                             "(tasks.loading.EpochBatches with rank= and world_size=)")
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
            failpoints.hit("cache")
            video, _, _ = _unpack(batch, device, finish)
            if video is None:
                return None
            return encode_views(enc, video[:, :, :1], chunk=encoder_chunk, autocast=autocast,
                                layers=probe_layers(probe)).float()

        seed = torch.initial_seed() if cache_seed is None else int(cache_seed)
        if feature_store is not None:
            from probes.feature_store import cached_copies, cached_tokens

            if cache_copies > 0:
                cache = cached_copies(feature_store, feature_key, lambda b: encode(encoder, b),
                                      train_loader, cache_copies, seed=seed,
                                      on_batch=counter.add)
            else:
                cache = cached_tokens(feature_store, feature_key, lambda b: encode(encoder, b),
                                      train_loader, on_batch=counter.add)
        elif cache_copies > 0:
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
        if fit_only:
            return _fit_and_evaluate(encoder, probe, cache, eval_loader, device=device,
                                     topk=topk, precision=precision, encoder_chunk=encoder_chunk,
                                     problems=problems, max_failure_fraction=max_failure_fraction,
                                     progress=progress, log=log, cache_stats=cache_stats)
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
        # Every rank holds the same state; rank 0 writes it, the others wait until it is on disk
        # (a rank that stopped first could otherwise end the job while the file is written).
        if parallel.rank() != 0:
            parallel.barrier()
            return
        _save_state(state_path, {
            "version": STATE_VERSION, "fingerprint": fingerprint,
            "probe": probe.state_dict(), "optimizer": opt.state_dict(),
            "epoch": epoch, "step": step, "partial": partial_stats, "history": history,
            "data_problems": problems.to_dict(), "rng": _rng_state()})
        failpoints.hit("saved")
        parallel.barrier()

    t_start = time.perf_counter()
    train_seconds, train_samples = 0.0, 0
    clock = {"last_save": time.perf_counter()}
    with _Progress(progress) as bar:
        for epoch in range(start_epoch, optim.epochs):
            first = start_step if epoch == start_epoch else 0
            carried = partial if epoch == start_epoch else None

            def step_done(step: int, stats: dict, *, stopping: bool, save_due: bool) -> None:
                # `stopping` and `save_due` are the same on every rank (see _train_epoch).
                failpoints.hit("step")
                resumable = getattr(data, "mid_epoch_resume", False) and step < steps_per_epoch
                if state_path is not None and resumable and (stopping or save_due):
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
                                 bar=bar, step_done=step_done, stop=stop, clock=clock,
                                 save_every_s=save_every_s, kind=kind)
            train_seconds += stats["seconds"]
            train_samples += stats["samples"]
            history.append(stats)
            score = (f", train top1 {stats['train_top1']:.1f}%" if "train_top1" in stats else "")
            log(f"epoch {epoch + 1}/{optim.epochs}: loss {stats['loss']:.4f}{score}, "
                f"{stats['samples_per_s']:.1f} samples/s")
            if state_path is not None:
                clock["last_save"] = time.perf_counter()
                save(epoch + 1, 0, None)
            if on_epoch_end is not None:
                on_epoch_end(epoch, stats)
            if stop is not None and epoch + 1 < optim.epochs and \
                    any(parallel.gather_objects(bool(stop()))):
                raise Preempted(epoch + 1, 0, state_path)
        heads, chosen = None, None
        if is_grid:
            # Honest selection: the evaluation split is not read until the head is chosen
            # (selection=val); eval_max, the V-JEPA 2 release's practice, picks it there.
            source = selection_data if selection == "val" else eval_loader
            scores = _evaluate_heads(encoder, probe, source, device=device, precision=precision,
                                     encoder_chunk=encoder_chunk, problems=problems,
                                     max_failure_fraction=max_failure_fraction,
                                     phase="select" if selection == "val" else "eval",
                                     kind=(selection_kind or kind) if selection == "val" else kind)
            # A head without a score (mAP of a split without positives: NaN) is never chosen.
            chosen = max(range(len(scores)),
                         key=lambda h: (scores[h] if math.isfinite(scores[h]) else -math.inf, -h))
            heads = [{**point, f"{selection}_{kind.primary}": score}
                     for point, score in zip(probe.points, scores)]
            log(f"head {chosen} chosen on {'the held-out validation split' if selection == 'val' else 'the evaluation split (eval_max)'}: "
                f"lr {probe.points[chosen]['lr']:g}, wd {probe.points[chosen]['weight_decay']:g}, {kind.primary} {scores[chosen]:.2f}")
        predictions: dict = {}
        metrics, eval_seconds, eval_samples = _evaluate(
            encoder, probe, eval_loader, device=device, topk=topk, precision=precision,
            encoder_chunk=encoder_chunk, problems=problems,
            max_failure_fraction=max_failure_fraction, bar=bar, predictions=predictions,
            head=chosen, kind=kind)
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


class _GradSum:
    """The float64 sum of a step's micro-batch gradients, over every rank, rounded once.

    Adding float32 gradients in float64 is exact unless two terms differ by more than 2**28 in
    magnitude, so the total does not depend on how the micro-batches were grouped on ranks;
    rounded to float32 it is the same in one process and on any number of ranks."""

    def __init__(self, params: list, device):
        self.params = params
        self.sizes = [p.numel() for p in params]
        self.total = torch.zeros(sum(self.sizes), dtype=torch.float64, device=device)
        self.touched = torch.zeros(len(params), dtype=torch.float64, device=device)

    def add(self) -> None:
        """Move the gradients of the last backward() into the sum."""
        for i, (part, p) in enumerate(zip(self.total.split(self.sizes), self.params)):
            if p.grad is not None:
                part.add_(p.grad.reshape(-1))
                self.touched[i] = 1
                p.grad = None

    def finish(self) -> None:
        """Sum over the ranks and hand each parameter its gradient (None where no rank had one,
        as AdamW then leaves the parameter alone, like a single process)."""
        parallel.all_sum_(self.total)
        parallel.all_sum_(self.touched)
        for part, p, touched in zip(self.total.split(self.sizes), self.params, self.touched.tolist()):
            p.grad = part.view_as(p).to(p.dtype) if touched else None


def _fit_and_evaluate(encoder, probe, cache, eval_loader, *, device, topk, precision,
                      encoder_chunk, problems, max_failure_fraction, progress, log,
                      cache_stats) -> ProbeResult:
    """A probe that is fitted, not trained (k-NN): its bank is the cached training tokens; the
    evaluation is the trainer's own (views merged by the mean of their softmaxes)."""
    start = time.perf_counter()
    probe.fit(cache.tokens, cache.labels)
    fit_s = time.perf_counter() - start
    predictions: dict = {}
    with _Progress(progress) as bar:
        metrics, eval_seconds, eval_samples = _evaluate(
            encoder, probe, eval_loader, device=device, topk=topk, precision=precision,
            encoder_chunk=encoder_chunk, problems=problems,
            max_failure_fraction=max_failure_fraction, bar=bar, predictions=predictions)
    timings = {"total_s": round(time.perf_counter() - start, 3), "train_s": round(fit_s, 3),
               "eval_s": round(eval_seconds, 3), "train_samples_per_s": 0.0,
               "eval_samples_per_s": round(eval_samples / eval_seconds, 2) if eval_seconds else 0.0,
               "resumed_from_epoch": 0, "resumed_from_step": 0, "feature_cache": cache_stats}
    log("evaluation: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return ProbeResult(metrics=metrics, probe=probe, data_problems=problems, timings=timings,
                       history=[], precision=precision, num_evaluated=eval_samples,
                       predictions=predictions)


def _train_epoch(encoder, probe, opt, schedule, data, *, optim, epoch, start_step, carried,
                 steps_per_epoch, device, autocast, encoder_chunk, problems,
                 max_failure_fraction, bar: _Progress, step_done, stop, clock,
                 save_every_s, kind: Kind) -> dict[str, Any]:
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
    world = parallel.world_size()
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
        num_micro = getattr(step, "num_micro", 1)
        # A step of several micro-batches (or ranks) sums their gradients in float64 and rounds
        # once: the sum is then the same in any order, so micro-batches spread over any number
        # of ranks give the weights of one process (float32 accumulation depends on the order).
        grads = _GradSum(params, device) if world > 1 or num_micro > 1 else None
        # per micro-batch of this rank: (n_ok, failures, loss, correct, finite, units)
        local = []
        for batch in step.micro_batches:
            video, target, failures = _unpack(batch, device, finish, kind)
            if video is None:
                local.append((0, failures, 0.0, 0.0, True, 0))
                continue
            logits = _forward(kind, encoder, probe, batch, video, device, chunk=encoder_chunk,
                              autocast=autocast, train=True)[:, 0]
            # The sum over the micro-batch's units (samples; boxes for detection) / the global
            # batch's samples: accumulated over the step's micro-batches, and rescaled once the
            # step's units are known, this is the global batch's mean loss per unit, whatever
            # the micro size. A grid's loss is the sum of its heads' own losses.
            loss_sum, units = kind.loss(logits, target)
            loss = loss_sum / step.size
            n = video.shape[0]
            if not torch.isfinite(loss):  # reported once every rank has finished the step
                local.append((n, failures, loss.item(), 0.0, False, units))
                continue
            if units:
                loss.backward()
            if grads is not None:
                grads.add()
            per_head = logits.shape[1] if logits.ndim == 3 else 1
            local.append((n, failures, loss_sum.item() / per_head,
                          kind.hits(logits, target), True, units))
        flags = (stop is not None and stop(), time.perf_counter() - clock["last_save"] >= save_every_s)
        if world > 1:  # every rank's micro-batches, in one process's order, and the flags
            mine = parallel.gather_objects((local, flags))
            local = parallel.unshard([part for part, _ in mine], num_micro)
            flags = (any(f[0] for _, f in mine), mine[0][1][1])  # stop: any rank; save: rank 0's clock
        n_ok = units_ok = 0
        for n, failures, loss_value, correct, finite, units in local:
            counter.count(n, failures)
            if not finite:
                raise FloatingPointError(
                    f"probe loss is {loss_value} at epoch {epoch + 1}, step {step.index}: the "
                    f"encoder's tokens or the probe diverged. Check that the checkpoint loads "
                    f"finite weights; if it does, lower task.optim.lr (now {lr:g})")
            n_ok += n
            units_ok += units
            acc["loss_sum"] += loss_value
            acc["correct"] += correct
            acc["samples"] += n
            acc["units"] = acc.get("units", 0) + units
        acc["failed"] = counter.failed
        if grads is not None:
            grads.finish()  # summed over ranks, float64 -> the parameters' dtype
        if units_ok:
            # Unreadable samples (or a step's box count): the mean over the units that loaded.
            if units_ok != step.size:
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(step.size / units_ok)
            if optim.clip_grad_norm is not None:
                for part in clip_groups:  # each head clipped on its own norm
                    torch.nn.utils.clip_grad_norm_(part, optim.clip_grad_norm)
            opt.step()
        elapsed = time.perf_counter() - start
        bar.update(task, rate=acc["samples"] / max(elapsed + acc["seconds"], 1e-9),
                   info=f"loss {acc['loss_sum'] / max(acc.get('units', acc['samples']), 1):.4f}")
        step_done(step.index + 1, {**acc, "seen": counter.seen,
                                   "seconds": acc["seconds"] + time.perf_counter() - start},
                  stopping=flags[0], save_due=flags[1])
    counter.finish()
    seconds = acc["seconds"] + time.perf_counter() - start
    samples, units = acc["samples"], acc.get("units", acc["samples"])
    stats = {"epoch": epoch + 1, "loss": acc["loss_sum"] / units if units else math.nan}
    if kind.train_metric:
        stats[kind.train_metric] = 100.0 * acc["correct"] / samples if samples else math.nan
    return {**stats, "lr": lr, "samples": samples, "failed": counter.failed,
            "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 2) if seconds else 0.0}
