"""What every native-format preparer shares: samples the publisher lists, the problems met on the
way, the shipped class lists, and writing the project's manifests + label map.

A preparer (`tasks/native/<dataset>.py`) reads the publisher's annotation files and returns a
`Prepared`: for each split, every sample the publisher lists (found on disk or not), and every
problem with the line of the annotation file it came from. `tasks.native.prepare` then opens the
found files and writes the manifests; nothing here decodes. Every file is written atomically
(`common.atomic`): a reader sees no file or a whole one.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import failpoints
from common.atomic import atomic_write_text

from ..errors import DataError, unknown_task

CLASS_LIST_DIR = Path(__file__).resolve().parent
# task name -> module of tasks/native (imported only when that task is prepared)
PREPARERS = {"k400": "k400", "ssv2": "ssv2", "in1k": "imagenet", "places205": "places205",
             "inat21": "inat21", "diving48": "diving48", "jester": "jester", "ava": "ava",
             "ek100": "ek100", "coin": "coin", "hmdb51": "hmdb51", "ucf101": "ucf101",
             # violation-of-expectation pairs (tasks.voe manifests, tasks/native/voe_common.py)
             "intphys": "intphys", "grasp": "grasp", "inflevel": "inflevel", "intphys2": "intphys2"}
PREPARE_REPORT = "prepare_report.json"
# Verdicts of the files an interrupted `prepare` opened (removed by the next complete one).
PREPARE_PROGRESS = "prepare_progress.json"
CHECK_REPORT = "check_report.json"

# Problem kinds, in the order a report lists them.
PROBLEM_KINDS = ("malformed", "unknown_label", "duplicate", "missing", "unreadable", "too_short",
                 "mislabelled")
# Kinds that keep a sample out of the manifests: everything else is reported and kept.
# A clip whose annotation and class folder disagree is kept out too: the run's preflight (rightly)
# reads such a disagreement as a class-order error, and which of the two is right is the user's call.
DROPPING = {"malformed", "unknown_label", "duplicate", "missing", "unreadable", "mislabelled"}


@dataclass
class Sample:
    """One sample the publisher lists: `where` is `annotation-file:line` (or an id in a JSON)."""

    split: str
    label: int
    where: str
    expected: str            # the file name the publisher's naming gives it
    path: str | None = None  # where it was found; None: missing
    keep: bool = True        # False: found but kept out of the manifests (a reported problem)


@dataclass
class Problem:
    kind: str
    where: str
    detail: str
    path: str | None = None
    split: str | None = None

    def line(self) -> str:
        at = f" [{self.path}]" if self.path else ""
        return f"{self.kind}: {self.where}: {self.detail}{at}"


@dataclass
class Prepared:
    task: str
    classes: list[str]
    samples: dict[str, list[Sample]]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels_source: str = ""
    kind: str = "video"


def preparer(task: str):
    """The module of `tasks/native` that reads `task`'s publisher layout."""
    if task not in PREPARERS:
        raise unknown_task(task, sorted(PREPARERS))
    return importlib.import_module(f"{__package__}.{PREPARERS[task]}")


def previous_verdicts(path: Path) -> dict:
    """The per-file verdicts of an earlier report (`files`), reused for unchanged files. A
    report that is not ours (unreadable, absurdly nested, not the shape we write) is ignored:
    it is only a cache."""
    from common.bounded import load_json as bounded_json

    if not os.path.isfile(path):
        return {}
    try:
        files = bounded_json(Path(path), max_depth=16).get("files") or {}
    except (ValueError, AttributeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {p: v for p, v in files.items() if isinstance(v, dict)}


def write_report(path: Path, report: dict) -> None:
    atomic_write_text(path, json.dumps(report, indent=1, sort_keys=False) + "\n")


def save_progress(out: Path, verdicts: dict, stopped, *, opened: int, total: int) -> Path:
    """Write OUT/prepare_progress.json: the verdicts of the files opened before a stop."""
    from ..manifest import output_folder

    output_folder(out)
    path = Path(out) / PREPARE_PROGRESS
    write_report(path, {"stopped_by": getattr(stopped, "name", str(stopped)), "opened": opened,
                        "total": total, "files": verdicts})
    return path


def forget_progress(out: Path) -> None:
    """A complete prepare's report holds every verdict: the progress file has served."""
    import contextlib

    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(out) / PREPARE_PROGRESS)


def shipped_classes(name: str) -> list[str]:
    """A class list shipped in the repo (`tasks/native/<name>_classes.txt`), one name per line."""
    from ..manifest import read_label_map

    return read_label_map(CLASS_LIST_DIR / f"{name}_classes.txt")


