"""iNaturalist 2021 as published: `train.json` / `val.json` (COCO style: `images` with `id` and
`file_name` such as `train/00000_Animalia_..._terrestris/<uuid>.jpg`, `annotations` with
`image_id` and `category_id`, `categories` with `id`, `name` and `image_dir_name`) and the
images under ROOT as `file_name` says. 10,000 classes.

The class index is the category id; names are `image_dir_name` (the class folders, which start
with the zero-padded id, so the release's ImageFolder order is the id order too).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, load_json

ANNOTATIONS = {"train": ("train.json", "train_mini.json"), "val": ("val.json",)}
NUM_CLASSES = 10_000


def layout() -> str:
    return "ROOT/train.json, ROOT/val.json and the images ROOT/train/<class folder>/*.jpg, ROOT/val/..."


def read(root: Path, annotations: Path | None = None, num_classes: int = NUM_CLASSES) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations else root
    prepared = Prepared("inat21", [], {}, kind="image", labels_source="")
    classes: list[str] | None = None
    for split, names in ANNOTATIONS.items():
        path = next((ann_root / n for n in names if (ann_root / n).is_file()), None)
        if path is None:
            prepared.notes.append(f"{split}: no {' or '.join(names)} under {ann_root}")
            continue
        data = load_json(path, "iNaturalist 2021 annotations")
        if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
            raise DataError(f"{path}: expected a COCO-style object with images, annotations, categories")
        try:
            cats = {int(c["id"]): str(c.get("image_dir_name") or f"{int(c['id']):05d}_{c['name']}")
                    for c in data["categories"]}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{path}: categories must be objects with an integer id and a name "
                            f"(or image_dir_name); one is not ({type(e).__name__}: {e})"[:400]) from None
        if sorted(cats) != list(range(num_classes)):
            raise DataError(f"{path}: categories must have ids 0..{num_classes - 1}, got {len(cats)}")
        these = [cats[i] for i in range(num_classes)]
        if classes is None:
            classes, prepared.labels_source = these, f"{path} categories (id order)"
        elif these != classes:
            raise DataError(f"{path}: its categories differ from the other split's; use one release's files")
        try:
            images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{path}: images must be objects with an integer id and a file_name; "
                            f"one is not ({type(e).__name__}: {e})"[:400]) from None
        if not isinstance(data["annotations"], list):
            raise DataError(f"{path}: annotations must be a list")
        samples, seen = [], set()
        for k, a in enumerate(data["annotations"]):
            where = f"{path} annotations[{k}]"
            try:
                image_id, cat = int(a.get("image_id", -1)), int(a.get("category_id", -1))
            except (TypeError, ValueError, AttributeError):
                prepared.problems.append(Problem("malformed", where, f"expected image_id and "
                                                 f"category_id, got {a!r}"[:200], split=split))
                continue
            if image_id not in images or cat not in cats:
                prepared.problems.append(Problem("malformed", where, f"image_id {image_id} or category_id "
                                                 f"{cat} unknown", split=split))
                continue
            if image_id in seen:
                prepared.problems.append(Problem("duplicate", where, f"image {image_id} annotated again",
                                                 split=split))
                continue
            seen.add(image_id)
            rel = images[image_id]
            p = root / rel
            s = Sample(split, cat, where, rel, path=str(p) if p.is_file() else None)
            if s.path is None:
                prepared.problems.append(Problem("missing", where, f"{rel} not found under {root}", split=split))
            samples.append(s)
        prepared.samples[split] = samples
    if classes is None:
        raise DataError(f"inat21: no train.json or val.json under {ann_root}; expected {layout()}")
    prepared.classes = classes
    return prepared
