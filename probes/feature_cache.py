"""Cached frozen features: encode a split once, then train the probe for many epochs on tokens.

A frozen encoder gives the same tokens for the same clip, so when the training clips carry no
random augmentation, re-running the encoder every epoch is wasted work (a complaint users of the
release have). The cache holds tokens `(n, V, L, D)` in memory: meant for small splits (the
digits tasks, low-shot splits), not for full Kinetics.

One fixed clip per video lets a probe memorise a small train split: on digits_appearance (1,000
videos) an attentive probe reached 99.9% train and 26% test top-1 on a random-init encoder's
tokens. `encode_copies` keeps augmentation without paying the encoder every epoch: it encodes K
augmented draws of every training clip once (`(n, K, L, D)`), and `TokenBatches(pick_copy=True)`
gives each sample one of its copies at random every time it is drawn. With K = 4 the same probe
reached 35.5% test (57% train) in the same 50 epochs, with K = 8 38% (49% train).

`probes.feature_store` keeps such caches on disk (fp16, memory-mapped, keyed by the weights, the
token-changing protocol fields and the manifest) so they are also shared across runs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass
class TokenCache:
    tokens: torch.Tensor      # (n, V, L, D) on CPU: float32 in memory, or a memory-mapped
                              # float16 file of probes.feature_store
    labels: torch.Tensor      # (n,) long
    failures: list            # [(path, error)] met while encoding
    seconds: float
    paths: list | None = None  # (n,) sample paths, where known (per-sample predictions)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def nbytes(self) -> int:
        return self.tokens.numel() * self.tokens.element_size()


class TokenBatches:
    """Batches of cached tokens in the shape of the trainer's video batches.

    With `seed`, epoch e's order (and each sample's copy) is drawn from a generator seeded by
    (seed, e): `steps(epoch, start_step)` resumes anywhere. Without it, iteration shuffles with
    the global torch RNG (which the trainer saves with every epoch).
    """

    @property
    def mid_epoch_resume(self) -> bool:
        # Seeded: every epoch is a function of (seed, epoch), resumable at any step.
        return self.seed is not None

    def __init__(self, cache: TokenCache, batch_size: int, shuffle: bool = True,
                 pick_copy: bool = False, seed: int | None = None):
        if len(cache) == 0:
            raise ValueError("the feature cache is empty: every training sample failed to load")
        self.cache, self.batch_size, self.shuffle = cache, int(batch_size), shuffle
        self.seed = seed
        # pick_copy: the cache's second axis holds augmented copies (encode_copies), not views;
        # each batch gets one copy per sample, drawn with the same generator.
        self.pick_copy = pick_copy and cache.tokens.shape[1] > 1

    def __len__(self) -> int:
        return (len(self.cache) + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.cache)

    def _batches(self, generator: torch.Generator | None, start: int = 0) -> Iterator[dict]:
        n = len(self.cache)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        k = self.cache.tokens.shape[1]
        # Every copy of the epoch is drawn up front, so skipping steps on resume draws alike.
        copy = torch.randint(0, k, (n,), generator=generator) if self.pick_copy else None
        for i, idx in enumerate(order.split(self.batch_size)):
            if i < start:
                continue
            if copy is not None:
                tokens = self.cache.tokens[idx, copy[idx]].unsqueeze(1)
            else:
                tokens = self.cache.tokens[idx]
            if tokens.dtype == torch.float16:  # the on-disk store's fp16: probes train in fp32
                tokens = tokens.float()
            yield {"tokens": tokens, "label": self.cache.labels[idx], "failures": []}

    def __iter__(self) -> Iterator[dict]:
        return self._batches(None)

    def steps(self, epoch: int, start_step: int = 0):
        from types import SimpleNamespace

        g = None  # unseeded: the global RNG (resumable at epoch boundaries, with its saved state)
        if self.seed is not None:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
        for i, batch in enumerate(self._batches(g, int(start_step)), start=int(start_step)):
            yield SimpleNamespace(index=i, size=int(batch["label"].shape[0]),
                                  micro_batches=iter([batch]))


def _batches_of(loader, epoch: int | None):
    if hasattr(loader, "micro_batches"):
        return loader.micro_batches() if epoch is None else loader.micro_batches(epoch)
    return loader


class _Pass:
    """The tokens, labels, failures and paths of one pass, gathered batch by batch."""

    def __init__(self, start: float):
        self.start = start
        self.tokens, self.labels, self.failures, self.paths = [], [], [], []

    def add(self, batch: dict, out: torch.Tensor | None) -> int:
        self.failures.extend(batch.get("failures") or [])
        n = 0 if out is None else out.shape[0]
        if n:
            self.tokens.append(out.cpu())
            self.labels.append(torch.as_tensor(batch["label"]).long())
            self.paths.extend(str(p) for p in list(batch.get("path") or [""] * n)[:n])
        return n

    def cache(self) -> TokenCache:
        import time

        seconds = time.perf_counter() - self.start
        if not self.tokens:
            return TokenCache(torch.empty(0), torch.empty(0, dtype=torch.long), self.failures,
                              seconds)
        return TokenCache(torch.cat(self.tokens), torch.cat(self.labels), self.failures, seconds,
                          paths=self.paths)


def encode_loader(encoder, loader, *, device, encode: Callable, on_batch: Callable | None = None,
                  epoch: int | None = None) -> TokenCache:
    """Run `encode(encoder, batch) -> (B, V, L, D) or None` over every batch of `loader` (a
    DataLoader or an `EpochBatches`, pass `epoch` of its seed stream), keep the tokens on CPU."""
    import time

    done = _Pass(time.perf_counter())
    with torch.no_grad():
        for batch in _batches_of(loader, epoch):
            n = done.add(batch, encode(encoder, batch))
            if on_batch is not None:
                on_batch(n, batch.get("failures") or [])
    return done.cache()


def encode_copies(encoder, loader, copies: int, *, seed: int, device, encode: Callable,
                  on_batch: Callable | None = None) -> TokenCache:
    """`copies` augmented clips of every sample of an *unshuffled* loader, encoded once and
    stacked as tokens `(n, copies, L, D)` (each copy's batches must give `(n, 1, L, D)`).

    Copy k is epoch k of an `EpochBatches` (items seeded by its seed, k and the index), or, for a
    plain loader, a pass drawing from torch seeded by (seed, k) inside a forked RNG: the same
    seed gives the same cache (a resumed run rebuilds it exactly) and the caller's RNG stream is
    untouched. A loader with `copy_micro_batches(copies)` (an `EpochBatches`) gives each
    micro-batch's K copies together, drawn from one decode of each video
    (`tasks.items.copy_micro_batches`); each copy is encoded as the micro-batch its own pass
    would have formed, so the tokens equal the K passes' bit for bit.
    Failures are counted on copy 0 only (an unreadable video fails every copy).
    """
    import time

    start = time.perf_counter()
    copies = int(copies)
    if hasattr(loader, "copy_micro_batches"):
        passes = [_Pass(start) for _ in range(copies)]
        # Items carry their own seeds; the fork keeps the loader's own draw (its base seed)
        # out of the caller's RNG stream.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(int(seed) * 1_000_003)
            for group in loader.copy_micro_batches(copies):
                for k, batch in enumerate(group):
                    n = passes[k].add(batch, encode(encoder, batch))
                    if k == 0 and on_batch is not None:
                        on_batch(n, batch.get("failures") or [])
        return merge_copies([p.cache() for p in passes], time.perf_counter() - start)
    passes = []
    for k in range(copies):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) * 1_000_003 + k)
            passes.append(encode_loader(encoder, loader, device=device, encode=encode,
                                        on_batch=on_batch if k == 0 else None,
                                        epoch=k if hasattr(loader, "micro_batches") else None))
    return merge_copies(passes, time.perf_counter() - start)


def merge_copies(passes: list[TokenCache], seconds: float,
                 error: type[Exception] = RuntimeError) -> TokenCache:
    """K passes of one clip per sample -> one cache (n, K, L, D); the passes must hold the same
    samples in the same order."""
    first = passes[0]
    for k, p in enumerate(passes[1:], start=1):
        if not torch.equal(p.labels, first.labels):
            raise error(
                f"augmented copy {k} of the training split has other samples or another order "
                "than copy 0; the caching loader must not shuffle")
    if len(first) == 0:
        return first
    if first.tokens.shape[1] != 1:
        raise ValueError(f"augmented copies need one clip per sample and pass, got tokens "
                         f"{tuple(first.tokens.shape)}")
    tokens = torch.cat([p.tokens for p in passes], dim=1)
    return TokenCache(tokens, first.labels, first.failures, seconds, paths=first.paths)
