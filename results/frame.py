"""The result store as one pandas frame: its columns (`SCHEMA`, version `SCHEMA_VERSION`) and
how a checked record becomes a row (`record_row`). The file scan and the index build rows with
the same function, so both give the same frame.

Older record versions still load (missing fields become empty cells). pandas is imported inside
the functions (results/__init__ imports this module eagerly and must stay light).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.run_id import record_run_identity
from results.record import (
    RecordError,
    check_record,
    record_created,
    record_protocol_version,
)

# Version of the frame's columns (and of exported stores). History:
#   1: encoder .. protocol (BASE_COLUMNS of the first releases) + one column per metric.
#   2: + checkpoint_step, protocol_version, precision, run_id, num_samples, split_size, the cost
#      columns and `record` (the whole record as JSON text: exports round-trip through it).
#   3: + encoder_label, protocol_departures.
SCHEMA_VERSION = 3

# column -> what it holds. Order is the frame's column order; metric columns follow.
SCHEMA: dict[str, str] = {
    "encoder": "encoder registry name (record.encoder.name)",
    "checkpoint": "how the weights are shown: 'random-init', the checkpoint file name, or 'none'",
    "checkpoint_sha256": "sha256 of the checkpoint file (None for random init)",
    "task": "task name",
    "split": "evaluated split",
    "probe": "probe kind (attentive, attentive_v2, linear)",
    "protocol_id": "short hash of the resolved protocol; numbers are comparable only when equal",
    "created": "when the record was written (UTC timestamp)",
    "label": "the run's display name (extra.label), when given",
    "seed": "probe seed",
    "device": "device the run used",
    "world_size": "processes in the run",
    "path": "record file the row was read from (None for records held in memory)",
    "protocol": "the resolved protocol (dict)",
    "checkpoint_step": "pretraining step of the checkpoint, when known",
    "protocol_version": "protocol version (1 for records made before the field existed)",
    "precision": "compute precision that ran (fp32, bf16; None for version-1 records)",
    "run_id": "identity of the run: re-runs share it, other seeds do not",
    "num_samples": "evaluation samples the metrics were computed on",
    "split_size": "samples the evaluated split's manifest lists (protocol.task.manifests.eval)",
    "params": "encoder parameters (record.encoder.metadata)",
    "gflops_per_clip": "encoder GFLOPs per clip at the run's input size",
    "clips_per_s": "evaluation clips per second (timings.eval_samples_per_s)",
    "device_hours": "wall-clock hours x world size",
    "encoder_label": "how the encoder is shown and grouped: record.encoder.label (the registry name "
                     "plus the architecture that differs from its entry), else encoder.name",
    "protocol_departures": "where the protocol departs from the task's published one: {dotted "
                           "protocol key: value} (record.protocol_departures; {} when absent)",
    "record": "the whole record as JSON text",
}
BASE_COLUMNS = list(SCHEMA)
# Columns of the frame that hold dicts: exports leave them out (`record` carries them).
DICT_COLUMNS = ["protocol", "protocol_departures"]
# What sets a leaderboard cell apart before labels are made (`results.leaderboard`): runs
# alike in these are seeds and folds of one row and column (`results.run_cells` folds them).
GROUP_KEYS = ["encoder", "encoder_label", "checkpoint", "checkpoint_sha256", "label", "task",
              "protocol_id"]


def checkpoint_label(checkpoint: dict | None) -> str:
    """How a checkpoint is shown: 'random-init', its file name, or 'none'."""
    checkpoint = checkpoint or {}
    if checkpoint.get("random_init"):
        return "random-init"
    path = checkpoint.get("path")
    if not path:
        return "none"
    return Path(str(path)).name


def encoder_label(encoder: dict | None) -> str:
    """How an encoder is shown and grouped: its `label` (registry name plus the architecture
    that differs from the entry, e.g. `videomae_vits (embed_dim 192, depth 2)`), else its
    registry name (records made before labels existed)."""
    encoder = encoder if isinstance(encoder, dict) else {}
    label = encoder.get("label")
    return str(label) if isinstance(label, str) and label.strip() else str(encoder.get("name"))



def run_identity(rec: dict) -> str:
    """The run a record belongs to: its runner-made `extra.run_id`, else the same format over
    what the record says (`common.run_id`: one format for the runner, the store, the launcher
    and `watch`)."""
    return record_run_identity(rec)



def records_frame(records: list[dict], problems: list | None = None):
    """The `ResultStore.frame()` table for records already in memory (`path` is None for
    records that were never read from a file). Records lacking required fields are skipped and
    appended to `problems` when given, else they raise ValueError."""
    import pandas as pd

    rows = []
    for rec in records:
        where = rec.get("_path", "<in memory>") if isinstance(rec, dict) else "<in memory>"
        try:
            # Records read by the store were checked already; records made in memory are
            # checked here (the same rules; they need no record_version).
            check_record(rec, "record lacks expected fields or has wrong ones",
                         need_version=False)
            rows.append(record_row(rec))
        except (RecordError, KeyError, TypeError, AttributeError) as exc:
            why = str(exc) if isinstance(exc, RecordError) else \
                f"record lacks expected fields: {exc!r}"
            if problems is None:
                raise ValueError(f"record {where}: {why}") from None
            problems.append((where, why))
    return finish_frame(pd.DataFrame(rows))


def finish_frame(frame):
    """BASE_COLUMNS then the metric columns (in the order met), sorted by task, encoder and
    creation (stable: rows of equal keys keep the order given, the files' order)."""
    import pandas as pd

    if frame.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    for col in BASE_COLUMNS:
        if col not in frame:
            frame[col] = None
    metric_cols = [c for c in frame.columns if c not in BASE_COLUMNS]
    frame = frame[BASE_COLUMNS + metric_cols].copy()
    frame["created"] = pd.to_datetime(frame["created"], utc=True, format="ISO8601")
    return frame.sort_values(["task", "encoder", "created"], kind="stable", ignore_index=True)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_text(rec: dict) -> str:
    """The `record` column: the whole record as JSON text (keys starting with `_` left out)."""
    return json.dumps({k: v for k, v in rec.items() if not k.startswith("_")}, sort_keys=True,
                      default=str)


def record_row(rec: dict, *, text: bool = True) -> dict[str, Any]:
    """One frame row of a checked record (`record` None unless `text`: the index keeps the
    rest and reads a record's file only when its whole text is asked for)."""
    protocol = rec.get("protocol") or {}
    probe = protocol.get("probe") if isinstance(protocol, dict) else None
    checkpoint = rec.get("checkpoint") or {}
    metrics = rec.get("metrics") or {}
    manifests = ((protocol.get("task") or {}).get("manifests") or {}) if isinstance(protocol, dict) else {}
    eval_manifest = manifests.get("eval") if isinstance(manifests, dict) else None
    metadata = (rec["encoder"].get("metadata") or {}) if isinstance(rec["encoder"], dict) else {}
    at_run = metadata.get("at_run_input") or {}
    timings = rec.get("timings") or {}
    wall = _number(timings.get("wall_seconds"))
    departures = rec.get("protocol_departures") or {}
    row = {
        "encoder": rec["encoder"]["name"],
        "checkpoint": checkpoint_label(checkpoint),
        "checkpoint_sha256": checkpoint.get("sha256"),
        "task": rec["task"],
        "split": rec.get("split"),
        "probe": probe.get("kind") if isinstance(probe, dict) else probe,
        "protocol_id": rec["protocol_id"],
        # As a time read once (ISO 8601, UTC): the frame's column parses every form alike.
        "created": record_created(rec).isoformat(),
        "label": (rec.get("extra") or {}).get("label"),  # a run's display name, when given
        "seed": rec.get("seed"),
        "device": rec.get("device"),
        "world_size": rec.get("world_size"),
        "path": rec.get("_path"),
        "protocol": protocol,
        "checkpoint_step": checkpoint.get("step"),
        "protocol_version": record_protocol_version(rec),
        "precision": rec.get("precision") or (protocol.get("precision") if isinstance(protocol, dict) else None),
        "run_id": run_identity(rec),
        "num_samples": _number(metrics.get("num_samples")),
        "split_size": _number(eval_manifest.get("videos")) if isinstance(eval_manifest, dict) else None,
        "params": _number(at_run.get("parameters", metadata.get("parameters"))),
        "gflops_per_clip": _number(at_run.get("gflops_per_clip", metadata.get("gflops_per_clip"))),
        "clips_per_s": _number(timings.get("eval_samples_per_s")),
        "device_hours": wall * int(rec.get("world_size") or 1) / 3600 if wall is not None else None,
        "encoder_label": encoder_label(rec["encoder"]),
        "protocol_departures": departures if isinstance(departures, dict) else {},
        "record": record_text(rec) if text else None,
    }
    for name, value in metrics.items():
        if name == "num_samples":
            continue
        if _number(value) is not None:
            # A metric named like a base column keeps a prefix instead of overwriting it.
            row[f"metric.{name}" if name in BASE_COLUMNS else name] = float(value)
    return row
