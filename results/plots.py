"""Plots of leaderboards (matplotlib, PNG): per-task bars with 95% intervals, and checkpoint
series (accuracy against pretraining step). Legends sit outside the axes, so they never
cover data.

Intervals (`cell_interval`): a single run with saved predictions gets the bootstrap interval
over its evaluation videos; several runs (seeds, folds) the t interval of their mean; a run
with only its sample count the normal approximation of a binomial proportion.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from results.leaderboard import Cell, Leaderboard


def cell_interval(cell: Cell, metric: str = "top1", *, n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float, str] | None:
    """(low, high, how) of a 95% interval of the cell's value, in the metric's units."""
    k = {"top1": 1, "top5": 5}.get(metric)
    if cell.runs == 1 and cell.paths and k:
        from results.predictions import correct, predictions_path, read_predictions
        from results.stats import bootstrap_ci

        try:
            pred = read_predictions(predictions_path(cell.paths[0]))
        except (OSError, ValueError):
            pred = None
        if pred is not None and len(pred["label"]):
            lo, hi = bootstrap_ci(correct(pred, k), n_boot=n_boot, seed=seed)
            return 100 * lo, 100 * hi, "bootstrap"
    if cell.runs > 1 and cell.std is not None:
        from scipy.stats import t

        half = t.ppf(0.975, cell.runs - 1) * cell.std / math.sqrt(cell.runs)
        return cell.mean - half, cell.mean + half, "t over runs"
    if cell.num_samples and 0 <= cell.mean <= 100:
        p = cell.mean / 100
        half = 1.96 * math.sqrt(p * (1 - p) / cell.num_samples)
        return 100 * (p - half), 100 * (p + half), "binomial"
    return None


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _save(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    from common.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bbox_inches="tight" grows the canvas to hold the legend placed outside the axes.
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def bars(lb: Leaderboard, path: str | os.PathLike, *, title: str | None = None,
         keep_figure: bool = False):
    """Grouped bars: one group per column, one bar per row, 95% interval whiskers."""
    if not lb.columns:
        raise ValueError("nothing to plot: the leaderboard has no cells (check --results and "
                         "the filters)")
    rows = [tuple(k) for k in lb.table.index]
    fig, ax = _figure(max(6.0, 1.6 * len(lb.columns) * max(1, len(rows)) / 3), 4.5)
    width = 0.8 / max(1, len(rows))
    intervals = {}
    for j, row in enumerate(rows):
        xs, ys, lo, hi = [], [], [], []
        for i, col in enumerate(lb.columns):
            cell = lb.cells.get((row, col.name))
            if cell is None:
                continue
            ci = cell_interval(cell, lb.metric)
            intervals[(row, col.name)] = ci
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(cell.mean)
            lo.append(cell.mean - ci[0] if ci else 0.0)
            hi.append(ci[1] - cell.mean if ci else 0.0)
        ax.bar(xs, ys, width=width * 0.95, yerr=[lo, hi], capsize=3,
               label=f"{row[0]} ({row[1]})")
    ax.set_xticks(range(len(lb.columns)))
    ax.set_xticklabels([c.name for c in lb.columns], rotation=15, ha="right")
    ax.set_ylabel(f"{lb.metric} (%)")
    ax.set_title(title or f"{lb.metric} per task, 95% intervals")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    # Protocol ids under the legend, outside the axes (the x labels take the space below).
    ax.text(1.01, 0.0, "protocols:\n" + "\n".join(f"{c.name} = {c.protocol_id}"
                                                  for c in lb.columns),
            transform=ax.transAxes, fontsize=7, va="bottom", ha="left")
    if keep_figure:
        return fig, ax, intervals
    return _save(fig, path)


def series(lb: Leaderboard, path: str | os.PathLike, *, title: str | None = None,
           keep_figure: bool = False):
    """Accuracy against pretraining step, one line per column; rows named `step N` (see
    `results.series`); random init, when present, as a dashed level per column."""
    from results.series import _step_of

    if not lb.columns:
        raise ValueError("nothing to plot: no records of that encoder match")
    fig, ax = _figure(7.0, 4.5)
    plotted = 0
    for col in lb.columns:
        points, floor = [], None
        for row in lb.table.index:
            cell = lb.cells.get((tuple(row), col.name))
            step = _step_of(row[1])
            if cell is None:
                continue
            if row[1] == "random-init":
                floor = cell.mean
                continue
            if math.isfinite(step):
                ci = cell_interval(cell, lb.metric)
                points.append((step, cell.mean, ci))
        if not points:
            continue
        points.sort()
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        err = [[y - (p[2][0] if p[2] else y) for p, y in zip(points, ys)],
               [(p[2][1] if p[2] else y) - y for p, y in zip(points, ys)]]
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=col.name)
        if floor is not None:  # random init of the same column, in the same colour
            ax.axhline(floor, linestyle="--", linewidth=1, color=line[0].get_color(),
                       label=f"{col.name}: random init")
        plotted += 1
    if not plotted:
        raise ValueError("no checkpoint with a known pretraining step: the records' "
                         "checkpoint.step is empty")
    ax.set_xlabel("pretraining step")
    ax.set_ylabel(f"{lb.metric} (%)")
    ax.set_title(title or f"{lb.metric} against pretraining step, 95% intervals")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    if keep_figure:
        return fig, ax
    return _save(fig, path)
