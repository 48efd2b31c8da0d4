"""Datasets over a manifest's `(path, label)` entries: `ManifestItems` (the common item protocol),
`VideoDataset` (manifest -> clips), `collate_clips` (batches that report unreadable files) and
`copy_micro_batches` (augmented copies of each video drawn from one decode)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from .clip_reader import read_frames, read_many
from .frame_cache import FrameCache
from .native.frames import read_frame_folder
from .sampling import ClipSampler
from .temporal import reorder

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
        item = self._header(index)
        try:
            item.update(self._load(item["path"], item["label"]))
        except Exception as e:  # any failure is this sample's problem, reported, not hidden
            _failed(item, e)
        return item

    def load_copies(self, index: int, seeds: Sequence[int]) -> list[dict]:
        """`self[index]` loaded once under each torch seed of `seeds` (augmented copies). Here
        each copy reads the file again; `VideoDataset` decodes the video once for all of them."""
        items = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):  # the CPU generator only (tasks.loading)
                torch.default_generator.manual_seed(int(seed))
                items.append(self[index])
        return items

    def _header(self, index: int) -> dict:
        """The item's `label`, `path`, `error` (None) and, for multi-label entries, `targets`;
        draws nothing from the RNG."""
        path, label = self.entries[index]
        item = {"label": 0 if isinstance(label, tuple) else int(label), "path": path, "error": None}
        if isinstance(label, tuple):
            if self.num_classes is None:
                raise ValueError("multi-label entries need the dataset's num_classes")
            targets = torch.zeros(self.num_classes)
            targets[list(label)] = 1.0
            item["targets"] = targets
        return item


def _failed(item: dict, error: Exception) -> None:
    item.update(video=None, error=f"{type(error).__name__}: {error}")
    log.debug("skipping unreadable %s: %s", item["path"], item["error"])


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
        segments, indices_fn = self._clip_indices(label)
        if os.path.isdir(path):  # a folder of numbered frames (Jester) is a video too
            decoded = read_frame_folder(path, indices_fn, backend=self.backend)
        else:
            read = self.frame_cache.read if self.frame_cache is not None else read_frames
            decoded = read(path, indices_fn, backend=self.backend, **self.decode)
        return self._finish(decoded, segments)

    def load_copies(self, index: int, seeds: Sequence[int]) -> list[dict]:
        """The items `self[index]` gives under each torch seed of `seeds`, equal to them tensor
        for tensor, from ONE decode of the video (`tasks.clip_reader.read_many`): copy k draws
        its clip positions under its seed, the union of the copies' frames is decoded once, then
        copy k draws its augmentation from its own generator, continued where it stopped. K
        cached copies of a video then cost one decode, not K. A folder of frames or a frame
        cache reads per copy (neither decodes a video per read)."""
        path = self.entries[index][0]
        if os.path.isdir(path) or self.frame_cache is not None:
            return super().load_copies(index, seeds)
        items, plans, states = [], [], []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):  # the CPU generator only (tasks.loading)
                torch.default_generator.manual_seed(int(seed))
                item = self._header(index)
                plans.append(self._clip_indices(item["label"]))
                states.append(torch.random.get_rng_state())  # where this copy's draws resume
            items.append(item)
        try:
            decoded = read_many(path, [fn for _, fn in plans], backend=self.backend, **self.decode)
        except Exception as e:  # the video is unreadable for every copy alike
            for item in items:
                _failed(item, e)
            return items
        for item, (segments, _), state, clip in zip(items, plans, states, decoded):
            with torch.random.fork_rng(devices=[]):
                torch.random.set_rng_state(state)
                try:
                    item.update(self._finish(clip, segments))
                except Exception as e:
                    _failed(item, e)
        return items

    def _clip_indices(self, label: int):
        """`(segments, indices_fn)`: `indices_fn(num_frames)` draws the clips' frame indices
        (from a numpy generator seeded by one torch draw, made now) and leaves them, per
        segment, in `segments`."""
        rng = np.random.RandomState(int(torch.randint(0, 2**32, ()).item()))
        segments: list[list[int]] = []

        def indices_fn(num_frames: int) -> list[int]:
            segments[:] = self.sampler.indices(num_frames, rng)
            if self.temporal_probe is not None:  # label 1: the same clip reversed / shuffled
                segments[:] = [reorder(self.temporal_probe, seg, label, rng) for seg in segments]
            return [i for seg in segments for i in seg]

        return segments, indices_fn

    def _finish(self, decoded, segments: list[list[int]]) -> dict:
        """The item's frames (device finishing) or float views from the decoded segments."""
        frames, backend = decoded.frames, decoded.backend
        T = self.sampler.frames_per_clip
        clips = [frames[s * T : (s + 1) * T] for s in range(len(segments))]
        draw = getattr(self.transform, "draw", None)
        if self.device_finish:
            # The decoded frames are the segments back to back: (S, T, H, W, 3) is a view of
            # them, not a copy, wherever the loader leaves the pixels alone.
            whole = frames[: len(segments) * T].reshape(len(segments), T, *frames.shape[1:])
            if draw is None:  # evaluation: deterministic views, nothing to draw
                return {"frames": whole, "params": None, "backend": backend}
            # Each segment gets its own random augmentation, as in the release.
            drawn = [draw(clip, int(torch.randint(0, 2**62, ()).item())) for clip in clips]
            untouched = all(c is clip for (c, _), clip in zip(drawn, clips))  # no PIL RandAugment
            return {"frames": whole if untouched else torch.stack([c for c, _ in drawn]),
                    "params": [p for _, p in drawn], "backend": backend}
        views = [torch.stack(self.transform(clip)) for clip in clips]  # each (V, 3, T, H, W)
        return {"video": torch.stack(views), "backend": backend}  # (S, V, 3, T, H, W)


