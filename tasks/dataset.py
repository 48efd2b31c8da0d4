"""`Task` (a resolved spec with its data on disk) and `VideoDataset` (manifest -> clips)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .decode import FrameCache, read_frames
from .errors import DataError
from .manifest import label_map_sha256, manifest_sha256, read_label_map, read_manifest
from .sampling import ClipSampler
from .spec import TaskSpec
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

log = logging.getLogger(__name__)


class ManifestItems(torch.utils.data.Dataset):
    """Items of a `path label` manifest: `dict(label, path, error)` plus what the subclass's
    `_load(path, label)` returns. A file that cannot be read gives `video=None` and the reason
    in `error`; it is never replaced by another sample (the release does that silently, in
    evaluation too): the consumer counts failures (see `collate_clips`) and decides whether the
    run may go on."""

    entries: list
    # A multi-label task's entries carry tuples of classes; items then hold `targets`, the
    # multi-hot row over `num_classes` (and `label` 0, unused).
    num_classes: int | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        path, label = self.entries[index]
        item = {"label": 0 if isinstance(label, tuple) else int(label), "path": path, "error": None}
        if isinstance(label, tuple):
            if self.num_classes is None:
                raise ValueError("multi-label entries need the dataset's num_classes")
            targets = torch.zeros(self.num_classes)
            targets[list(label)] = 1.0
            item["targets"] = targets
        try:
            item.update(self._load(path, item["label"]))
        except Exception as e:  # any failure is this sample's problem, reported, not hidden
            item.update(video=None, error=f"{type(e).__name__}: {e}")
            log.debug("skipping unreadable %s: %s", path, item["error"])
        return item


class VideoDataset(ManifestItems):
    """Items: `dict(video=(S, V, 3, T, H, W) float32 | None, label=int, path=str, error=str|None)`.

    A video that cannot be read gives `video=None` and the reason in `error`. It is never
    replaced by another sample (the release does that silently, in evaluation too); the consumer
    counts failures (see `collate_clips`) and decides whether the run may go on.
    """

    def __init__(
        self,
        entries: Sequence[tuple[str, int]],
        *,
        sampler: ClipSampler,
        transform,
        split: str = "",
        backend: str = "auto",
        class_names: Sequence[str] | None = None,
        frame_cache: FrameCache | None = None,
        device_finish: bool = False,
        decode_isolation: str = "none",
        decode_timeout_s: float | None = 60.0,
        temporal_probe: str | None = None,
    ):
        self.entries = list(entries)
        self.temporal_probe = temporal_probe
        self.decode = {"isolation": decode_isolation, "timeout_s": decode_timeout_s}
        # device_finish: items carry uint8 frames plus the random parameters drawn for them, and
        # `tasks.loading.ClipFinisher` applies the transform on the compute device.
        self.device_finish = bool(device_finish)
        self.frame_cache = frame_cache
        self.sampler = sampler
        self.transform = transform
        self.split = split
        self.backend = backend
        self.class_names = list(class_names) if class_names is not None else None

    def _load(self, path: str, label: int = 0) -> dict:
        # Every draw of this item comes from torch's generator, which the caller seeds per item
        # (`tasks.loading.SeededItems`: seed, epoch, index), so clips are reproducible and a
        # resumed run sees what the uninterrupted one would have.
        rng = np.random.RandomState(int(torch.randint(0, 2**32, ()).item()))
        segments: list[list[int]] = []

        def indices_fn(num_frames: int) -> list[int]:
            segments[:] = self.sampler.indices(num_frames, rng)
            if self.temporal_probe is not None:  # label 1: the same clip reversed / shuffled
                from .temporal import reorder

                segments[:] = [reorder(self.temporal_probe, seg, label, rng) for seg in segments]
            return [i for seg in segments for i in seg]

        if os.path.isdir(path):  # a folder of numbered frames (Jester) is a video too
            from .native.frames import read_frame_folder

            decoded = read_frame_folder(path, indices_fn, backend=self.backend)
        else:
            read = self.frame_cache.read if self.frame_cache is not None else read_frames
            decoded = read(path, indices_fn, backend=self.backend, **self.decode)
        frames, backend = decoded.frames, decoded.backend
        T = self.sampler.frames_per_clip
        clips = [frames[s * T : (s + 1) * T] for s in range(len(segments))]
        draw = getattr(self.transform, "draw", None)
        if self.device_finish:
            if draw is None:  # evaluation: deterministic views, nothing to draw
                return {"frames": torch.stack(clips), "params": None, "backend": backend}
            # Each segment gets its own random augmentation, as in the release.
            drawn = [draw(clip, int(torch.randint(0, 2**62, ()).item())) for clip in clips]
            return {"frames": torch.stack([c for c, _ in drawn]), "params": [p for _, p in drawn],
                    "backend": backend}
        views = [torch.stack(self.transform(clip)) for clip in clips]  # each (V, 3, T, H, W)
        return {"video": torch.stack(views), "backend": backend}  # (S, V, 3, T, H, W)


def collate_clips(items: Sequence[dict]) -> dict:
    """Stack the readable items; report the others.

    Float items (`video`): `dict(video=(B, S, V, 3, T, H, W) or None when no item was readable,
    label=(B,), path=[...], failures=[(path, error), ...])`. uint8 items (`frames`, device
    finishing): `frames` is a list of (S, T, H, W, 3) tensors (videos differ in size) and
    `params` the list of their drawn augmentation parameters; `video` is absent.
    """
    good = [it for it in items if it.get("error") is None]
    failures = [(it["path"], it["error"]) for it in items if it.get("error") is not None]
    out = {
        "label": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "path": [it["path"] for it in good],
        "failures": failures,
    }
    if good and "targets" in good[0]:  # multi-label rows
        out["targets"] = torch.stack([it["targets"] for it in good])
    if good and "frames" in good[0]:
        out["frames"] = [it["frames"] for it in good]
        out["params"] = [it["params"] for it in good]
    elif good:
        out["video"] = torch.stack([it["video"] for it in good])
    else:  # nothing readable: an empty batch in either form
        out.update(video=None, frames=[], params=[])
    return out


class Task:
    """A task spec bound to its files. Paths in `spec.data` are resolved when the Task is made."""

    def __init__(self, spec: TaskSpec, *, backend: str = "auto"):
        self.spec = spec
        self.backend = backend
        data = dict(spec.data)
        # Relative roots resolve against the current directory at build time (documented).
        self.root = Path(os.path.abspath(os.path.expanduser(data.get("root") or ".")))
        self.paths: dict[str, Path | None] = {}
        for key in ("train", "val", "test", "labels"):
            value = data.get(key)
            self.paths[key] = None if value is None else self.root / os.path.expanduser(str(value))
        self._entry_cache: dict[str, list[tuple[str, int]]] = {}

    def __repr__(self) -> str:
        return f"Task({self.spec.name!r}, root={str(self.root)!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

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
            from .native import PREPARERS

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

    def entries(self, split: str) -> list[tuple[str, int]]:
        """`(video path, label)` of a split's manifest (read once, validated against num_classes)."""
        if split not in self._entry_cache:
            if self.spec.kind == "detection":  # one (video, 0) per keyframe item (tasks.ava)
                from .ava import entries

                self.manifest_path(split)  # a clear error when the split's file is absent
                self._entry_cache[split] = entries(self, split)
            elif self.spec.temporal_probe is not None:  # any video manifest; its labels unused
                from .temporal import derive_entries

                self._entry_cache[split] = derive_entries(read_manifest(self.manifest_path(split)))
            else:
                self._entry_cache[split] = read_manifest(
                    self.manifest_path(split), self.num_classes,
                    multilabel=self.spec.kind == "multilabel")
        return self._entry_cache[split]

    @cached_property
    def class_names(self) -> list[str]:
        if self.spec.temporal_probe is not None:
            from .temporal import CLASSES

            return list(CLASSES[self.spec.temporal_probe])
        path = self.paths.get("labels")
        if path is None:
            raise DataError(f"task {self.spec.name!r} has no label map (data.labels); add one, one class per line")
        if not path.is_file():
            raise self._missing("label map", path)
        names = read_label_map(path)
        if len(names) != self.num_classes:
            raise DataError(
                f"task {self.spec.name!r}: label map {path} has {len(names)} classes but num_classes is "
                f"{self.num_classes}"
            )
        return names

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
            from .image_transforms import build_image_transform

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
        if self.spec.kind == "detection":  # `entries`: keyframes (tasks.ava.holdout)
            from .ava import build_dataset

            return build_dataset(self, split, train=train, resolution=self.resolve_resolution(resolution),
                                 mean=mean, std=std, backend=self.backend, items=entries)
        if self.spec.kind == "image":
            dataset = self._image_dataset(split, train=train and not fixed, mean=mean, std=std,
                                          resolution=resolution, device_finish=device_finish,
                                          entries=entries, num_frames=num_frames)
            dataset.num_classes = self.num_classes
            return dataset
        if fixed and train:
            s = self.spec.sampling
            sampler = ClipSampler(s.frames_per_clip, s.frame_step, s.train_segments, placement="center")
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
        from .image_dataset import ImageDataset

        return ImageDataset(
            self.entries(split) if entries is None else list(entries),
            transform=self.transform(train=train, resolution=resolution, mean=mean, std=std,
                                     num_frames=num_frames),
            split=split, class_names=self.class_names if self.paths.get("labels") else None,
            device_finish=device_finish)

    def protocol(self, split: str | None = None, *, resolution: int | None = None) -> dict:
        """Everything that makes two numbers on this task comparable, as a JSON-able dict.

        Includes the manifests' and label map's sha256, so a different video set or class order
        (the K400 class-index bug users hit) gives a different protocol id.
        """
        split = split or self.eval_split
        res = self.spec.resolution if self.spec.resolution is not None else resolution
        if self.spec.kind == "detection":
            return self._detection_protocol(split, res)
        train_entries = self.entries("train")
        eval_entries = self.entries(split)
        labels = self.class_names
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
                "train": {"videos": len(train_entries), "sha256": manifest_sha256(train_entries, self.root)},
                "eval": {"videos": len(eval_entries), "sha256": manifest_sha256(eval_entries, self.root)},
            },
            "label_map_sha256": label_map_sha256(labels),
            **({"temporal_probe": self.spec.temporal_probe} if self.spec.temporal_probe else {}),
            **({"train_fold": dict(self.spec.train_fold)} if self.spec.train_fold else {}),
        }


    def _detection_protocol(self, split: str, resolution) -> dict:
        # AVA's splits are box files, not `path label` manifests: their bytes (GT rows, excluded
        # keyframes, label map, the evaluation's proposals) and the keyframes found define them.
        import dataclasses
        import hashlib

        from .ava import config, protocol_files

        def files_sha256(s: str) -> str:
            h = hashlib.sha256()
            for path in protocol_files(self, s):
                h.update(hashlib.sha256(Path(path).read_bytes()).digest())
            return h.hexdigest()

        cfg = dataclasses.asdict(config(self))
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
