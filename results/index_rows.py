"""What the result index keeps of one file (`index_entry`): its stat, the sha256 of its bytes,
the verdict of the one reader (`results.files.judge`) and, for a record, its frame row
(`results.frame.record_row`, the file scan's function) in the form the `records` table holds.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from results.files import judge, read_bytes, unreadable
from results.frame import BASE_COLUMNS, GROUP_KEYS, record_row
from results.record import FUTURE_SLACK, record_created
from results.runs import metrics_key

log = logging.getLogger(__name__)

# Frame columns kept as SQL columns (the dict and text columns are handled apart).
SCALARS = [c for c in BASE_COLUMNS if c not in ("path", "protocol", "protocol_departures",
                                                "record")]
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class Entry:
    """What the index keeps of one file (its row in `files`, and in `records` if one)."""

    rel: str
    size: int
    mtime_ns: int
    ino: int
    digest: str | None = None
    state: str = "ignored"
    reason: str | None = None
    retry_at: int | None = None
    row: tuple | None = None
    cell: str | None = None       # the record's group of runs (`results.run_cells`), as JSON
    texts: dict = field(default_factory=dict)


def us(when: _dt.datetime) -> int:
    delta = when - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _plain(value) -> bool:
    """Stored as an SQL value as is (and read back the same): None, text SQLite can hold,
    finite floats, 64-bit integers. Anything else (bools, big integers, NaN, odd text) goes
    into the row's `odd` JSON."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return True
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape
            return False
    return False


def path_key(rel: str) -> bytes:
    """A key whose byte order is pathlib's order of the paths (part by part): the parts joined
    by a byte below every byte a name holds (no name holds NUL; \x01 stands in for it)."""
    return os.fsencode(rel).replace(b"/", b"\x01")


def _text_ref(obj, texts: dict) -> str:
    text = json.dumps(obj)  # key order kept: the frame holds the record's dict as written
    ref = hashlib.sha256(text.encode()).hexdigest()[:24]
    texts[ref] = text
    return ref


def index_entry(root: Path, rel: str, st: os.stat_result) -> Entry:
    """Read and judge one file; OSError when it cannot be read."""
    entry = Entry(rel, st.st_size, st.st_mtime_ns, st.st_ino)
    path = root / rel
    data = read_bytes(path)
    entry.digest = hashlib.sha256(data).hexdigest()
    verdict = judge(path, data)
    if verdict.problem is not None:
        entry.state, entry.reason = "bad", verdict.problem
        entry.retry_at = _retry_at(data, verdict)
    if verdict.record is None:
        return entry
    rec = verdict.record
    full = record_row(rec, text=False)
    odd = {c: full[c] for c in SCALARS if not _plain(full[c])}
    metrics = rec.get("metrics") or {}
    entry.state = "record"
    entry.cell = json.dumps([full[c] for c in GROUP_KEYS])
    entry.row = (
        os.fsencode(rel), path_key(rel), us(record_created(rec)), rec.get("created"),
        metrics_key(rec), json.dumps(metrics), "\x1f".join(k for k in full if k not in BASE_COLUMNS),
        _text_ref(full["protocol"], entry.texts),
        _text_ref(full["protocol_departures"], entry.texts), json.dumps(odd) if odd else None,
        *[None if c in odd else full[c] for c in SCALARS])
    return entry


def _retry_at(data: bytes, verdict) -> int | None:
    """A record refused only for a creation time in the future is judged again once that time
    is within FUTURE_SLACK of now (microseconds); None for every other problem."""
    if verdict.error is None or "is in the future" not in verdict.problem:
        return None
    try:
        return us(record_created(json.loads(data)) - FUTURE_SLACK)
    except (ValueError, TypeError, AttributeError, RecursionError):
        return 0


def _judge_one(job) -> tuple[str, Entry | str]:
    root, rel, st = job
    try:
        return rel, index_entry(root, rel, st)
    except OSError as exc:
        return rel, unreadable(exc)


# Files to judge before a pool of processes pays for itself (a worker starts in about a second;
# a record costs about 0.4 ms of parsing and checking).
PARALLEL_FROM = 5000


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS)
        return os.cpu_count() or 1


@contextlib.contextmanager
def judging(root: Path, count: int):
    """A function judging lists of (rel, os.stat_result) files under `root`: (rel, Entry or
    the reason it could not be read) of each, in order. For many files (`count`: a first
    build, a million records is minutes of CPU) a pool of processes does it, one per CPU this
    process may use (at most 8); where no pool can start or run (no semaphores in a sandbox, a
    worker killed), this process does, after one line."""
    workers = min(_cpus(), 8, count // PARALLEL_FROM)
    pool = None
    if workers >= 2:
        import concurrent.futures
        import multiprocessing

        try:
            pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"))
        except OSError as exc:
            log.warning("judging %d files in this process (no worker pool: %s)", count, exc)

    def judge(files: list) -> list:
        nonlocal pool
        jobs = [(root, rel, st) for rel, st in files]
        if pool is not None:
            from concurrent.futures.process import BrokenProcessPool

            try:
                return list(pool.map(_judge_one, jobs, chunksize=256))
            except (OSError, BrokenProcessPool) as exc:
                log.warning("judging %d files in this process (no worker pool: %s)", count, exc)
                pool.shutdown(cancel_futures=True)
                pool = None
        return [_judge_one(job) for job in jobs]

    try:
        yield judge
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
