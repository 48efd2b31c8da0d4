"""Probe trainer: a frozen encoder feeds a trainable probe; AdamW + per-step cosine; resumable.

`train_probe` trains a probe (or a `probes.grid.ProbeGrid` of heads) on the tokens of a
`probes.tokens.TokenSource` (online from the encoder, the in-memory feature cache or the on-disk
feature store: the loop is the same), then evaluates it once on the evaluation split
(`probes.evaluation`). Each step's global batch (the protocol's `batch_size`, the paper's 256)
arrives as micro-batches (`micro_batch_size`, a memory knob) whose gradients are summed in
float64 (`probes.optim`). Every draw is a function of (seed, epoch, sample index), so a run
killed anywhere and resumed from its saved state (`probes.state`) ends with the same weights and
metrics; under DDP every rank takes the same branch and rank 0's numbers are one process's.
Nothing inside a step's micro-batch loop reads a value back from the device (a host sync that
would idle a GPU): the loss sums and hits stay device tensors and are read once per step.

Library code only logs (`logging`, the CLI installs the handler): one INFO line per epoch, the
chosen head of a grid, a resume, the feature cache and the final metrics; progress is drawn with
`common.progress.Bar` when asked.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import parallel
from common import failpoints
from common.progress import Bar
from probes.evaluation import (
    BAR_FIELDS,
    PassCounter,
    choose_head,
    evaluate_heads,
    evaluate_pass,
)
from probes.forward import prepare_encoder, resolve_precision
from probes.grid import SELECTIONS, ProbeGrid, grid_param_groups
from probes.kinds import Classification, Kind
from probes.optim import OptimConfig, ProbeOptimiser
from probes.problems import DataProblems
from probes.state import Preempted, StateFile, fingerprint
from probes.tokens import TokenSource, token_source

_log = logging.getLogger(__name__)

# Besides after every epoch, state is saved mid-epoch when this many seconds have passed since
# the last save (at a step boundary): a K400 epoch takes hours.
SAVE_EVERY_S = 300.0


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


def train_probe(encoder: nn.Module, probe: nn.Module, train_loader, eval_loader,
                optim: OptimConfig, *, device="cpu", max_failure_fraction: float = 0.05,
                topk: Iterable[int] = (1, 5), state_path: str | os.PathLike | None = None,
                progress: bool = False, encoder_chunk: int | None = None,
                cache_features: bool = False, cache_copies: int = 0,
                cache_seed: int | None = None, save_every_s: float = SAVE_EVERY_S,
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
    - `progress`: draw progress bars (`common.progress.Bar`); results are logged either way.
    - `encoder_chunk`: clips per encoder call (S*V clips per sample are flattened into the
      micro-batch); default: all clips of the micro-batch.
    - `cache_features`: encode the training split once and train every epoch on those tokens
      (`probes.tokens`); only sound when the training data draws fixed clips without random
      augmentation, which the caller arranges (and records in the protocol).
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
    - `on_epoch_end(epoch, stats)` / `on_step_end(epoch, step)`: callbacks after any save.
    - `kind` (`probes.kinds`): the task kind's loss, head input, view merge and metrics;
      default single-label classification with `topk`. `selection_kind`: how `selection_data`
      is scored when it differs (detection: against the held-out films' own boxes).
    The test split is evaluated once, after the last epoch: no selection on it.
    """
    # A probe that fits its training set drives gradients into the subnormal range, where CPU
    # float maths gets 10-100x slower (epochs slowed from 0.3 s to over 3 s here); flushing them
    # to zero changes nothing measurable and keeps epochs at a steady cost.
    torch.set_flush_denormal(True)
    try:
        return _train_probe(encoder, probe, train_loader, eval_loader, optim, device=device,
                            max_failure_fraction=max_failure_fraction, state_path=state_path,
                            progress=progress, encoder_chunk=encoder_chunk,
                            cache_features=cache_features, cache_copies=cache_copies,
                            cache_seed=cache_seed, save_every_s=save_every_s,
                            selection=selection, selection_data=selection_data, stop=stop,
                            on_epoch_end=on_epoch_end, on_step_end=on_step_end,
                            feature_store=feature_store, feature_key=feature_key,
                            kind=kind or Classification(topk), selection_kind=selection_kind)
    finally:
        torch.set_flush_denormal(False)  # back to the process default


def _check(probe, train_loader, *, kind, cache_features, feature_store, feature_key, selection,
           selection_data) -> None:
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
    if isinstance(probe, ProbeGrid):
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be val or eval_max, got {selection!r}")
        if selection == "val" and selection_data is None:
            raise ValueError("a probe grid with selection=val needs selection_data (a validation "
                             "split held out from the training data)")


