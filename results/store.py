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

Everything read is untrusted (records, exports, names): `results.record.read_record` /
`parse_record` is the one reader (bounded size and depth, every field the harness reads checked
for type and range), and a record that fails is reported once, by file and reason, and left out.
Nothing read names where the harness writes: an import rebuilds each file name from the checked
record (`record_filename`), writes only under `<root>/records`, refuses a `records` folder that is
a link leading outside the root, and replaces (never writes through) a link standing at a name.

Order of selection (`records()` / `frame()`): (1) every `*.json` file under the root is read and
checked, failures reported; (2) the date window (`since`, `until`: inclusive, on `created`; a
bare `until` date includes its whole day) keeps the records written in it; (3) one record per
run identity: the newest by `created` (a time read as UTC; records dated more than a day ahead
are refused at step 1, so a forged future date never wins), and when records of one run differ
in their metrics the difference is reported (`conflicts`), naming both files. So a date window
shows the store as it stood then: a run re-run after `until` shows its record from before.
Task, encoder and protocol filters (the leaderboard's) apply to the rows of step 3.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import math
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.digest import canonical_json, sha256_hex
from common.run_id import record_run_identity
from results.escape import csv_safe
from results.record import (MAX_RECORD_BYTES, RecordError, check_record, parse_record,
                            read_record, record_created, record_filename,
                            record_protocol_version)

log = logging.getLogger(__name__)

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

    After each `records()` / `frame()` call: `.problems`, (path, reason) of record files that
    could not be used (reported once each; the others are read as usual); `.replaced`, how many
    older records of a re-run were left out; `.conflicts`, one line per run whose records
    differ in their metrics (also logged as a warning).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = default_root(root)
        self.problems: list[tuple[str, str]] = []
        self.conflicts: list[str] = []
        self.replaced = 0

    def paths(self) -> list[Path]:
        # Hidden files are in-flight temporary writes (see atomic_write) or not ours; linked
        # folders are not walked (rglob does not follow them), FIFOs and devices are no files.
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("*.json")
                      if p.is_file() and not any(part.startswith(".")
                                                 for part in p.relative_to(self.root).parts))

    def records(self, latest_only: bool = True, *, since=None,
                until=None) -> list[dict[str, Any]]:
        """The readable records, each with a `_path` key, written within [since, until] when
        given; with `latest_only`, one per run identity (the newest). See the module's doc
        for the order."""
        self.problems, self.conflicts, self.replaced = [], [], 0
        if not self.root.is_dir():
            self.problems.append((str(self.root), "results root does not exist"))
            return []
        low, high = date_bound(since), date_bound(until, end_of_day=True)
        out = []
        for path in self.paths():
            rec = self._read(path)
            if rec is None:
                continue
            when = record_created(rec)
            if (low is not None and when < low) or (high is not None and when > high):
                continue
            rec["_path"] = str(path)
            out.append(rec)
        if latest_only:
            kept = latest_per_run(out, conflicts=self.conflicts)
            self.replaced = len(out) - len(kept)
            out = kept
            for line in self.conflicts:
                log.warning("%s", line)
        return out

    def _read(self, path: Path) -> dict | None:
        try:
            return read_record(path)
        except OSError as exc:
            self.problems.append((str(path), f"cannot be read: {exc.strerror or exc}"))
        except RecordError as exc:
            reason = str(exc)  # said once: the path leads the line already
            if reason.startswith(str(path)):
                reason = reason[len(str(path)):].lstrip(": ")
                reason = reason[3:] if reason.startswith("is ") else reason
            if not _ignorable(path, exc):
                self.problems.append((str(path), reason))
        return None

    def frame(self, latest_only: bool = True, *, since=None, until=None):
        """One row per run (see SCHEMA): BASE_COLUMNS, then one column per metric name."""
        return records_frame(self.records(latest_only=latest_only, since=since, until=until),
                             problems=self.problems)


