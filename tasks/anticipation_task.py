"""The task side of an anticipation task (`kind: anticipation`, EPIC-KITCHENS-100): its label
files, segments, datasets and protocol, for `tasks.dataset.Task`.

Files: the manifests `data.train` / `data.val` written by `harness data prepare ek100`
(`tasks.anticipation.MANIFEST_COLUMNS`) and, beside the training manifest, `verbs.csv`,
`nouns.csv` and `actions.csv` (the training vocabularies; their row counts are the heads' sizes).
A split's entries are its `Segment`s, which read as `(path, action)` pairs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .anticipation import (
    AnticipationClips,
    AnticipationSampling,
    Segment,
    read_manifest,
    read_vocabulary,
)
from .errors import DataError
from .manifest import common_folder

OUTPUTS = ("verb", "noun", "action")
LABEL_FILES = {"verb": "verbs.csv", "noun": "nouns.csv", "action": "actions.csv"}


def sampling(task) -> AnticipationSampling:
    return AnticipationSampling.from_dict(task.spec.anticipation, f"task {task.name!r} anticipation")


def label_files(task) -> dict[str, Path]:
    """{output: path} of the vocabularies, beside the training manifest."""
    folder = task.manifest_path("train").parent
    out = {}
    for output, name in LABEL_FILES.items():
        path = folder / name
        if not path.is_file():
            raise task._missing(f"{output} vocabulary ({name}, beside the training manifest)", path)
        out[output] = path
    return out


def head_sizes(task) -> tuple[int, int, int]:
    """(verbs, nouns, actions): the rows of the three vocabularies."""
    sizes = []
    for output, path in label_files(task).items():
        n = len(read_vocabulary(path))
        if n < 1:
            raise DataError(f"task {task.name!r}: {path} lists no {output} class")
        sizes.append(n)
    return tuple(sizes)


def segments(task, split: str) -> list[Segment]:
    """The split's segments, their class indices checked against the vocabularies."""
    segs = read_manifest(task.manifest_path(split))
    sizes = dict(zip(OUTPUTS, task.num_classes))
    for s in segs:
        for output in OUTPUTS:
            value = getattr(s, output)
            if not 0 <= value < sizes[output]:
                raise DataError(f"task {task.name!r}: {s.narration_id} in {task.manifest_path(split)} "
                                f"has {output} {value}, outside the {sizes[output]} classes of "
                                f"{LABEL_FILES[output]}; prepare the manifests and vocabularies "
                                f"together (`harness data prepare ek100`)")
    return segs


def dataset(task, split: str, *, train: bool, fixed: bool, mean, std, resolution,
            device_finish: bool, entries) -> AnticipationClips:
    """Clips of `split`. Training: the release's random (at, ap) and its augmentation; `fixed`
    (cached features): the evaluation's fixed (at, ap) and one centred view."""
    from .eval_transform import EvalTransform

    res = task.resolve_resolution(resolution)
    augment = train and not fixed
    if augment:
        from .transforms import TrainTransform

        transform = TrainTransform(res, mean, std, **task.spec.train_aug)
    else:
        transform = EvalTransform(res, mean, std, views=1, **task.spec.eval_transform)
    segs = task.entries(split) if entries is None else list(entries)
    if any(not isinstance(s, Segment) for s in segs):
        raise DataError(f"task {task.name!r}: an anticipation dataset takes the task's segments "
                        f"(task.entries(split)), not (path, label) pairs")
    clips = AnticipationClips(segs, sampling(task), train=augment, backend=task.backend,
                              transform=transform, device_finish=device_finish, split=split)
    clips.num_classes = task.num_classes
    return clips


def segments_sha256(segs: list[Segment], base: str | os.PathLike) -> str:
    """The digest of segments: each one's video path relative to `base` (where all lie under
    it, else their common folder) and every field that places or labels the clip, sorted, so
    it is a function of content, not of where the data are mounted."""
    if not segs:
        return hashlib.sha256(b"").hexdigest()
    paths = [os.path.abspath(s.path) for s in segs]
    anchor = os.path.abspath(base)
    if any(os.path.commonpath([anchor, p]) != anchor for p in paths):
        anchor = common_folder(paths)
    lines = sorted("\t".join([Path(os.path.relpath(p, anchor)).as_posix(), s.video_id,
                              s.narration_id, str(s.start_frame), str(s.stop_frame),
                              repr(float(s.video_fps)), str(s.verb_class), str(s.noun_class),
                              str(s.verb), str(s.noun), str(s.action)])
                   for p, s in zip(paths, segs))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def protocol(task, split: str, resolution) -> dict:
    """What makes two anticipation numbers comparable: the clip sampling (with the named
    anticipation point), whether the head reads the predictor's tokens, the heads' sizes, the
    transforms, the segments' digests and the three vocabularies' bytes."""
    train, held = task.entries("train"), task.entries(split)
    root = task.content_root(split)
    return {
        "task": task.spec.name,
        "kind": "anticipation",
        "num_classes": dict(zip(OUTPUTS, task.num_classes)),
        "metric": task.spec.metric,
        "anticipation": sampling(task).protocol(),
        "resolution": resolution,
        "train_aug": json.loads(json.dumps(task.spec.train_aug)),  # tuples as lists
        "eval_transform": json.loads(json.dumps(task.spec.eval_transform)),
        "splits": {"train": "train", "eval": split},
        "manifests": {"train": {"segments": len(train), "sha256": segments_sha256(train, root)},
                      "eval": {"segments": len(held), "sha256": segments_sha256(held, root)}},
        "label_files_sha256": {output: hashlib.sha256(path.read_bytes()).hexdigest()
                               for output, path in label_files(task).items()},
    }
