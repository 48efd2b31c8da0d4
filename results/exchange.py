"""Sharing a whole store: `export_store` writes every record as one Parquet or CSV file, in
chunks (constant memory: the records are streamed from the index, a chunk of rows at a time);
`import_store` recreates the record files from one, a row at a time. Per-sample predictions
stay behind, and an imported record says so (`imported: {from, at}`).

Everything read is untrusted: every row's record is checked by the one reader
(`results.record.parse_record`), and each file name is rebuilt from the checked record
(`record_filename`), written only under `<root>/records` (`results.storage.folder_in`: never
through a link leading outside the root).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import signal
import threading
from pathlib import Path

from common.atomic import atomic_write
from common.digest import canonical_json, sha256_hex
from results.escape import csv_safe
from results.frame import BASE_COLUMNS, DICT_COLUMNS, SCHEMA_VERSION
from results.record import MAX_RECORD_BYTES, RecordError, parse_record, record_filename
from results.storage import folder_in, writing

log = logging.getLogger(__name__)


def export_store(store, path: str | os.PathLike) -> int:
    """Write every record of `store` (a `ResultStore`; re-runs included: the receiver dedupes
    the same way) as one file, `.parquet` or `.csv`, atomically (a link standing at `path` is
    replaced, not written through), a chunk of rows at a time (`ResultStore.chunks`: constant
    memory through the index). Returns the number of records. A write the file system refuses
    is a StorageError naming the file and the cause."""
    path = Path(path)
    kind = _kind(path)
    if kind == "parquet":
        _need_pyarrow()
    count = [0]

    def write(f):
        writer = None
        for frame in store.chunks():
            out = _export_rows(frame)
            count[0] += len(out)
            if kind == "parquet":
                writer = _parquet_chunk(writer, out, f)
            else:
                f.write(out.to_csv(index=False, header=writer is None).encode("utf-8"))
                writer = True
        if kind == "parquet" and writer is not None:
            writer.close()
        elif writer is None:  # an empty store: the header alone (Parquet: an empty table)
            _empty_export(kind, f)

    with writing(path):
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    return count[0]


def _export_rows(frame):
    """The exported columns of one chunk: schema_version, record_name, the frame's columns
    (the dict columns and `path` left out: `record` carries them), every cell a plain value;
    text a spreadsheet would run as a formula neutralised (numbers, the record JSON, which
    starts with `{`, and the file names import reads back stay as they are)."""
    import pandas as pd

    out = frame.drop(columns=[*DICT_COLUMNS, "path"]).astype(object)
    out.insert(0, "record_name", [Path(p).name if isinstance(p, str) else None
                                  for p in frame["path"]])
    out["created"] = [t.isoformat() if t is not None and not pd.isna(t) else None
                      for t in frame["created"]]
    out.insert(0, "schema_version", SCHEMA_VERSION)
    out.attrs = {}
    for column in out.columns:
        if column not in ("record", "record_name"):
            out[column] = [csv_safe(v) if isinstance(v, str) else v for v in out[column]]
    out.columns = [csv_safe(c) for c in out.columns]
    return out


_INT_COLUMNS = ("schema_version", "seed", "world_size", "checkpoint_step", "protocol_version")
_TEXT_COLUMNS = set(BASE_COLUMNS) - {"num_samples", "split_size", "params", "gflops_per_clip",
                                     "clips_per_s", "device_hours", *_INT_COLUMNS}


def _parquet_chunk(writer, out, f):
    """Append one chunk to the Parquet file (one schema for every chunk: integers, floats for
    numbers and metrics, text for the rest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = []
    for column in out.columns:
        if column in _INT_COLUMNS:
            kind = pa.int64()
            # A value no 64-bit integer holds (a hostile seed) is an empty cell here; the
            # `record` column, which import reads, keeps it whole.
            out[column] = [v if isinstance(v, int) and not isinstance(v, bool)
                           and -(1 << 63) <= v < (1 << 63) else None for v in out[column]]
        elif column in _TEXT_COLUMNS or column == "record_name":
            kind = pa.string()
            out[column] = [v if v is None or isinstance(v, str) else json.dumps(v, default=str)
                           for v in out[column]]
        else:
            kind = pa.float64()
        fields.append(pa.field(column, kind))
    schema = pa.schema(fields)
    table = pa.Table.from_pandas(out, schema=schema, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(f, schema)
    writer.write_table(table)
    return writer


def _empty_export(kind: str, f) -> None:
    import pandas as pd

    columns = ["schema_version", "record_name"] + [c for c in BASE_COLUMNS
                                                   if c not in (*DICT_COLUMNS, "path")]
    empty = pd.DataFrame(columns=columns)
    if kind == "csv":
        f.write(empty.to_csv(index=False).encode("utf-8"))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pandas(empty.astype(str), preserve_index=False), f)


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
    from results.index import note_updated
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
    if written:
        note_updated(root)  # the rows of what was written, in one pass
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
