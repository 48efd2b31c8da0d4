"""The training tokens of every optimiser step, from wherever they come: one `TokenSource`.

Three places hold a training split's tokens, and the trainer reads all of them the same way,
`for step in source.steps(epoch, start_step)` -> micro-batches of (tokens, target):

- online: the frozen encoder runs on every micro-batch of the training data (an `EpochBatches`
  from `tasks.loading`: each step's global batch as micro-batches, drawn from (seed, epoch), so
  it resumes at any step; or a plain iterable of batches, one batch per step, resumed at epoch
  boundaries with the global RNG restored);
- the in-memory feature cache (`probes.feature_cache`): the split encoded once, every epoch a
  seeded shuffle of those tokens (`TokenBatches`); with `copies`, K augmented passes encoded once
  and one copy drawn per sample and step;
- the on-disk feature store (`probes.feature_store`): the same, fp16 and memory-mapped, keyed by
  the weights and what changes the clips, so runs share it; only missing rows are encoded.

Caching is only sound when the training clips carry no random augmentation (or when `copies`
augmented passes are cached), which the caller arranges and records in the protocol.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from common import failpoints
from probes.evaluation import PassCounter, len_or_none
from probes.feature_cache import TokenBatches, TokenCache, encode_copies, encode_loader
from probes.forward import MicroTokens, TokenReader
from probes.kinds import Kind
from probes.problems import DataProblems

_log = logging.getLogger(__name__)


@dataclass
class TokenStep:
    """One optimiser update: `index` in the epoch, `size` samples of the global batch,
    `num_micro` micro-batches over every rank, and this rank's `micro_batches` (MicroTokens,
    read lazily: one micro-batch's clips and tokens in memory at a time)."""

    index: int
    size: int
    num_micro: int
    micro_batches: Iterator[MicroTokens]


class _LoaderSteps:
    """A plain iterable of batches as steps: one batch = one step (no mid-epoch resume)."""

    mid_epoch_resume = False

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len_or_none(self.loader) or 0

    def steps(self, epoch: int, start_step: int = 0):
        for i, batch in enumerate(self.loader):
            n = int(batch["tokens"].shape[0]) if "tokens" in batch else (
                len(batch.get("label", [])) + len(batch.get("failures") or []))
            yield SimpleNamespace(index=i, size=max(n, 1), micro_batches=iter([batch]))


class TokenSource:
    """Steps of training tokens over `data` (anything with `steps(epoch, start_step)`), each
    micro-batch read by `read`. `cache` is the feature cache it trains on (None: online),
    `cache_stats` what the record says of it, `fingerprint` what a resumed state must match."""

    def __init__(self, data, read: TokenReader, *, cache: TokenCache | None = None,
                 cache_stats: dict | None = None, fingerprint: dict | None = None):
        self.data, self.read = data, read
        self.cache, self.cache_stats = cache, cache_stats
        self.fingerprint = fingerprint or {}

    def __len__(self) -> int:
        return len(self.data)

    @property
    def mid_epoch_resume(self) -> bool:
        # Objects whose epochs are drawn from (seed, epoch) resume anywhere and say so.
        return bool(getattr(self.data, "mid_epoch_resume", False))

    def steps(self, epoch: int, start_step: int = 0) -> Iterator[TokenStep]:
        for step in self.data.steps(epoch, start_step):
            yield TokenStep(step.index, step.size, getattr(step, "num_micro", 1),
                            (self.read(batch) for batch in step.micro_batches))


def token_source(encoder: nn.Module, probe: nn.Module, train_data, *, kind: Kind, device,
                 precision: str, batch_size: int, encoder_chunk: int | None = None,
                 cache: bool = False, copies: int = 0, seed: int | None = None,
                 feature_store=None, feature_key: str | None = None,
                 problems: DataProblems, max_failure_fraction: float) -> TokenSource:
    """The training tokens of `train_data` (an `EpochBatches`-like object or a plain iterable
    of batches) for `probe`: online, or, with `cache`, encoded once into memory or through
    `feature_store` under `feature_key`, then served as seeded shuffled global batches of
    `batch_size`. `copies` > 0 caches that many augmented passes of an augmenting, unshuffled
    training set; `seed` (default torch's initial seed) draws the cached epochs and copies.
    Caching counts the training split's unreadable samples into `problems`."""
    read = TokenReader(encoder, probe, kind=kind, device=device, precision=precision,
                       encoder_chunk=encoder_chunk, finish=getattr(train_data, "finish", None),
                       train=True)
    if not cache:
        data = train_data if hasattr(train_data, "steps") else _LoaderSteps(train_data)
        return TokenSource(data, read)
    seed = torch.initial_seed() if seed is None else int(seed)
    tokens = _cached(read, train_data, copies=copies, seed=seed, feature_store=feature_store,
                     feature_key=feature_key, problems=problems,
                     max_failure_fraction=max_failure_fraction)
    stats = {"samples": len(tokens), "copies": max(1, int(copies)),
             "seconds": round(tokens.seconds, 3), "megabytes": round(tokens.nbytes / 2**20, 1)}
    augmented = f" x {copies} augmented copies" if copies > 0 else ""
    _log.info("cached training features: %d clips%s in %.1f s (%s MB)", len(tokens), augmented,
              tokens.seconds, stats["megabytes"])
    # Other augmented copies would make another run: a resumed state must have trained on these.
    fingerprint = {"feature_cache": {"copies": int(copies), "seed": seed}} if copies > 0 else None
    batches = None  # a fitted probe (k-NN) reads the cache itself, it runs no steps
    if getattr(probe, "trainable", True) is not False:
        batches = TokenBatches(tokens, batch_size, shuffle=True, pick_copy=copies > 0, seed=seed)
    return TokenSource(batches, read, cache=tokens, cache_stats=stats, fingerprint=fingerprint)


def _cached(read: TokenReader, train_data, *, copies, seed, feature_store, feature_key,
            problems, max_failure_fraction) -> TokenCache:
    """The training split's view-0 tokens (fp32 in memory, fp16 from the store), encoded where
    missing. Caching draws nothing from the RNG that the epochs use (copies fork it), so resumed
    and uninterrupted runs shuffle the cached tokens alike."""
    counter = PassCounter(problems, "train", "feature caching", train_data, max_failure_fraction)

    def encode(batch):
        failpoints.hit("cache")
        micro = read(batch)
        return None if micro.tokens is None else micro.tokens.float()

    if feature_store is not None:
        from probes.feature_store import cached_copies, cached_tokens

        if copies > 0:
            tokens = cached_copies(feature_store, feature_key, encode, train_data, copies,
                                   seed=seed, on_batch=counter.add)
        else:
            tokens = cached_tokens(feature_store, feature_key, encode, train_data,
                                   on_batch=counter.add)
    elif copies > 0:
        tokens = encode_copies(read.encoder, train_data, copies, seed=seed, device=read.device,
                               encode=lambda _, batch: encode(batch), on_batch=counter.add)
    else:
        tokens = encode_loader(read.encoder, train_data, device=read.device,
                               encode=lambda _, batch: encode(batch), on_batch=counter.add)
    counter.finish()
    return tokens
