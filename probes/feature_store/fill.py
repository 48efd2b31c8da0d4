"""Filling the store from a loader: what the trainer's feature cache calls."""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from probes.feature_cache import TokenCache, merge_copies
from probes.feature_store.keys import FeatureCacheError, copy_key
from probes.feature_store.store import FeatureStore


def _accepts_start(loader) -> bool:
    fn = getattr(loader, "micro_batches", None)
    if fn is None:
        return False
    try:
        return "start" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _batching_of(loader) -> Any:
    # A resumed entry must cut the data into the same micro-batches to know where it stopped.
    micro = getattr(loader, "micro_batch_size", None) or getattr(loader, "batch_size", None)
    return {"micro_batch_size": micro}


def cached_tokens(store: FeatureStore, key: str, encode: Callable[[dict], torch.Tensor | None],
                  loader, *, epoch: int | None = None,
                  on_batch: Callable[[int, list], None] | None = None,
                  describe: Mapping[str, Any] | None = None,
                  checkpoint_rows: int = 1024, verify: bool = True) -> TokenCache:
    """The tokens of `loader`'s split from the store, encoding only the rows it lacks.

    `encode(batch) -> (b, V, L, D) or None` (None: nothing in the batch loaded). `loader` is an
    unshuffled (or seeded: put its seed in the key) DataLoader or an `EpochBatches`; pass
    `epoch` for an `EpochBatches` pass other than its evaluation one. `on_batch(rows, failures)`
    is called for every encoded micro-batch and once for the rows read from the store (hit or
    resume), so a caller's failure accounting sees every sample exactly once.

    A complete entry is returned without touching the loader. A partial one (a killed run) is
    continued: micro-batches already stored are skipped without decoding where the loader's
    `micro_batches` takes `start`, else decoded and dropped without running the encoder.
    `verify=False` skips re-reading a complete entry to check its checksums (a full read of
    its files: about 0.5-0.8 GB/s here).
    """
    start_t = time.perf_counter()
    # A complete entry never changes: read it without the lock, so parallel jobs reading one
    # entry do not queue behind each other's checksum pass. The lock is for writing.
    cache = store.get(key, verify=verify)
    if cache is not None:
        if on_batch is not None:
            on_batch(len(cache), list(cache.failures))
        return cache
    with store.writer(key, describe=describe, batching=_batching_of(loader),
                      checkpoint_rows=checkpoint_rows, verify=verify) as w:
        if w.cache is not None:
            if on_batch is not None:
                on_batch(len(w.cache), list(w.cache.failures))
            return w.cache
        done_batches = w.batches_done
        if done_batches and on_batch is not None:
            on_batch(w.rows_done, w.failures)
        if hasattr(loader, "micro_batches"):
            if _accepts_start(loader):
                kw = {} if epoch is None else {"epoch": epoch}
                batches, skip = loader.micro_batches(start=done_batches, **kw), 0
            else:
                batches = loader.micro_batches() if epoch is None else loader.micro_batches(epoch)
                skip = done_batches
        else:
            batches, skip = iter(loader), done_batches
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if i < skip:
                    continue
                failures = list(batch.get("failures") or [])
                out = encode(batch)
                n = 0 if out is None else int(out.shape[0])
                label = torch.as_tensor(batch["label"]).long()[:n] if n else None
                paths = list(batch.get("path") or [""] * n)[:n] if n else None
                size = (int(torch.as_tensor(batch["label"]).numel()) if "label" in batch else n)
                w.write(out if n else None, label, paths, samples=size + len(failures),
                        failures=failures)
                if on_batch is not None:
                    on_batch(n, failures)
        return w.commit(seconds=time.perf_counter() - start_t)



def cached_copies(store: FeatureStore, key: str, encode: Callable[[dict], torch.Tensor | None],
                  loader, copies: int, *, seed: int,
                  on_batch: Callable[[int, list], None] | None = None,
                  describe: Mapping[str, Any] | None = None) -> TokenCache:
    """`probes.feature_cache.encode_copies` through the store: pass k is its own entry
    (`copy_key(key, k)`), drawn exactly as encode_copies draws it (an `EpochBatches`' epoch k,
    or the torch RNG seeded by (seed, k)), so a killed run resumes inside any pass. The copies are
    stacked in memory as (n, copies, L, D) fp16; `key` must include the seed and the train
    augmentation."""
    passes = []
    for k in range(int(copies)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) * 1_000_003 + k)
            passes.append(cached_tokens(
                store, copy_key(key, k), encode, loader,
                epoch=k if hasattr(loader, "micro_batches") else None,
                on_batch=on_batch if k == 0 else None,
                describe={**dict(describe or {}), "copy": k, "of": key}))
    return merge_copies(passes, sum(p.seconds for p in passes), error=FeatureCacheError)
