"""Leaderboards: encoders x tasks, numbers side by side only under the same protocol_id.

- rows: (encoder, checkpoint); several checkpoints of one encoder are several rows;
- columns: one per (task, protocol), named by what sets the protocol apart
  (`k400 (16x8x3, attentive)`, plus the fields that differ from the task's other columns), with
  the protocol id and version in `legend`; a task under several protocols splits into columns
  and a note names the fields that differ (`frames 16 vs 8`);
- cells: one run, or the mean +- std of several (seeds, low-shot folds) with their count; rounded
  to the precision the evaluated split supports; a cell evaluated on fewer samples than its
  split lists shows the count;
- the best cell of each column is marked `*`, and cells not significantly different from it
  `~` (McNemar's exact test on the saved per-sample predictions where both are single runs on
  the same samples; Welch's t-test over runs where both have several; else a two-proportion
  test from the sample counts);
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

from results.store import BASE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

ROW_KEYS = ["encoder", "checkpoint"]
# How many differing protocol fields a note spells out before summarising the rest.
_MAX_DIFFS = 4
ALPHA = 0.05
BEST, TIED = "*", "~"

# Protocol fields by the short names readers know them by (the dotted key stays in notes).
SHORT_NAMES = {
    "task.sampling.frames_per_clip": "frames",
    "task.sampling.frame_step": "frame step",
    "task.sampling.eval_segments": "segments",
    "task.sampling.eval_views": "views",
    "task.sampling.eval_placement": "eval placement",
    "task.sampling.train_segments": "train segments",
    "probe.kind": "probe",
    "probe.selection": "selection",
    "probe.depth": "probe depth",
    "protocol_version": "version",
    "precision": "precision",
    "optim.lr": "lr",
    "optim.epochs": "epochs",
    "optim.weight_decay": "wd",
    "optim.batch_size": "batch",
    "task.manifests.eval.sha256": "eval manifest",
    "task.manifests.train.sha256": "train manifest",
    "task.manifests.eval.videos": "eval videos",
    "task.manifests.train.videos": "train videos",
    "task.num_classes": "classes",
}
# Which differing fields name a column first (when the sampling and probe do not tell apart).
_NAME_PRIORITY = ["protocol_version", "precision", "probe.selection", "task.sampling.frame_step",
                  "task.sampling.eval_placement", "optim.epochs", "optim.lr",
                  "task.manifests.train.videos", "task.manifests.train.sha256"]


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

    def legend(self) -> str:
        precision = f", {self.precision}" if self.precision else ""
        return f"{self.name}: protocol {self.protocol_id} (v{self.version}{precision})"


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


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted.key: leaf}; lists and scalars are leaves."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {"": data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


_ABSENT = object()


def protocol_diff(a: dict, b: dict) -> list[str]:
    """Differing dotted keys of two protocols, as 'key: a vs b' (sorted by key)."""
    fa, fb = flatten(a or {}), flatten(b or {})
    lines = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, _ABSENT), fb.get(key, _ABSENT)
        if va != vb:
            lines.append(f"{key}: {_show(va)} vs {_show(vb)}")
    return lines


def _differing_keys(protocols: list[dict]) -> list[str]:
    flats = [flatten(p or {}) for p in protocols]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({repr(f.get(k, _ABSENT)) for f in flats}) > 1]


def short_name(key: str) -> str:
    return SHORT_NAMES.get(key, key[5:] if key.startswith("task.") else key)


def _show(value: Any) -> str:
    if value is _ABSENT or value is None:
        return "<absent>" if value is _ABSENT else "none"
    text = str(value)
    if isinstance(value, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:8]  # a sha256: its prefix tells files apart
    return text if len(text) <= 40 else text[:37] + "..."


def _base_name(task: str, protocol: dict) -> str:
    """`task (16x8x3, attentive)`: frames x segments x views of evaluation, and the probe."""
    protocol = protocol if isinstance(protocol, dict) else {}
    sampling = (protocol.get("task") or {}).get("sampling") if isinstance(protocol.get("task"), dict) else None
    parts = []
    if isinstance(sampling, dict) and sampling.get("frames_per_clip"):
        parts.append("x".join(str(sampling.get(k, "?")) for k in
                              ("frames_per_clip", "eval_segments", "eval_views")))
    probe = protocol.get("probe")
    kind = probe.get("kind") if isinstance(probe, dict) else probe
    if kind:
        parts.append(str(kind))
    return f"{task} ({', '.join(parts)})" if parts else task


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


def filter_frame(frame: pd.DataFrame, *, encoders=None, tasks=None, protocols=None,
                 since=None, until=None) -> tuple[pd.DataFrame, list[str]]:
    """Rows of `frame` matching every filter given: encoder names or globs (`vjepa_*`), task
    names, protocol id prefixes, and a date range on `created` (inclusive, any ISO date)."""
    import pandas as pd

    notes = []
    df = frame
    encoders, tasks, protocols = _parse_list(encoders), _parse_list(tasks), _parse_list(protocols)
    if encoders:
        names = set(df["encoder"])
        keep = {n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in encoders)}
        for pat in encoders:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                notes.append(f"encoder {pat}: no records")
        df = df[df["encoder"].isin(keep)]
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
    """Build a leaderboard of `metric` from `ResultStore.frame()` (see the module's doc)."""
    import pandas as pd

    notes: list[str] = []
    tasks = _parse_list(tasks)
    empty = pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=ROW_KEYS))
    if frame is None or frame.empty:
        return Leaderboard(empty, ["no result records found"], metric)
    if metric not in frame.columns:
        metrics = [c for c in frame.columns if c not in BASE_COLUMNS]
        return Leaderboard(empty, [f"no record has metric {metric!r}; metrics present: "
                                   f"{', '.join(metrics) or 'none'}"], metric)

    df, notes = filter_frame(frame, encoders=encoders, tasks=tasks, protocols=protocols,
                             since=since, until=until)
    df = df.copy()
    lacking = df[df[metric].isna()]
    if len(lacking):
        notes.append(f"{len(lacking)} record(s) without {metric} left out "
                     f"({', '.join(sorted(set(lacking['task'])))})")
        df = df[df[metric].notna()]
    if df.empty:
        return Leaderboard(empty, notes or ["no records match"], metric)

    df["checkpoint"] = _checkpoint_labels(df)
    df = df.sort_values("created", kind="stable")
    if "run_id" in df and df["run_id"].notna().all():
        # A frame built from records in memory may hold a run and its re-run: the newer stands.
        before = len(df)
        df = df.drop_duplicates(["run_id"], keep="last")
        if len(df) < before:
            notes.append(f"{before - len(df)} re-run record(s) replaced by their newer record")

    order = tasks if tasks is not None else sorted(df["task"].unique())
    columns: list[Column] = []
    groups: dict[str, pd.DataFrame] = {}
    for task in order:
        sub = df[df["task"] == task]
        if sub.empty:
            continue
        # Most-used protocol first: it is the reference the others are compared with.
        pids = (sub.groupby("protocol_id").agg(n=("protocol_id", "size"), first=("created", "min"))
                .sort_values(["n", "first"], ascending=[False, True]).index.tolist())
        protocols_of = {pid: sub[sub["protocol_id"] == pid]["protocol"].iloc[0] for pid in pids}
        names = _column_names(task, pids, protocols_of)
        for pid in pids:
            first = sub[sub["protocol_id"] == pid].iloc[0]
            version, precision = _present(first.get("protocol_version")), _present(first.get("precision"))
            col = Column(names[pid], task, pid, protocols_of[pid],
                         int(version or _version(protocols_of[pid])),
                         precision or _precision(protocols_of[pid]))
            columns.append(col)
            groups[col.name] = sub[sub["protocol_id"] == pid]
        if len(pids) > 1:
            notes.append(_mismatch_note(task, pids, protocols_of, names))

    cells: dict[tuple, Cell] = {}
    for col in columns:
        for key, runs in groups[col.name].groupby(ROW_KEYS, sort=False):
            cells[(tuple(key), col.name)] = _cell(runs, metric)
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
            _mark(col.name, [cells[(r, col.name)] for r in table.index if (r, col.name) in cells],
                  metric)
    lb = Leaderboard(table, notes, metric, cells, columns, [c.legend() for c in columns])
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


