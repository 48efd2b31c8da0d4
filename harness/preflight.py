"""Checks a run makes before any training: the data problems that would otherwise surface hours
in (a missing validation file after 20 epochs, a label map in another order than the class
folders, a data root that holds nothing readable).

Runs before the encoder checkpoint is read, so a wrong path costs seconds, not a multi-GB load.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

from tasks.errors import DataError

log = logging.getLogger("harness.preflight")
_EXAMPLES = 5


def check_out_writable(out) -> None:
    """The results root must take files: `<out>/records` (the record) and `<out>/state` (the
    resumable training state) are created and a file is written and removed in each, before any
    data is read or any epoch trained (else a read-only --out surfaced when the first state
    save or the record was written, after the work)."""
    from harness.config import ConfigError

    out = Path(os.path.expanduser(str(out)))
    for sub in ("records", "state"):
        folder = out / sub
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".writable-"):
                pass
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise ConfigError(f"cannot write to the results folder {folder} (--out {out}): {reason}; "
                              f"pass a writable --out (records go to <out>/records, resumable "
                              f"state to <out>/state)") from None


def _missing_files(entries) -> list[str]:
    return [path for path, _ in entries if not os.path.exists(path)]  # frame folders (Jester) are videos too


def check_label_folders(task, split: str, entries, class_names) -> None:
    """Where videos sit in class folders (Kinetics: `<split>/<class name>/<clip>.mp4`), each
    entry's label must be its folder's index in the label map; the first disagreement is an
    error. Manifests whose folders are not class names (SSv2's flat `{id}.webm`) are skipped."""
    index = {name: i for i, name in enumerate(class_names)}
    folders = [Path(path).parent.name for path, _ in entries]
    named = sum(f in index for f in folders)
    if not entries or named < 0.9 * len(entries):
        return
    for line, ((path, label), folder) in enumerate(zip(entries, folders), start=1):
        if folder in index and index[folder] != label:
            manifest = task.manifest_path(split)
            raise DataError(
                f"task {task.name!r}: {manifest}, entry {line} ({path}) has label {label} "
                f"({class_names[label]!r}) but sits in the class folder {folder!r}, which is "
                f"class {index[folder]} of the label map {task.paths.get('labels')}. The manifest "
                f"and the label map use different class orders; rebuild the manifest from this "
                f"label map (a different K400 class order silently changes every number)")


def preflight(task, eval_split: str, log_fn=None) -> dict:
    """Validate manifests, label map and files of the train and evaluation splits.

    Returns a summary for the record: videos listed, missing and to be used per split. Raises
    DataError when a split misses more files than the task's `max_failure_fraction` allows (the
    run would stop there anyway, later) or the label map disagrees with the class folders.
    """
    say = log_fn or log.info
    class_names = task.class_names if task.paths.get("labels") else None
    summary: dict = {}
    labels_by_split = {}
    for split in dict.fromkeys(["train", eval_split]):
        entries = task.entries(split)
        if not entries:
            raise DataError(f"task {task.name!r}: the {split} manifest {task.manifest_path(split)} "
                            f"lists no videos")
        multilabel = task.spec.kind == "multilabel"
        # One class per video (the class folder's) only in classification tasks.
        if class_names is not None and task.spec.kind in ("video", "image"):
            check_label_folders(task, split, entries, class_names)
        missing = _missing_files(entries)
        summary[split] = {"videos": len(entries), "missing": len(missing),
                          "will_use": len(entries) - len(missing)}
        labels_by_split[split] = Counter(c for _, label in entries
                                         for c in (label if multilabel else (label,)))
        if missing:
            frac = len(missing) / len(entries)
            examples = "; ".join(missing[:_EXAMPLES])
            if frac > task.spec.max_failure_fraction:
                raise DataError(
                    f"task {task.name!r}: {len(missing)} of {len(entries)} {split} videos listed in "
                    f"{task.manifest_path(split)} do not exist ({100 * frac:.1f}%, more than "
                    f"max_failure_fraction {task.spec.max_failure_fraction:g}), e.g. {examples}. "
                    f"Check task.data.root (paths resolve against the manifest's folder)")
            say(f"warning: {len(missing)} {split} video(s) listed but missing (counted as "
                f"unreadable, never replaced), e.g. {examples}")
    if eval_split != "train" and class_names is not None and task.spec.kind != "detection":
        absent = sorted(set(labels_by_split[eval_split]) - set(labels_by_split["train"]))
        if absent:
            names = ", ".join(repr(class_names[i]) for i in absent[:_EXAMPLES])
            say(f"warning: {len(absent)} class(es) of the {eval_split} split have no training "
                f"video: {names}{' ...' if len(absent) > _EXAMPLES else ''}")
            summary["eval_classes_without_training_videos"] = len(absent)
    say("data: " + ", ".join(f"{split} {s['will_use']} of {s['videos']} videos"
                             for split, s in summary.items() if isinstance(s, dict)))
    return summary


def check_first_clip(dataset, split: str, tries: int = 5) -> str | None:
    """Decode (and augment) the first readable clip of a split: a data root holding files of
    the right names but the wrong content, or a missing decoder, is found now."""
    errors = []
    for i in range(min(tries, len(dataset))):
        item = dataset[i]
        if item.get("error") is None:
            return item.get("backend")  # the decoder `auto` picked on this machine
        errors.append(f"{item['path']}: {item['error']}")
    raise DataError(f"none of the first {len(errors)} {split} videos could be read: "
                    + "; ".join(errors) + ". Check the files and the decoding backend")