@contextlib.contextmanager
def annotation_file(path: str | os.PathLike, what: str = "annotation file", **kw):
    """`open(path)` as UTF-8 text for reading a publisher's file; what goes wrong while it is
    read (bytes that are not UTF-8, a CSV field past the csv module's limit, a line of a
    megabyte) is a DataError naming the file, not an internal error."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", **kw) as f:
            yield f
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x}: {e.reason}); "
                        f"is this the publisher's {what}? Re-download it, or save it as UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e}); is this the publisher's {what}?") from None


def first_existing(root: Path, candidates: list[str]) -> Path | None:
    for c in candidates:
        p = root / c
        if p.is_file():
            return p
    return None


def index_files(root: Path, extensions: tuple[str, ...],
                notes: list[str] | None = None) -> dict[str, list[str]]:
    """`file stem -> [paths]` of every file under `root` with one of `extensions` (lower case),
    so clips are found whether they sit in per-label folders, per-split folders or flat.

    Links to folders are followed (datasets are often assembled from links to other disks), but
    no folder is walked twice: each is known by its (device, inode), and a link leading back to
    a folder already walked, its own ancestor (a loop, endless to follow) or another branch, is
    not followed; `notes` (and the log) get one line per such link."""
    found: dict[str, list[str]] = defaultdict(list)
    try:
        st = os.stat(root)
    except OSError as err:
        raise DataError(f"data root {root} cannot be read: {err.strerror or err}") from None
    walked: dict[tuple[int, int], str] = {(st.st_dev, st.st_ino): str(root)}
    skipped: list[str] = []

    def unreadable(err: OSError) -> None:
        skipped.append(f"{err.filename}: not walked ({err.strerror or err})")

    for folder, dirs, files in os.walk(root, followlinks=True, onerror=unreadable):
        keep = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            path = os.path.join(folder, d)
            try:
                st = os.stat(path)
            except OSError as err:  # a dangling link, or a link loop the kernel already sees
                if os.path.islink(path):
                    skipped.append(f"{path}: a link that leads nowhere readable ({err.strerror}); "
                                   "not followed")
                continue
            key = (st.st_dev, st.st_ino)
            if key in walked:
                first = walked[key]
                real = os.path.realpath(path)
                if os.path.islink(path) and (os.path.realpath(folder) + os.sep).startswith(
                        real.rstrip(os.sep) + os.sep):
                    skipped.append(f"{path}: a link to its own ancestor {first} (a loop); not "
                                   "followed")
                else:
                    skipped.append(f"{path}: leads to {first}, already walked; not walked again")
                continue
            walked[key] = path
            keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in extensions and not f.startswith("."):
                found[stem].append(os.path.join(folder, f))
    if skipped:
        import logging

        log = logging.getLogger(__name__)
        for line in skipped:  # the report's notes say it too, where there is a report
            log.log(logging.WARNING if notes is None else logging.DEBUG, "%s", line)
        if notes is not None:
            notes += [f"walking {root}: {line}" for line in skipped]
    return found


def pick(paths: list[str], split_names: tuple[str, ...]) -> str:
    """Of several files with one stem, the one under a folder named for the split, else the first."""
    for p in paths:
        parts = {s.lower() for s in Path(p).parts}
        if parts & set(split_names):
            return p
    return paths[0]


def load_json(path: Path, what: str):
    """A publisher's JSON file, parsed within `common.bounded`'s depth and size limits."""
    from common.bounded import BoundedInputError
    from common.bounded import load_json as bounded_json

    try:
        return bounded_json(Path(path), what=str(path))
    except BoundedInputError as e:
        raise DataError(f"{e}; re-download the {what}") from None


def manifest_path_text(path: str, out: Path) -> str:
    """How a manifest in `out` names a file: relative to `out` where it lies under it, else
    absolute (the protocol's digest does not depend on which: `tasks.manifest.manifest_sha256`)."""
    p = os.path.abspath(path)
    rel = os.path.relpath(p, out)
    return p if rel.startswith("..") else Path(rel).as_posix()


def write_prepared(prepared: Prepared, out: Path, dropped: set[tuple[str, int]]) -> dict:
    """Write `{split}.csv` (`path label`, paths relative to `out` where they lie under it) and
    `classes.txt`; returns per-split counts. `dropped`: (split, index) pairs kept
    out (unreadable files found by the check)."""
    from ..manifest import output_folder

    output_folder(out)
    counts = {}
    for split, samples in prepared.samples.items():
        lines = []
        for i, s in enumerate(samples):
            if s.path is None or not s.keep or (split, i) in dropped:
                continue
            path = manifest_path_text(s.path, out)
            if "\n" in path:
                raise DataError(f"video path contains a newline and cannot go in a manifest: {path!r}")
            lines.append(f"{path} {s.label}\n")
        target = out / f"{split}.csv"
        _refuse_foreign(target)
        atomic_write_text(target, "".join(lines))
        counts[split] = {"listed": len(samples), "written": len(lines)}
        failpoints.hit("prepare.write")  # between two files of one set (the kill tests)
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in prepared.classes))
    return counts


def _refuse_foreign(target: Path) -> None:
    """Never overwrite a file that is not one of our manifests (e.g. a publisher's `train.csv`
    with a comma header): that would destroy the annotation the manifest came from."""
    if not target.is_file():
        return
    with open(target, encoding="utf-8-sig", errors="replace") as f:
        head = f.readline()
    if "," in head and not head.rstrip().rsplit(" ", 1)[-1].isdigit():
        raise DataError(f"{target} looks like a publisher's annotation file, not a manifest; "
                        f"pass --out DIR to write the manifests elsewhere")


def problems_by_kind(problems: list[Problem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return {k: counts[k] for k in PROBLEM_KINDS if k in counts}


def as_json(problems: list[Problem]) -> list[dict]:
    return [asdict(p) for p in problems]
