"""ResultStore: the run records under a results folder, as records or as one pandas frame.

Where: `--results DIR`, else the environment variable HARNESS_RESULTS, else `runs`
(`default_root()`). A results folder holds record files (`<out>/records/*.json`, written
atomically by `results.record.write_record`, so many concurrent jobs can write into one folder)
beside files that are not records (`config.json`, `demo_summary.json`, `*.predictions.npz`).

Which files are records: a JSON file whose top level has `record_version`. Files named as
`record_filename` names them (`ENC__TASK__PID__STAMP.json`) are records by name: if one cannot be
read it is reported as a problem, once per call. Any other JSON file that is not a record is not
ours and is ignored without a word.

One row per run: a run's identity is `extra.run_id` (the runner's hash of encoder, weights,
protocol and seed) or, for records without one, the same facts read from the record. A re-run's
newer record replaces the older one; runs that differ in seed are different runs and all stay
(the leaderboard aggregates them as mean +- std with their count).

The frame's schema (`SCHEMA`, version `SCHEMA_VERSION`) is documented column by column below;
older record versions still load (missing fields become empty cells). `export_store` /
`import_store` move a whole store between machines as one Parquet or CSV file; per-sample
predictions stay behind, and an imported record says so (`imported: {from, at}`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.digest import sha256_hex
from common.run_id import record_run_identity
from results.record import RECORD_VERSION, read_record, record_protocol_version

ENV_VAR = "HARNESS_RESULTS"
DEFAULT_ROOT = "runs"

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
_DICT_COLUMNS = ["protocol", "protocol_departures"]

_RECORD_NAME = re.compile(r".+__.+__[0-9a-f]{12}__\d{8}T\d{6}_\d{6}Z-[0-9a-f]{6}\.json$")


def default_root(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit` (a --results value), else $HARNESS_RESULTS, else ./runs."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


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


def looks_like_record_name(path: str | os.PathLike) -> bool:
    return bool(_RECORD_NAME.match(Path(path).name))


def run_identity(rec: dict) -> str:
    """The run a record belongs to: its runner-made `extra.run_id`, else the same format over
    what the record says (`common.run_id`: one format for the runner, the store, the launcher
    and `watch`)."""
    return record_run_identity(rec)


class ResultStore:
    """Reads the records under `root` (recursively); never crashes on a bad file.

    `.problems`: (path, reason) of record files that could not be read, after each `records()` /
    `frame()` call; `.replaced`: how many older records of a re-run were left out.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = default_root(root)
        self.problems: list[tuple[str, str]] = []
        self.replaced = 0

    def paths(self) -> list[Path]:
        # Hidden files are in-flight temporary writes (see atomic_write) or not ours.
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("*.json")
                      if p.is_file() and not any(part.startswith(".")
                                                 for part in p.relative_to(self.root).parts))

    def records(self, latest_only: bool = True) -> list[dict[str, Any]]:
        """The readable records, each with a `_path` key; with `latest_only`, one per run
        identity (the newest)."""
        self.problems, self.replaced = [], 0
        if not self.root.is_dir():
            self.problems.append((str(self.root), "results root does not exist"))
            return []
        out = []
        for path in self.paths():
            rec = self._read(path)
            if rec is not None:
                rec["_path"] = str(path)
                out.append(rec)
        if latest_only:
            kept = latest_per_run(out)
            self.replaced = len(out) - len(kept)
            out = kept
        return out

    def _read(self, path: Path) -> dict | None:
        by_name = looks_like_record_name(path)
        try:
            return read_record(path)
        except OSError as exc:
            self.problems.append((str(path), f"cannot be read: {exc}"))
        except ValueError as exc:
            if by_name or _claims_to_be_a_record(path):
                self.problems.append((str(path), str(exc)))
        return None

    def frame(self, latest_only: bool = True):
        """One row per run (see SCHEMA): BASE_COLUMNS, then one column per metric name."""
        return records_frame(self.records(latest_only=latest_only), problems=self.problems)


def _claims_to_be_a_record(path: Path) -> bool:
    # A JSON file that is not valid but begins like a record (a torn copy of one) is reported;
    # other unreadable JSON (an editor's file, a half-written config) is not ours.
    try:
        head = path.read_bytes()[:4096].decode("utf-8", "replace")
    except OSError:
        return False
    return '"record_version"' in head


