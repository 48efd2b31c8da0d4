"""The result store's index: one SQLite row per record file, beside the records.

`<root>/index.sqlite` (WAL mode, the standard library's sqlite3) is derived from the record
files, which stay the truth. Every read first brings it up to date (`RecordIndex.update`): the
folders are walked (`results.files.walk_changed`, the file scan's rules) and each file's (size,
mtime_ns, inode) compared with what the index saw; a file that is new or differs is read and
judged again unless its bytes' sha256 is the one indexed, a file that is gone loses its row.
Files modified within RACY_NS of the last update are re-hashed (a rewrite within the file
system's time granularity keeps its mtime).

The cheap check: a folder whose (mtime, inode) is the one last seen, from before the last
update's racy window, is not listed again and its files are not stat-ed: creating, deleting or
renaming a file (a writer's atomic rename too) sets its folder's mtime. A folder that changed
is listed, and of its entries only the new ones and those of another inode than indexed (a
file replaced by a rename) are stat-ed: a new record in a folder of a million costs one stat.
What a folder's mtime does not show, a file rewritten in place (or deleted and copied back
under the inode number it had), is found for files modified within RECENT_NS (10
minutes: a record completed or fixed soon after it was written), for `.json` links (stat-ed
every time), and for every file by a full walk: when the last one is older than FULL_WALK_NS
(an hour), and on `harness results reindex`. So an old record edited in place by hand shows
within the hour, or at once after `reindex`; a writer that crashed between its record's
rename and its index row, a record deleted, torn, renamed or copied in are all found on the
next read; nothing has to tell the index.

What a row holds: the frame's columns (`results.frame.record_row`, the same function the file
scan uses) except the whole record's text (read from the file when asked for), the record's
metrics as written, its run identity, creation time in microseconds, and the file's path, size,
mtime, inode and digest. Files that are problems keep their reason (`state` 'bad') and files
that are not ours are remembered as such ('ignored'), both until the file changes; a record
refused for a creation time in the future is judged again once that time is near. Protocols are
kept once per distinct text (`texts`).

The index is rebuilt from scratch, with one log line, when it is missing, cannot be opened,
is damaged (truncated, overwritten), or was made by other code (`stamp`: the index version and
a digest of the modules whose rules decide what a row holds). `harness results reindex` forces
it. A folder where the index cannot be written is read by the file scan instead (one line).
Many new files (a first build) are judged by a pool of processes, one per CPU, and committed
WRITE_CHUNK at a time: memory stays that of one chunk, and a build killed part way is taken up
by the next read.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

from results.files import Folder, order_key, parent, read_bytes, unreadable, walk_changed
from results.frame import BASE_COLUMNS
from results.index_rows import SCALARS, Entry, index_entry, judging
from results.runs import conflict_text

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
INDEX_VERSION = 1
RACY_NS = 3_000_000_000          # coarsest common mtime granularity (FAT: 2 s), with margin
# Files modified this recently are stat-ed even in a folder that did not change (a record
# completed or edited in place soon after it was written); every folder and file is stat-ed
# again when the last full walk is older than FULL_WALK_NS (an old file edited in place,
# keeping its folder's mtime, is found then, or at once by `harness results reindex`).
RECENT_NS = 600 * 1_000_000_000
FULL_WALK_NS = 3600 * 1_000_000_000
WRITE_CHUNK = 20_000  # entries judged and written at a time
_HERE = Path(__file__).resolve().parent
# The rules that decide a row: a change to any of these modules rebuilds every index.
_RULES = [_HERE / n for n in ("index.py", "index_rows.py", "files.py", "frame.py",
                                 "record.py", "runs.py")] + \
         [_HERE.parent / "common" / "run_id.py"]


def _stamp() -> str:
    digest = hashlib.sha256(str(INDEX_VERSION).encode())
    for path in _RULES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    # state: 'record', 'bad' (reason says why) or 'ignored' (not ours)
    ("CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
     "ino INTEGER, digest TEXT, state TEXT NOT NULL, reason TEXT, retry_at INTEGER, "
     "parent BLOB NOT NULL)"),
    # What an update looks at when most folders did not change: the files of the folders
    # listed again, those modified recently, those due to be judged again.
    "CREATE INDEX IF NOT EXISTS files_parent ON files (parent)",
    "CREATE INDEX IF NOT EXISTS files_mtime ON files (mtime_ns)",
    "CREATE INDEX IF NOT EXISTS files_retry ON files (retry_at) WHERE retry_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS files_bad ON files (state) WHERE state = 'bad'",
    "CREATE TABLE IF NOT EXISTS texts (ref TEXT PRIMARY KEY, json TEXT NOT NULL)",
    # Groups of runs a leaderboard can only put in one cell (`results.frame.GROUP_KEYS`:
    # the values as JSON); a record's `cell_id` lets the board fold runs without their keys.
    "CREATE TABLE IF NOT EXISTS cells (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL)",
    # the folders walked: (mtime_ns, ino) as last listed, and the `.json` links in them
    ("CREATE TABLE IF NOT EXISTS folders (path BLOB PRIMARY KEY, mtime_ns INTEGER, ino INTEGER, "
     "links TEXT)"),
    ("CREATE TABLE IF NOT EXISTS records (path BLOB PRIMARY KEY, path_key BLOB NOT NULL, "
     "created_us INTEGER NOT NULL, "
     "created_text TEXT, metrics_key TEXT, metrics TEXT, metric_names TEXT, protocol_ref TEXT, "
     "departures_ref TEXT, odd TEXT, cell_id INTEGER NOT NULL, " + ", ".join(f"{_q(c)}" for c in SCALARS) + ")"),
    "CREATE INDEX IF NOT EXISTS records_run ON records (run_id, created_us, path)",
    "CREATE INDEX IF NOT EXISTS records_created ON records (created_us)",
    "CREATE INDEX IF NOT EXISTS records_order ON records (path_key)",
]



# A record's row: the entry's first ten values, its cell's id, then the frame's scalars.
_INSERT_RECORD = (f"INSERT INTO records VALUES ({', '.join('?' * 10)}, "
                  f"(SELECT id FROM cells WHERE key = ?), {', '.join('?' * len(SCALARS))})")


def _record_values(entry: Entry) -> tuple:
    return entry.row[:10] + (entry.cell,) + entry.row[10:]


def _decode(path: bytes) -> str:
    """A path as stored (bytes, so that any name the file system allows fits) as os.fsdecode
    gives it on Linux."""
    return path.decode("utf-8", "surrogateescape")


class IndexUnavailable(Exception):
    """The index cannot be written here (a read-only folder, a full disk): read the files."""


class RecordIndex:
    """The index of the records under `root`. `update()` brings it up to date; the queries
    (`problems`, `select`, `conflicts`) read what the last update saw, in one snapshot."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / INDEX_NAME
        self._con: sqlite3.Connection | None = None
        self._texts: dict | None = None

    # -- opening, creating, rebuilding -------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        if self._con is None:
            try:
                self._con = self._open()
            except sqlite3.DatabaseError as exc:
                log.warning("rebuilding the result index %s: %s", self.path, exc)
                self._remove()
                try:
                    self._con = self._open()
                except sqlite3.Error as again:
                    raise IndexUnavailable(f"cannot write the index {self.path}: {again}") from None
            except OSError as exc:
                raise IndexUnavailable(f"cannot write the index {self.path}: {exc}") from None
        return self._con

    def _open(self) -> sqlite3.Connection:
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            # The index is ours to make: never written through a link or into a non-file.
            log.warning("replacing %s: the result index is a plain file of its own", self.path)
            self._remove()
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            stamp = None if fresh else self._read_stamp(con)
            if stamp != _stamp():
                if not fresh:
                    log.warning("rebuilding the result index %s (made by other code)", self.path)
                con.execute("BEGIN IMMEDIATE")
                for table in ("meta", "files", "texts", "records", "folders", "cells"):
                    con.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in _SCHEMA:
                    con.execute(statement)
                con.executemany("INSERT INTO meta VALUES (?, ?)",
                                [("stamp", _stamp()), ("last_update_ns", "0"),
                                 ("last_full_ns", "0")])
                con.execute("COMMIT")
        except BaseException:
            con.close()
            raise
        return con

    @staticmethod
    def _read_stamp(con) -> str | None:
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'stamp'").fetchone()
        except sqlite3.OperationalError:  # no such table: an empty or foreign database
            return None
        return row[0] if row else None

    def _remove(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(str(self.path) + suffix)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                import shutil

                shutil.rmtree(str(self.path) + suffix)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def rebuild(self) -> int:
        """Forget everything and index every file again; returns the records indexed."""
        self._remove()
        self.update()
        return self.connect().execute("SELECT COUNT(*) FROM records").fetchone()[0]

    # -- bringing it up to date ----------------------------------------------------------------

    def update(self, *, full: bool = False) -> list[tuple[str, str]]:
        """Index what changed on disk since the last update (`full`: stat every folder and
        file, as if none were known). Returns the files that could not be read this time
        ((path, reason): they are tried again next time)."""
        self._texts = None
        try:
            return self._update(full)
        except sqlite3.DatabaseError as exc:  # damaged under us: start again, once
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            log.warning("rebuilding the result index %s: %s", self.path, exc)
            self._remove()
            return self._update(full)

    def _meta(self, con, key: str) -> int:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _known(self, con, full: bool, folders: list[Folder], folders_known: dict, started: int,
               now_us: int) -> dict[str, tuple]:
        """The index's rows (rel -> size, mtime_ns, ino, digest, state, retry_at) of the files
        this update looks at: every file on a full walk; else those of the folders listed
        again or gone, those modified within RECENT_NS, those due to be judged again and the
        `.json` links of the folders not listed. The others sit in folders that did not
        change: they are still there as indexed, and reading their rows (a million at lab
        scale) would cost more than the rest of a warm read."""
        def rows(where: str = "", params=()) -> dict[str, tuple]:
            return {_decode(p): tuple(rest) for p, *rest in con.execute(
                "SELECT path, size, mtime_ns, ino, digest, state, retry_at FROM files" + where,
                params)}

        if full:
            return rows()
        walked = {f.rel for f in folders}
        look = [f.rel for f in folders if f.listed] + [r for r in folders_known if r not in walked]
        known: dict[str, tuple] = {}
        for rel in look:
            known.update(rows(" WHERE parent = ?", (os.fsencode(rel),)))
        known.update(rows(" WHERE mtime_ns >= ?", (started - RECENT_NS,)))
        known.update(rows(" WHERE retry_at IS NOT NULL AND retry_at <= ?", (now_us,)))
        for folder in folders:
            if not folder.listed:
                for link in folder.links:
                    known.update(rows(" WHERE path = ?", (os.fsencode(link),)))
        return known

    def _update(self, full: bool) -> list[tuple[str, str]]:
        con = self.connect()
        started = time.time_ns()
        last = self._meta(con, "last_update_ns")
        full = full or last == 0 or started - self._meta(con, "last_full_ns") > FULL_WALK_NS
        folders_known = {} if full else {
            _decode(p): (mtime, ino, links.split("\x1f") if links else [])
            for p, mtime, ino, links in con.execute(
                "SELECT path, mtime_ns, ino, links FROM folders")}
        now_us = started // 1000
        todo, touched, unread = [], [], []
        folders, listed_files = walk_changed(self.root, folders_known, last - RACY_NS)
        known = self._known(con, full, folders, folders_known, started, now_us)
        seen = set()
        stat_again = []
        kept = {f.rel for f in folders if not f.listed}
        for folder in folders:
            if not folder.listed:
                stat_again.extend(folder.links)
        for rel, old in known.items():
            if parent(rel) in kept:
                seen.add(rel)  # its folder lists what it listed: the file is still there
                if old[1] >= started - RECENT_NS or (old[5] is not None and old[5] <= now_us):
                    stat_again.append(rel)
        candidates = []
        for rel, entry in listed_files:
            old = known.get(rel)
            try:
                # A folder's change shows names added, removed or replaced: an entry of the
                # name and inode indexed is that file still (unless a full walk looks at every
                # file), so only new and replaced entries are stat-ed, and the recent ones as
                # in a folder that did not change: one new record in a folder of a million
                # costs one stat, not a million.
                if not full and old is not None and not entry.is_symlink() \
                        and entry.inode() == old[2] and old[1] < started - RECENT_NS \
                        and (old[5] is None or old[5] > now_us):
                    seen.add(rel)
                    continue
                st = entry.stat()
            except OSError:  # vanished meanwhile, or a link that leads nowhere
                continue
            if stat.S_ISREG(st.st_mode):
                candidates.append((rel, st))
        for rel in sorted(set(stat_again)):
            seen.discard(rel)
            try:
                st = os.stat(self.root / rel)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                candidates.append((rel, st))
        for rel, st in candidates:
            seen.add(rel)
            old = known.get(rel)
            if old is None or old[:3] != (st.st_size, st.st_mtime_ns, st.st_ino) \
                    or st.st_mtime_ns >= last - RACY_NS \
                    or (old[5] is not None and old[5] <= now_us):
                todo.append((rel, st, old))
        gone = [rel for rel in known if rel not in seen]
        fresh = []
        for rel, st, old in todo:
            if old is not None and (old[5] is None or old[5] > now_us):
                try:
                    data = read_bytes(self.root / rel)
                except OSError as exc:
                    unread.append((str(self.root / rel), unreadable(exc)))
                    gone.append(rel)
                    continue
                if hashlib.sha256(data).hexdigest() == old[3]:
                    touched.append((st.st_size, st.st_mtime_ns, st.st_ino, os.fsencode(rel)))
                    continue
            fresh.append((rel, st))
        entries: list[Entry] = []
        with judging(self.root, len(fresh)) as judge:
            for at in range(0, len(fresh), WRITE_CHUNK):
                part = []
                for rel, result in judge(fresh[at:at + WRITE_CHUNK]):
                    if isinstance(result, Entry):
                        part.append(result)
                    else:
                        unread.append((str(self.root / rel), result))
                        gone.append(rel)
                if at + WRITE_CHUNK < len(fresh):
                    # A first build is written as it goes, so that it holds one chunk of
                    # entries (their protocol texts) at a time, not a million; rows committed
                    # before a crash are found current by the next update, which goes on.
                    self._write_part(con, part)
                else:
                    entries = part
        folders = [f for f in folders if f.listed]
        changed = [f for f in folders if folders_known.get(f.rel) != (f.mtime_ns, f.ino, f.links)]
        walked = {f.rel for f in folders} | kept
        dropped = [rel for rel in folders_known if rel not in walked]
        if entries or touched or gone or todo or changed or dropped or full:
            self._write(con, entries, touched, gone, started, changed, dropped, full)
        return sorted(unread, key=lambda p: order_key(os.path.relpath(p[0], self.root)))

    def _write(self, con, entries, touched, gone, started: int, folders: list[Folder],
               dropped: list[str], full: bool) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            if full:  # every folder was walked: those not seen are gone
                con.execute("DELETE FROM folders")
            con.executemany("DELETE FROM folders WHERE path = ?",
                            [(os.fsencode(rel),) for rel in dropped])
            con.executemany("INSERT OR REPLACE INTO folders VALUES (?, ?, ?, ?)",
                            [(os.fsencode(f.rel), f.mtime_ns, f.ino, "\x1f".join(f.links))
                             for f in folders])
            con.executemany("DELETE FROM records WHERE path = ?", [(os.fsencode(rel),)
                                                                    for rel in gone])
            con.executemany("DELETE FROM files WHERE path = ?", [(os.fsencode(rel),)
                                                                  for rel in gone])
            self._put(con, entries)
            con.executemany("UPDATE files SET size = ?, mtime_ns = ?, ino = ? WHERE path = ?",
                            touched)
            # The latest start of an update that committed: a file changed during a walk (after
            # the walk passed it) is within RACY_NS of it or newer, so re-hashed next time.
            con.execute("UPDATE meta SET value = ? WHERE key = 'last_update_ns' AND "
                        "(CAST(value AS INTEGER) = 0 OR CAST(value AS INTEGER) < ?)",
                        (str(started), started))
            if full:
                con.execute("UPDATE meta SET value = ? WHERE key = 'last_full_ns' AND "
                            "CAST(value AS INTEGER) < ?", (str(started), started))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @staticmethod
    def _put(con, entries: list[Entry]) -> None:
        """Inside a write transaction: the rows of `entries` replace what the index held for
        their files."""
        con.executemany("DELETE FROM records WHERE path = ?",
                        [(os.fsencode(e.rel),) for e in entries])
        con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(os.fsencode(e.rel), e.size, e.mtime_ns, e.ino, e.digest, e.state,
                          e.reason, e.retry_at, os.fsencode(parent(e.rel))) for e in entries])
        con.executemany("INSERT OR IGNORE INTO texts VALUES (?, ?)",
                        [t for e in entries for t in e.texts.items()])
        records = [e for e in entries if e.row is not None]
        con.executemany("INSERT OR IGNORE INTO cells (key) VALUES (?)", [(e.cell,) for e in records])
        con.executemany(_INSERT_RECORD, [_record_values(e) for e in records])

    def _write_part(self, con, entries: list[Entry]) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            self._put(con, entries)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def add(self, path: str | os.PathLike) -> None:
        """Index one file just written (a writer calls this after its atomic rename)."""
        path = Path(path)
        rel = path.relative_to(self.root).as_posix()
        entry = index_entry(self.root, rel, path.stat())
        # last_update_ns unchanged: the next reader's walk still checks every file.
        self._write_part(self.connect(), [entry])

    # -- reading ------------------------------------------------------------------------------

    def problems(self) -> list[tuple[str, str]]:
        """(path, reason) of the files that are problems, in the files' order."""
        rows = [(_decode(p), reason) for p, reason in self.connect().execute(
            "SELECT path, reason FROM files WHERE state = 'bad'")]
        rows.sort(key=lambda r: order_key(r[0]))
        return [(str(self.root / rel), reason) for rel, reason in rows]

    def _window(self, low_us, high_us) -> tuple[str, list]:
        clauses, params = [], []
        if low_us is not None:
            clauses.append("created_us >= ?")
            params.append(low_us)
        if high_us is not None:
            clauses.append("created_us <= ?")
            params.append(high_us)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def select(self, *, low_us=None, high_us=None, latest_only=True, tasks=None,
               order: str = "files"):
        """Cursor over the rows (columns `ROW_COLUMNS`) written within [low_us, high_us]; with
        `latest_only` one per run identity (the newest by creation, the later path breaking a
        tie); `tasks` keeps those tasks (after one row per run is chosen). `order`: 'files'
        (the files' order, pathlib's, for the frame) or 'frame' (task, encoder, creation:
        the frame's own order, for streaming)."""
        where, params = self._window(low_us, high_us)
        cols = ", ".join(_q(c) for c in ROW_COLUMNS)
        if latest_only:
            sql = (f"SELECT {cols} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id ORDER "
                   f"BY created_us DESC, path DESC) AS newest FROM records{where}) "
                   f"WHERE newest = 1")
        else:
            sql = f"SELECT {cols} FROM records{where or ' WHERE 1'}"
        if tasks is not None:
            tasks = list(tasks)
            sql += f" AND task IN ({', '.join('?' * len(tasks))})"
            params = params + tasks
        sql += " ORDER BY " + ("task, encoder, created_us, path_key" if order == "frame"
                               else "path_key")
        return self.connect().execute(sql, params)

    def select_named(self, refs: list[str]):
        """Cursor over (task, encoder, created_us, path_key, path, run_id, label,
        encoder_label) of the records, one per run identity (the newest by creation, the later
        path breaking a tie, as `select`), that `refs` may name, in no order: those whose run
        id, run label, encoder label or encoder name is one of `refs`, whose run id starts
        with one of them (6 characters or more), whose file's stem is one of them, and those
        holding values SQL could not hold as such (`odd`). A few rows of a million: the caller
        decides each."""
        refs = [str(r) for r in refs]
        if not refs:
            return iter(())
        marks = ", ".join("?" * len(refs))
        cond = [f"{c} IN ({marks})" for c in ("run_id", "label", "encoder_label", "encoder")]
        params: list = refs * 4
        for ref in refs:
            if len(ref) >= 6:
                cond.append("substr(run_id, 1, ?) = ?")
                params += [len(ref), ref]
            name = os.fsencode(ref + ".json")
            cond.append("(path = ? OR substr(path, ?) = ?)")
            params += [name, -len(name) - 1, b"/" + name]
        cond.append("odd IS NOT NULL")
        cols = "task, encoder, created_us, path_key, path, run_id, label, encoder_label"
        dups = "SELECT run_id FROM records GROUP BY run_id HAVING COUNT(*) > 1"
        one = (f"SELECT {cols}, odd FROM records WHERE run_id NOT IN ({dups}) UNION ALL "
               f"SELECT {cols}, odd FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id "
               f"ORDER BY created_us DESC, path DESC) AS newest FROM records WHERE run_id IN "
               f"({dups})) WHERE newest = 1")
        return self.connect().execute(f"SELECT {cols} FROM ({one}) WHERE {' OR '.join(cond)}",
                                      params)

    @contextlib.contextmanager
    def snapshot(self):
        """One read transaction: the queries inside it see the index as of its first read
        (WAL), whatever writers commit meanwhile."""
        con = self.connect()
        con.execute("BEGIN")
        try:
            yield self
        finally:
            con.execute("COMMIT")

    def board_runs(self, metric: str, *, low_us=None, high_us=None):
        """Cursor over (cell_id, created_us, path_key, rowid, path, departures_ref, metric
        text, whole metrics text) of one record per run identity written within [low_us,
        high_us] (the newest, as `select`), ordered by cell, then creation, then file: each cell's
        runs together, in the board's order. The metric's JSON text as written is None when
        absent; the whole metrics text is given (the metric text None) where SQLite's JSON
        cannot read it (NaN)."""
        where, params = self._window(low_us, high_us)
        where = where or " WHERE 1"
        odd = "instr(metrics, 'NaN') OR instr(metrics, 'Infinity')"
        cols = (f"cell_id, created_us, path_key, rowid, path, departures_ref, "
                f"CASE WHEN {odd} THEN NULL ELSE metrics -> ? END, CASE WHEN {odd} THEN metrics END")
        dups = f"SELECT run_id FROM records{where} GROUP BY run_id HAVING COUNT(*) > 1"
        newest = (f"SELECT rid FROM (SELECT rowid AS rid, ROW_NUMBER() OVER (PARTITION BY run_id "
                  f"ORDER BY created_us DESC, path DESC) AS newest FROM records{where} AND "
                  f"run_id IN ({dups})) WHERE newest = 1")
        sql = (f"SELECT {cols} FROM records{where} AND run_id NOT IN ({dups}) UNION ALL "
               f"SELECT {cols} FROM records WHERE rowid IN ({newest}) ORDER BY 1, 2, 3")
        path = '$."' + metric + '"'
        return self.connect().execute(sql, [path] + params + params + [path] + params + params)

    def rows_by_id(self, columns: list[str], rowids) -> dict[int, tuple]:
        """rowid -> `columns` of those records (read in the `snapshot` that found them)."""
        cols = ", ".join(_q(c) for c in columns)
        out, rowids = {}, list(rowids)
        for start in range(0, len(rowids), 500):
            chunk = rowids[start:start + 500]
            out.update((r[0], r[1:]) for r in self.connect().execute(
                f"SELECT rowid, {cols} FROM records WHERE rowid IN ({', '.join('?' * len(chunk))})",
                chunk))
        return out

    def counts(self, low_us=None, high_us=None) -> tuple[int, int]:
        """(records, runs) in the window."""
        where, params = self._window(low_us, high_us)
        return self.connect().execute(
            f"SELECT COUNT(*), COUNT(DISTINCT run_id) FROM records{where}", params).fetchone()

    def conflicts(self, low_us=None, high_us=None) -> list[str]:
        """One line per run whose records in the window differ in their metrics, worded as
        the file scan words them, in the files' order."""
        where, params = self._window(low_us, high_us)
        con = self.connect()
        # Only runs of several records can differ: found first from the run index alone.
        dups = f"SELECT run_id FROM records{where} GROUP BY run_id HAVING COUNT(*) > 1"
        cond = where + (" AND " if where else " WHERE ") + f"run_id IN ({dups})"
        runs = [r for (r,) in con.execute(
            f"SELECT run_id FROM records{cond} GROUP BY run_id "
            f"HAVING COUNT(DISTINCT metrics_key) > 1", params + params)]
        found = []
        for run in runs:
            cond = where + (" AND " if where else " WHERE ") + "run_id = ?"
            recs = [{"_path": str(self.root / _decode(p)), "created": created,
                     "metrics": json.loads(metrics), "_us": when, "_key": order_key(_decode(p))}
                    for p, created, metrics, when in con.execute(
                        f"SELECT path, created_text, metrics, created_us FROM records{cond}",
                        params + [run])]
            ordered = sorted(recs, key=lambda r: (r["_us"], r["_path"]))
            found.append((min(r["_key"] for r in recs), conflict_text(run, ordered)))
        return [text for _, text in sorted(found)]

    def texts(self) -> dict:
        """Parsed protocol and departure dicts by reference, one object per distinct text
        (read once per update)."""
        if self._texts is None:
            self._texts = {ref: json.loads(text) for ref, text in
                           self.connect().execute("SELECT ref, json FROM texts")}
        return self._texts

    def metric_order(self) -> list[str]:
        """The metric columns of the whole store's frame, in the order it meets them (the
        files' order)."""
        order: dict[str, None] = {}
        for (names,) in self.connect().execute(
                "SELECT metric_names FROM records GROUP BY metric_names ORDER BY MIN(path_key)"):
            for name in names.split("\x1f") if names else []:
                order.setdefault(name, None)
        return list(order)


