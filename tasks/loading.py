"""Epochs of micro-batches whose every draw is a function of (seed, epoch, sample index).

A probe is trained on *global* batches (the paper's 256 = 4 per GPU x 64 GPUs); memory allows
only `micro_batch_size` clips at once, so each global batch arrives as consecutive micro-batches
and the trainer accumulates their gradients. What a run sees therefore never depends on the
micro-batch size, the worker count or where an interrupted run restarts:

* the order of epoch e is a permutation seeded by (seed, e) (or the manifest order);
* item i of epoch e is loaded with torch's RNG seeded by (seed, e, i), from which the dataset
  derives its clip positions and augmentation draws (`tasks.dataset.VideoDataset`);
* a resumed run starts the same epoch's order at the first global batch it had not finished.

Under DDP (`rank`, `world_size`) every rank loads an exact share of each global batch's
micro-batches, micro-batch j going to rank j % world_size: the micro-batches themselves are the
ones a single process would form, so each sample's clip, and the probe's per-micro-batch
gradients, are those of a one-process run; the trainer sums them across ranks.

Clips leave the loader as uint8 frames (a quarter of float32, at their decoded size) and are
cropped, resized and normalised on the compute device by `ClipFinisher`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

EVAL_EPOCH = 1_000_000  # the seed stream of evaluation passes (never a training epoch)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The torch seed item `index` of `epoch` is loaded with (an injective mix, < 2**63)."""
    return ((int(seed) * 1_000_003 + int(epoch)) * 10_000_019 + int(index)) % (2**63 - 1)


class SeededItems(torch.utils.data.Dataset):
    """`dataset[i]` loaded inside a forked torch RNG seeded by (seed, epoch, i)."""

    def __init__(self, dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        # Items draw on the CPU generator only, so only it is seeded: torch.manual_seed would
        # also reseed every accelerator's generator, outside this fork, and where none is
        # initialised queue that call with a formatted stack (0.1-0.3 ms an item).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed(self.seed, self.epoch, index))
            return self.dataset[index]


@dataclass
class Step:
    """One optimiser step: `size` samples of the global batch, arriving as micro-batches."""

    index: int                 # step within the epoch
    size: int                  # samples the global batch holds (readable or not)
    micro_batches: Iterator[dict]   # this rank's share of them
    num_micro: int = 1         # micro-batches of the whole global batch, over all ranks


class EpochBatches:
    """Global batches of `batch_size` samples in micro-batches of at most `micro_batch_size`.

    `steps(epoch, start_step)` yields `Step`s; `micro_batches(epoch)` every micro-batch of one
    pass in order (evaluation, feature caching). `finish(batch, device)` turns a loaded
    micro-batch into float clips on the device (see `ClipFinisher`); identity when the dataset
    already returns float clips.
    """

    mid_epoch_resume = True  # every epoch is a function of (seed, epoch): resumable at any step

    def __init__(self, dataset, *, batch_size: int, micro_batch_size: int | None = None,
                 seed: int = 0, shuffle: bool = True, num_workers: int = 0,
                 collate_fn: Callable | None = None, pin_memory: bool = False,
                 finish: Callable | None = None, rank: int = 0, world_size: int = 1):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        micro = int(micro_batch_size or batch_size)
        if micro < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        self.dataset = dataset
        self.batch_size, self.micro_batch_size = int(batch_size), min(micro, int(batch_size))
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.collate_fn, self.finish = collate_fn, finish
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def __len__(self) -> int:
        """Optimiser steps per epoch (the last global batch may be smaller: no sample dropped)."""
        return -(-len(self.dataset) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def order(self, epoch: int) -> list[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))
        return torch.randperm(n, generator=g).tolist()

    def _loader(self, epoch: int, batches: Sequence[Sequence[int]]):
        from torch.utils.data import DataLoader

        return DataLoader(SeededItems(self.dataset, self.seed, epoch), batch_sampler=batches,
                          num_workers=self.num_workers, collate_fn=self.collate_fn,
                          pin_memory=self.pin_memory, persistent_workers=False)

    def steps(self, epoch: int, start_step: int = 0) -> Iterator[Step]:
        order = self.order(epoch)
        globals_ = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        globals_ = globals_[int(start_step):]
        micro = [[g[j:j + self.micro_batch_size] for j in range(0, len(g), self.micro_batch_size)]
                 for g in globals_]
        mine = [ms[self.rank::self.world_size] for ms in micro]
        flat = [m for ms in mine for m in ms]
        it = iter(self._loader(epoch, flat)) if flat else iter(())
        for k, (g, ms, own) in enumerate(zip(globals_, micro, mine)):
            # The same loader streams every micro-batch (workers prefetch across steps); each
            # Step hands out exactly its own. A rank may own none of a small step's.
            yield Step(int(start_step) + k, len(g), (next(it) for _ in range(len(own))),
                       num_micro=len(ms))

    def micro_batches(self, epoch: int = EVAL_EPOCH, start: int = 0) -> Iterator[dict]:
        """This rank's micro-batches of one pass, in order (all of them in one process), from
        its `start`-th on (items are seeded by index, so skipping changes nothing after)."""
        order = self.order(epoch)
        flat = [order[i:i + self.micro_batch_size] for i in range(0, len(order), self.micro_batch_size)]
        flat = flat[self.rank::self.world_size][int(start):]
        if flat:
            yield from self._loader(epoch, flat)

    def copy_micro_batches(self, copies: int, start: int = 0) -> Iterator[list[dict]]:
        """One pass, each micro-batch as `copies` micro-batches: copy k is what
        `micro_batches(k)` gives for it, all drawn from one decode of each video
        (`tasks.items.copy_micro_batches`); needs shuffle off. From this rank's `start`-th
        micro-batch on, as `micro_batches` (those before are not loaded)."""
        from functools import partial

        from .items import copy_micro_batches

        return copy_micro_batches(self, copies, partial(item_seed, self.seed), start=start)

    def num_micro_batches(self, all_ranks: bool = False) -> int:
        """Micro-batches of one pass on this rank (`all_ranks`: over every rank)."""
        total = -(-len(self.dataset) // self.micro_batch_size)
        if all_ranks:
            return total
        return len(range(self.rank, total, self.world_size))


class ClipFinisher:
    """uint8 micro-batches of `tasks.collate_clips` -> float clips (B, S, V, 3, T, r, r) on a device.

    Training items carry the random parameters their loader worker drew (crop box, erased boxes,
    noise seed); evaluation items need none. The work a GPU does fast (resize, crop, normalise,
    erase) happens here rather than in the loader, and only uint8 crosses to the device: one
    contiguous `(B, S, T, H, W, 3)` tensor when the micro-batch's clips share a size (pinned by
    the loader for CUDA), else a list of samples. All the micro-batch's clips are finished
    together in batched ops (`tasks.finishing`), not sample by sample.
    """

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, batch: dict, device) -> torch.Tensor | None:
        from .finishing import finish_clips

        frames = batch.get("frames")
        if frames is None or len(frames) == 0:
            return None
        params = batch["params"]
        if isinstance(frames, torch.Tensor):  # (B, S, T, H, W, 3)
            B, S = frames.shape[:2]
            clips = frames.to(device, non_blocking=True).flatten(0, 1)
        else:
            B, S = len(frames), frames[0].shape[0]
            clips = [c for sample in frames for c in sample.to(device, non_blocking=True)]
        flat = None if params[0] is None else [p for sample in params for p in sample]
        out = finish_clips(self.transform, clips, flat)  # (B*S, V, 3, T, r, r)
        return out.view(B, S, *out.shape[1:])
