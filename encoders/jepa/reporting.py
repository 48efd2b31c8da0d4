"""What a pretraining run reports as it goes: one CSV row per logged step in the run folder
(`metrics.csv`) and a progress bar. The loss plot is drawn from the CSV by
`results/pretrain_plot.py`, outside the trainer.
"""
from __future__ import annotations

import csv
from pathlib import Path

METRICS_NAME = "metrics.csv"
METRICS_FIELDS = ("step", "epoch", "batch", "loss", "lr", "wd", "momentum", "target_rank",
                  "context_gain", "clips_per_s", "elapsed_s")


class MetricsLog:
    """Per-step CSV in the run folder; on resume, rows past the checkpoint's step are dropped.

    `first_rank`: the first `target_rank` kept, the collapse warning's reference."""

    def __init__(self, path: Path, resume_step: int, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.first_rank: float | None = None
        if not enabled:
            return
        rows = []
        if path.is_file() and resume_step > 0:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        ranks = [float(r["target_rank"]) for r in rows if r.get("target_rank")]
        self.first_rank = ranks[0] if ranks else None
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, **row) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=METRICS_FIELDS).writerow(row)


def rounded(value: float | None, digits: int = 4) -> float | str:
    """A CSV cell: the value rounded, or empty when the step did not measure it."""
    return "" if value is None else round(value, digits)


class Progress:
    """rich progress bar (loss, lr, clips/s); a no-op when off or not rank 0."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total, start
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("pretrain", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, loss: float, lr: float, rate: float | None) -> None:
        if self.bar is not None:
            info = f"loss {loss:.4f} lr {lr:.2e}" + (f" {rate:.1f} clips/s" if rate else "")
            self.bar.update(self.task, completed=step, info=info)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


__all__ = ["METRICS_FIELDS", "METRICS_NAME", "MetricsLog", "Progress", "rounded"]