def _train_probe(encoder, probe, train_loader, eval_loader, optim, *, device, max_failure_fraction,
                 state_path, progress, encoder_chunk, cache_features, cache_copies, cache_seed,
                 save_every_s, selection, selection_data, stop, on_epoch_end, on_step_end,
                 feature_store, feature_key, kind: Kind,
                 selection_kind: Kind | None) -> ProbeResult:
    if isinstance(optim, dict):
        optim = OptimConfig.from_dict(optim)
    fit_only = getattr(probe, "trainable", True) is False  # k-NN: a bank of training features
    cache_features = cache_features or fit_only
    _check(probe, train_loader, kind=kind, cache_features=cache_features,
           feature_store=feature_store, feature_key=feature_key, selection=selection,
           selection_data=selection_data)
    device = torch.device(device)
    precision = resolve_precision(device, optim.bf16)
    prepare_encoder(encoder, device, precision)
    probe.to(device)
    problems = DataProblems()
    # Built before any saved RNG state is restored (see probes.tokens).
    source = token_source(encoder, probe, train_loader, kind=kind, device=device,
                          precision=precision, batch_size=optim.batch_size,
                          encoder_chunk=encoder_chunk, cache=cache_features, copies=cache_copies,
                          seed=cache_seed, feature_store=feature_store, feature_key=feature_key,
                          problems=problems, max_failure_fraction=max_failure_fraction)
    evaluation = {"device": device, "precision": precision, "encoder_chunk": encoder_chunk,
                  "max_failure_fraction": max_failure_fraction}
    if fit_only:
        return _fit_and_evaluate(encoder, probe, source, eval_loader, problems=problems,
                                 progress=progress, kind=kind, **evaluation)
    steps_per_epoch = len(source)
    if not steps_per_epoch:
        raise ValueError("the training data must have a length >= 1 (a map-style dataset) so "
                         "the cosine schedule knows the number of steps")
    is_grid = isinstance(probe, ProbeGrid)
    optimiser = ProbeOptimiser(probe, optim, steps_per_epoch,
                               groups=grid_param_groups(probe) if is_grid else None)
    history, start_epoch, start_step, partial = [], 0, 0, None
    state = StateFile(state_path, {**fingerprint(probe, optim, steps_per_epoch),
                                   **source.fingerprint})
    if state.exists():
        saved = state.load()
        probe.load_state_dict(saved["probe"])
        optimiser.load_state_dict(saved["optimizer"])
        start_epoch, start_step = int(saved["epoch"]), int(saved.get("step", 0))
        history, partial = list(saved["history"]), saved.get("partial")
        problems = DataProblems.from_dict(saved["data_problems"])
        where = f"epoch {start_epoch}/{optim.epochs}" + (
            f", step {start_step}/{steps_per_epoch}" if start_step else "")
        _log.info("resuming probe training from %s after %s", state.path, where)

    def save(epoch: int, step: int, partial_stats: dict | None) -> None:
        state.save(probe=probe.state_dict(), optimizer=optimiser.state_dict(), epoch=epoch,
                   step=step, partial=partial_stats, history=history,
                   data_problems=problems.to_dict())

    def step_done(epoch: int, step: int, stats: dict, *, stopping: bool, save_due: bool) -> None:
        # `stopping` and `save_due` are the same on every rank (see _train_epoch).
        failpoints.hit("step")
        resumable = source.mid_epoch_resume and step < steps_per_epoch
        if state.path is not None and resumable and (stopping or save_due):
            clock["last_save"] = time.perf_counter()
            save(epoch, step, stats)
        if on_step_end is not None:
            on_step_end(epoch, step)
        if stopping and step < steps_per_epoch:
            if resumable:
                raise Preempted(epoch, step, state.path)
            raise Preempted(epoch, 0, state.path)  # the last epoch's save stands

    t_start = time.perf_counter()
    train_seconds, train_samples = 0.0, 0
    clock = {"last_save": time.perf_counter()}
    with Bar(progress, fields=BAR_FIELDS) as bar:
        for epoch in range(start_epoch, optim.epochs):
            first = start_step if epoch == start_epoch else 0
            carried = partial if epoch == start_epoch else None
            stats = _train_epoch(probe, optimiser, source, optim=optim, epoch=epoch,
                                 start_step=first, carried=carried, device=device,
                                 problems=problems, max_failure_fraction=max_failure_fraction,
                                 bar=bar, step_done=step_done, stop=stop, clock=clock,
                                 save_every_s=save_every_s, kind=kind)
            train_seconds += stats["seconds"]
            train_samples += stats["samples"]
            history.append(stats)
            score = (f", train top1 {stats['train_top1']:.1f}%" if "train_top1" in stats else "")
            _log.info("epoch %d/%d: loss %.4f, lr %.3g%s, %.1f samples/s", epoch + 1,
                      optim.epochs, stats["loss"], stats["lr"], score, stats["samples_per_s"])
            if state.path is not None:
                clock["last_save"] = time.perf_counter()
                save(epoch + 1, 0, None)
            if on_epoch_end is not None:
                on_epoch_end(epoch, stats)
            if stop is not None and epoch + 1 < optim.epochs and \
                    any(parallel.gather_objects(bool(stop()))):
                raise Preempted(epoch + 1, 0, state.path)
        heads, chosen = None, None
        if is_grid:
            heads, chosen = _select_head(encoder, probe, eval_loader, selection=selection,
                                         selection_data=selection_data, problems=problems,
                                         kind=kind, selection_kind=selection_kind, **evaluation)
        predictions: dict = {}
        metrics, eval_seconds, eval_samples = evaluate_pass(
            encoder, probe, eval_loader, problems=problems, bar=bar, predictions=predictions,
            head=chosen, kind=kind, **evaluation)
    timings = _timings(t_start, train_seconds, train_samples, eval_seconds, eval_samples,
                       start_epoch=start_epoch, start_step=start_step)
    if source.cache_stats is not None:
        timings["feature_cache"] = source.cache_stats
    _log_metrics(metrics)
    return ProbeResult(metrics=metrics, probe=probe, data_problems=problems, timings=timings,
                       history=history, precision=precision, num_evaluated=eval_samples,
                       predictions=predictions, heads=heads, chosen_head=chosen)


