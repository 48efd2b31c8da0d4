"""Which files under a results folder are records, and what one file's bytes are.

Both readers of a store use these rules, so they see the same files and say the same about
each: the file scan (`ResultStore(scan=True)`, every file read on every call) and the index
(`results.index`, only the files that changed since it last looked).

- Files: every `*.json` file under the root, recursively; hidden names (a part starting with
  `.`: in-flight temporary writes of `atomic_write`, or not ours) are skipped, linked folders
  are not walked, FIFOs and devices are no files.
- A file's bytes (`judge`) are a record (checked by `results.record.parse_record`, the one
  reader), a problem (a record, or something that was one, that cannot be used: reported with
  its reason), or not ours (a JSON file that is not a record and does not look like one:
  ignored without a word).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from results.record import MAX_RECORD_BYTES, RecordError, parse_record

_RECORD_NAME = re.compile(r".+__.+__[0-9a-f]{12}__\d{8}T\d{6}_\d{6}Z-[0-9a-f]{6}\.json$")
# Keys every record has; a file that is no valid JSON but holds two of them is a torn record.
_RECORD_KEYS = ('"record_version"', '"protocol_id"', '"encoder"', '"checkpoint"', '"created"',
                '"metrics"', '"data_problems"', '"protocol"')


def looks_like_record_name(path: str | os.PathLike) -> bool:
    return bool(_RECORD_NAME.match(Path(path).name))


@dataclass
class Verdict:
    """What one file's bytes are: `record` (checked), or `problem` (the reason it cannot be
    used), or neither (not ours)."""

    record: dict | None = None
    problem: str | None = None
    error: RecordError | None = None


def read_bytes(path: Path) -> bytes:
    """A file's bytes as the one reader reads them: at most MAX_RECORD_BYTES + 1 (a larger
    file is refused by `parse_record` without being held whole)."""
    with open(path, "rb") as f:
        return f.read(MAX_RECORD_BYTES + 1)


def judge(path: Path, data: bytes) -> Verdict:
    """The verdict on the bytes `data` read from `path`."""
    try:
        return Verdict(record=parse_record(data, str(path)))
    except RecordError as exc:
        if ignorable(path, exc, data):
            return Verdict(error=exc)
        reason = str(exc)  # said once: the path leads the line already
        if reason.startswith(str(path)):
            reason = reason[len(str(path)):].lstrip(": ")
            reason = reason[3:] if reason.startswith("is ") else reason
        return Verdict(problem=reason, error=exc)


def unreadable(exc: OSError) -> str:
    return f"cannot be read: {exc.strerror or exc}"


def ignorable(path: Path, error: RecordError, data: bytes) -> bool:
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
    text = data[:MAX_RECORD_BYTES].decode("utf-8", "replace")
    return '"record_version"' not in text and sum(key in text for key in _RECORD_KEYS) < 2


def order_key(rel: str) -> tuple[str, ...]:
    """The order `sorted(paths)` gives (pathlib compares part by part) for a relative path."""
    return tuple(rel.split("/"))


@dataclass
class Folder:
    """A folder of the walk: its (mtime_ns, inode) when looked at, whether its entries were
    listed (else the index's list of its files still holds), and the `.json` links in it (a
    link's target can change without its folder changing: these are stat-ed every time)."""

    rel: str                      # "" for the root, else "a/b"
    mtime_ns: int
    ino: int
    listed: bool
    links: list[str]


def parent(rel: str) -> str:
    """The folder of a relative path ("" for the root's own entries)."""
    return rel.rpartition("/")[0]


def walk_changed(root: Path, known: dict[str, tuple[int, int, list[str]]], stable_before_ns: int):
    """The folders under `root` and the (rel, os.DirEntry) of the record file candidates of
    the folders listed: the `.json` entries that `ResultStore.paths()` would list if they are
    files (the caller stats them as it must: `entry.stat()` follows a link to a file, as
    `is_file` does; a linked folder is not walked, as rglob does not; hidden names are
    skipped). A folder is listed unless `known` (rel -> (mtime_ns, ino,
    links) as last seen) holds it with the same mtime and inode, from before
    `stable_before_ns`: adding, removing or renaming an entry (an atomic write's rename too)
    sets its folder's mtime, so an unchanged folder holds the files it held. A file rewritten
    in place changes no folder: the caller stats the files it must (see `results.index`).
    Each folder is stat-ed before it is listed, so an entry added meanwhile is found next time.
    """
    folders: list[Folder] = []
    files: list[tuple[str, os.DirEntry]] = []
    children: dict[str, list[str]] = {}
    for rel in known:
        if rel:
            children.setdefault(parent(rel), []).append(rel)
    try:
        st = os.stat(root)
    except OSError:
        return folders, files
    stack = [("", os.fspath(root), st)]
    while stack:
        rel, path, st = stack.pop()
        old = known.get(rel)
        if old is not None and old[:2] == (st.st_mtime_ns, st.st_ino) \
                and st.st_mtime_ns < stable_before_ns:
            folders.append(Folder(rel, st.st_mtime_ns, st.st_ino, False, old[2]))
            for child in children.get(rel, ()):
                child_path = os.path.join(os.fspath(root), child)
                try:
                    cst = os.stat(child_path, follow_symlinks=False)
                except OSError:  # vanished since: its parent's mtime says so next time
                    continue
                if stat.S_ISDIR(cst.st_mode):
                    stack.append((child, child_path, cst))
            continue
        try:
            entries = list(os.scandir(path))
        except OSError:  # unreadable or vanished folder: nothing of it is listed
            continue
        prefix = rel + "/" if rel else ""
        links = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            crel = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((crel, entry.path, entry.stat(follow_symlinks=False)))
                    continue
                if not entry.name.endswith(".json"):
                    continue
                if entry.is_symlink():
                    links.append(crel)
            except OSError:  # vanished meanwhile
                continue
            files.append((crel, entry))
        folders.append(Folder(rel, st.st_mtime_ns, st.st_ino, True, links))
    return folders, files
