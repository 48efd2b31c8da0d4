"""ResultStore: every record JSON under a root folder, as records or as one DataFrame."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from results.record import read_record

# Columns of `ResultStore.frame()` before the metric columns.
BASE_COLUMNS = ["encoder", "checkpoint", "checkpoint_sha256", "task", "split", "probe",
                "protocol_id", "created", "label", "seed", "device", "world_size", "path",
                "protocol"]


def checkpoint_label(checkpoint: dict | None) -> str:
    """How a checkpoint is shown: 'random-init', its file name, or 'none'."""
    checkpoint = checkpoint or {}
    if checkpoint.get("random_init"):
        return "random-init"
    path = checkpoint.get("path")
    if not path:
        return "none"
    return Path(str(path)).name


class ResultStore:
    """Reads records under `root` (recursively, `*.json`); never crashes on a bad file.

    Unreadable, corrupt or non-record JSON files are skipped and listed in `.problems` as
    (path, reason) after each `records()` / `frame()` call.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.problems: list[tuple[str, str]] = []

    def paths(self) -> list[Path]:
        # Hidden files are in-flight temporary writes (see write_record) or not ours.
        return sorted(p for p in self.root.rglob("*.json")
                      if p.is_file() and not any(part.startswith(".")
                                                 for part in p.relative_to(self.root).parts))

    def records(self) -> list[dict[str, Any]]:
        """All readable records; each gets a `_path` key (where it was read from)."""
        self.problems = []
        if not self.root.is_dir():
            self.problems.append((str(self.root), "results root does not exist"))
            return []
        out = []
        for path in self.paths():
            try:
                record = read_record(path)
            except (OSError, ValueError) as exc:
                self.problems.append((str(path), str(exc)))
                continue
            record["_path"] = str(path)
            out.append(record)
        return out

    def frame(self):
        """One row per record: BASE_COLUMNS, then one column per metric name (top1, top5, ...)."""
        return records_frame(self.records(), problems=self.problems)


def records_frame(records: list[dict], problems: list | None = None):
    """The `ResultStore.frame()` table for records already in memory (`path` is None for
    records that were never read from a file). Records lacking required fields are skipped and
    appended to `problems` when given, else they raise ValueError."""
    import pandas as pd

    rows = []
    for rec in records:
        try:
            rows.append(_row(rec))
        except (KeyError, TypeError, AttributeError) as exc:
            where = rec.get("_path", "<in memory>") if isinstance(rec, dict) else "<in memory>"
            if problems is None:
                raise ValueError(f"record {where} lacks expected fields: {exc!r}") from exc
            problems.append((where, f"record lacks expected fields: {exc!r}"))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    metric_cols = [c for c in frame.columns if c not in BASE_COLUMNS]
    frame = frame[BASE_COLUMNS + metric_cols]
    frame["created"] = pd.to_datetime(frame["created"], utc=True, format="ISO8601")
    return frame.sort_values(["task", "encoder", "created"], kind="stable", ignore_index=True)


def _row(rec: dict) -> dict[str, Any]:
    protocol = rec.get("protocol") or {}
    probe = protocol.get("probe") if isinstance(protocol, dict) else None
    checkpoint = rec.get("checkpoint") or {}
    row = {
        "encoder": rec["encoder"]["name"],
        "checkpoint": checkpoint_label(checkpoint),
        "checkpoint_sha256": checkpoint.get("sha256"),
        "task": rec["task"],
        "split": rec.get("split"),
        "probe": probe.get("kind") if isinstance(probe, dict) else probe,
        "protocol_id": rec["protocol_id"],
        "created": rec["created"],
        "label": (rec.get("extra") or {}).get("label"),  # a run's display name, when given
        "seed": rec.get("seed"),
        "device": rec.get("device"),
        "world_size": rec.get("world_size"),
        "path": rec.get("_path"),
        "protocol": protocol,
    }
    for name, value in (rec.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # A metric named like a base column keeps a prefix instead of overwriting it.
            row[f"metric.{name}" if name in BASE_COLUMNS else name] = float(value)
    return row