def latest_per_run(records: list[dict]) -> list[dict]:
    """Of several records of one run identity, the newest (by `created`); order kept."""
    newest: dict[str, dict] = {}
    for rec in records:
        key = run_identity(rec)
        if key not in newest or str(rec.get("created", "")) >= str(newest[key].get("created", "")):
            newest[key] = rec
    keep = {id(r) for r in newest.values()}
    return [r for r in records if id(r) in keep]


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
    return _finish(pd.DataFrame(rows))


def _finish(frame):
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


def _row(rec: dict) -> dict[str, Any]:
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
    record_text = {k: v for k, v in rec.items() if not k.startswith("_")}
    departures = rec.get("protocol_departures") or {}
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
        "record": json.dumps(record_text, sort_keys=True, default=str),
    }
    for name, value in metrics.items():
        if name == "num_samples":
            continue
        if _number(value) is not None:
            # A metric named like a base column keeps a prefix instead of overwriting it.
            row[f"metric.{name}" if name in BASE_COLUMNS else name] = float(value)
    return row


# --------------------------------------------------------------------------------------------
# sharing a whole store


def export_store(store: ResultStore, path: str | os.PathLike) -> int:
    """Write every record of `store` (re-runs included: the receiver dedupes the same way) as
    one file, `.parquet` or `.csv`, atomically. Returns the number of records."""
    path = Path(path)
    kind = _kind(path)
    frame = store.frame(latest_only=False)
    out = frame.drop(columns=[*_DICT_COLUMNS, "path"]).copy()
    out.insert(0, "record_name", [Path(p).name if isinstance(p, str) else None for p in frame["path"]])
    out["created"] = out["created"].map(lambda t: t.isoformat() if t is not None else None)
    out.attrs = {}
    out.insert(0, "schema_version", SCHEMA_VERSION)
    if kind == "parquet":
        _need_pyarrow()
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(out, preserve_index=False)
        atomic_write(path, lambda f: pq.write_table(table, f))
    else:
        text = out.to_csv(index=False)
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return len(out)


def import_store(path: str | os.PathLike, root: str | os.PathLike) -> tuple[int, int]:
    """Recreate the record files of an exported store under `root/records/` (atomically, under
    their original names, so importing twice or from two machines never duplicates a record).
    Returns (written, already present)."""
    import pandas as pd

    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported store at {path}")
    if kind == "parquet":
        _need_pyarrow()
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "record" not in frame.columns:
        raise ValueError(f"{path} is not an exported result store (no 'record' column); make one "
                         f"with `harness results export FILE`")
    version = int(frame["schema_version"].iloc[0]) if "schema_version" in frame and len(frame) else 1
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {version}, newer than this code understands "
                         f"({SCHEMA_VERSION}); update harness")
    out_dir = Path(root) / "records"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = present = 0
    from results.record import write_record

    for i, text in enumerate(frame["record"]):
        try:
            rec = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {i} holds no record JSON ({exc})") from None
        if not isinstance(rec, dict) or "record_version" not in rec:
            raise ValueError(f"{path}: row {i} is not a result record")
        if rec["record_version"] > RECORD_VERSION:
            raise ValueError(f"{path}: row {i} has record_version {rec['record_version']}, newer "
                             f"than this code understands; update harness")
        name = _original_name(frame, i) or _stable_name(rec, text)
        if (out_dir / name).exists():
            present += 1
            continue
        # Said in the record, so that a missing predictions file is explained truly later
        # (an export carries none); a record imported twice keeps its first import.
        rec.setdefault("imported", {"from": path.name, "at": _now()})
        write_record(rec, out_dir, filename=name)
        written += 1
    return written, present


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _stable_name(rec: dict, text: str) -> str:
    # A record that had no record-style name gets one from its content: importing it again
    # finds the same file instead of writing a second copy.
    from results.record import record_filename

    name = record_filename(rec)
    return name[: -len("xxxxxx.json")] + sha256_hex(text)[:6] + ".json"


def _original_name(frame, i: int) -> str | None:
    # Exports keep no paths (they are another machine's); the record's own stem is its name.
    if "record_name" not in frame.columns:
        return None
    name = frame["record_name"].iloc[i]
    return name if isinstance(name, str) and looks_like_record_name(name) else None


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"{path}: export/import works on .parquet or .csv files")


def _need_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError("Parquet needs pyarrow: `pip install pyarrow`, or use a .csv file") from None
