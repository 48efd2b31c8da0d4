"""The leaderboard's input straight from the index: one row per group of runs, not per run.

`results.leaderboard` reads a frame of one row per run (`ResultStore.frame()`): at 100k runs
building that frame costs more than the board itself. `cell_frame` folds runs that the board
can only ever put in one cell (same encoder, encoder label, checkpoint, checkpoint sha256,
display label, task and protocol id: seeds and folds of one row and column; the index keeps
each record's group as `cell_id`) into one row. The index hands over the runs (one record per
run identity, the date window applied) ordered by group, creation and file, and only the few
columns a cell needs of each run; the rest is read for each group's first run alone. Each row
carries what the board reads of its runs:

  _runs     `Runs`: the value, path and order of each run that has the metric, in the board's
            order of runs (creation time, then the frame's order: task, encoder, file), and
            the first run's sample counts: `merge_runs` gives a cell's mean, std and paths;
  _n        how many they are (a protocol's weight when its columns are ordered);
  _lacking  runs without the metric (the board's note counts them);
  _metric   the metric read; `_main` the group's headline metric (`headline_metric` of its
            protocol): a board of each task's headline keeps the rows where the two agree;
  _first    the order of the group's first run, `_dep_at` that of its first run naming
            protocol departures: a column's protocol, version, precision and departures are
            its first run's, as on the frame of runs.

The base columns (`created`, `protocol`, `protocol_departures`, `protocol_version`,
`precision`, `num_samples`, ...) hold the group's first run's values. The board built from this
frame is the board built from the frame of runs (`tests/test_results_index.py` compares both on
a hostile store): the values of a cell are summed in the same order, so even the last bit of a
mean is the same. Metrics named like a base column, boards with cost columns and series are
built from the frame of runs (`None` here).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from results.columns import headline_metric
from results.frame import BASE_COLUMNS, GROUP_KEYS

__all__ = ["Runs", "cell_frame", "merge_runs"]

_FIRST = ["created_us", "protocol_ref", "departures_ref", "protocol_version", "precision",
          "num_samples", "split_size"]
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+$")


@dataclass
class Runs:
    """The runs of one group that have the metric, in the board's order: `orders` holds each
    run's (creation in microseconds, file order key); within a group task and encoder are the
    same, so these order it."""

    task: str
    encoder: str
    orders: list = field(default_factory=list)
    values: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    num_samples: object = None    # of the first run
    split_size: object = None

    def key(self, i: int) -> tuple:
        """Run i's place in the board's order of runs over groups."""
        created, file = self.orders[i]
        return created, self.task, self.encoder, file


def merge_runs(groups: list[Runs]) -> tuple[list, list, object, object]:
    """(values, paths, first run's num_samples, split_size) of the runs of `groups` (the
    groups of one cell) in the board's order of runs."""
    groups = [g for g in groups if g.values]
    if len(groups) == 1:
        g = groups[0]
        return g.values, g.paths, g.num_samples, g.split_size
    merged = sorted((g.key(i), v, p, g) for g in groups
                    for i, (v, p) in enumerate(zip(g.values, g.paths)))
    first = merged[0][3]
    return [m[1] for m in merged], [m[2] for m in merged], first.num_samples, first.split_size


def usable_metric(metric: str) -> bool:
    """A metric whose frame column is its name (not a base column's, not renamed)."""
    return bool(_PLAIN_NAME.match(metric)) and metric not in BASE_COLUMNS \
        and metric != "num_samples" and not metric.startswith("metric.")


