"""20BN-Jester v1 as published: `jester-v1-labels.csv` (the 27 class names, one per line, in id
order), `jester-v1-train.csv` / `jester-v1-validation.csv` (`id;label` per line, no header) and
each video as a folder of numbered JPEG frames `20bn-jester-v1/<id>/00001.jpg ...` (a frame
folder is a video source: tasks/native/frames.py). The test list has ids only (no labels).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, annotation_file, first_existing

LISTS = {"train": "jester-v1-train.csv", "val": "jester-v1-validation.csv"}
LABELS = "jester-v1-labels.csv"
FRAME_ROOTS = ("20bn-jester-v1", "videos", "")
NUM_CLASSES = 27


def layout() -> str:
    return ("ROOT/jester-v1-labels.csv, ROOT/jester-v1-{train,validation}.csv (`id;label`) and the "
            "frame folders ROOT/20bn-jester-v1/<id>/00001.jpg ...")


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations else root
    labels_path = first_existing(ann_root, [LABELS, f"annotations/{LABELS}"])
    if labels_path is None:
        raise DataError(f"jester: {LABELS} not found under {ann_root}; expected {layout()}")
    from ..manifest import read_label_map

    classes = read_label_map(labels_path)
    index = {c: i for i, c in enumerate(classes)}
    frames_root = next((root / r for r in FRAME_ROOTS if r and (root / r).is_dir()), root)
    prepared = Prepared("jester", classes, {}, labels_source=f"{labels_path} (line order)")
    if len(classes) != NUM_CLASSES:
        prepared.notes.append(f"{labels_path} lists {len(classes)} classes, not {NUM_CLASSES}")
    for split, name in LISTS.items():
        ann = first_existing(ann_root, [name, f"annotations/{name}"])
        if ann is None:
            prepared.notes.append(f"{split}: no {name} under {ann_root}")
            continue
        samples, seen = [], {}
        with annotation_file(ann, "Jester list") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.strip()
                if not line:
                    continue
                where = f"{ann}:{lineno}"
                vid, sep, label = line.partition(";")
                if not sep or not vid.strip():
                    prepared.problems.append(Problem("malformed", where, f"expected 'id;label', got {line!r}",
                                                     split=split))
                    continue
                vid, label = vid.strip(), label.strip()
                if label not in index:
                    prepared.problems.append(Problem("unknown_label", where, f"label {label!r} is not in "
                                                     f"{labels_path.name}", split=split))
                    continue
                if vid in seen:
                    prepared.problems.append(Problem("duplicate", where, f"id {vid} listed again "
                                                     f"(first at {seen[vid]})", split=split))
                    continue
                seen[vid] = where
                folder = frames_root / vid
                s = Sample(split, index[label], where, vid,
                           path=str(folder) if folder.is_dir() and os.listdir(folder) else None)
                if s.path is None:
                    prepared.problems.append(Problem("missing", where, f"frame folder {vid}/ not found "
                                                     f"(or empty) in {frames_root}", split=split))
                samples.append(s)
        prepared.samples[split] = samples
    if not prepared.samples:
        raise DataError(f"jester: no jester-v1-train.csv or -validation.csv under {ann_root}; "
                        f"expected {layout()}")
    return prepared