def _select_head(encoder, probe, eval_loader, *, selection, selection_data, problems, kind,
                 selection_kind, **evaluation) -> tuple[list[dict], int]:
    """Every head's score and the chosen one. Honest selection: the evaluation split is not read
    until the head is chosen (selection=val); eval_max, the V-JEPA 2 release's practice, picks it
    there."""
    on_val = selection == "val"
    scores = evaluate_heads(encoder, probe, selection_data if on_val else eval_loader,
                            problems=problems, phase="select" if on_val else "eval",
                            kind=(selection_kind or kind) if on_val else kind, **evaluation)
    chosen = choose_head(scores)
    heads = [{**point, f"{selection}_{kind.primary}": score}
             for point, score in zip(probe.points, scores)]
    where = ("the held-out validation split" if on_val
             else "the evaluation split (eval_max)")
    point = probe.points[chosen]
    _log.info("head %d chosen on %s: lr %g, wd %g, %s %.2f", chosen, where, point["lr"],
              point["weight_decay"], kind.primary, scores[chosen])
    return heads, chosen


def _timings(t_start, train_seconds, train_samples, eval_seconds, eval_samples, *,
             start_epoch=0, start_step=0) -> dict:
    return {
        "total_s": round(time.perf_counter() - t_start, 3),
        "train_s": round(train_seconds, 3),
        "eval_s": round(eval_seconds, 3),
        "train_samples_per_s": round(train_samples / train_seconds, 2) if train_seconds else 0.0,
        "eval_samples_per_s": round(eval_samples / eval_seconds, 2) if eval_seconds else 0.0,
        "resumed_from_epoch": start_epoch,
        "resumed_from_step": start_step,
    }


def _log_metrics(metrics: dict) -> None:
    _log.info("evaluation: %s", ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))


def _fit_and_evaluate(encoder, probe, source: TokenSource, eval_loader, *, problems, progress,
                      kind, **evaluation) -> ProbeResult:
    """A probe that is fitted, not trained (k-NN): its bank is the cached training tokens; the
    evaluation is the trainer's own (views merged by the mean of their softmaxes)."""
    start = time.perf_counter()
    probe.fit(source.cache.tokens, source.cache.labels)
    fit_s = time.perf_counter() - start
    predictions: dict = {}
    with Bar(progress, fields=BAR_FIELDS) as bar:
        metrics, eval_seconds, eval_samples = evaluate_pass(
            encoder, probe, eval_loader, problems=problems, bar=bar, predictions=predictions,
            kind=kind, **evaluation)
    if hasattr(probe, "pass_metrics"):
        # A fitted probe that scores its own pass: MVEB's logreg reports mteb's mean over its
        # experiments, not the accuracy of their ensemble.
        metrics = probe.pass_metrics(predictions["label"])
    timings = _timings(start, 0.0, 0, eval_seconds, eval_samples)
    timings.update(train_s=round(fit_s, 3), feature_cache=source.cache_stats)
    _log_metrics(metrics)
    return ProbeResult(metrics=metrics, probe=probe, data_problems=problems, timings=timings,
                       history=[], precision=evaluation["precision"],
                       num_evaluated=eval_samples, predictions=predictions)


