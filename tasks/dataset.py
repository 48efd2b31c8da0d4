"""`Task`: a resolved spec bound to its data on disk (manifests, label map), its datasets and
its protocol. The datasets themselves are `tasks.items` (video), `tasks.image_dataset` and
`tasks.ava` (detection)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from . import anticipation_task, ava
from .backends import require
from .classes import ClassSubset, warn_dropped
from .errors import DataError
from .frame_cache import FrameCache
from .image_dataset import ImageDataset
from .image_transforms import build_image_transform
from .items import ManifestItems, VideoDataset, collate_clips
from .manifest import common_folder, label_map_sha256, manifest_sha256, read_label_map, read_manifest
from .native.common import PREPARERS
from .sampling import ClipSampler
from .spec import TaskSpec
from .temporal import CLASSES as TEMPORAL_CLASSES
from .temporal import derive_entries
from .eval_transform import EvalTransform
from .transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform

log = logging.getLogger(__name__)
# The datasets lived here before tasks.items; importing them from here still works.
__all__ = ["Task", "ManifestItems", "VideoDataset", "collate_clips"]


class Task:
    """A task spec bound to its files. Paths in `spec.data` are resolved when the Task is made.

    `backend`: the decoder (`spec.decoder`, 'auto' unless the task config names one); the
    backend that actually decoded each item is in the item (`backend`) and so in the preflight
    report (`decode_backend`)."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.backend = spec.decoder
        data = dict(spec.data)
        # Relative roots resolve against the current directory at build time (documented).
        self.root = Path(os.path.abspath(os.path.expanduser(data.get("root") or ".")))
        self.paths: dict[str, Path | None] = {}
        for key in ("train", "val", "test", "labels"):
            value = data.get(key)
            self.paths[key] = None if value is None else self.root / os.path.expanduser(str(value))
        self._manifests: dict[str, list[tuple[str, int]]] = {}
        self._entry_cache: dict[str, list[tuple[str, int]]] = {}
        self._dropped: dict[str, dict] = {}
        self._content_roots: dict[str, Path] = {}

    def __repr__(self) -> str:
        return f"Task({self.spec.name!r}, root={str(self.root)!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int | tuple[int, int, int]:
        """The probe's classes: the label map's, or with `classes: present` those kept; for an
        anticipation task the sizes of its verb, noun and action heads."""
        if self.spec.kind == "anticipation":  # (verbs, nouns, actions): the heads' sizes
            return self._head_sizes
        if self.class_subset is not None:
            return len(self.class_subset.kept)
        return self.spec.num_classes

    @cached_property
    def _head_sizes(self) -> tuple[int, int, int]:
        return anticipation_task.head_sizes(self)

    @property
    def eval_split(self) -> str:
        return self.spec.eval_split

    @property
    def splits(self) -> list[str]:
        return self.spec.splits

    def _missing(self, what: str, path: Path | None) -> DataError:
        if self.spec.name.startswith("digits"):
            hint = "make it with `harness data make digits --out data/digits` (or point data.root at where you made it)"
        else:
            hint = (
                f"point data.root at the folder holding the {self.spec.name} files "
                "(`tasks.build(name, root=...)` or the override `task.data.root=...`)"
            )
            if self.spec.name in PREPARERS:
                hint += (f", or make them from the publisher's files with `harness data prepare "
                         f"{self.spec.name} --root DIR`")
        return DataError(f"task {self.spec.name!r}: {what} not found: {path}; {hint}")

    def manifest_path(self, split: str) -> Path:
        if split not in ("train", "val", "test"):
            raise DataError(f"task {self.spec.name!r}: unknown split {split!r}; splits: {', '.join(self.splits)}")
        path = self.paths.get(split)
        if path is None:
            raise DataError(f"task {self.spec.name!r} defines no {split!r} split; splits: {', '.join(self.splits)}")
        if not path.is_file():
            raise self._missing(f"{split} manifest", path)
        return path

    def _manifest(self, split: str) -> list[tuple[str, int]]:
        """The split's manifest as written (validated against the label map's `num_classes`)."""
        if split not in self._manifests:
            if self.spec.kind == "anticipation":  # segments, read as (video, action) pairs
                self._manifests[split] = anticipation_task.segments(self, split)
            elif self.spec.kind == "detection":  # one (video, 0) per keyframe item (tasks.ava)
                self.manifest_path(split)  # a clear error when the split's file is absent
                self._manifests[split] = ava.entries(self, split)
            elif self.spec.temporal_probe is not None:  # any video manifest; its labels unused
                self._manifests[split] = derive_entries(read_manifest(self.manifest_path(split)))
            else:
                path = self.manifest_path(split)
                try:
                    self._manifests[split] = read_manifest(
                        path, self.spec.num_classes, multilabel=self.spec.kind == "multilabel")
                except DataError as e:  # a label past num_classes: say how to probe fewer
                    hint = self._subset_hint() if "out of range" in str(e) else ""
                    raise DataError(f"{e}{hint}") from None
        return self._manifests[split]

    def _subset_hint(self) -> str:
        if self.spec.classes == "present":
            return ""
        return (f". num_classes ({self.spec.num_classes}) is the label map's class count; to probe "
                "only the classes present in the training manifest keep it and set "
                "task.classes=present")

    def entries(self, split: str) -> list[tuple[str, int]]:
        """`(video path, label)` of a split's manifest, read once. With `classes: present` the
        labels are renumbered to the kept classes and samples of other classes dropped (counted:
        `dropped(split)`)."""
        if split not in self._entry_cache:
            entries = self._manifest(split)
            if self.class_subset is not None:
                entries, self._dropped[split] = self.class_subset.remap(entries)
                warn_dropped(self.name, split, self._dropped[split], len(self._manifest(split)),
                             len(self.class_subset.kept))
            self._entry_cache[split] = entries
        return self._entry_cache[split]

    @cached_property
    def class_subset(self) -> ClassSubset | None:
        """With `classes: present`: the classes the training manifest uses (`tasks.classes`)."""
        if self.spec.classes != "present":
            return None
        return ClassSubset.present_in(self._manifest("train"), self.spec.num_classes)

    def dropped(self, split: str) -> dict:
        """`{"samples": n, "labels": m}` of `split` left out as of classes absent from training
        (`classes: present`); zeros otherwise."""
        self.entries(split)
        return dict(self._dropped.get(split, {"samples": 0, "labels": 0}))

    @cached_property
    def label_map(self) -> list[str]:
        """Every class name of the label map (`data.labels`), validated against num_classes."""
        path = self.paths.get("labels")
        if path is None:
            raise DataError(f"task {self.spec.name!r} has no label map (data.labels); add one, one class per line")
        if not path.is_file():
            raise self._missing("label map", path)
        names = read_label_map(path)
        if len(names) != self.spec.num_classes:
            raise DataError(
                f"task {self.spec.name!r}: label map {path} has {len(names)} classes but num_classes is "
                f"{self.spec.num_classes}{self._subset_hint()}"
            )
        return names

    @cached_property
    def class_names(self) -> list[str]:
        """The probe's class names, in its output order."""
        if self.spec.temporal_probe is not None:
            return list(TEMPORAL_CLASSES[self.spec.temporal_probe])
        if self.class_subset is not None:
            return self.class_subset.names(self.label_map)
        return self.label_map

    def content_root(self, split: str | None = None) -> Path:
        """The deepest folder holding every video of the train and `split` (default: the
        evaluation split) manifests: the dataset's own root, wherever the manifests are and
        however they name the files (relative or absolute paths). Manifest digests are taken
        relative to it, so they depend on the content only (see `entries_sha256`)."""
        split = split or self.eval_split
        if split not in self._content_roots:
            names = dict.fromkeys(("train", split))
            self._content_roots[split] = Path(common_folder(
                [p for s in names for p, _ in self._manifest(s)]))
        return self._content_roots[split]

    def entries_sha256(self, entries: Sequence[tuple[str, object]], split: str | None = None) -> str:
        """The digest of a list of this task's entries (a split, a fold, a held-out part):
        `tasks.manifest.manifest_sha256` relative to `content_root(split)`, so the same videos
        and labels give the same digest whether the data were prepared in place or with --out,
        at any mount point, with relative or absolute manifest paths."""
        return manifest_sha256(entries, self.content_root(split))

    def resolve_resolution(self, resolution: int | None) -> int:
        """The task's own resolution if it fixes one, else the caller's (the encoder's)."""
        res = self.spec.resolution if self.spec.resolution is not None else resolution
        if res is None:
            raise DataError(
                f"task {self.spec.name!r} has resolution: null (use the encoder's); pass resolution=..."
            )
        return int(res)

    def sampler(self, *, train: bool) -> ClipSampler:
        s = self.spec.sampling
        return ClipSampler(
            s.frames_per_clip, s.frame_step, s.train_segments if train else s.eval_segments,
            placement=s.train_placement if train else s.eval_placement,
        )

    def transform(self, *, train: bool, resolution: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  num_frames: int | None = None):
        res = self.resolve_resolution(resolution)
        if self.spec.kind == "image":
            return build_image_transform(train, res, mean, std, num_frames=self.image_frames(num_frames),
                                         train_aug=self.spec.train_aug,
                                         eval_transform=self.spec.eval_transform)
        if train:
            return TrainTransform(res, mean, std, **self.spec.train_aug)
        return EvalTransform(res, mean, std, views=self.spec.sampling.eval_views, **self.spec.eval_transform)

    def dataset(
        self,
        split: str,
        *,
        train: bool | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resolution: int | None = None,
        fixed: bool = False,
        frame_cache: FrameCache | None = None,
        device_finish: bool = False,
        entries: Sequence[tuple[str, int]] | None = None,
        num_frames: int | None = None,
    ) -> VideoDataset:
        """Clips of `split`; `train` (default: split == 'train') picks random sampling + augmentation.

        `fixed=True` (with train) keeps the training sampling's segment count but takes centred
        clips and one centred view, with no random augmentation: the same clip every epoch, which
        is what makes caching a frozen encoder's features sound.
        `frame_cache`: decoded videos kept in RAM and shared with other datasets (e.g. every run
        of `harness demo` reads the same videos; each is then decoded once).
        `device_finish=True`: items are uint8 frames + drawn parameters, finished on the compute
        device by `tasks.loading.ClipFinisher(dataset.transform)`.
        `entries`: a subset of the split's (path, label) list (a carved split, `tasks.splits`).
        `num_frames` (image tasks): how many times each image is repeated, the encoder's frame
        count (1 for an image encoder); default the task's `sampling.frames_per_clip`.
        """
        train = (split == "train") if train is None else bool(train)
        if self.spec.kind != "image":  # images are read with PIL, whatever the decoder
            require(self.backend, context=f"task {self.spec.name!r}: ")
        if self.spec.kind == "anticipation":  # `entries`: segments (a hold-out's)
            return anticipation_task.dataset(self, split, train=train, fixed=fixed, mean=mean,
                                             std=std, resolution=resolution,
                                             device_finish=device_finish, entries=entries)
        if self.spec.kind == "detection":  # `entries`: keyframes (tasks.ava.holdout)
            return ava.build_dataset(self, split, train=train, resolution=self.resolve_resolution(resolution),
                                 mean=mean, std=std, backend=self.backend, items=entries)
        if self.spec.kind == "image":
            dataset = self._image_dataset(split, train=train and not fixed, mean=mean, std=std,
                                          resolution=resolution, device_finish=device_finish,
                                          entries=entries, num_frames=num_frames)
            dataset.num_classes = self.num_classes
            return dataset
        if fixed and train:
            s = self.spec.sampling
            # The one clip a fitted probe caches: the task's own fixed placement (MVEB's spread)
            # where it has one, else the centre.
            placement = s.train_placement if s.train_placement != "random" else "center"
            sampler = ClipSampler(s.frames_per_clip, s.frame_step, s.train_segments, placement=placement)
            transform = EvalTransform(self.resolve_resolution(resolution), mean, std, views=1,
                                      **self.spec.eval_transform)
        else:
            sampler = self.sampler(train=train)
            transform = self.transform(train=train, resolution=resolution, mean=mean, std=std)
        dataset = VideoDataset(
            self.entries(split) if entries is None else list(entries),
            sampler=sampler,
            transform=transform,
            split=split,
            backend=self.backend,
            class_names=self.class_names if self.paths.get("labels") else None,
            frame_cache=frame_cache,
            device_finish=device_finish,
            decode_isolation=self.spec.decode_isolation,
            decode_timeout_s=self.spec.decode_timeout_s,
            temporal_probe=self.spec.temporal_probe,
        )
        dataset.num_classes = self.num_classes
        return dataset

    def image_frames(self, num_frames: int | None) -> int:
        return int(num_frames) if num_frames is not None else self.spec.sampling.frames_per_clip

    def _image_dataset(self, split, *, train, mean, std, resolution, device_finish, entries, num_frames):
        # `fixed` (cached features) needs no branch: the evaluation transform is already fixed.
        return ImageDataset(
            self.entries(split) if entries is None else list(entries),
            transform=self.transform(train=train, resolution=resolution, mean=mean, std=std,
                                     num_frames=num_frames),
            split=split, class_names=self.class_names if self.paths.get("labels") else None,
            device_finish=device_finish)

    def protocol(self, split: str | None = None, *, resolution: int | None = None) -> dict:
        """Everything that makes two numbers on this task comparable, as a JSON-able dict.

        Includes the manifests' and label map's sha256, so a different video set or class order
        (the K400 class-index bug users hit) gives a different protocol id. A function of content
        only: a manifest's digest covers its videos' paths relative to the dataset's own folder
        (`content_root`) and their labels, so the same videos and labels give the same protocol
        wherever they live and however they were prepared; not the videos' bytes (`harness data
        check` judges those, and reading them all would cost a K400 protocol 450 GB of I/O).
        Not in it: the decoder (`decoder`), which changes no number beyond colour-conversion
        rounding; the record says which backend ran. With `classes: present`, `classes` records
        the kept classes and the samples dropped (`tasks.classes`).
        """
        split = split or self.eval_split
        res = self.spec.resolution if self.spec.resolution is not None else resolution
        if self.spec.kind == "detection":
            return self._detection_protocol(split, res)
        if self.spec.kind == "anticipation":
            return anticipation_task.protocol(self, split, res)
        train_entries = self.entries("train")
        eval_entries = self.entries(split)
        labels = self.class_names if self.spec.temporal_probe is not None else self.label_map
        subset = self.class_subset
        return {
            "task": self.spec.name,
            "kind": self.spec.kind,
            "num_classes": self.num_classes,
            "metric": self.spec.metric,
            "sampling": self.spec.sampling.to_dict(),
            "resolution": res,
            "train_aug": _jsonable(self.spec.train_aug),
            "eval_transform": _jsonable(self.spec.eval_transform),
            "splits": {"train": "train", "eval": split},
            "manifests": {
                "train": {"videos": len(train_entries), "sha256": self.entries_sha256(train_entries, split)},
                "eval": {"videos": len(eval_entries), "sha256": self.entries_sha256(eval_entries, split)},
            },
            "label_map_sha256": label_map_sha256(labels),
            **({"classes": subset.protocol(self.label_map, {"train": self.dropped("train"),
                                                            "eval": self.dropped(split)})}
               if subset is not None else {}),
            **({"temporal_probe": self.spec.temporal_probe} if self.spec.temporal_probe else {}),
            **({"train_fold": dict(self.spec.train_fold)} if self.spec.train_fold else {}),
        }

    def _detection_protocol(self, split: str, resolution) -> dict:
        # AVA's splits are box files, not `path label` manifests: their bytes (GT rows, excluded
        # keyframes, label map, the evaluation's proposals) and the keyframes found define them.
        def files_sha256(s: str) -> str:
            h = hashlib.sha256()
            for path in ava.protocol_files(self, s):
                h.update(hashlib.sha256(Path(path).read_bytes()).digest())
            return h.hexdigest()

        cfg = dataclasses.asdict(ava.config(self))
        for key in ("videos", "label_map", "excluded", "proposals"):  # file names: hashed above
            cfg.pop(key)
        return {
            "task": self.spec.name, "kind": "detection", "num_classes": self.num_classes,
            "metric": self.spec.metric, "sampling": self.spec.sampling.to_dict(),
            "resolution": resolution, "train_aug": _jsonable(self.spec.train_aug),
            "eval_transform": _jsonable(self.spec.eval_transform),
            "splits": {"train": "train", "eval": split},
            "manifests": {name: {"keyframes": len(self.entries(s)), "sha256": files_sha256(s)}
                          for name, s in (("train", "train"), ("eval", split))},
            "label_map_sha256": label_map_sha256(self.class_names),
            "detection": cfg,
        }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
