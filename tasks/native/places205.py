"""Places205 as published: the list files `trainvalsplit_places205/{train,val}_places205.csv`
(`path label` per line, space-separated, e.g. `a/abbey/gsun_0003586c3eedd97457b2d729f1e0.jpg 0`)
and the images under `images256/` (the official tarball unpacks them to
`data/vision/torralba/deeplearning/images256/`).

The class index is the publisher's label number; its name is the path's category folder(s)
(`abbey`, `apartment_building/outdoor`), so the label map comes from the list files themselves.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, annotation_file, first_existing

LISTS = {split: [f"trainvalsplit_places205/{split}_places205.csv", f"{split}_places205.csv"]
         for split in ("train", "val")}
IMAGE_ROOTS = ("images256", "data/vision/torralba/deeplearning/images256", "")
NUM_CLASSES = 205


def layout() -> str:
    return ("ROOT/trainvalsplit_places205/{train,val}_places205.csv and the images under "
            "ROOT/images256/ (or ROOT/data/vision/torralba/deeplearning/images256/)")


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations else root
    lists = {s: first_existing(ann_root, names) for s, names in LISTS.items()}
    if not any(lists.values()):
        raise DataError(f"places205: no list files under {ann_root}; expected {layout()}")
    rows: dict[str, list] = {}
    names: dict[int, tuple[str, str]] = {}
    problems: list[Problem] = []
    for split, path in lists.items():
        if path is None:
            continue
        rows[split] = []
        with annotation_file(path, "Places205 list file") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.strip()
                if not line:
                    continue
                where = f"{path}:{lineno}"
                rel, sep, lab = line.rpartition(" ")
                try:
                    label = int(lab)
                except ValueError:
                    label = -1
                if not sep or label < 0 or label >= NUM_CLASSES:
                    problems.append(Problem("malformed", where, f"expected 'path label' with a label in "
                                            f"[0, {NUM_CLASSES - 1}], got {line!r}", split=split))
                    continue
                category = "/".join(Path(rel).parts[1:-1])
                if label in names and names[label][0] != category:
                    problems.append(Problem("mislabelled", where, f"label {label} is {names[label][0]!r} "
                                            f"at {names[label][1]}, here {category!r}", split=split))
                    continue
                names.setdefault(label, (category, where))
                rows[split].append((rel.strip(), label, where))
    missing_ids = sorted(set(range(NUM_CLASSES)) - set(names))
    if missing_ids:
        raise DataError(f"places205: the list files name no images of class(es) {missing_ids[:10]}; "
                        "the label map cannot be built. Use the publisher's complete list files")
    classes = [names[i][0] for i in range(NUM_CLASSES)]
    first = next(r for rs in rows.values() for r in rs)
    base = next((root / r for r in IMAGE_ROOTS if (root / r / first[0]).is_file()), None)
    base = base or next((root / r for r in IMAGE_ROOTS if r and (root / r).is_dir()), root)
    prepared = Prepared("places205", classes, {}, problems, kind="image",
                        labels_source="the list files' label numbers and category folders")
    for split, rs in rows.items():
        samples = []
        for rel, label, where in rs:
            p = base / rel
            s = Sample(split, label, where, rel, path=str(p) if p.is_file() else None)
            if s.path is None:
                problems.append(Problem("missing", where, f"{rel} not found under {base}", split=split))
            samples.append(s)
        prepared.samples[split] = samples
    return prepared
