"""Leaderboards: encoders x tasks, numbers side by side only under the same protocol_id.

- rows: (encoder, checkpoint), the encoder shown by its label (`encoder_label`: the registry
  name plus the architecture that differs from the entry, e.g. `videomae_vits (embed_dim 192,
  depth 2)`), so an overridden model never shares the row of the real-size entry; several
  checkpoints of one encoder are several rows;
- columns: one per (task, protocol), named by what sets the protocol apart and where it departs
  from the task's published protocol (`results.columns`: `k400 (16x8x3, attentive; epochs 1)`),
  with the protocol id and version in `legend`; a task under several protocols splits into
  columns and a note names the fields that differ (`frames 16 vs 8`);
- the metric: one for every column, or each column's own (its protocol's headline metric;
  a board mixing metrics names it in each column not ranked by top1: `ava (roi_linear; mAP)`);
- cells: one run, or the mean +- std of several (seeds, low-shot folds) with their count; rounded
  to the precision the evaluated split supports; a cell evaluated on fewer samples than its
  split lists shows the count;
- the best cell of each column is marked `*`, and cells not significantly different from it
  `~` (`results.significance`);
- `mean rank`: the average rank of a row over the columns (MTEB's aggregate), over the columns
  named in the legend.

pandas is imported inside the functions: `results/__init__` imports this module eagerly (so that
`results.leaderboard` is always the function, never this module) and must stay light.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from results.columns import column_names, headline_metric, mismatch_note
from results.significance import ALPHA, mark
from results.frame import BASE_COLUMNS

__all__ = ["BEST", "TIED", "ROW_KEYS", "Cell", "Column", "Leaderboard", "decimals_for",
           "filter_frame", "leaderboard"]

if TYPE_CHECKING:
    import pandas as pd

ROW_KEYS = ["encoder", "checkpoint"]
BEST, TIED = "*", "~"


@dataclass
class Cell:
    """One leaderboard cell: a run, or several runs (seeds, folds) of one row and column."""

    mean: float
    std: float | None = None
    runs: int = 1
    num_samples: int | None = None     # evaluated samples (of the first run)
    split_size: int | None = None      # samples the split's manifest lists
    decimals: int = 1
    best: bool = False
    tied: bool = False                 # not significantly different from the column's best
    test: str | None = None            # the test behind `tied` / not tied
    p_value: float | None = None
    paths: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def short(self) -> bool:
        return (self.num_samples is not None and self.split_size is not None
                and self.num_samples < self.split_size)

    def number(self, value: float | None = None) -> str:
        value = self.mean if value is None else value
        return f"{value:.{self.decimals}f}"

    def text(self, marks: bool = True) -> str:
        out = self.number()
        if self.runs > 1:
            out += f" ± {self.number(self.std or 0.0)} (n={self.runs})"
        if self.short:
            out += f" [{self.num_samples}/{self.split_size}]"
        if marks:
            out += BEST if self.best else TIED if self.tied else ""
        return out


@dataclass
class Column:
    name: str
    task: str
    protocol_id: str
    protocol: dict
    version: int
    precision: str | None
    metric: str = "top1"

    def legend(self) -> str:
        precision = f", {self.precision}" if self.precision else ""
        return (f"{self.name}: {self.metric}, protocol {self.protocol_id} "
                f"(v{self.version}{precision})")


@dataclass
class Leaderboard:
    """`table`: index (encoder, checkpoint), one column of means per (task, protocol); `cells`:
    (row, column name) -> Cell; `legend`: what each column is; `notes`: what else the reader
    must know; `mean_rank` (a Series) and `rank_over` (the columns it ranks over)."""

    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    metric: str = "top1"
    cells: dict = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)
    mean_rank: Any = None
    rank_over: list[str] = field(default_factory=list)
    cost: Any = None                   # DataFrame of cost columns per row, when asked for


def _checkpoint_labels(frame: pd.DataFrame) -> pd.Series:
    import pandas as pd

    # Two different checkpoints can share a file name (every run's `latest.pth.tar`): then the
    # label carries the step where known, else a sha256 prefix, so their rows stay apart.
    labels = frame["checkpoint"].astype(object).where(frame["checkpoint"].notna(), "none")
    sha = frame["checkpoint_sha256"] if "checkpoint_sha256" in frame else pd.Series(
        [None] * len(frame), index=frame.index)
    if "label" in frame:  # a run's own display name (`label=...`) names its row
        named = frame["label"].notna() & (frame["label"].astype(str) != "")
        labels = labels.where(~named, frame["label"])
    out = labels.copy()
    for (enc, label), idx in frame.groupby([frame["encoder"], labels]).groups.items():
        shas = {s for s in sha.loc[idx] if isinstance(s, str) and s}
        if len(shas) > 1:
            for i in idx:
                s = sha.loc[i]
                out.loc[i] = f"{label}@{s[:8]}" if isinstance(s, str) and s else label
    return out


def decimals_for(n: float | None) -> int:
    """Decimals a percentage measured on `n` samples supports: the last digit shown is no
    finer than the worst-case standard error, 50/sqrt(n) points (0 below 2,500 samples, 1 up
    to 250,000, at most 2). Unknown n: 1."""
    if n is None or not n or (isinstance(n, float) and math.isnan(n)):
        return 1
    se = 50.0 / math.sqrt(float(n))
    return int(min(2, max(0, math.ceil(-math.log10(se)))))


def _parse_list(value: Iterable[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    out = [v.strip() for v in value if v and v.strip()]
    return out or None


def encoder_labels(frame: pd.DataFrame) -> list[str]:
    """Each row's encoder as shown and grouped: `encoder_label`, else the registry name (frames
    made before the column existed)."""
    if "encoder_label" not in frame:
        return [str(n) for n in frame["encoder"]]
    return [str(lab) if isinstance(lab, str) and lab else str(n)
            for n, lab in zip(frame["encoder"], frame["encoder_label"])]


def filter_frame(frame: pd.DataFrame, *, encoders=None, tasks=None, protocols=None,
                 since=None, until=None) -> tuple[pd.DataFrame, list[str]]:
    """Rows of `frame` matching every filter given: encoder names or globs (`vjepa_*`), task
    names, protocol id prefixes, and a date range on `created` (inclusive, any ISO date)."""
    import pandas as pd

    notes = []
    df = frame
    shown = encoder_labels(df) if encoders else []
    # A label holds commas (`videomae_vits (embed_dim 192, depth 2)`): a value naming one
    # whole is that one, not a list.
    whole = isinstance(encoders, str) and (encoders in shown or encoders in set(df["encoder"]))
    encoders = [encoders] if whole else _parse_list(encoders)
    tasks, protocols = _parse_list(tasks), _parse_list(protocols)
    if encoders:
        # A pattern matches the registry name or the label (`videomae_vits (depth 2)`).
        names = set(df["encoder"]) | set(shown)
        for pat in encoders:
            if not any(fnmatch.fnmatchcase(str(n), pat) for n in names):
                notes.append(f"encoder {pat}: no records")
        hit = [any(fnmatch.fnmatchcase(str(n), pat) or fnmatch.fnmatchcase(str(lab), pat)
                   for pat in encoders) for n, lab in zip(df["encoder"], shown)]
        df = df[hit] if len(df) else df
    if tasks:
        for task in tasks:
            if task not in set(df["task"]):
                notes.append(f"{task}: no records")
        df = df[df["task"].isin(tasks)]
    if protocols:
        keep = df["protocol_id"].astype(str).map(lambda p: any(p.startswith(q) for q in protocols))
        df = df[keep]
    for bound, op in ((since, "ge"), (until, "le")):
        if bound is None:
            continue
        try:
            ts = pd.Timestamp(bound)
        except (ValueError, TypeError):
            raise ValueError(f"cannot read the date {bound!r}; use an ISO date such as 2026-12-01") from None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if op == "le" and len(str(bound)) <= 10:  # a bare date includes that whole day
            ts = ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        df = df[getattr(df["created"], op)(ts)]
    return df, notes


def leaderboard(frame: pd.DataFrame, tasks: Iterable[str] | str | None = None,
                metric: str = "top1", *, encoders=None, protocols=None, since=None,
                until=None, significance: bool = True, cost: bool = False) -> Leaderboard:
    """Build a leaderboard of `metric` from `ResultStore.frame()` (see the module's doc), or
    from `ResultStore.cell_frame()` (runs folded into groups, already windowed by date: the
    same board). `metric` None: each column under its protocol's own metric
    (`results.columns.headline_metric`: top1, mAP, recall5, a VoE run's `paper_relative_mean`);
    the grouped frame is then `cell_frame(None)`, the frames of those metrics together."""
    import pandas as pd

    notes: list[str] = []
    tasks = _parse_list(tasks)
    empty = pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=ROW_KEYS))
    headline = metric is None
    shown = metric or "headline"
    if frame is None or frame.empty:
        return Leaderboard(empty, ["no result records found"], shown)
    grouped = "_runs" in frame
    if not headline and metric not in frame.columns:
        metrics = [c for c in frame.columns if c not in BASE_COLUMNS]
        return Leaderboard(empty, [f"no record has metric {metric!r}; metrics present: "
                                   f"{', '.join(metrics) or 'none'}"], metric)

    if grouped:  # the store applied the date window before one record per run was kept
        since = until = None
    df, notes = filter_frame(frame, encoders=encoders, tasks=tasks, protocols=protocols,
                             since=since, until=until)
    df = df.copy()
    if grouped and headline:  # frames of several metrics: each group under its own headline
        df = df[df["_metric"] == df["_main"]]
    elif grouped:
        df["_metric"] = metric
    else:
        df["_metric"] = [headline_metric(p) for p in df["protocol"]] if headline else metric
        df["_value"] = math.nan
        for name in df["_metric"].unique():  # each row's value of its own metric
            if name in df:
                rows = df["_metric"] == name
                df.loc[rows, "_value"] = df.loc[rows, name]
    if grouped:
        lacking = df[df["_lacking"] > 0].assign(_count=lambda d: d["_lacking"])
        df = df[df["_n"] > 0]
    else:
        lacking = df[df["_value"].isna()].assign(_count=1)
        df = df[df["_value"].notna()]
    for name, missing in lacking.groupby("_metric", sort=True):
        notes.append(f"{int(missing['_count'].sum())} record(s) without {name} left out "
                     f"({', '.join(sorted(set(missing['task'])))})")
    if df.empty:
        return Leaderboard(empty, notes or ["no records match"], shown)

    df["encoder"] = encoder_labels(df)
    df["checkpoint"] = _checkpoint_labels(df)
    df = df.sort_values("created", kind="stable")
    if "run_id" in df and df["run_id"].notna().all():
        # A frame built from records in memory may hold a run and its re-run: the newer stands.
        before = len(df)
        df = df.drop_duplicates(["run_id"], keep="last")
        if len(df) < before:
            notes.append(f"{before - len(df)} re-run record(s) replaced by their newer record")

    order = tasks if tasks is not None else sorted(df["task"].unique())
    mixed = df["_metric"].nunique() > 1
    columns: list[Column] = []
    groups: dict[str, pd.DataFrame] = {}
    for task in order:
        sub = df[df["task"] == task]
        if sub.empty:
            continue
        # Most-used protocol first: it is the reference the others are compared with.
        size = ("_n", "sum") if grouped else ("protocol_id", "size")
        pids = (sub.groupby("protocol_id").agg(n=size, first=("created", "min"))
                .sort_values(["n", "first"], ascending=[False, True]).index.tolist())
        protocols_of = {pid: sub[sub["protocol_id"] == pid]["protocol"].iloc[0] for pid in pids}
        departures = {pid: _departures(sub[sub["protocol_id"] == pid]) for pid in pids}
        names = column_names(task, pids, protocols_of, departures)
        if mixed:  # a board of several metrics: each column not ranked by top1 says its own
            metric_of = dict(zip(sub["protocol_id"], sub["_metric"]))
            names = {pid: name if metric_of[pid] == "top1" else _append_metric(name, metric_of[pid])
                     for pid, name in names.items()}
        for pid in pids:
            first = sub[sub["protocol_id"] == pid].iloc[0]
            version, precision = _present(first.get("protocol_version")), _present(first.get("precision"))
            col = Column(names[pid], task, pid, protocols_of[pid],
                         int(version or _version(protocols_of[pid])),
                         precision or _precision(protocols_of[pid]), first["_metric"])
            columns.append(col)
            groups[col.name] = sub[sub["protocol_id"] == pid]
        if len(pids) > 1:
            notes.append(mismatch_note(task, pids, protocols_of, names))

    shown = ", ".join(dict.fromkeys(c.metric for c in columns))
    cells: dict[tuple, Cell] = {}
    for col in columns:
        for key, runs in groups[col.name].groupby(ROW_KEYS, sort=False):
            cells[(tuple(key), col.name)] = _grouped_cell(runs) if grouped else _cell(runs, "_value")
    if any(c.runs > 1 for c in cells.values()):
        notes.append("cells of several runs (seeds, folds) show mean ± std (n=runs)")
    if any(c.short for c in cells.values()):
        notes.append("[N/M]: evaluated on N of the split's M samples (unreadable videos skipped)")

    rows = list(dict.fromkeys(k for k, _ in cells))
    table = pd.DataFrame({col.name: {row: cells[(row, col.name)].mean for row in rows
                                     if (row, col.name) in cells} for col in columns})
    table = table.reindex(pd.MultiIndex.from_tuples(rows, names=ROW_KEYS))
    ranks = table.rank(axis=0, ascending=False, method="average")
    if len(table.columns) > 1:
        # Best mean rank first (MTEB's order); the first column breaks ties.
        order = ranks.mean(axis=1).to_frame("rank").assign(first=table.iloc[:, 0])
        table = table.loc[order.sort_values(["rank", "first"], ascending=[True, False],
                                            na_position="last", kind="stable").index]
    elif len(table.columns):
        table = table.sort_values(list(table.columns[:1]), ascending=False, na_position="last")
    if significance:
        for col in columns:
            mark([cells[(r, col.name)] for r in table.index if (r, col.name) in cells],
                 col.metric)
    lb = Leaderboard(table, notes, shown, cells, columns, [c.legend() for c in columns])
    if len(columns) > 1:
        lb.mean_rank = ranks.mean(axis=1).reindex(table.index)
        lb.rank_over = [c.name for c in columns]
        lb.legend.append(f"mean rank: average rank over {', '.join(lb.rank_over)} "
                         f"(1 = best; a row lacking a column is ranked over the others)")
    if significance:
        lb.legend.append(f"{BEST} best in its column; {TIED} not significantly different from the "
                         f"best at {ALPHA:g} (McNemar on saved predictions, else Welch over runs, "
                         f"else a two-proportion test)")
    if cost:
        lb.cost = _cost(df, table.index)
        lb.legend.append("cost: params (M) and GFLOPs per clip at the run's input size (the "
                         "record's encoder metadata); clips/s of evaluation, mean over the row's "
                         "runs; device-h: wall hours x world size, summed over the row's runs")
    return lb


def _append_metric(name: str, metric: str) -> str:
    return name[:-1] + f"; {metric})" if name.endswith(")") else f"{name} ({metric})"


def _present(value: Any) -> Any:
    """None for pandas' empty cells (NaN, None, NaT), else the value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _departures(runs: pd.DataFrame) -> dict:
    """The protocol's departures from the task's published one (the first record that names
    them; records of one protocol id share them)."""
    if "protocol_departures" not in runs:
        return {}
    if "_dep_at" in runs:  # groups of runs: the first run naming them, over the groups
        runs = runs.sort_values("_dep_at", kind="stable")
    return next((d for d in runs["protocol_departures"] if isinstance(d, dict) and d), {})


def _version(protocol: Any) -> int:
    return int((protocol or {}).get("protocol_version") or 1) if isinstance(protocol, dict) else 1


def _precision(protocol: Any) -> str | None:
    return protocol.get("precision") if isinstance(protocol, dict) else None


def _int_or_none(value) -> int | None:
    try:
        return None if value is None or math.isnan(float(value)) else int(value)
    except (TypeError, ValueError):
        return None


def _cell(runs: pd.DataFrame, metric: str) -> Cell:
    values = [float(v) for v in runs[metric]]
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    samples = _int_or_none(runs["num_samples"].iloc[0]) if "num_samples" in runs else None
    size = _int_or_none(runs["split_size"].iloc[0]) if "split_size" in runs else None
    paths = [p for p in runs["path"] if isinstance(p, str)] if "path" in runs else []
    return Cell(mean=mean, std=std, runs=n, num_samples=samples, split_size=size,
                decimals=decimals_for(size or samples), paths=paths, values=values)


def _grouped_cell(groups: pd.DataFrame) -> Cell:
    """`_cell` of the runs of one or more groups (`results.run_cells`), in the runs' order."""
    from results.run_cells import merge_runs

    values, paths, samples, size = merge_runs(list(groups["_runs"]))
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    samples, size = _int_or_none(samples), _int_or_none(size)
    return Cell(mean=mean, std=std, runs=n, num_samples=samples, split_size=size,
                decimals=decimals_for(size or samples), paths=list(paths), values=list(values))


COST_COLUMNS = {"params": "params (M)", "gflops_per_clip": "GFLOPs/clip",
                "clips_per_s": "clips/s", "device_hours": "device-h"}


def _cost(df: pd.DataFrame, index) -> pd.DataFrame:
    agg = {"params": "first", "gflops_per_clip": "first", "clips_per_s": "mean",
           "device_hours": "sum"}
    have = [c for c in agg if c in df]
    out = df.groupby(ROW_KEYS)[have].agg({c: agg[c] for c in have})
    if "params" in out:
        out["params"] = out["params"] / 1e6
    return out.reindex(index).rename(columns=COST_COLUMNS)
