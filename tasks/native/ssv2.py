"""Something-Something v2 as published: `labels.json`, `train.json`, `validation.json`, `{id}.webm`.

`labels.json` maps a template to its class id *as a string* ("Pushing something from left to
right": "93"); its keys carry no brackets. Each entry of `train.json` / `validation.json` has
`id`, `label` (the filled-in sentence), `template` (WITH brackets: "Pushing [something] from
left to right") and `placeholders`; the class is `labels[template without brackets]`.
`test.json` has ids only (no labels). Classes are in the publisher's id order; the 174 templates
ship as `ssv2_classes.txt` for users without `labels.json` (from mmaction2's label map, which
lists `labels.json` in id order).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, index_files, load_json, pick, shipped_classes

VIDEO_EXTENSIONS = (".webm", ".mp4")
ANNOTATIONS = {"train": ("train.json", "something-something-v2-train.json"),
               "val": ("validation.json", "something-something-v2-validation.json")}
LABELS = ("labels.json", "something-something-v2-labels.json")


def layout() -> str:
    return ("ROOT/labels.json (optional: the 174 templates ship with the repo), ROOT/train.json, "
            "ROOT/validation.json and the videos ROOT/[20bn-something-something-v2/]{id}.webm")


def unbracket(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for base in (root, root / "labels", root / "annotations"):
        for n in names:
            if (base / n).is_file():
                return base / n
    return None


def read_labels_json(path: Path) -> list[str]:
    raw = load_json(path, "Something-Something v2 labels")
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object template -> id, got {type(raw).__name__}")
    try:
        by_id = {int(v): unbracket(k) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f"{path}: every value must be a class id such as \"93\"") from None
    if sorted(by_id) != list(range(len(raw))):
        raise DataError(f"{path}: class ids must be 0..{len(raw) - 1}, each once")
    return [by_id[i] for i in range(len(raw))]


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations is not None else root
    shipped = shipped_classes("ssv2")
    labels_path = _find(ann_root, LABELS)
    if labels_path is not None:
        classes = read_labels_json(labels_path)
        source = str(labels_path)
    else:
        classes, source = shipped, "shipped tasks/native/ssv2_classes.txt (labels.json id order)"
    prepared = Prepared("ssv2", classes, {}, labels_source=source)
    if labels_path is not None and classes != shipped:
        prepared.notes.append(f"{labels_path} differs from the shipped 174-template list: its order "
                              "is used, and the protocol id will differ from other users'")
    index = {c: i for i, c in enumerate(classes)}
    files = index_files(root, VIDEO_EXTENSIONS, prepared.notes)
    for split, names in ANNOTATIONS.items():
        ann = _find(ann_root, names)
        if ann is None:
            prepared.notes.append(f"{split}: no annotation file ({' or '.join(names)}) under {ann_root}")
            continue
        prepared.samples[split] = _read_split(ann, split, index, files, prepared.problems)
    if not prepared.samples:
        raise DataError(f"ssv2: no train.json or validation.json under {ann_root}; expected {layout()}")
    return prepared


def _read_split(ann: Path, split: str, index: dict[str, int], files, problems) -> list[Sample]:
    entries = load_json(ann, "Something-Something v2 annotations")
    if not isinstance(entries, list):
        raise DataError(f"{ann}: expected a list of {{id, label, template, placeholders}} entries")
    samples, seen = [], {}
    for i, e in enumerate(entries):
        where = f"{ann}[{i}]"
        if not isinstance(e, dict) or "id" not in e or "template" not in e:
            problems.append(Problem("malformed", where, f"expected id and template, got {e!r}"[:200],
                                    split=split))
            continue
        vid = str(e["id"])
        where = f"{ann}[{i}] id {vid}"
        template = unbracket(str(e["template"]))
        if template not in index:
            problems.append(Problem("unknown_label", where, f"template {e['template']!r} is not in "
                                    "the label list", split=split))
            continue
        if vid in seen:
            problems.append(Problem("duplicate", where, f"id {vid} listed again (first at "
                                    f"{seen[vid]}); kept once", split=split))
            continue
        seen[vid] = where
        sample = Sample(split, index[template], where, f"{vid}.webm")
        if vid in files:
            sample.path = pick(files[vid], ())
        else:
            problems.append(Problem("missing", where, f"video {vid}.webm not found under the data root",
                                    split=split))
        samples.append(sample)
    return samples