# The columns `select` returns, in this order.
ROW_COLUMNS = ["path", "metrics", "protocol_ref", "departures_ref", "odd", *SCALARS]


def row_columns(index: RecordIndex, fetched) -> dict[str, list]:
    """The frame's columns (BASE_COLUMNS, then the metrics in the order met, `record` empty)
    of `select` rows, as `record_row` makes them, in the order given."""
    texts = index.texts()
    base = str(index.root)
    prefix = "" if base == "." else base.rstrip("/") + "/"  # as str(root / rel) writes it
    fetched = list(fetched)
    n = len(fetched)
    columns: dict[str, list] = {}
    if not n:
        return columns
    paths, metrics, protocol_refs, departure_refs, odds, *values = zip(*fetched)
    for name, column in zip(SCALARS, values):
        columns[name] = list(column)
    for i, odd in enumerate(odds):
        if odd:
            for name, value in json.loads(odd).items():
                columns[name][i] = value
    columns["path"] = [prefix + p.decode("utf-8", "surrogateescape") for p in paths]
    columns["protocol"] = [texts[ref] for ref in protocol_refs]
    columns["protocol_departures"] = [texts[ref] for ref in departure_refs]
    columns["record"] = [None] * n
    columns = {c: columns[c] for c in BASE_COLUMNS}
    nan = float("nan")
    # One parse for the chunk's metrics (a JSON array of the rows' objects).
    for i, row in enumerate(json.loads("[" + ",".join(metrics) + "]")):
        for name, value in row.items():
            if name != "num_samples" and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                column = f"metric.{name}" if name in BASE_COLUMNS else name
                if column not in columns:
                    columns[column] = [nan] * n
                columns[column][i] = float(value)
    return columns