class CopiedItems(torch.utils.data.Dataset):
    """Item i: the `copies` items of `dataset[i]`, copy k loaded under torch seed
    `seed_of(k, i)` (the seed epoch k would load it with), by `dataset.load_copies`: from one
    decode where the dataset can."""

    def __init__(self, dataset, copies: int, seed_of: Callable[[int, int], int]):
        if int(copies) < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        self.dataset, self.copies, self.seed_of = dataset, int(copies), seed_of

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> list[dict]:
        return self.dataset.load_copies(index, [self.seed_of(k, index) for k in range(self.copies)])


class CopiesCollate:
    """Samples' copy lists -> one micro-batch per copy: `[collate(copy k of every sample)]`."""

    def __init__(self, collate: Callable | None):
        self.collate = collate

    def __call__(self, samples: Sequence[list[dict]]) -> list:
        from torch.utils.data import default_collate

        collate = self.collate or default_collate
        return [collate([sample[k] for sample in samples]) for k in range(len(samples[0]))]


def copy_micro_batches(batches, copies: int, seed_of: Callable[[int, int], int],
                       start: int = 0) -> Iterator[list]:
    """One pass over an unshuffled `tasks.loading.EpochBatches`, each of this rank's micro-batches
    arriving as `copies` micro-batches: copy k holds what `batches.micro_batches(k)` would give
    for those samples (item i loaded under `seed_of(k, i)`, the epoch's item seed), all copies of
    a video drawn from one decode. Copies must line up sample by sample, so the order is the
    manifest's. The pass begins at this rank's `start`-th micro-batch, those before it never
    loaded (a resumed feature store entry): items are seeded by index, so the rest is unchanged."""
    from torch.utils.data import DataLoader

    if batches.shuffle:
        raise ValueError("augmented copies need an unshuffled loader: each copy's micro-batches "
                         "must hold the same samples")
    n, m = len(batches.dataset), batches.micro_batch_size
    flat = [list(range(i, min(i + m, n))) for i in range(0, n, m)]
    flat = flat[batches.rank::batches.world_size][int(start):]
    if not flat:
        return iter(())
    return iter(DataLoader(CopiedItems(batches.dataset, copies, seed_of), batch_sampler=flat,
                           num_workers=batches.num_workers,
                           collate_fn=CopiesCollate(batches.collate_fn),
                           pin_memory=batches.pin_memory, persistent_workers=False))


def collate_clips(items: Sequence[dict]) -> dict:
    """Stack the readable items; report the others.

    Float items (`video`): `dict(video=(B, S, V, 3, T, H, W) or None when no item was readable,
    label=(B,), path=[...], failures=[(path, error), ...])`. uint8 items (`frames`, device
    finishing): `frames` is one contiguous `(B, S, T, H, W, 3)` tensor when every item has the
    same shape (in a loader worker it is stacked straight into shared memory, so the micro-batch
    crosses to the main process, and is pinned there, in one piece), else the list of each
    item's `(S, T, H, W, 3)` (videos differ in size); `params` the list of their drawn
    augmentation parameters; `video` is absent.
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
        out["frames"] = _stack_frames([it["frames"] for it in good])
        out["params"] = [it["params"] for it in good]
    elif good:
        out["video"] = torch.stack([it["video"] for it in good])
    else:  # nothing readable: an empty batch in either form
        out.update(video=None, frames=[], params=[])
    return out


def _stack_frames(frames: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """One `(B, ...)` tensor when the items share a shape, else the list. In a loader worker
    the stack is written into shared memory directly (as torch's default_collate does), so
    the batch is not copied again to be sent to the main process."""
    first = frames[0]
    if any(f.shape != first.shape or f.dtype != first.dtype for f in frames):
        return frames
    out = None
    if torch.utils.data.get_worker_info() is not None:
        storage = first._typed_storage()._new_shared(len(frames) * first.numel(), device=first.device)
        out = first.new(storage).resize_(len(frames), *first.shape)
    return torch.stack(frames, 0, out=out)
