"""Diving-48 (V2 annotations) as published: `Diving48_V2_train.json` / `Diving48_V2_test.json`
(lists of `vid_name`, `label`, `start_frame`, `end_frame`), `Diving48_vocab.json` (48 entries,
each the dive's [takeoff, somersault, twist, flight] attributes) and the trimmed clips
`rgb/{vid_name}.mp4`.

The class index is the publisher's `label`; a class's name is its vocab entry joined by " / ".
The clips of `Diving48_rgb.tar.gz` are already cut to [start_frame, end_frame] of the source
video, so those fields are kept in the report, not used to cut again.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, index_files, load_json, pick

NUM_CLASSES = 48
ANNOTATIONS = {"train": "Diving48_V2_train.json", "test": "Diving48_V2_test.json"}
VOCAB = "Diving48_vocab.json"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi")


def layout() -> str:
    return ("ROOT/[annotations/]Diving48_V2_{train,test}.json, ROOT/[annotations/]Diving48_vocab.json "
            "and the clips ROOT/rgb/{vid_name}.mp4 (or ROOT/videos/)")


def _find(root: Path, name: str) -> Path | None:
    return next((b / name for b in (root, root / "annotations") if (b / name).is_file()), None)


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations else root
    vocab_path = _find(ann_root, VOCAB)
    if vocab_path is None:
        raise DataError(f"diving48: {VOCAB} not found under {ann_root} (it names the 48 classes); "
                        f"expected {layout()}")
    vocab = load_json(vocab_path, "Diving-48 vocabulary")
    if not isinstance(vocab, list) or len(vocab) != NUM_CLASSES:
        raise DataError(f"{vocab_path}: expected a list of {NUM_CLASSES} class entries")
    classes = [" / ".join(map(str, v)) if isinstance(v, list) else str(v) for v in vocab]
    if len(set(classes)) != NUM_CLASSES:
        raise DataError(f"{vocab_path}: class entries are not unique")
    walk_notes: list[str] = []
    files = index_files(root, VIDEO_EXTENSIONS, walk_notes)
    prepared = Prepared("diving48", classes, {}, labels_source=f"{vocab_path} (label order)",
                        notes=walk_notes)
    for split, name in ANNOTATIONS.items():
        ann = _find(ann_root, name)
        if ann is None:
            prepared.notes.append(f"{split}: no {name} under {ann_root}")
            continue
        entries = load_json(ann, "Diving-48 annotations")
        samples, seen = [], {}
        for i, e in enumerate(entries if isinstance(entries, list) else []):
            where = f"{ann}[{i}]"
            try:
                vid, label = str(e["vid_name"]), int(e["label"])
            except (KeyError, TypeError, ValueError):
                prepared.problems.append(Problem("malformed", where, f"expected vid_name and label, "
                                                 f"got {e!r}"[:200], split=split))
                continue
            where = f"{ann}[{i}] {vid}"
            if not 0 <= label < NUM_CLASSES:
                prepared.problems.append(Problem("unknown_label", where, f"label {label} outside "
                                                 f"[0, {NUM_CLASSES - 1}]", split=split))
                continue
            if vid in seen:
                prepared.problems.append(Problem("duplicate", where, f"listed again (first at {seen[vid]})",
                                                 split=split))
                continue
            seen[vid] = where
            s = Sample(split, label, where, f"{vid}.mp4")
            if vid in files:
                s.path = pick(files[vid], ("rgb", "videos"))
            else:
                prepared.problems.append(Problem("missing", where, f"{vid}.mp4 not found under the data root",
                                                 split=split))
            samples.append(s)
        prepared.samples[split] = samples
    if not prepared.samples:
        raise DataError(f"diving48: no annotation JSON under {ann_root}; expected {layout()}")
    return prepared
