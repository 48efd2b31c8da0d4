"""COIN (instructional videos, 180 tasks) as published, for task classification.

The publisher's annotation file `COIN.json` (github.com/coin-dataset/annotations), under
ROOT/annotations/ or ROOT (or `--annotations DIR`): `{"database": {youtube_id: {"recipe_type":
task id, "class": task name, "subset": "training" | "testing", "annotation": [steps], "start",
"end", "duration", "video_url"}}}`. Its download script writes `videos/<recipe_type>/<id>.mp4`;
any file named `<youtube_id>.<ext>` under ROOT is found.

V-JEPA 2 evaluates COIN as 180-way video classification (`configs/eval/vit*/coin.yaml` runs
`video_classification_frozen` on `train_paths.csv` / `val_paths.csv`, `path label` lists it
does not publish): one label per video, the task. Here the class index is the position of the
video's `recipe_type` among the distinct recipe types of the whole file, sorted (0..179 for the
published file, whichever base its ids start from), named by `class`; `training` is the train
split and `testing` (the README says `validation`; both are read) the evaluation split `val`.
Whole videos are listed, not the [start, end] region of interest (the release's CSVs are not
public: whether it cut them is not known).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .common import (
    Prepared,
    Problem,
    Sample,
    first_existing,
    index_files,
    load_json,
    pick,
)

ANNOTATION_NAMES = ["COIN.json", "annotations/COIN.json", "coin.json", "annotations/coin.json"]
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")
SUBSETS = {"training": "train", "testing": "val", "validation": "val"}


def layout() -> str:
    return ("ROOT/[annotations/]COIN.json and the videos ROOT/videos/<recipe_type>/<youtube_id>.mp4 "
            "(the publisher's download script; any <youtube_id>.mp4 under ROOT is found)")


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations else root
    ann = first_existing(ann_root, ANNOTATION_NAMES)
    if ann is None:
        raise DataError(f"coin: COIN.json not found under {ann_root}; expected {layout()}")
    doc = load_json(ann, "COIN annotation file (COIN.json)")
    database = doc.get("database") if isinstance(doc, dict) else None
    if not isinstance(database, dict):
        raise DataError(f"{ann}: no `database` mapping; is this the publisher's COIN.json?")
    problems: list[Problem] = []
    entries = []  # (youtube_id, where, recipe_type, class name, split)
    for vid, e in database.items():
        where = f"{ann} {vid}"
        try:
            recipe, name, subset = int(e["recipe_type"]), str(e["class"]), str(e["subset"])
        except (KeyError, TypeError, ValueError):
            problems.append(Problem("malformed", where, "expected recipe_type, class and subset"))
            continue
        if subset not in SUBSETS:
            problems.append(Problem("malformed", where, f"subset {subset!r} is none of "
                                    f"{', '.join(SUBSETS)}"))
            continue
        entries.append((vid, where, recipe, name, SUBSETS[subset]))
    names: dict[int, str] = {}
    for vid, where, recipe, name, split in entries:
        if names.setdefault(recipe, name) != name:
            raise DataError(f"{where}: recipe_type {recipe} is named {name!r} here and "
                            f"{names[recipe]!r} elsewhere; the file is inconsistent")
    if len(set(names.values())) != len(names):
        raise DataError(f"{ann}: two recipe types share a class name")
    order = sorted(names)
    index = {r: i for i, r in enumerate(order)}
    walk_notes: list[str] = []
    files = index_files(root, VIDEO_EXTENSIONS, walk_notes)
    prepared = Prepared("coin", [names[r] for r in order], {"train": [], "val": []}, problems,
                        walk_notes, labels_source=f"{ann} (recipe_type order, named by `class`)")
    prepared.notes.append(f"{len(order)} recipe types (ids {order[0]}..{order[-1]})" if order
                          else "no usable entries")
    for vid, where, recipe, name, split in entries:
        s = Sample(split, index[recipe], where, f"videos/{recipe}/{vid}.mp4")
        if vid in files:
            s.path = pick(files[vid], ("videos", str(recipe)))
        else:
            problems.append(Problem("missing", where, f"{vid}.mp4 not found under the data root",
                                    split=split))
        prepared.samples[split].append(s)
    return prepared