def cell_frame(index, metric: str, *, low_us=None, high_us=None):
    """The grouped frame (see the module's doc) of the runs the index selects in
    [low_us, high_us], one per run identity; None when no run has `metric` (the frame of runs
    then says what the store holds)."""
    base = str(index.root)
    prefix = "" if base == "." else base.rstrip("/") + "/"  # as str(root / rel) writes it
    texts = index.texts()
    named: dict = {}  # departures ref -> the dict when it names departures, else None
    groups = []
    with index.snapshot():
        cell, group = None, None
        for cell_id, created, file, rowid, path, dep_ref, text, raw in \
                index.board_runs(metric, low_us=low_us, high_us=high_us):
            if cell_id != cell:
                cell = cell_id
                group = {"any": rowid, "first": None, "dep": None, "dep_at": None,
                         "lacking": 0, "orders": [], "values": [], "paths": []}
                groups.append(group)
            value = _metric_value(text, raw, metric)
            if value is None or math.isnan(value):
                group["lacking"] += 1
                continue
            if group["first"] is None:
                group["first"] = rowid
            if group["dep"] is None:
                if dep_ref not in named:
                    departures = texts.get(dep_ref) if dep_ref is not None else None
                    named[dep_ref] = departures if isinstance(departures, dict) and departures \
                        else None
                if named[dep_ref] is not None:
                    group["dep"], group["dep_at"] = named[dep_ref], (created, file)
            group["orders"].append((created, file))
            group["values"].append(value)
            group["paths"].append(prefix + path.decode("utf-8", "surrogateescape"))
        if not any(g["values"] for g in groups):
            return None
        columns = GROUP_KEYS + _FIRST + ["odd"]
        details = index.rows_by_id(columns, {g["first"] or g["any"] for g in groups})
    at = {name: i for i, name in enumerate(columns)}
    for group in groups:
        row = list(details[group["first"] or group["any"]])
        if row[-1]:  # values SQL could not hold as such (`odd`)
            for name, value in json.loads(row[-1]).items():
                if name in at:
                    row[at[name]] = value
        group["key"] = tuple(row[:len(GROUP_KEYS)])
        first = dict(zip(_FIRST, row[len(GROUP_KEYS):-1]))
        group["main"] = headline_metric(texts.get(first["protocol_ref"]))
        group["first"] = first if group["first"] is not None else None
        task, encoder = group["key"][GROUP_KEYS.index("task")], group["key"][0]
        group["runs"] = Runs(task, encoder, group.pop("orders"), group.pop("values"),
                             group.pop("paths"), first["num_samples"], first["split_size"])
        if group["dep_at"] is not None:
            group["dep_at"] = (group["dep_at"][0], task, encoder, group["dep_at"][1])
    return _frame(groups, metric, texts)


def _metric_value(text: str | None, raw: str | None, metric: str) -> float | None:
    """The run's `metric` as the frame holds it (a number; bools and text are none), from its
    JSON text, or from the whole metrics text where SQLite could not read it (NaN)."""
    if raw is not None:
        value = json.loads(raw).get(metric)
    elif text is None or text[0] in '"tfn[{':  # absent, text, true, false, null, list, object
        return None
    else:
        return float(text)  # float() reads JSON's numbers as json.loads does, to the bit
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _frame(groups: list, metric: str, texts: dict):
    import pandas as pd

    # Orders of runs (tuples) as ranks, for the frame's sortable `_first` and `_dep_at`.
    firsts = [g["runs"].key(0) if g["runs"].values else None for g in groups]
    orders = sorted({o for o in firsts if o is not None} |
                    {g["dep_at"] for g in groups if g["dep_at"] is not None})
    rank = {o: i for i, o in enumerate(orders)}
    out = []
    for group, first_order in zip(groups, firsts):
        runs = group["runs"]
        first = group["first"] or dict.fromkeys(_FIRST)
        row = dict(zip(GROUP_KEYS, group["key"]))
        row.update(created=first["created_us"], protocol=texts.get(first["protocol_ref"]),
                   protocol_departures=group["dep"] or {},
                   protocol_version=first["protocol_version"], precision=first["precision"],
                   num_samples=first["num_samples"], split_size=first["split_size"],
                   path=runs.paths[0] if runs.paths else None)
        row[metric] = sum(runs.values) / len(runs.values) if runs.values else math.nan
        row.update(_runs=runs, _n=len(runs.values), _lacking=group["lacking"],
                   _metric=metric, _main=group["main"],
                   _first=math.inf if first_order is None else rank[first_order],
                   _dep_at=math.inf if group["dep_at"] is None else rank[group["dep_at"]])
        out.append(row)
    out.sort(key=lambda r: r["_first"])
    frame = pd.DataFrame(out)
    frame["created"] = pd.to_datetime(frame["created"], unit="us", utc=True)
    return frame
