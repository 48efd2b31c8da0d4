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

The frame's columns are `results.frame.SCHEMA`; `results.exchange` exports and imports a whole
store; `results.storage` writes safely inside the folder.

Two ways to read, one answer: the index (`results.index.RecordIndex`, `<root>/index.sqlite`,
the default) and the file scan (`scan=True`: every file read and parsed on every call, the
reference the tests and `benchmarks/store.py` compare the index with). The index is derived
from the files: each read first brings it up to date with what changed on disk, so both give
the same rows, the same problems and the same conflicts.

Everything read is untrusted (records, exports, names): `results.record.read_record` /
`parse_record` is the one reader (bounded size and depth, every field the harness reads checked
for type and range), and a record that fails is reported once, by file and reason, and left out.
Nothing read names where the harness writes: an import rebuilds each file name from the checked
record (`record_filename`), writes only under `<root>/records`, refuses a `records` folder that is
a link leading outside the root, and replaces (never writes through) a link standing at a name.

Order of selection (`records()` / `frame()`): (1) every `*.json` file under the root is read and
checked (through the index: every file that changed since the index last looked), failures
reported; (2) the date window (`since`, `until`: inclusive, on `created`; a
bare `until` date includes its whole day) keeps the records written in it; (3) one record per
run identity: the newest by `created` (a time read as UTC; records dated more than a day ahead
are refused at step 1, so a forged future date never wins), and when records of one run differ
in their metrics the difference is reported (`conflicts`), naming both files. So a date window
shows the store as it stood then: a run re-run after `until` shows its record from before.
Task, encoder and protocol filters (the leaderboard's) apply to the rows of step 3. Through the
index, steps 2 and 3 (and a `tasks` filter) are SQL, and only the files of what is printed are
read (`frame(text=False)` reads none). The leaderboard reads `cell_frame` (`results.run_cells`:
the runs of each cell, seeds and folds, folded into one row: the same board without a frame of
every run), `compare` reads `named_paths` (five columns of each run).
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from pathlib import Path
from typing import Any

from results.files import judge, order_key, read_bytes, unreadable
from results.frame import finish_frame, record_text, records_frame
from results.record import record_created
from results.runs import latest_per_run

log = logging.getLogger(__name__)

ENV_VAR = "HARNESS_RESULTS"
DEFAULT_ROOT = "runs"


def default_root(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit` (a --results value), else $HARNESS_RESULTS, else ./runs."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


class ResultStore:
    """Reads the records under `root` (recursively); never crashes on a bad file.

    `scan=True` reads every file on every call (the reference); else through the index
    (`results.index`), falling back to the scan where the index cannot be written.

    After each `records()` / `frame()` call: `.problems`, (path, reason) of record files that
    could not be used (reported once each; the others are read as usual); `.replaced`, how many
    older records of a re-run were left out; `.conflicts`, one line per run whose records
    differ in their metrics (also logged as a warning).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, scan: bool = False):
        self.root = default_root(root)
        self.scan = scan
        self.problems: list[tuple[str, str]] = []
        self.conflicts: list[str] = []
        self.replaced = 0
        self._index = None

    def paths(self) -> list[Path]:
        # Hidden files are in-flight temporary writes (see atomic_write) or not ours; linked
        # folders are not walked (rglob does not follow them), FIFOs and devices are no files.
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("*.json")
                      if p.is_file() and not any(part.startswith(".")
                                                 for part in p.relative_to(self.root).parts))

    def index(self):
        """The up-to-date index, or None when the store is read by the file scan."""
        from results.index import IndexUnavailable, RecordIndex

        if self.scan:
            return None
        if self._index is None:
            self._index = RecordIndex(self.root)
        try:
            self._unread = self._index.update()
        except IndexUnavailable as exc:
            log.warning("%s; reading every record file instead", exc)
            self.scan = True
            return None
        return self._index

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
        index = self.index()
        if index is None:
            return self._scan_records(latest_only, low, high)
        out = []
        for path in self._index_rows(index, latest_only, low, high).get("path", []):
            rec = self.read(Path(path))  # only the chosen records' files are read
            if rec is not None:
                rec["_path"] = path
                out.append(rec)
        return out

    def _scan_records(self, latest_only: bool, low, high) -> list[dict]:
        out = []
        for path in self.paths():
            rec = self.read(path)
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

    def read(self, path: Path) -> dict | None:
        """One record file by the one reader; a problem is added to `.problems`."""
        try:
            verdict = judge(path, read_bytes(path))
        except OSError as exc:
            self.problems.append((str(path), unreadable(exc)))
            return None
        if verdict.problem is not None:
            self.problems.append((str(path), verdict.problem))
        return verdict.record

    def _index_rows(self, index, latest_only: bool, low, high, tasks=None) -> dict[str, list]:
        """The frame's columns (without `record`) of the rows the index selects, in the files'
        order; sets problems, conflicts and replaced as the scan does."""
        from results.index import row_columns

        lo, hi = (_us(low) if low is not None else None), (_us(high) if high is not None else None)
        self._index_report(index, lo, hi, latest_only)
        return row_columns(index, index.select(low_us=lo, high_us=hi, latest_only=latest_only,
                                               tasks=tasks))

    def _index_report(self, index, lo, hi, latest_only: bool = True) -> None:
        """problems, conflicts and replaced as the scan sets them, from the index."""
        self.problems = sorted(index.problems() + self._unread,
                               key=lambda p: order_key(os.path.relpath(p[0], self.root)))
        self.conflicts, self.replaced = [], 0
        if latest_only:
            self.conflicts = index.conflicts(lo, hi)
            records, runs = index.counts(lo, hi)
            self.replaced = records - runs
            for line in self.conflicts:
                log.warning("%s", line)

    def frame(self, latest_only: bool = True, *, since=None, until=None, tasks=None,
              text: bool = True):
        """One row per run (see SCHEMA): BASE_COLUMNS, then one column per metric name.
        `tasks` keeps those tasks' rows (after one row per run is chosen); without `text` the
        `record` column is left empty (the index then reads no record file at all)."""
        if not self.root.is_dir():
            self.records(latest_only)
            return records_frame([], problems=self.problems)
        index = self.index()
        if index is None:
            frame = records_frame(self.records(latest_only=latest_only, since=since,
                                               until=until), problems=self.problems)
            if tasks is not None:
                frame = frame[frame["task"].isin(list(tasks))].reset_index(drop=True)
            if not text:
                frame["record"] = None
            return frame
        import pandas as pd

        self.problems, self.conflicts, self.replaced = [], [], 0
        columns = self._index_rows(index, latest_only, date_bound(since),
                                   date_bound(until, end_of_day=True), tasks)
        if text:
            columns = self._with_text(columns)
        return finish_frame(pd.DataFrame(columns))

    def cell_frame(self, metric: str | None, *, since=None, until=None):
        """The leaderboard's input with the runs of each cell folded together
        (`results.run_cells`: one row per group of runs, not per run; the same board as from
        `frame()`), read from the index alone; None where the board needs the frame of runs
        (the file scan, a metric named like a base column, no run with `metric`). `metric`
        None: the frames of every protocol's headline metric (`headline_metric`) together,
        for a board of each task under its own."""
        import pandas as pd

        from results.columns import headline_metric
        from results.run_cells import cell_frame, usable_metric

        if not self.root.is_dir() or (metric is not None and not usable_metric(metric)):
            return None
        index = self.index()
        if index is None:
            return None
        low, high = date_bound(since), date_bound(until, end_of_day=True)
        lo, hi = (_us(low) if low is not None else None), (_us(high) if high is not None else None)
        self._index_report(index, lo, hi)
        if metric is not None:
            return cell_frame(index, metric, low_us=lo, high_us=hi)
        # The texts hold departures too: their headline reads as top1, which is asked anyway.
        metrics = sorted({headline_metric(t) for t in index.texts().values()} | {"top1"})
        if not all(usable_metric(m) for m in metrics):
            return None
        frames = [cell_frame(index, m, low_us=lo, high_us=hi) for m in metrics]
        frames = [f for f in frames if f is not None]
        if not frames:
            return None
        if len(frames) == 1:
            return frames[0]
        frame = pd.concat(frames, ignore_index=True)
        # One order of groups over the metrics, as one frame of runs would have them.
        keys = [r.key(0) if r.values else (math.inf,) for r in frame["_runs"]]
        return frame.iloc[sorted(range(len(frame)), key=keys.__getitem__)].reset_index(drop=True)

    def named_paths(self, refs: list[str]) -> list[str]:
        """The record files (one per run, in the frame's order) that any of `refs` could name:
        a run id (or a prefix of 6 characters or more), a record file's stem, a run label, an
        encoder label or an encoder name. Through the index, SQL finds the few candidates."""
        index = self.index()
        if index is None:
            frame = self.frame(text=False)
            rows = [] if frame.empty else zip(frame["path"], frame["run_id"].astype(str),
                                              frame["label"], frame["encoder_label"],
                                              frame["encoder"])
        else:
            self._index_report(index, None, None)
            base = str(self.root)
            prefix = "" if base == "." else base.rstrip("/") + "/"
            fetched = list(index.select_named(refs))
            fetched.sort(key=lambda r: r[:4])  # the frame's order: task, encoder, creation, file
            rows = ((prefix + os.fsdecode(p), str(run), label, enc_label, enc)
                    for _, enc, _, _, p, run, label, enc_label in fetched)
        wanted, prefixes = set(refs), tuple(r for r in refs if len(r) >= 6)
        out = []
        for path, run, label, enc_label, enc in rows:
            name = path.rpartition("/")[2]  # Path(path).stem, without a Path per row
            stem = name[:-5] if name.endswith(".json") else Path(name).stem
            if {run, stem, label, enc_label, enc} & wanted or (prefixes and run.startswith(prefixes)):
                out.append(path)
        return out

    def chunks(self, size: int = 2000):
        """Every record (re-runs included) as frames of at most `size` rows, in the frame's
        order (task, encoder, creation), each with the same columns (the whole store's metric
        columns) and its `record` text: what export streams. The file scan yields one frame."""
        if not self.root.is_dir():
            self.records(False)
            return
        index = self.index()
        if index is None:
            frame = self.frame(latest_only=False)
            if not frame.empty:
                yield frame
            return
        import pandas as pd

        from results.frame import BASE_COLUMNS
        from results.index import row_columns

        self.problems = sorted(index.problems() + self._unread,
                               key=lambda p: order_key(os.path.relpath(p[0], self.root)))
        columns = BASE_COLUMNS + index.metric_order()
        cursor = index.select(latest_only=False, order="frame")
        while True:
            fetched = cursor.fetchmany(size)
            if not fetched:
                return
            chunk = self._with_text(row_columns(index, fetched))
            if chunk.get("path"):
                yield finish_frame(pd.DataFrame(chunk)).reindex(columns=columns)

    def _with_text(self, columns: dict[str, list]) -> dict[str, list]:
        """The `record` column, read from each row's file (a file that no longer reads is a
        problem and its row is left out, as the scan would)."""
        keep = []
        for i, path in enumerate(columns.get("path", [])):
            rec = self.read(Path(path))
            if rec is not None:
                columns["record"][i] = record_text(rec)
                keep.append(i)
        if len(keep) < len(columns.get("path", [])):
            columns = {name: [values[i] for i in keep] for name, values in columns.items()}
        return columns


def _us(when: _dt.datetime) -> int:
    from results.index_rows import us

    return us(when)

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