def date_bound(value, *, end_of_day: bool = False) -> _dt.datetime | None:
    """An ISO date or time as an aware UTC datetime (None stays None); a bare date as `until`
    (`end_of_day`) includes that whole day. ValueError with the expected form otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        when = value
    else:
        text = str(value).strip()
        try:
            when = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"cannot read the date {value!r}; use an ISO date such as "
                             f"2026-12-01 or 2026-12-01T09:30") from None
        if end_of_day and len(text) <= 10:
            when = when + _dt.timedelta(days=1, microseconds=-1)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc)


# Keys every record has; a file that is no valid JSON but holds two of them is a torn record.
_RECORD_KEYS = ('"record_version"', '"protocol_id"', '"encoder"', '"checkpoint"', '"created"',
                '"metrics"', '"data_problems"', '"protocol"')


def _ignorable(path: Path, error: RecordError) -> bool:
    """A JSON file that is not ours (an editor's file, a config, a summary) is ignored without
    a word; one that is or was a record is reported: named like one, inside a `records`
    folder, a JSON object with `record_version` (whatever is wrong with it), or an unreadable
    file whose text holds record keys (a torn copy, whatever its name: the whole file is
    searched, not its first bytes, since sorted keys put `record_version` late)."""
    if looks_like_record_name(path) or path.parent.name == "records":
        return False
    if error.kind == "field":
        return False
    if error.kind == "not_record":
        return True
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_RECORD_BYTES).decode("utf-8", "replace")
    except OSError:
        return True
    return '"record_version"' not in text and sum(key in text for key in _RECORD_KEYS) < 2


def _metrics_key(rec: dict) -> str:
    metrics = rec.get("metrics") if isinstance(rec.get("metrics"), dict) else {}
    # NaN == NaN here (a metric not computed in both records is no difference).
    return canonical_json({k: ("nan" if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in metrics.items()})


def latest_per_run(records: list[dict], conflicts: list | None = None) -> list[dict]:
    """Of several records of one run identity, the newest (by `created`, read as a time; the
    later file name breaks a tie); order kept. Runs whose records differ in their metrics are
    described in `conflicts` (when given): a re-run that did not reproduce, or a record edited
    or forged, is never resolved silently."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(run_identity(rec), []).append(rec)
    keep = set()
    for key, recs in groups.items():
        ordered = sorted(recs, key=lambda r: (record_created(r), str(r.get("_path", ""))))
        newest = ordered[-1]
        keep.add(id(newest))
        if conflicts is not None and len({_metrics_key(r) for r in recs}) > 1:
            conflicts.append(_conflict_text(key, ordered))
    return [r for r in records if id(r) in keep]


def _conflict_text(key: str, ordered: list[dict]) -> str:
    names = sorted({n for r in ordered for n in (r.get("metrics") or {})
                    if any(_metric(o, n) != _metric(r, n) for o in ordered)})
    shown = "; ".join(
        f"{r.get('_path', '<in memory>')} (created {r.get('created')}: "
        + ", ".join(f"{n} {_metric(r, n)}" for n in names[:4]) + ")" for r in ordered)
    return (f"run {key}: {len(ordered)} records of the same run differ in "
            f"{', '.join(names[:4]) or 'their metrics'}: {shown}. The newest is shown; if it is "
            f"not the right one, delete the record that is wrong (or re-run the run)")


def _metric(rec: dict, name: str):
    value = (rec.get("metrics") or {}).get(name)
    return "nan" if isinstance(value, float) and math.isnan(value) else value


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
            rows.append(_row(rec))
        except (RecordError, KeyError, TypeError, AttributeError) as exc:
            why = str(exc) if isinstance(exc, RecordError) else \
                f"record lacks expected fields: {exc!r}"
            if problems is None:
                raise ValueError(f"record {where}: {why}") from None
            problems.append((where, why))
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
# writing safely: inside the folder the user named, never through a link, faults in one line


class StorageError(ValueError):
    """The file system refused a write (read-only, permission, disk full, file-size limit) or
    a write would leave the folder the user named; the message names the file, the cause and
    what to do. A ValueError, so the command line prints it as one line (exit 2)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 errno_: int | None = None):
        super().__init__(message)
        self.path, self.errno = (str(path) if path is not None else None), errno_


_ADVICE = {
    errno.EACCES: ("permission denied", "write somewhere you may write, or fix the folder's "
                                        "permissions"),
    errno.EPERM: ("operation not permitted", "write somewhere you may write"),
    errno.EROFS: ("the file system is read-only", "write to a writable folder"),
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some of your quota or write elsewhere"),
    errno.EFBIG: ("the file grew past the file-size limit (`ulimit -f`, or the file system's "
                  "largest file)", "raise the limit (`ulimit -f unlimited`) or write a smaller "
                  "store (fewer records) or to another file system"),
    errno.EISDIR: ("it is a folder", "name a file"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.ENOENT: ("the folder does not exist", "create it or check the path"),
    errno.ENAMETOOLONG: ("the name is too long", "use a shorter path"),
    errno.ELOOP: ("too many levels of links", "check the links on the path"),
    errno.EIO: ("an input/output error of the device", "check the disk, then retry"),
}


def storage_error(exc: OSError, path, doing: str = "write") -> StorageError:
    """One clear line for an OSError met while writing `path`."""
    what, todo = _ADVICE.get(exc.errno, (exc.strerror or str(exc), "check the path and retry"))
    return StorageError(f"cannot {doing} {path}: {what}; {todo}", path, exc.errno)


@contextlib.contextmanager
def writing(path, doing: str = "write"):
    """Turn an OSError of the block into a StorageError naming `path` (StorageError passes)."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, path, doing) from None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def folder_in(root: str | os.PathLike, name: str) -> Path:
    """`root/name`, created where missing, after checking that writing there stays inside
    `root`: a `name` that is a link to a folder outside `root` (or a link that leads nowhere)
    is refused. `root` itself is the user's choice, links included."""
    root = Path(root)
    folder = root / name
    with writing(root, "create the results folder"):
        root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    if folder.is_symlink():
        target = folder.resolve()
        if not _inside(target, real_root) or not target.is_dir():
            raise StorageError(f"refusing to write into {folder}: it is a link to {target}, "
                               f"{'outside the results folder ' + str(root) if not _inside(target, real_root) else 'which is no folder'}; "
                               f"remove the link (or make it a real folder) and retry", folder)
    with writing(folder, "create the folder"):
        folder.mkdir(exist_ok=True)
    if not _inside(folder.resolve(), real_root):  # a link higher up, made meanwhile
        raise StorageError(f"refusing to write into {folder}: it leads outside the results "
                           f"folder {root}", folder)
    return folder


# --------------------------------------------------------------------------------------------
# sharing a whole store


def export_store(store: ResultStore, path: str | os.PathLike) -> int:
    """Write every record of `store` (re-runs included: the receiver dedupes the same way) as
    one file, `.parquet` or `.csv`, atomically (a link standing at `path` is replaced, not
    written through). Returns the number of records. A write the file system refuses is a
    StorageError naming the file and the cause."""
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
        write = lambda f: pq.write_table(table, f)  # noqa: E731
    else:
        # Text cells a spreadsheet would run as formulas are neutralised; numbers, the record
        # JSON (it starts with `{`) and the file names import reads back stay as they are.
        text_columns = [c for c in out.select_dtypes(include=["object", "string"]).columns
                        if c not in ("record", "record_name")]
        out[text_columns] = out[text_columns].map(csv_safe)
        out.columns = [csv_safe(c) for c in out.columns]
        text = out.to_csv(index=False)
        write = lambda f: f.write(text.encode("utf-8"))  # noqa: E731
    with writing(path):
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    return len(out)


class ImportResult(tuple):
    """(written, already present), with `.skipped`: [(row, reason)] of rows not imported."""

    def __new__(cls, written: int, present: int, skipped: list | None = None):
        self = super().__new__(cls, (written, present))
        self.skipped = list(skipped or [])
        return self

    @property
    def written(self) -> int:
        return self[0]

    @property
    def present(self) -> int:
        return self[1]


class ImportInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during an import: it stopped between two records (every file written
    is whole). `signum`, and the counts so far."""

    def __init__(self, signum: int, written: int = 0, present: int = 0, path=None):
        super().__init__(signum)
        self.signum, self.written, self.present, self.path = signum, written, present, path

    def __str__(self) -> str:
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        return (f"import of {self.path} stopped by {name} after {self.written} record(s) "
                f"written ({self.present} already there); every file written is whole: run the "
                f"same import again to add the rest")


@contextlib.contextmanager
def _stop_requests():
    """SIGINT / SIGTERM only ask the loop to stop at the next record (a file is never left
    half-written); a second signal stops at once. Main thread only (where Python delivers)."""
    pending: list[int] = []

    def ask(signum, frame):
        if pending:
            raise ImportInterrupted(signum)
        pending.append(signum)

    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                installed[sig] = signal.signal(sig, ask)
    try:
        yield pending
    finally:
        for sig, old in installed.items():
            signal.signal(sig, old)


def import_store(path: str | os.PathLike, root: str | os.PathLike) -> ImportResult:
    """Recreate the record files of an exported store under `root/records/` (atomically, so
    importing twice or from two machines never duplicates a record). Returns (written, already
    present) with `.skipped`, the rows left out and why (each also logged as a warning).

    The file is untrusted: it is read a row at a time (each row's record at most
    MAX_RECORD_BYTES), every record is checked by the one reader (`parse_record`), and each
    file name is rebuilt from the checked record (`record_filename`: encoder, task, protocol id,
    creation time) with the exported name's 6-hex suffix where that name is the same record's
    (else a suffix from its content), so no name in the file decides where anything is written.
    SIGINT / SIGTERM stop between two records (ImportInterrupted)."""
    from common import failpoints
    from results.record import write_record

    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported store at {path}")
    rows = _parquet_rows(path) if kind == "parquet" else _csv_rows(path)
    written = present = 0
    skipped: list[tuple[int, str]] = []
    out_dir = None
    with _stop_requests() as stop:
        try:
            for i, version, given_name, text in rows:
                if stop:
                    raise ImportInterrupted(stop[0])
                if version > SCHEMA_VERSION:
                    raise ValueError(f"{path} has schema_version {version}, newer than this code "
                                     f"understands ({SCHEMA_VERSION}); update harness")
                try:
                    rec = _row_record(text, f"{path}: row {i}")
                except RecordError as exc:
                    skipped.append((i, str(exc)))
                    log.warning("skipped %s", exc)
                    continue
                if out_dir is None:
                    out_dir = folder_in(root, "records")
                name = _import_name(rec, given_name)
                target = out_dir / name
                if os.path.lexists(target):
                    present += 1
                    continue
                # Said in the record, so that a missing predictions file is explained truly
                # later (an export carries none); a record imported twice keeps its first import.
                rec.setdefault("imported", {"from": path.name, "at": _now()})
                with writing(target):
                    write_record(rec, out_dir, filename=name)
                written += 1
                failpoints.hit("import_row")
            if stop:
                raise ImportInterrupted(stop[0])
        except ImportInterrupted as exc:
            raise ImportInterrupted(exc.signum, written, present, path) from None
        except KeyboardInterrupt:
            raise ImportInterrupted(signal.SIGINT, written, present, path) from None
    if out_dir is None:
        folder_in(root, "records")
    return ImportResult(written, present, skipped)


def _row_record(text, where: str) -> dict:
    if not isinstance(text, (str, bytes)) or not text.strip():
        raise RecordError(f"{where} holds no record JSON (its 'record' cell is "
                          f"{'empty' if text in ('', None) else type(text).__name__})", "format")
    return parse_record(text, where)


def _import_name(rec: dict, given) -> str:
    """The file name an imported record gets: `record_filename(rec)` (every part made safe)
    with a stable 6-hex suffix: the exported name's, when that name is this record's own,
    else one from the record's content (importing it again finds the same file)."""
    stem = record_filename(rec)[: -len("xxxxxx.json")]
    if isinstance(given, str):
        m = re.fullmatch(r"(.+)([0-9a-f]{6})\.json", given)
        if m and m.group(1) == stem:
            return given
    return stem + sha256_hex(canonical_json(rec))[:6] + ".json"


def _schema_version(value, where: str) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,6}\s*", value):
        return int(value)
    raise ValueError(f"{where}: schema_version {str(value)[:40]!r} is not a whole number; this is "
                     f"not an export of `harness results export`")


