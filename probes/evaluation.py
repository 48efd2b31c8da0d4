"""Evaluation of a probe on the frozen encoder's tokens, and the data-problem count of a pass.

One pass over a split: every micro-batch read (`probes.forward.TokenReader`, all views), run
through the probe, its views merged and scored by the task kind (`probes.kinds`). Under DDP every
rank scores its share of the micro-batches; the metric states are summed (or the kept scores
gathered) back into the order of one process, so every number and every per-sample prediction
equals a single-process run's (same micro-batches, same maths).

`PassCounter` counts samples seen and failed over any pass (training epochs and caching too) and
stops the run when too many of them could not be read.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch
from torch import nn

import parallel
from common import failpoints
from common.progress import Bar
from probes.forward import (
    CLASSIFICATION,
    TokenReader,
    prepare_encoder,
    resolve_precision,
)
from probes.kinds import Classification, ClassificationScorer, Kind, head_scores
from probes.problems import DataProblemError, DataProblems

# The columns of every probe pass's progress bar (`common.progress.Bar`).
BAR_FIELDS = ("{task.fields[rate]:>7.1f} samples/s", "{task.fields[info]}")


class PassCounter:
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
        self.expected = expected_samples(loader)
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


def len_or_none(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def expected_samples(data) -> int | None:
    if hasattr(data, "num_samples"):
        return int(data.num_samples)
    try:
        return len(data.dataset)
    except (AttributeError, TypeError):
        return None


def micro_batches(data) -> Iterable[dict]:
    """One pass: an `EpochBatches`' evaluation micro-batches, or the batches of a loader."""
    return data.micro_batches() if hasattr(data, "micro_batches") else data


def num_micro_batches(data) -> int | None:
    if hasattr(data, "num_micro_batches"):
        return data.num_micro_batches()
    return len_or_none(data)


def pass_size(data) -> int:
    """Micro-batches of one evaluation pass over every rank (this rank's share in one process)."""
    if parallel.world_size() > 1:
        if getattr(data, "world_size", 1) != parallel.world_size():
            raise ValueError("under DDP the data must be sharded over the ranks "
                             "(tasks.loading.EpochBatches with rank= and world_size=)")
        return data.num_micro_batches(all_ranks=True)
    return num_micro_batches(data) or 0


def _reader(encoder, probe, data, kind, *, device, precision, encoder_chunk) -> TokenReader:
    return TokenReader(encoder, probe, kind=kind, device=device, precision=precision,
                       encoder_chunk=encoder_chunk, finish=getattr(data, "finish", None),
                       train=False)


@torch.no_grad()
def evaluate_pass(encoder, probe, data, *, device, precision, encoder_chunk, problems,
                  max_failure_fraction, bar: Bar, kind: Kind, predictions: dict | None = None,
                  head: int | None = None) -> tuple[dict[str, float], float, int]:
    """(metrics, seconds, samples) of one pass; with `predictions` (a dict), fills it with the
    kind's per-sample arrays (classification: `path`, `label`, `topk_index`, `topk_prob`, the
    top 5 of the view-merged probabilities). A grid is scored on its chosen `head`."""
    encoder.eval()
    probe.eval()
    read = _reader(encoder, probe, data, kind, device=device, precision=precision,
                   encoder_chunk=encoder_chunk)
    counter = PassCounter(problems, "eval", "evaluation", data, max_failure_fraction)
    total_micro = pass_size(data)
    scorer = kind.scorer(device)
    task = bar.add("eval", num_micro_batches(data), rate=0.0)
    start, samples = time.perf_counter(), 0
    kept = []  # per micro-batch: what the predictions file keeps (None: nothing loaded)
    gathered = not isinstance(scorer, ClassificationScorer)  # keeps its own parts
    for batch in micro_batches(data):
        failpoints.hit("eval")
        micro = read(batch)
        counter.add(micro.size, micro.failures)
        if micro.tokens is None:
            kept.append(None)
            if gathered:
                scorer.note_failed()
        else:
            scores = kind.merge(read.logits(micro))
            if scores.ndim == 3:  # a grid: score one head
                if head is None:
                    raise ValueError("evaluating a probe grid needs the chosen head")
                if getattr(kind, "scores_every_head", False):
                    scorer.head = head  # keeps every head's counts, reports the chosen one's
                else:
                    scores = scores[:, head]
            scorer.update(scores, micro.target, batch)
            samples += micro.size
            if predictions is not None and not gathered:  # per-sample, for statistics later
                kept.append(scorer.kept(scores, micro.target, batch))
        if bar.enabled:  # compute() syncs the device: only when someone watches
            elapsed = time.perf_counter() - start
            bar.update(task, advance=1, rate=samples / max(elapsed, 1e-9), info=scorer.progress())
    counter.settle(total_micro)
    counter.finish()
    kept = [None if k is None else tuple(v.cpu() if isinstance(v, torch.Tensor) else v for v in k)
            for k in kept]  # one copy back per part, after the pass's work is all queued
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
def evaluate_heads(encoder, probe, data, *, device, precision, encoder_chunk, problems,
                   max_failure_fraction, phase: str, kind: Kind | None = None) -> list[float]:
    """The kind's primary metric (top-1 %, mAP) of every head of a grid over one pass of
    `data` (selection)."""
    kind = kind or CLASSIFICATION
    read = _reader(encoder, probe, data, kind, device=device, precision=precision,
                   encoder_chunk=encoder_chunk)
    counter = PassCounter(problems, phase, f"head selection on {phase}", data,
                          max_failure_fraction)
    total_micro = pass_size(data)
    heads = len(getattr(probe, "heads", ())) or 1
    counting = isinstance(kind, Classification)
    correct = torch.zeros(heads, dtype=torch.float64, device=device)
    seen = torch.zeros(1, dtype=torch.float64, device=device)
    parts = []  # other kinds: (scores (n, H, C), target, batch part) per micro-batch
    for batch in micro_batches(data):
        micro = read(batch)
        counter.add(micro.size, micro.failures)
        if micro.tokens is None:
            parts.append(None)
            continue
        scores = kind.merge(read.logits(micro))
        if counting:
            correct += ClassificationScorer.head_correct(scores, micro.target)
        else:
            parts.append((scores.cpu(), micro.target.cpu(), _selection_part(batch)))
        seen += micro.size
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


def choose_head(scores: list[float]) -> int:
    """The best head; one without a score (mAP of a split without positives: NaN) is never
    chosen, ties go to the first."""
    return max(range(len(scores)),
               key=lambda h: (scores[h] if math.isfinite(scores[h]) else -math.inf, -h))


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
    """`evaluate` plus a dict {precision, eval_s, samples, predictions} for the record."""
    device = torch.device(device)
    precision = resolve_precision(device, bf16)
    prepare_encoder(encoder, device, precision)
    probe.to(device)
    problems = DataProblems()
    predictions: dict = {}
    with Bar(progress, fields=BAR_FIELDS) as bar:
        metrics, seconds, samples = evaluate_pass(
            encoder, probe, loader, device=device, precision=precision,
            encoder_chunk=encoder_chunk, problems=problems,
            max_failure_fraction=max_failure_fraction, bar=bar, predictions=predictions,
            kind=kind or Classification(topk))
    return metrics, problems, {"precision": precision, "eval_s": round(seconds, 3),
                               "samples": samples, "predictions": predictions}
