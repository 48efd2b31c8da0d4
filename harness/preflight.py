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


def preflight(task, eval_split: str, kind=None) -> dict:
    """Validate manifests, label map and files of the train and evaluation splits.

    Returns a summary for the record: videos listed, missing and to be used per split. Raises
    DataError when a split misses more files than the task's `max_failure_fraction` allows (the
    run would stop there anyway, later) or the label map disagrees with the class folders.
    """
    if kind is None:
        from tasks.kinds import for_task

        kind = for_task(task)
    class_names = task.class_names if task.paths.get("labels") else None
    summary: dict = {}
    labels_by_split = {}
    for split in dict.fromkeys(["train", eval_split]):
        entries = task.entries(split)
        if not entries:
            raise DataError(f"task {task.name!r}: the {split} manifest {task.manifest_path(split)} "
                            f"lists no videos")
        # One class per video (the class folder's) only in classification tasks.
        if class_names is not None and kind.single_label:
            check_label_folders(task, split, entries, class_names)
        missing = _missing_files(entries)
        summary[split] = {"videos": len(entries), "missing": len(missing),
                          "will_use": len(entries) - len(missing)}
        labels_by_split[split] = Counter(c for _, label in entries
                                         for c in ((label,) if kind.single_label or isinstance(label, int)
                                                   else label))
        if missing:
            frac = len(missing) / len(entries)
            examples = "; ".join(missing[:_EXAMPLES])
            if frac > task.spec.max_failure_fraction:
                raise DataError(
                    f"task {task.name!r}: {len(missing)} of {len(entries)} {split} videos listed in "
                    f"{task.manifest_path(split)} do not exist ({100 * frac:.1f}%, more than "
                    f"max_failure_fraction {task.spec.max_failure_fraction:g}), e.g. {examples}. "
                    f"Check task.data.root (paths resolve against the manifest's folder)")
            log.warning("%d %s video(s) listed but missing (counted as unreadable, never "
                        "replaced), e.g. %s", len(missing), split, examples)
    if eval_split != "train" and class_names is not None and not kind.boxes:
        absent = sorted(set(labels_by_split[eval_split]) - set(labels_by_split["train"]))
        if absent:
            names = ", ".join(repr(class_names[i]) for i in absent[:_EXAMPLES])
            log.warning("%d class(es) of the %s split have no training video: %s%s",
                        len(absent), eval_split, names, " ..." if len(absent) > _EXAMPLES else "")
            summary["eval_classes_without_training_videos"] = len(absent)
    log.info("data: " + ", ".join(f"{split} {s['will_use']} of {s['videos']} videos"
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


def run_size_notes(plan) -> list[str]:
    """What a small replica does to the protocol, said before training (the paper's global batch
    of 256 on 18 training videos is one optimiser step per epoch)."""
    notes = []
    n_train = len(plan.train_data.dataset)
    steps = len(plan.train_data)
    if plan.probe_type.trained and plan.optim.batch_size >= n_train:
        notes.append(f"the global batch ({plan.optim.batch_size}) is not smaller than the "
                     f"training split ({n_train} videos): {steps} optimiser step(s) per epoch, "
                     f"{steps * plan.optim.epochs} in all; set task.optim.batch_size=N for a "
                     f"small replica (the column title will show the change)")
    return notes