_CSV_ROW_LIMIT = MAX_RECORD_BYTES + (1 << 20)   # a record and its shown columns


def _csv_rows(path: Path):
    """(row number, schema_version, record_name, record text) of an exported CSV, one row at a
    time: a row longer than _CSV_ROW_LIMIT is refused before it is held in memory."""
    import csv

    budget = [0]

    def lines(f):
        while True:
            line = f.readline(_CSV_ROW_LIMIT + 1)
            if not line:
                return
            budget[0] += len(line)
            if budget[0] > _CSV_ROW_LIMIT:
                raise ValueError(f"{path}: a row longer than {_CSV_ROW_LIMIT >> 20} MiB; no "
                                 f"exported record is that large")
            yield line

    old_limit = csv.field_size_limit()
    csv.field_size_limit(_CSV_ROW_LIMIT)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(lines(f))
            try:
                header = next(reader, None)
                if not header or "record" not in header:
                    raise ValueError(f"{path} is not an exported result store (no 'record' "
                                     f"column); make one with `harness results export FILE`")
                at = {name: header.index(name) for name in ("schema_version", "record_name",
                                                            "record") if name in header}
                version = None
                for i, row in enumerate(reader):
                    budget[0] = 0
                    if not row:
                        continue
                    cell = lambda name: row[at[name]] if name in at and at[name] < len(row) else None  # noqa: E731
                    if version is None:  # the first row's, as exports write one for all
                        version = _schema_version(cell("schema_version"), str(path))
                    yield i, version, cell("record_name"), cell("record")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path} is not UTF-8 text ({exc.reason}): not an export of "
                                 f"`harness results export`") from None
            except csv.Error as exc:
                raise ValueError(f"{path} is not a readable CSV file (line {reader.line_num}: "
                                 f"{exc})") from None
    finally:
        csv.field_size_limit(old_limit)


def _parquet_rows(path: Path):
    """The same rows from a Parquet export, a few at a time (only the three columns read)."""
    _need_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a Parquet file this harness can read ({exc})") from None
    if "record" not in names:
        raise ValueError(f"{path} is not an exported result store (no 'record' column); make "
                         f"one with `harness results export FILE`")
    columns = [c for c in ("schema_version", "record_name", "record") if c in names]
    version, i = None, 0
    try:
        for batch in pf.iter_batches(batch_size=16, columns=columns):
            data = batch.to_pydict()
            for j in range(batch.num_rows):
                if version is None:
                    version = _schema_version((data.get("schema_version") or [None] * (j + 1))[j],
                                              str(path))
                name = data["record_name"][j] if "record_name" in data else None
                yield i, version, name, data["record"][j]
                i += 1
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: cannot read row {i} of the Parquet file ({exc})") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