def describe() -> list[str]:
    """What `harness results schema` says about the index."""
    lines = [f"result index: <results>/{INDEX_NAME} (SQLite, WAL mode), version {INDEX_VERSION};",
             "derived from the record files, which stay the truth: each read first indexes what",
             "changed on disk (new, rewritten, deleted or torn files, found by path, size, mtime",
             "and inode, confirmed by the sha256 of the bytes); a missing, damaged or foreign",
             "index is rebuilt (one log line); `harness results reindex` forces it. Tables:",
             "  files    path, size, mtime_ns, ino, digest (sha256), state (record | bad |",
             "           ignored), reason (why a bad file cannot be used), retry_at (a record",
             "           refused for a future creation time is judged again from then),",
             "           parent (its folder)",
             "  records  path, created_us, created_text, metrics_key, metrics (as written),",
             "           metric_names, protocol_ref, departures_ref (-> texts), odd (values",
             "           SQL cannot hold as such, JSON), cell_id (-> cells), then the frame's",
             "           columns:",
             "           " + ", ".join(SCALARS[:6]) + ",",
             "           " + ", ".join(SCALARS[6:13]) + ",",
             "           " + ", ".join(SCALARS[13:]),
             "  texts    ref, json: each distinct protocol and protocol_departures once",
             "  cells    id, key: each group of runs a leaderboard puts in one cell (encoder,",
             "           encoder label, checkpoint and its sha256, label, task, protocol id)",
             "  folders  path, mtime_ns, ino, links: each folder as last listed (a folder whose",
             "           mtime and inode did not change is not listed again; files modified in",
             "           the last 10 minutes and .json links are stat-ed anyway; every file on",
             "           a full walk, hourly and on reindex)",
             "  meta     stamp (index version and the rules' digest), last_update_ns,",
             "           last_full_ns"]
    return lines


def note_written(path: str | os.PathLike, root: str | os.PathLike) -> None:
    """A writer's record `path` (just renamed into place under `root`) into `root`'s index,
    when there is one. Never fails the write: a row not added (a locked or damaged index, a
    crash before this) is found by the next read's walk."""
    index = RecordIndex(root)
    if not index.path.is_file() or index.path.is_symlink():
        return
    try:
        index.add(path)
    except (sqlite3.Error, OSError, ValueError, IndexUnavailable) as exc:
        log.debug("record %s not added to the index %s (the next read adds it): %s", path,
                  index.path, exc)
    finally:
        index.close()


def note_updated(root: str | os.PathLike) -> None:
    """After a writer wrote many records under `root` (an import): its index, when there is
    one, indexes them in one pass. Never fails the writer (the next read does it then)."""
    index = RecordIndex(root)
    if not index.path.is_file() or index.path.is_symlink():
        return
    try:
        index.update()
    except (sqlite3.Error, OSError, IndexUnavailable) as exc:
        log.debug("index %s not updated (the next read does it): %s", index.path, exc)
    finally:
        index.close()