def _present(value: Any) -> Any:
    """None for pandas' empty cells (NaN, None, NaT), else the value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _version(protocol: Any) -> int:
    return int((protocol or {}).get("protocol_version") or 1) if isinstance(protocol, dict) else 1


def _precision(protocol: Any) -> str | None:
    return protocol.get("precision") if isinstance(protocol, dict) else None


def _column_names(task: str, pids: list[str], protocols: dict[str, dict]) -> dict[str, str]:
    names = {pid: _base_name(task, protocols[pid]) for pid in pids}
    if len(set(names.values())) == len(names):
        return names
    keys = _differing_keys([protocols[p] for p in pids])
    base_keys = {"task.sampling.frames_per_clip", "task.sampling.eval_segments",
                 "task.sampling.eval_views", "probe.kind"}
    keys = [k for k in _NAME_PRIORITY if k in keys] + [k for k in keys if k not in _NAME_PRIORITY
                                                        and k not in base_keys]
    out = {}
    for pid in pids:
        clash = [p for p in pids if names[p] == names[pid]]
        if len(clash) == 1:
            out[pid] = names[pid]
            continue
        # The fewest fields (at most 2) that set this protocol apart from its namesakes.
        flats = {p: flatten(protocols[p] or {}) for p in clash}
        local = [k for k in keys if len({repr(flats[p].get(k, _ABSENT)) for p in clash}) > 1][:2]
        extra = [_name_part(k, flats[pid].get(k, _ABSENT)) for k in local]
        out[pid] = names[pid][:-1] + ", " + ", ".join(extra) + ")" if names[pid].endswith(")") \
            else f"{names[pid]} ({', '.join(extra)})"
    if len(set(out.values())) < len(out):  # still alike: the protocol id tells them apart
        out = {pid: (n[:-1] + f", {pid[:6]})" if n.endswith(")") else f"{n} ({pid[:6]})")
               for pid, n in out.items()}
    return out


def _name_part(key: str, value: Any) -> str:
    if key == "protocol_version":
        return f"v{1 if value is _ABSENT or value is None else value}"
    if key == "precision":
        return "precision unknown" if value is _ABSENT or value is None else str(value)
    return f"{short_name(key)} {_show(value)}"


def _mismatch_note(task: str, pids: list[str], protocols: dict, names: dict) -> str:
    ref = pids[0]
    parts = []
    for pid in pids[1:]:
        fa, fb = flatten(protocols[ref] or {}), flatten(protocols[pid] or {})
        keys = [k for k in sorted(set(fa) | set(fb)) if fa.get(k, _ABSENT) != fb.get(k, _ABSENT)]
        keys = [k for k in _NAME_PRIORITY + list(SHORT_NAMES) if k in keys] + \
               [k for k in keys if k not in _NAME_PRIORITY and k not in SHORT_NAMES]
        keys = list(dict.fromkeys(keys))
        shown = "; ".join(f"{short_name(k)} {_show(fa.get(k, _ABSENT))} vs {_show(fb.get(k, _ABSENT))}"
                          + (f" ({k})" if short_name(k) != k else "") for k in keys[:_MAX_DIFFS])
        if len(keys) > _MAX_DIFFS:
            shown += f"; and {len(keys) - _MAX_DIFFS} more"
        parts.append(f"'{names[ref]}' vs '{names[pid]}': {shown or 'fields not recorded'}")
    return (f"{task}: {len(pids)} protocols, not comparable, split into columns: "
            + " | ".join(parts))


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


def _mark(name: str, cells: list[Cell], metric: str) -> None:
    if not cells:
        return
    best = max(cells, key=lambda c: c.mean)
    best.best = True
    for cell in cells:
        if cell is best:
            continue
        test, p = _test(best, cell, metric)
        cell.test, cell.p_value = test, p
        cell.tied = p is not None and p >= ALPHA


def _test(best: Cell, other: Cell, metric: str) -> tuple[str | None, float | None]:
    """(test name, p-value) of `best` vs `other`; (None, None) when nothing can be tested."""
    k = {"top1": 1, "top5": 5}.get(metric)
    if k and best.runs == 1 and other.runs == 1 and best.paths and other.paths:
        p = _mcnemar(best.paths[0], other.paths[0], k)
        if p is not None:
            return "mcnemar", p
    if best.runs > 1 and other.runs > 1:
        from scipy.stats import ttest_ind

        if best.std == 0 and other.std == 0:
            return "welch", 1.0 if best.mean == other.mean else 0.0
        return "welch", float(ttest_ind(best.values, other.values, equal_var=False).pvalue)
    if best.num_samples and other.num_samples and 0 <= best.mean <= 100 and 0 <= other.mean <= 100:
        from scipy.stats import norm

        p1, n1, p2, n2 = best.mean / 100, best.num_samples, other.mean / 100, other.num_samples
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if se == 0:
            return "two-proportion", 1.0 if p1 == p2 else 0.0
        return "two-proportion", float(2 * norm.sf(abs(p1 - p2) / se))
    return None, None


def _mcnemar(path_a: str, path_b: str, k: int) -> float | None:
    from results.predictions import correct, predictions_path, read_predictions
    from results.stats import align, mcnemar_exact

    try:
        pa, pb = read_predictions(predictions_path(path_a)), read_predictions(predictions_path(path_b))
        ia, ib = align(pa, pb)
    except (OSError, ValueError):
        return None  # no predictions, or not the same samples: fall back to the unpaired test
    a, b = correct(pa, k)[ia], correct(pb, k)[ib]
    return mcnemar_exact(int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum()))


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
