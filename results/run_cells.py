"""The leaderboard's input straight from the index: one row per group of runs, not per run.

`results.leaderboard` reads a frame of one row per run (`ResultStore.frame()`): at 100k runs
building that frame costs more than the board itself. `cell_frame` asks the index (SQL: the
date window and one record per run identity, ordered as the leaderboard orders runs) for the
few columns a board reads, and folds runs that the board can only ever put in one cell (same
encoder, encoder label, checkpoint, checkpoint sha256, display label, task and protocol id:
seeds and folds of one row and column) into one row. Each such row carries what the board
reads of its runs:

  _runs     [(order, value, path, num_samples, split_size)] of the runs that have the metric,
            in the board's order of runs (creation time, then the frame's order: task, encoder,
            file): `_cell` takes mean, std, the first run's sample counts and every path;
  _n        how many they are (a protocol's weight when its columns are ordered);
  _lacking  runs without the metric (the board's note counts them);
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
import os
import re

from results.frame import BASE_COLUMNS

__all__ = ["GROUP_KEYS", "cell_frame"]

# What sets a cell apart before labels are made (see `results.leaderboard`): finer than a cell,
# never coarser.
GROUP_KEYS = ["encoder", "encoder_label", "checkpoint", "checkpoint_sha256", "label", "task",
              "protocol_id"]
_FIRST = ["created_us", "protocol_ref", "departures_ref", "protocol_version", "precision",
          "num_samples", "split_size"]
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+$")


def usable_metric(metric: str) -> bool:
    """A metric whose frame column is its name (not a base column's, not renamed)."""
    return bool(_PLAIN_NAME.match(metric)) and metric not in BASE_COLUMNS \
        and metric != "num_samples" and not metric.startswith("metric.")


def cell_frame(index, metric: str, *, low_us=None, high_us=None):
    """The grouped frame (see the module's doc) of the runs the index selects in
    [low_us, high_us], one per run identity; None when no run has `metric` (the frame of runs
    then says what the store holds)."""
    cols = GROUP_KEYS + _FIRST + ["path_key", "path", "odd"]
    at = {name: i for i, name in enumerate(cols)}
    nkeys, nfirst = len(GROUP_KEYS), len(_FIRST)
    base = str(index.root)
    prefix = "" if base == "." else base.rstrip("/") + "/"  # as str(root / rel) writes it
    groups: dict[tuple, dict] = {}
    texts = index.texts()
    named: dict = {}  # departures ref -> the dict when it names departures, else None
    seen_metric = False
    ref_at = nkeys + _FIRST.index("departures_ref")
    # Rows are read one by one and kept as small tuples (order, file, value, path, sample
    # counts); of the rest a group keeps its first run's, and its first naming departures.
    for row in index.select_board(cols, low_us=low_us, high_us=high_us, metric=metric):
        *row, text, raw = row
        if row[-1]:  # values SQL could not hold as such (`odd`)
            for name, value in json.loads(row[-1]).items():
                if name in at:
                    row[at[name]] = value
        value = _metric_value(text, raw, metric)
        seen_metric = seen_metric or value is not None
        key = tuple(row[:nkeys])
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"key": key, "runs": [], "lacking": 0, "first": None,
                                   "first_at": None, "dep": None, "dep_at": None}
        if value is None or math.isnan(value):
            group["lacking"] += 1
            continue
        at_run = (row[nkeys], row[-3])  # within a group: creation, then file
        group["runs"].append((at_run, value, prefix + os.fsdecode(row[-2]), row[-5], row[-4]))
        if group["first_at"] is None or at_run < group["first_at"]:
            group["first_at"], group["first"] = at_run, dict(zip(_FIRST, row[nkeys:nkeys + nfirst]))
        ref = row[ref_at]
        if ref not in named:
            departures = texts.get(ref) if ref is not None else None
            named[ref] = departures if isinstance(departures, dict) and departures else None
        if named[ref] is not None and (group["dep_at"] is None or at_run < group["dep_at"]):
            group["dep"], group["dep_at"] = named[ref], at_run
    if not seen_metric:
        return None
    for group in groups.values():
        # The board's order of runs: creation, then the frame's (task, encoder, file); task
        # and encoder are the group's own, so within it creation and file order it.
        task, encoder = group["key"][GROUP_KEYS.index("task")], group["key"][0]
        group["runs"] = [((r[0][0], task, encoder, r[0][1]), *r[1:])
                         for r in sorted(group["runs"], key=lambda r: r[0])]
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


def _frame(groups: dict, metric: str, texts: dict):
    import pandas as pd

    # Orders of runs (tuples) as ranks, for the frame's sortable `_first` and `_dep_at`.
    orders = sorted({o for g in groups.values() for o in
                     ([g["runs"][0][0]] if g["runs"] else []) + ([g["dep_at"]] if g["dep_at"] else [])})
    rank = {o: i for i, o in enumerate(orders)}
    out = []
    for group in groups.values():
        first = group["first"] or dict.fromkeys(_FIRST)
        order = rank[group["runs"][0][0]] if group["runs"] else math.inf
        row = dict(zip(GROUP_KEYS, group["key"]))
        row.update(created=first["created_us"], protocol=texts.get(first["protocol_ref"]),
                   protocol_departures=group["dep"] or {},
                   protocol_version=first["protocol_version"], precision=first["precision"],
                   num_samples=first["num_samples"], split_size=first["split_size"],
                   path=group["runs"][0][2] if group["runs"] else None)
        row[metric] = (sum(r[1] for r in group["runs"]) / len(group["runs"])
                       if group["runs"] else math.nan)
        row.update(_runs=group["runs"], _n=len(group["runs"]), _lacking=group["lacking"],
                   _first=order,
                   _dep_at=math.inf if group["dep_at"] is None else rank[group["dep_at"]])
        out.append(row)
    out.sort(key=lambda r: r["_first"])
    frame = pd.DataFrame(out)
    frame["created"] = pd.to_datetime(frame["created"], unit="us", utc=True)
    return frame
