"""Label-efficiency curves: accuracy against the fraction of training labels, from fold records.

A run on a label-efficiency fold (`harness data split`, then `harness run --split 10pct:seed1`)
records its fold in the protocol: `protocol.task.train_fold = {fraction, seed}`, with the fold's
manifest under `protocol.task.manifests.train`. The folds of one curve differ in those alone
(and in the selection split held out from the fold's training data, where a probe grid chose
its head): everything else of the protocol, the `base` protocol, is the same. A curve is one
(encoder label, checkpoint) under one base protocol on one task; a point is one fraction, the
mean over its folds (one run per fold seed, the newest, as `harness table vjepa-low-shot`
averages them) with a 95% interval (`results.intervals`). Full-label runs under the same base
protocol are the point at 100%.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from results.columns import column_names
from results.intervals import cell_interval
from results.leaderboard import (Cell, _checkpoint_labels, decimals_for, encoder_labels,
                                 filter_frame)
from results.record import protocol_id

FULL = 1.0


@dataclass
class Point:
    fraction: float                    # of the training labels, (0, 1]
    mean: float
    low: float | None
    high: float | None
    how: str | None                    # how the interval was made
    runs: int
    folds: list = field(default_factory=list)       # the fold seeds averaged
    paths: list = field(default_factory=list)


@dataclass
class Curve:
    task: str
    encoder: str                       # the encoder's label
    checkpoint: str
    column: str                        # the base protocol's name (`k400 (16x8x3, attentive)`)
    base_id: str                       # protocol id of the base protocol
    points: list[Point] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.encoder} ({self.checkpoint})"


def train_fold(protocol) -> dict | None:
    fold = (protocol.get("task") or {}).get("train_fold") if isinstance(protocol, dict) else None
    return fold if isinstance(fold, dict) and "fraction" in fold else None


def base_protocol(protocol: dict) -> dict:
    """The protocol without what sets a fold apart: the fold itself, its training manifest and
    the selection split held out from it."""
    out = copy.deepcopy(protocol) if isinstance(protocol, dict) else {}
    task = out.get("task")
    if isinstance(task, dict):
        task.pop("train_fold", None)
        task.pop("selection_split", None)
        manifests = task.get("manifests")
        if isinstance(manifests, dict):
            manifests.pop("train", None)
    return out


def curves(frame, *, tasks=None, encoders=None,
           metric: str = "top1") -> tuple[list[Curve], list[str]]:
    """The label-efficiency curves of a `ResultStore.frame()` and notes for the reader."""
    if frame is None or frame.empty:
        return [], []
    if metric not in frame.columns:
        return [], [f"no record has metric {metric!r}"]
    df, notes = filter_frame(frame, tasks=tasks, encoders=encoders)
    df = df[df[metric].notna()].copy()
    if df.empty:
        return [], notes
    df["encoder"] = encoder_labels(df)
    df["checkpoint"] = _checkpoint_labels(df)
    df["fold"] = [train_fold(p) for p in df["protocol"]]
    df["base_id"] = [protocol_id(base_protocol(p)) for p in df["protocol"]]
    df = df.sort_values("created", kind="stable")
    # Only rows and base protocols that have folds make curves; full-label runs join them.
    with_folds = {(r["task"], r["encoder"], r["checkpoint"], r["base_id"])
                  for _, r in df.iterrows() if r["fold"] is not None}
    out: list[Curve] = []
    for task in sorted({k[0] for k in with_folds}):
        sub = df[df["task"] == task]
        bases = list(dict.fromkeys(k[3] for k in sorted(with_folds) if k[0] == task))
        protocols = {b: base_protocol(sub[sub["base_id"] == b]["protocol"].iloc[0]) for b in bases}
        names = column_names(task, bases, protocols)
        for key in sorted(k for k in with_folds if k[0] == task):
            runs = sub[(sub["encoder"] == key[1]) & (sub["checkpoint"] == key[2])
                       & (sub["base_id"] == key[3])]
            curve = Curve(task, key[1], key[2], names[key[3]], key[3])
            curve.points = _points(runs, metric)
            out.append(curve)
    if len({(c.task, c.column) for c in out}) > len({c.task for c in out}):
        notes.append("a task with folds under several protocols: one curve per protocol")
    return out, notes


def _points(runs, metric: str) -> list[Point]:
    by_fraction: dict[float, dict] = {}
    for _, r in runs.iterrows():
        fold = r["fold"]
        fraction = FULL if fold is None else round(float(fold["fraction"]), 9)
        # One run per fold (the newest: rows are in creation order), as `harness table`
        # averages them; full-label runs, one per probe seed.
        key = ("fold", str(fold.get("seed"))) if fold is not None else ("full", str(r["seed"]))
        by_fraction.setdefault(fraction, {})[key] = r
    points = []
    for fraction in sorted(by_fraction):
        chosen = list(by_fraction[fraction].values())
        values = [float(r[metric]) for r in chosen]
        n = len(values)
        mean = sum(values) / n
        std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
        samples = _int(chosen[0].get("num_samples"))
        paths = [r["path"] for r in chosen if isinstance(r.get("path"), str)]
        cell = Cell(mean=mean, std=std, runs=n, num_samples=samples,
                    decimals=decimals_for(samples), paths=paths, values=values)
        ci = cell_interval(cell, metric)
        points.append(Point(fraction, mean, ci[0] if ci else None, ci[1] if ci else None,
                            ci[2] if ci else None, n,
                            sorted({r["fold"].get("seed") for r in chosen if r["fold"] is not None},
                                   key=str), paths))
    return points


def _int(value) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else int(f)
