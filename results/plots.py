"""Plots of leaderboards (matplotlib, PNG): per-task bars with 95% intervals, checkpoint
series (accuracy against pretraining step) and label-efficiency curves (accuracy against the
fraction of training labels). Legends sit outside the axes, so they never cover data.

Intervals (`results.intervals.cell_interval`, inside [0, 100]): a single run with saved
predictions gets the percentile bootstrap over its evaluation videos; a run with only its
sample count the Wilson interval; several runs (seeds, folds) the t interval of their mean,
within [0, 100].

Every text of a figure is literal: names come from records, and matplotlib would read `$...$` in
a label as mathtext (`$\\frac{1}{$` is a parse error that ends the plot) and, with a user's
`text.usetex: True`, hand the label to a LaTeX run. Figures are drawn under `literal_text()`.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from pathlib import Path

from results.escape import printable
from results.intervals import cell_interval
from results.leaderboard import Leaderboard

__all__ = ["bars", "cell_interval", "literal_label", "literal_text", "low_shot", "series"]

# Text drawn as written: no mathtext, never through TeX (whatever the user's matplotlibrc says).
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}


@contextlib.contextmanager
def literal_text():
    """matplotlib settings under which every Text made is literal (`parse_math` and `usetex`
    are read when a Text is made, so the figure keeps them after the context ends)."""
    import matplotlib

    with matplotlib.rc_context(LITERAL_TEXT):
        yield


def _literal(draw):
    """Draw a figure under `literal_text()`."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with literal_text():
            return draw(*args, **kwargs)
    return wrapper


def literal_label(text) -> str:
    """A legend label shown as written: control characters as visible escapes, and a leading
    `_` (which matplotlib reads as "leave out of the legend") behind a space."""
    text = printable(text)
    return " " + text if text.startswith("_") else text


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


def _whiskers(mean: float, ci) -> tuple[float, float]:
    # Lengths below and above the mean; never negative (a bootstrap interval of the saved
    # predictions may sit a hair off the record's own rounded number).
    if not ci:
        return 0.0, 0.0
    return max(0.0, mean - ci[0]), max(0.0, ci[1] - mean)


@_literal
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
            low, high = _whiskers(cell.mean, ci)
            lo.append(low)
            hi.append(high)
        ax.bar(xs, ys, width=width * 0.95, yerr=[lo, hi], capsize=3,
               label=literal_label(f"{row[0]} ({row[1]})"))
    ax.set_xticks(range(len(lb.columns)))
    ax.set_xticklabels([printable(c.name) for c in lb.columns], rotation=15, ha="right")
    ax.set_ylabel(f"{lb.metric} (%)")
    ax.set_title(printable(title or f"{lb.metric} per task, 95% intervals"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    # Protocol ids under the legend, outside the axes (the x labels take the space below).
    ax.text(1.01, 0.0, "protocols:\n" + "\n".join(printable(f"{c.name} = {c.protocol_id}")
                                                  for c in lb.columns),
            transform=ax.transAxes, fontsize=7, va="bottom", ha="left")
    if keep_figure:
        return fig, ax, intervals
    return _save(fig, path)


@_literal
def series(lb: Leaderboard, path: str | os.PathLike, *, title: str | None = None,
           keep_figure: bool = False):
    """Accuracy against pretraining step, one line per column; rows named `step N` (see
    `results.series`); random init, when present, as a dashed level per column."""
    from results.series import _step_of

    if not lb.columns:
        raise ValueError("nothing to plot: no records of that encoder match")
    fig, ax = _figure(7.0, 4.5)
    plotted = 0
    # One line per column and encoder label: an overridden architecture (`vjepa_tiny (depth
    # 2)`) is its own series, never points on the line of the registry entry.
    labels = list(dict.fromkeys(row[0] for row in lb.table.index))
    for col in lb.columns:
        for label in labels:
            name = col.name if len(labels) == 1 else f"{col.name}: {label}"
            points, floor = [], None
            for row in lb.table.index:
                cell = lb.cells.get((tuple(row), col.name))
                if cell is None or row[0] != label:
                    continue
                if row[1] == "random-init":
                    floor = cell.mean
                    continue
                step = _step_of(row[1])
                if math.isfinite(step):
                    points.append((step, cell.mean, cell_interval(cell, lb.metric)))
            if not points:
                continue
            points.sort(key=lambda p: p[0])
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            whiskers = [_whiskers(p[1], p[2]) for p in points]
            line = ax.errorbar(xs, ys, yerr=[[w[0] for w in whiskers], [w[1] for w in whiskers]],
                               marker="o", capsize=3, label=literal_label(name))
            if floor is not None:  # random init of the same column, in the same colour
                ax.axhline(floor, linestyle="--", linewidth=1, color=line[0].get_color(),
                           label=literal_label(f"{name}: random init"))
            plotted += 1
    if not plotted:
        raise ValueError("no checkpoint with a known pretraining step: the records' "
                         "checkpoint.step is empty")
    ax.set_xlabel("pretraining step")
    ax.set_ylabel(f"{lb.metric} (%)")
    ax.set_title(printable(title or f"{lb.metric} against pretraining step, 95% intervals"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    if keep_figure:
        return fig, ax
    return _save(fig, path)


@_literal
def low_shot(curves: list, path: str | os.PathLike, *, metric: str = "top1",
             title: str | None = None, keep_figure: bool = False):
    """Label-efficiency curves (`results.label_efficiency.curves`): one panel per task, one
    line per (encoder, checkpoint) and protocol, the fraction of labels on a log axis, the mean
    over each fraction's folds with its 95% interval."""
    if not curves:
        raise ValueError("nothing to plot: no label-efficiency fold records match")
    tasks = list(dict.fromkeys(c.task for c in curves))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Panels stacked, so each legend can sit right of its own axes without covering another.
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.0, 4.2 * len(tasks)), squeeze=False)
    axes = [row[0] for row in axes]
    for ax, task in zip(axes, tasks):
        mine = [c for c in curves if c.task == task]
        several = len({c.column for c in mine}) > 1
        fractions = set()
        for c in mine:
            xs = [100 * p.fraction for p in c.points]
            ys = [p.mean for p in c.points]
            whiskers = [_whiskers(p.mean, (p.low, p.high) if p.low is not None else None)
                        for p in c.points]
            fractions.update(xs)
            ax.errorbar(xs, ys, yerr=[[w[0] for w in whiskers], [w[1] for w in whiskers]],
                        marker="o", capsize=3,
                        label=literal_label(f"{c.name}, {c.column}" if several else c.name))
        ax.set_xscale("log")
        ticks = sorted(fractions)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}%" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training labels (% of the training split)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(printable(mine[0].column if not several else task), fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    fig.suptitle(printable(title or f"{metric} against the fraction of labels: mean over "
                           f"folds, 95% intervals"))
    fig.subplots_adjust(hspace=0.45)
    if keep_figure:
        return fig, axes
    return _save(fig, path)
