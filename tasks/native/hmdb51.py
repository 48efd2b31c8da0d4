"""HMDB51 as published: the videos `<class>/<video>.avi` (hmdb51_org.rar, one rar per class) and
the three official splits `testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`
(test_train_splits.rar), each line `<video>.avi <flag>`: 1 training, 2 testing, 0 unused (the
70/30 protocol: 70 training and 30 testing videos per class and split).

The class index is the position of the class in the 51 split-file names sorted (the order
every HMDB51 loader uses: brush_hair, cartwheel, ..., wave). All three splits are written:
`train{1,2,3}.csv` and `test{1,2,3}.csv`; the task reads split 1 (`data.train: train1.csv`,
`data.test: test1.csv`, MVEB's HMDB51Classification split), and another split is
`task.data.train=train2.csv task.data.test=test2.csv` (a departure the record names).
Videos are found by file name under the data root; a name listed under a class but found only
in another class's folder is reported (mislabelled) and left out.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, annotation_file, index_files

NUM_CLASSES = 51
SPLITS = (1, 2, 3)
SPLIT_FOLDER = "testTrainMulti_7030_splits"
FLAGS = {"1": "train", "2": "test"}  # "0": in neither half of that split
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")
_SPLIT_FILE = re.compile(r"(.+)_test_split([123])\.txt")


def layout() -> str:
    return ("ROOT/<class>/<video>.avi (hmdb51_org.rar unpacked, one folder per class) and "
            f"ROOT/[annotations/]{SPLIT_FOLDER}/<class>_test_split{{1,2,3}}.txt "
            "(test_train_splits.rar); --annotations DIR points at the split files elsewhere")


def split_folder(ann_root: Path) -> Path | None:
    """The folder holding the `<class>_test_split1.txt` files."""
    for d in (ann_root / SPLIT_FOLDER, ann_root / "annotations" / SPLIT_FOLDER,
              ann_root / "test_train_splits" / SPLIT_FOLDER, ann_root):
        if d.is_dir() and any(d.glob("*_test_split1.txt")):
            return d
    return None


def _find(files: dict[str, list[str]], stem: str, cls: str, classes: set[str]):
    """(path under the class folder, or None; another class's folder holding it, or None)."""
    paths = files.get(stem, [])
    own = [p for p in paths if Path(p).parent.name == cls]
    if own:
        return own[0], None
    elsewhere = next((Path(p).parent.name for p in paths if Path(p).parent.name in classes), None)
    if elsewhere is None and paths:
        return paths[0], None  # a flat or differently arranged copy: found by its name
    return None, elsewhere


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations is not None else root
    folder = split_folder(ann_root)
    if folder is None:
        raise DataError(f"hmdb51: no <class>_test_split1.txt under {ann_root}; expected {layout()}")
    classes = sorted({m.group(1) for p in folder.iterdir()
                      if (m := _SPLIT_FILE.fullmatch(p.name)) and m.group(2) == "1"})
    notes: list[str] = []
    if len(classes) != NUM_CLASSES:
        notes.append(f"{folder}: {len(classes)} classes have a split-1 file, HMDB51 has "
                     f"{NUM_CLASSES}; the label map holds the {len(classes)} found")
    files = index_files(root, VIDEO_EXTENSIONS, notes)
    prepared = Prepared("hmdb51", classes, {}, notes=notes,
                        labels_source=f"{folder} (the class names of <class>_test_split1.txt, "
                                      "sorted)")
    known = set(classes)
    for k in SPLITS:
        halves: dict[str, list[Sample]] = {"train": [], "test": []}
        unused = 0
        for label, cls in enumerate(classes):
            path = folder / f"{cls}_test_split{k}.txt"
            if not path.is_file():
                prepared.problems.append(Problem("missing", str(path), f"split {k} file of class "
                                                 f"{cls!r} not found", split=f"test{k}"))
                continue
            unused += _read_class_file(path, k, label, cls, files, known, halves,
                                       prepared.problems)
        for half, samples in halves.items():
            prepared.samples[f"{half}{k}"] = samples
        if unused:
            notes.append(f"split {k}: {unused} videos flagged 0 (in neither half), as published")
    return prepared


def _read_class_file(path: Path, k: int, label: int, cls: str, files, known: set[str],
                     halves: dict[str, list[Sample]], problems: list[Problem]) -> int:
    """Append the file's listed videos to their halves; returns how many were flagged 0."""
    seen: dict[str, str] = {}
    unused = 0
    with annotation_file(path, "HMDB51 split file") as f:
        for n, line in enumerate(f, start=1):
            where = f"{path}:{n}"
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2") or "/" in parts[0]:
                problems.append(Problem("malformed", where, f"expected '<video>.avi <0|1|2>', "
                                        f"got {line.strip()!r}"[:200], split=f"test{k}"))
                continue
            name, flag = parts
            if flag == "0":
                unused += 1
                continue
            half = f"{FLAGS[flag]}{k}"
            if name in seen:
                problems.append(Problem("duplicate", where, f"listed again (first at "
                                        f"{seen[name]})", split=half))
                continue
            seen[name] = where
            s = Sample(half, label, f"{where} {name}", name)
            stem = name.rsplit(".", 1)[0]
            s.path, other = _find(files, stem, cls, known)
            if other is not None:
                problems.append(Problem("mislabelled", s.where, f"listed under {cls!r} but found "
                                        f"only in the folder of {other!r}", split=half))
            elif s.path is None:
                problems.append(Problem("missing", s.where, f"{name} not found under the data "
                                        "root", split=half))
            halves[FLAGS[flag]].append(s)
    return unused