def _train_epoch(probe, optimiser: ProbeOptimiser, source: TokenSource, *, optim, epoch,
                 start_step, carried, device, problems, max_failure_fraction, bar: Bar,
                 step_done, stop, clock, save_every_s, kind: Kind) -> dict[str, Any]:
    probe.train()
    source.read.encoder.eval()  # frozen: dropout/BN of the encoder must stay in inference behaviour
    steps_per_epoch = len(source)
    counter = PassCounter(problems, "train", f"training epoch {epoch + 1}", source.data,
                          max_failure_fraction)
    task = bar.add(f"epoch {epoch + 1}/{optim.epochs}", steps_per_epoch, rate=0.0)
    start = time.perf_counter()
    acc = {"loss_sum": 0.0, "correct": 0, "samples": 0, "failed": 0, "seconds": 0.0}
    if carried:  # a mid-epoch resume: what the steps before it added
        acc.update(carried)
        counter.seen, counter.failed = int(carried.get("seen", 0)), int(carried["failed"])
    lr = optimiser.lr(epoch * steps_per_epoch)  # an epoch resumed after its last step
    world = parallel.world_size()
    for step in source.steps(epoch, start_step):
        lr = optimiser.begin(epoch * steps_per_epoch + step.index)
        grads = optimiser.grad_sum(step.num_micro, device)
        # Per micro-batch of this rank: (n_ok, failures, loss sum, hits, heads, units). The
        # loss sums and hits stay on the device until the step's micro-batches are all in:
        # one host read per step (`_read_step`), none inside this loop.
        pending = []
        for micro in step.micro_batches:
            if micro.tokens is None:
                pending.append((0, micro.failures, None, None, 1, 0))
                continue
            logits = source.read.logits(micro)[:, 0]
            # The sum over the micro-batch's units (samples; boxes for detection) / the global
            # batch's samples: accumulated over the step's micro-batches, and rescaled once the
            # step's units are known, this is the global batch's mean loss per unit, whatever
            # the micro size. A grid's loss is the sum of its heads' own losses.
            loss_sum, units = kind.loss(logits, micro.target)
            if units:
                # A non-finite loss is found when the step is read, before any update: its
                # gradients are then never used.
                (loss_sum / step.size).backward()
            if grads is not None:
                grads.add()
            per_head = logits.shape[1] if logits.ndim == 3 else 1
            pending.append((micro.size, micro.failures, loss_sum.detach(),
                            kind.hits(logits, micro.target), per_head, units))
        local = _read_step(pending, step.size)
        flags = (stop is not None and stop(), time.perf_counter() - clock["last_save"] >= save_every_s)
        if world > 1:  # every rank's micro-batches, in one process's order, and the flags
            mine = parallel.gather_objects((local, flags))
            local = parallel.unshard([part for part, _ in mine], step.num_micro)
            flags = (any(f[0] for _, f in mine), mine[0][1][1])  # stop: any rank; save: rank 0's clock
        units_ok = 0
        for n, failures, loss_value, correct, finite, units in local:
            counter.count(n, failures)
            if not finite:
                raise FloatingPointError(
                    f"probe loss is {loss_value} at epoch {epoch + 1}, step {step.index}: the "
                    f"encoder's tokens or the probe diverged. Check that the checkpoint loads "
                    f"finite weights; if it does, lower task.optim.lr (now {lr:g})")
            units_ok += units
            acc["loss_sum"] += loss_value
            acc["correct"] += correct
            acc["samples"] += n
            acc["units"] = acc.get("units", 0) + units
        acc["failed"] = counter.failed
        if grads is not None:
            grads.finish()  # summed over ranks, float64 -> the parameters' dtype
        optimiser.update(units_ok, step.size)
        elapsed = time.perf_counter() - start
        bar.update(task, advance=1, rate=acc["samples"] / max(elapsed + acc["seconds"], 1e-9),
                   info=f"loss {acc['loss_sum'] / max(acc.get('units', acc['samples']), 1):.4f}")
        step_done(epoch, step.index + 1, {**acc, "seen": counter.seen,
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


def _read_step(pending: list, size: int) -> list:
    """A step's per-micro-batch device counters read to the host at once (one sync per step):
    (n_ok, failures, loss value, correct, finite, units) per micro-batch, the loss value per
    head (a non-finite one as the step's loss, `loss_sum / size`) and the hits averaged over
    heads: the float32 values, divided in Python, exactly as when each was read on its own."""
    values = [v for _, _, loss, hits, _, _ in pending if loss is not None
              for v in (loss, hits if hits is not None else torch.zeros((), device=loss.device))]
    read = iter(torch.stack(values).tolist()) if values else iter(())
    out = []
    for n, failures, loss, hits, per_head, units in pending:
        if loss is None:
            out.append((0, failures, 0.0, 0.0, True, 0))
            continue
        loss_value, correct = next(read), next(read)
        if not math.isfinite(loss_value):
            out.append((n, failures, loss_value / size, 0.0, False, units))
        else:
            out.append((n, failures, loss_value / per_head, correct / per_head, True, units))
    return out
