"""The release's video manifest: space-separated, no header, one `path label` per line.

Real paths contain spaces (Kinetics class folders such as `passing American football (in game)`),
so the label is whatever follows the LAST space on the line. A multi-label task's label is its
classes joined by commas, no spaces (`clips/a.mp4 3,17,42`), read as a sorted tuple.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .errors import DataError

log = logging.getLogger(__name__)


def read_manifest(path: str | os.PathLike, num_classes: int | None = None, *,
                  multilabel: bool = False) -> list[tuple[str, int]]:
    """Read a manifest into `[(video_path, label), ...]` in file order (`multilabel`: labels are
    sorted tuples of class indices).

    Relative video paths resolve against the manifest's own folder, so a data tree can be moved
    as a whole. Blank lines are ignored; anything else that is not `path label` is a DataError
    naming `file:line` and what is wrong, because a silently skipped line changes the benchmark.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    base = path.parent
    entries: list[tuple[str, int]] = []
    first_line: dict[str, int] = {}
    duplicates: list[str] = []
    # utf-8-sig: a byte-order mark (Windows editors write one) would otherwise glue itself to
    # the first path, which then "does not exist".
    with open(path, "rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            raw = _utf8(raw_bytes, path, lineno, first=lineno == 1, what="manifest")
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            video, sep, label_text = line.rstrip().rpartition(" ")
            if not sep or not video.strip():
                raise DataError(f"{where}: expected 'path label' separated by a space, got {line!r}")
            try:
                labels = [int(t) for t in label_text.split(",")] if multilabel else [int(label_text)]
            except ValueError:
                what = ("class indices joined by commas, no spaces (e.g. 3,17)" if multilabel
                        else "an integer")
                raise DataError(
                    f"{where}: label {label_text!r} is not {what} (the label is the text after the "
                    f"last space on the line): {line!r}"
                ) from None
            for label in labels:
                if label < 0 or (num_classes is not None and label >= num_classes):
                    bound = f"[0, {num_classes - 1}]" if num_classes is not None else ">= 0"
                    raise DataError(f"{where}: label {label} out of range {bound}: {line!r}")
            label = tuple(sorted(set(labels))) if multilabel else labels[0]
            video = video.rstrip()  # tolerate several spaces before the label
            if not os.path.isabs(video):
                video = str(base / video)
            if video in first_line:
                # Kept (dropping it would change the set the manifest hash covers), but a video
                # listed twice weighs twice in training and in the metric: worth a warning.
                duplicates.append(f"line {lineno} repeats line {first_line[video]} ({video})")
            first_line.setdefault(video, lineno)
            entries.append((video, label))
    if duplicates:
        log.warning("%s: %d duplicate line(s), kept as listed: %s%s", path, len(duplicates),
                    "; ".join(duplicates[:5]), " ..." if len(duplicates) > 5 else "")
    return entries


def duplicate_lines(entries: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """(entry index, index of its first occurrence) for every entry whose video is listed before."""
    first: dict[str, int] = {}
    out = []
    for i, (video, _) in enumerate(entries):
        if video in first:
            out.append((i, first[video]))
        first.setdefault(video, i)
    return out


def write_manifest(path: str | os.PathLike, entries: list[tuple[str, int]]) -> None:
    """Write `path label` lines (paths as given: relative paths are relative to the manifest),
    atomically (`common.atomic`): a link standing at `path` is replaced, never written through."""
    from common.atomic import atomic_write_text

    lines = []
    for video, label in entries:
        if "\n" in video or "\r" in video:
            raise DataError(f"video path contains a line break and cannot go in a manifest: {video!r}")
        lines.append(f"{video} {label_text(label)}\n")
    atomic_write_text(path, "".join(lines))


def own_folder(parent: str | os.PathLike, relative: str, *, create: bool = True) -> Path:
    """`parent / relative`, a folder the harness makes inside a folder the user named (digits'
    task folders, a data root's `splits/`), made if absent (`create`). The named folder itself
    is taken as named, link or not; a folder below it that already exists as a link leading
    outside it is refused, so nothing is ever written through a link the harness did not
    make into a place the user did not name."""
    parent = Path(parent)
    folder = parent / relative
    base = os.path.realpath(parent)
    node = parent
    for part in Path(relative).parts:
        node = node / part
        if os.path.islink(node):
            real = os.path.realpath(node)
            if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
                raise DataError(f"{node} is a link to {real}, outside {parent}: files are written "
                                f"only inside the folder you name, never through a link into "
                                f"another place. Remove the link, or name {real} as the output "
                                f"folder yourself")
    if create:
        output_folder(folder)
    return folder


def output_folder(folder: str | os.PathLike) -> Path:
    """Make the output folder `folder` (and its parents); a file standing there is an error
    that says so (not an internal error)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"output folder {folder}: a file of that name is in the way (or in the "
                        f"way of a folder above it); name a folder") from None
    except NotADirectoryError:
        raise DataError(f"output folder {folder}: a file is in the way of a folder above "
                        f"it; name a folder") from None
    return folder


def common_folder(paths: list[str]) -> str:
    """The deepest folder holding every path (absolute); '' for no paths."""
    if not paths:
        return ""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def manifest_sha256(entries: list[tuple[str, int]], base: str | os.PathLike | None = None) -> str:
    """Hash the (video, label) pairs, independent of line order and of where the tree lives.

    What identifies a sample is its path inside the dataset's folder plus its label, not the
    bytes of the video (a K400 digest would read 450 GB; `harness data check` judges the files)
    nor where the dataset is mounted or how a manifest names it. Paths are taken relative to
    `base` when they all lie under it (`Task.content_root`: the folder holding every video of
    the protocol's splits, so the same data prepared in place or with `--out`, at any mount
    point, with relative or absolute manifest paths gives the same digest while `val/x.mp4` and
    `test/x.mp4` stay apart), else relative to the entries' common folder. A changed label or
    video set changes the digest; a line listed twice counts twice.
    """
    if not entries:
        return hashlib.sha256(b"").hexdigest()
    paths = [os.path.abspath(p) for p, _ in entries]
    anchor = os.path.abspath(base) if base is not None else None
    if anchor is None or any(os.path.commonpath([anchor, p]) != anchor for p in paths):
        anchor = common_folder(paths)
    lines = sorted(
        f"{Path(os.path.relpath(p, anchor)).as_posix()}\t{label_text(label)}"
        for p, (_, label) in zip(paths, entries)
    )
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def label_text(label) -> str:
    """A label as a manifest writes it: `3`, or `3,17` for a multi-label entry."""
    return ",".join(str(int(c)) for c in label) if isinstance(label, tuple) else str(int(label))


def _utf8(raw: bytes, path, lineno: int, *, first: bool, what: str) -> str:
    """A line as text; a byte that is not UTF-8 is an error naming the line and the byte."""
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                        f"{e.start + 1}); save the {what} as UTF-8") from None


def read_label_map(path: str | os.PathLike) -> list[str]:
    """One class name per line; the class index is the line number (0-based). No blank lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label map not found: {path}")
    # A byte-order mark or trailing blanks are editor noise, not part of a class name: left in,
    # they would silently change the label map's hash and so the protocol id.
    data = path.read_bytes()
    lines = data.splitlines()
    names = [_utf8(b, path, i, first=i == 1, what="label map").rstrip()
             for i, b in enumerate(lines, start=1)]
    while names and not names[-1].strip():  # a trailing newline or two is harmless
        names.pop()
    for i, n in enumerate(names, start=1):
        if not n.strip():
            raise DataError(f"{path}:{i}: blank class name (the index is the line number, so blanks shift it)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate class names {dupes}")
    return names


def label_map_sha256(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
