"""Leaderboards: encoders x tasks, numbers side by side only under the same protocol_id.

pandas is imported inside the functions: `results/__init__` imports this module eagerly (so that
`results.leaderboard` is always the function, never this module) and must stay light.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from results.store import BASE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

ROW_KEYS = ["encoder", "checkpoint"]
# How many differing protocol fields a note spells out before summarising the rest.
_MAX_DIFFS = 8


@dataclass
class Leaderboard:
    """`table`: index (encoder, checkpoint), one column per task (or per task and protocol when a
    task has records under several protocols); `notes`: what the reader must know about it."""

    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    metric: str = "top1"


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


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "<absent>"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _checkpoint_labels(frame: pd.DataFrame) -> pd.Series:
    import pandas as pd

    # Two different checkpoints can share a file name (every run's `latest.pth.tar`): then the
    # label carries a sha256 prefix so their rows stay apart.
    labels = frame["checkpoint"].astype(object).where(frame["checkpoint"].notna(), "none")
    sha = frame["checkpoint_sha256"] if "checkpoint_sha256" in frame else pd.Series(
        [None] * len(frame), index=frame.index)
    out = labels.copy()
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


def leaderboard(frame: pd.DataFrame, tasks: Iterable[str] | str | None = None,
                metric: str = "top1") -> Leaderboard:
    """Build a leaderboard of `metric` from `ResultStore.frame()`.

    - a task whose records share one protocol_id gets one column named after the task;
    - a task with records under several protocol_ids gets one column per protocol,
      `task [protocol_id]`, and a note listing the protocol fields that differ;
    - of duplicate records of (encoder, checkpoint, task, protocol_id) the latest wins (noted).
    """
    import pandas as pd

    notes: list[str] = []
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = list(tasks) if tasks is not None else None
    empty = pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=ROW_KEYS))
    if frame is None or frame.empty:
        return Leaderboard(empty, ["no result records found"], metric)
    if metric not in frame.columns:
        metrics = [c for c in frame.columns if c not in BASE_COLUMNS]
        return Leaderboard(empty, [f"no record has metric {metric!r}; metrics present: "
                                   f"{', '.join(metrics) or 'none'}"], metric)

    df = frame.copy()
    if tasks is not None:
        for task in tasks:
            if task not in set(df["task"]):
                notes.append(f"{task}: no records")
        df = df[df["task"].isin(tasks)]
    lacking = df[df[metric].isna()]
    if len(lacking):
        notes.append(f"{len(lacking)} record(s) without {metric} left out "
                     f"({', '.join(sorted(set(lacking['task'])))})")
        df = df[df[metric].notna()]
    if df.empty:
        return Leaderboard(empty, notes or ["no records match"], metric)

    df["checkpoint"] = _checkpoint_labels(df)
    df = df.sort_values("created", kind="stable")
    keys = ROW_KEYS + ["task", "protocol_id"]
    counts = df.groupby(keys).size()
    for key, n in counts[counts > 1].items():
        enc, ckpt, task, pid = key
        notes.append(f"{enc} ({ckpt}) on {task} [{pid}]: {n} records, the latest is shown")
    df = df.drop_duplicates(keys, keep="last")

    order = tasks if tasks is not None else sorted(df["task"].unique())
    columns: dict[str, pd.Series] = {}
    single: list[str] = []  # "task v2 bf16" of the tasks under one protocol
    for task in order:
        sub = df[df["task"] == task]
        if sub.empty:
            continue
        # Most-used protocol first: it is the reference the others are compared with.
        pids = (sub.groupby("protocol_id").agg(n=("protocol_id", "size"), first=("created", "min"))
                .sort_values(["n", "first"], ascending=[False, True]).index.tolist())
        if len(pids) == 1:
            columns[task] = sub.set_index(ROW_KEYS)[metric]
            single.append(f"{task} {_version_precision(sub['protocol'].iloc[0])}")
            continue
        for pid in pids:
            tag = _version_precision(sub[sub["protocol_id"] == pid]["protocol"].iloc[0])
            columns[f"{task} [{pid} {tag}]"] = sub[sub["protocol_id"] == pid].set_index(ROW_KEYS)[metric]
        notes.append(_mismatch_note(task, pids, sub))

    if single:
        notes.insert(0, "protocol version and precision: " + ", ".join(single))
    table = pd.DataFrame(columns)
    table.index = table.index.set_names(ROW_KEYS)
    if len(table.columns):
        table = table.sort_values(list(table.columns[:1]), ascending=False, na_position="last")
    return Leaderboard(table, notes, metric)


def _version_precision(protocol: Any) -> str:
    """'v2 bf16' of a record's protocol; 'v1' for records made before versions and precision
    were recorded (their precision is unknown)."""
    protocol = protocol if isinstance(protocol, dict) else {}
    version = protocol.get("protocol_version") or 1
    precision = protocol.get("precision")
    return f"v{version} {precision}" if precision else f"v{version}"


def _mismatch_note(task: str, pids: list[str], sub: pd.DataFrame) -> str:
    protocols = {pid: sub[sub["protocol_id"] == pid]["protocol"].iloc[0] for pid in pids}
    ref = pids[0]
    parts = []
    for pid in pids[1:]:
        diffs = protocol_diff(protocols[ref], protocols[pid])
        shown = "; ".join(diffs[:_MAX_DIFFS])
        if len(diffs) > _MAX_DIFFS:
            shown += f"; and {len(diffs) - _MAX_DIFFS} more"
        parts.append(f"[{ref}] vs [{pid}] differ in {shown or 'fields not recorded'}")
    return (f"{task}: records under {len(pids)} different protocols are not comparable and "
            f"are shown in separate columns: " + "; ".join(parts))


# --------------------------------------------------------------------------------------------
# rendering


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def rich_table(lb: Leaderboard, title: str | None = None):
    from rich.table import Table
    from rich.text import Text

    # Text objects, not strings: '[ec87535c0225]' in a column name would be read as markup.
    table = Table(title=Text(title or f"leaderboard ({lb.metric})"))
    for key in ROW_KEYS:
        table.add_column(Text(key))
    for col in lb.table.columns:
        table.add_column(Text(str(col)), justify="right")
    for (enc, ckpt), row in lb.table.iterrows():
        table.add_row(Text(str(enc)), Text(str(ckpt)), *(Text(_fmt(v)) for v in row.tolist()))
    return table


def render(lb: Leaderboard, fmt: str = "rich", *, width: int = 120) -> str:
    """Text of the leaderboard: 'rich' (box table + notes), 'markdown' (table + notes as a list)
    or 'csv' (table only, full precision)."""
    if fmt == "csv":
        return lb.table.reset_index().to_csv(index=False)
    if fmt == "markdown":
        header = ROW_KEYS + [str(c) for c in lb.table.columns]
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] * len(ROW_KEYS) + ["---:"] * len(lb.table.columns)) + "|"]
        for (enc, ckpt), row in lb.table.iterrows():
            cells = [str(enc), str(ckpt)] + [_fmt(v) for v in row.tolist()]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if lb.notes:
            lines += [""] + [f"- {note}" for note in lb.notes]
        return "\n".join(lines) + "\n"
    if fmt == "rich":
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=width, color_system=None, force_terminal=False)
        console.print(rich_table(lb))
        for note in lb.notes:
            console.print(f"note: {note}", soft_wrap=True, markup=False)
        return buf.getvalue()
    raise ValueError(f"unknown leaderboard format {fmt!r}; use rich, markdown or csv")
