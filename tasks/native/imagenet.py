"""ImageNet-1K (ILSVRC-2012) as published: `train/<wnid>/*.JPEG`; val in class folders
(`val/<wnid>/*.JPEG`) or flat (`val/*.JPEG`) with the Kaggle `LOC_val_solution.csv`
(`ImageId,PredictionString`, the class is the first token: "n01751748 97 68 ...").

Classes are the 1000 WordNet ids sorted, which is torchvision ImageFolder's order and so the
release's; they ship as `in1k_classes.txt` (timm's `imagenet_synsets.txt`). The training set
has no publisher list of file names, so train is what is on disk (a missing train image cannot
be named); the val solution file does list every val image, and missing ones are named.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, annotation_file, first_existing, shipped_classes

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
IMAGE_ROOTS = ("", "ILSVRC/Data/CLS-LOC", "Data/CLS-LOC")


def layout() -> str:
    return ("ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG, or ROOT/val/*.JPEG flat with "
            "ROOT/LOC_val_solution.csv (the Kaggle layout ROOT/ILSVRC/Data/CLS-LOC/... also works)")


def _images(folder: Path) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    base = next((root / r for r in IMAGE_ROOTS if (root / r / "train").is_dir() or (root / r / "val").is_dir()), None)
    if base is None:
        raise DataError(f"in1k: no train/ or val/ folder under {root}; expected {layout()}")
    classes = shipped_classes("in1k")
    index = {c: i for i, c in enumerate(classes)}
    prepared = Prepared("in1k", classes, {}, kind="image",
                        labels_source="shipped tasks/native/in1k_classes.txt (the 1000 WordNet ids, sorted)")
    for split in ("train", "val"):
        folder = base / split
        if not folder.is_dir():
            prepared.notes.append(f"{split}: no folder {folder}")
            continue
        class_dirs = sorted(d for d in os.listdir(folder) if (folder / d).is_dir())
        if class_dirs:
            prepared.samples[split] = _from_folders(folder, split, class_dirs, index, prepared.problems)
        else:
            solution = first_existing(Path(annotations) if annotations else root,
                                      ["LOC_val_solution.csv", "ILSVRC/LOC_val_solution.csv"])
            if solution is None:
                raise DataError(f"in1k: {folder} holds flat images but no LOC_val_solution.csv gives "
                                f"their classes; put it in {root} or pass --annotations DIR")
            prepared.samples[split] = _from_solution(folder, solution, index, prepared.problems)
    missing = [n for n in ("train", "val") if n not in prepared.samples]
    if len(missing) == 2:
        raise DataError(f"in1k: nothing found under {base}; expected {layout()}")
    return prepared


def _from_folders(folder: Path, split: str, class_dirs, index, problems) -> list[Sample]:
    samples = []
    for d in class_dirs:
        if d not in index:
            problems.append(Problem("unknown_label", f"{folder / d}", f"folder {d!r} is not one of the "
                                    "1000 ImageNet-1K WordNet ids; its images are left out", split=split))
            continue
        for f in _images(folder / d):
            p = str(folder / d / f)
            samples.append(Sample(split, index[d], p, f, path=p))
    return samples


def _from_solution(folder: Path, solution: Path, index, problems) -> list[Sample]:
    present = {os.path.splitext(f)[0]: str(folder / f) for f in _images(folder)}
    samples = []
    with annotation_file(solution, "LOC_val_solution.csv", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            where = f"{solution}:{reader.line_num}"
            if not row or row[0] == "ImageId":
                continue
            tokens = row[1].split() if len(row) > 1 else []
            if not tokens:
                problems.append(Problem("malformed", where, f"expected ImageId,PredictionString, got {row!r}",
                                        split="val"))
                continue
            wnid = tokens[0]
            if wnid not in index:
                problems.append(Problem("unknown_label", where, f"{wnid!r} is not an ImageNet-1K class",
                                        split="val"))
                continue
            s = Sample("val", index[wnid], where, f"{row[0]}.JPEG", path=present.get(row[0]))
            if s.path is None:
                problems.append(Problem("missing", where, f"{row[0]}.JPEG not found in {folder}", split="val"))
            samples.append(s)
    return samples
