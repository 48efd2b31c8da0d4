"""Kinetics-400 as published: annotation CSVs + clips named `{youtube_id}_{start:06d}_{end:06d}`.

Annotation rows are `label,youtube_id,time_start,time_end,split`, some copies with a sixth
`is_cc` column, most with a header line; labels hold spaces and parentheses
("passing American football (in game)") and are quoted where needed. The unlabelled test list
of the original release has no `label` column. Clips sit in per-label folders
(`train/abseiling/...mp4`) or flat (`train/...mp4`); both are found, by file stem.

The class index is the position in the 400 names sorted (shipped as `k400_classes.txt`, from
the publisher's CSVs), so every user gets the same order and protocol id.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError
from .common import (Prepared, Problem, Sample, annotation_file, first_existing, index_files, pick,
                     shipped_classes)

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
ANNOTATION_NAMES = {
    split: [f"annotations/{split}.csv", f"kinetics-400_{split}.csv", f"kinetics400_{split}.csv",
            f"kinetics_400_{split}.csv", f"k400_{split}.csv", f"annotations/kinetics-400_{split}.csv",
            f"kinetics_{split}.csv", f"annotations/kinetics_{split}.csv"]  # mmaction2's renames
    for split in SPLITS
}
# DeepMind's kinetics400.tar.gz names the validation list validate.csv (mmaction2's
# download_annotations.sh renames it kinetics_val.csv).
ANNOTATION_NAMES["val"] += ["validate.csv", "kinetics400/validate.csv", "annotations/validate.csv"]
ANNOTATION_NAMES["train"] += ["kinetics400/train.csv"]
ANNOTATION_NAMES["test"] += ["kinetics400/test.csv"]
# CVDF's mirror ships fixed copies of clips that are corrupt in its tarballs; its own arranging
# script puts them in place of the originals, so a replacement always wins over the original.
REPLACEMENT_FOLDER = "replacement"
# The publisher calls the validation split "validate" in some copies' folders and `split` column.
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "validate", "validation"),
                 "test": ("test", "testing")}


def layout() -> str:
    return ("ROOT/annotations/{train,val,test}.csv (or ROOT/kinetics-400_{train,val,test}.csv, or "
            "DeepMind's ROOT/{train,validate,test}.csv) and the clips "
            "ROOT/{train,val,test}/[<label>/]{youtube_id}_{start:06d}_{end:06d}.mp4 (CVDF's "
            "ROOT/replacement/... fixed clips are used in place of the originals)")


def clip_stem(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    classes = shipped_classes("k400")
    index = {c: i for i, c in enumerate(classes)}
    ann_root = Path(annotations) if annotations is not None else root
    walk_notes: list[str] = []
    files = index_files(root, VIDEO_EXTENSIONS, walk_notes)
    prepared = Prepared("k400", classes, {}, labels_source="shipped tasks/native/k400_classes.txt "
                        "(the 400 names of the publisher's CSVs, sorted)", notes=walk_notes)
    found_any = False
    for split in SPLITS:
        ann = first_existing(ann_root, ANNOTATION_NAMES[split])
        if ann is None:
            prepared.notes.append(f"{split}: no annotation file (looked for "
                                  f"{', '.join(ANNOTATION_NAMES[split][:2])} under {ann_root})")
            continue
        found_any = True
        samples = _read_split(ann, split, index, files, prepared.problems)
        if samples is None:
            prepared.notes.append(f"{split}: {ann} has no label column (the original unlabelled "
                                  "test list); no manifest written for it")
            continue
        prepared.samples[split] = samples
    if not found_any:
        raise DataError(f"k400: no annotation CSV under {ann_root}; expected {layout()}")
    return prepared


def _columns(header: list[str]) -> dict[str, int] | None:
    names = [h.strip().lower() for h in header]
    if "youtube_id" in names and "time_start" in names:
        return {n: names.index(n) for n in names}
    return None


def _read_split(ann: Path, split: str, index: dict[str, int], files: dict[str, list[str]],
                problems: list[Problem]) -> list[Sample] | None:
    """The split's samples in file order; None when the file has no label column."""
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    with annotation_file(ann, "Kinetics annotation CSV", newline="") as f:
        reader = csv.reader(f)
        cols = None
        for row in reader:
            lineno = reader.line_num
            where = f"{ann}:{lineno}"
            if not row or not any(c.strip() for c in row):
                continue
            if cols is None:
                cols = _columns(row)
                if cols is not None:
                    continue  # the header line
                # No header: the publisher's column order, with or without `is_cc`; four
                # columns is the unlabelled test list.
                cols = ({n: i for i, n in enumerate(COLUMNS)} if len(row) >= 5
                        else {n: i for i, n in enumerate(COLUMNS[1:])})
            try:
                ytid = row[cols["youtube_id"]].strip()
                start, end = int(row[cols["time_start"]]), int(row[cols["time_end"]])
            except (IndexError, ValueError):
                problems.append(Problem("malformed", where, f"expected {','.join(COLUMNS)}[,is_cc], "
                                        f"got {','.join(row)!r}", split=split))
                continue
            if "label" not in cols:
                return None  # the original, unlabelled test list: nothing to evaluate on
            label = row[cols["label"]].strip()
            if label not in index:
                import difflib

                close = difflib.get_close_matches(label, list(index), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(Problem("unknown_label", where, f"label {label!r} is not one of the "
                                        f"400 Kinetics classes{hint}", split=split))
                continue
            stem = clip_stem(ytid, start, end)
            if stem in seen:
                problems.append(Problem("duplicate", where, f"{stem} is listed again (first at "
                                        f"{seen[stem]}); kept once", split=split))
                continue
            seen[stem] = where
            paths = files.get(stem) or files.get(ytid)
            sample = Sample(split, index[label], where, f"{stem}.mp4")
            if not paths:
                problems.append(Problem("missing", where, f"{label!r} clip {stem}.mp4 not found under "
                                        "the data root", split=split))
            else:
                fixed = [p for p in paths if any(part.lower().startswith(REPLACEMENT_FOLDER)
                                                 for part in Path(p).parts)]
                sample.path = fixed[0] if fixed else pick(paths, SPLIT_ALIASES[split])
                folder = Path(sample.path).parent.name
                if folder in index and folder != label:
                    problems.append(Problem("mislabelled", where, f"annotated {label!r} but the clip "
                                            f"sits in the class folder {folder!r}; left out of the "
                                            "manifest (move the file or fix the annotation)",
                                            path=sample.path, split=split))
                    sample.keep = False
            samples.append(sample)
    return samples
