"""Filling the store from a loader: what the trainer's feature cache calls."""
from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from probes.feature_cache import TokenCache, merge_copies
from probes.feature_store.keys import FeatureCacheError, copy_key
from probes.feature_store.store import FeatureStore, FeatureWriter


def _accepts_start(fn) -> bool:
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


def _write(w: FeatureWriter, batch: dict, out: torch.Tensor | None) -> tuple[int, list]:
    """Append one encoded micro-batch to `w`; its rows and failures (for `on_batch`). A
    micro-batch in which nothing loaded is still written: it counts as a batch done."""
    failures = list(batch.get("failures") or [])
    n = 0 if out is None else int(out.shape[0])
    label = torch.as_tensor(batch["label"]).long()[:n] if n else None
    paths = list(batch.get("path") or [""] * n)[:n] if n else None
    size = (int(torch.as_tensor(batch["label"]).numel()) if "label" in batch else n)
    w.write(out if n else None, label, paths, samples=size + len(failures), failures=failures)
    return n, failures


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
            if _accepts_start(loader.micro_batches):
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
                n, failures = _write(w, batch, encode(batch))
                if on_batch is not None:
                    on_batch(n, failures)
        return w.commit(seconds=time.perf_counter() - start_t)


def cached_copies(store: FeatureStore, key: str, encode: Callable[[dict], torch.Tensor | None],
                  loader, copies: int, *, seed: int,
                  on_batch: Callable[[int, list], None] | None = None,
                  describe: Mapping[str, Any] | None = None,
                  checkpoint_rows: int = 1024, verify: bool = True) -> TokenCache:
    """`probes.feature_cache.encode_copies` through the store, stacked in memory as
    (n, copies, L, D) fp16; `key` must include the seed and the train augmentation.

    Copy k is its own entry (`copy_key(key, k)`), holding exactly what pass k of encode_copies
    gives (an `EpochBatches`' epoch k, or a plain loader's pass drawing from the torch RNG
    seeded by (seed, k)), so every entry is a function of the key alone: entries written by
    either path below are hit, or resumed, by the other. A loader with `copy_micro_batches`
    (an `EpochBatches`, whose items carry their own seeds) fills all K entries in one pass that
    decodes each video once (`_one_decode`); a plain loader, or entries left in mixed states
    (some complete, some not), go pass by pass (K decodes of each video still to do).
    `on_batch` sees copy 0 only (an unreadable video fails every copy).
    """
    copies = int(copies)
    keys = [copy_key(key, k) for k in range(copies)]
    describes = [{**dict(describe or {}), "copy": k, "of": key} for k in range(copies)]
    if copies > 1 and hasattr(loader, "copy_micro_batches"):
        cache = _one_decode(store, keys, encode, loader, seed=seed, on_batch=on_batch,
                            describes=describes, checkpoint_rows=checkpoint_rows, verify=verify)
        if cache is not None:
            return cache
    passes = []
    for k in range(copies):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) * 1_000_003 + k)
            passes.append(cached_tokens(
                store, keys[k], encode, loader,
                epoch=k if hasattr(loader, "micro_batches") else None,
                on_batch=on_batch if k == 0 else None, describe=describes[k],
                checkpoint_rows=checkpoint_rows, verify=verify))
    return merge_copies(passes, sum(p.seconds for p in passes), error=FeatureCacheError)


def _hit(caches: list[TokenCache], on_batch) -> TokenCache:
    if on_batch is not None:  # every sample once, as cached_tokens reports a hit
        on_batch(len(caches[0]), list(caches[0].failures))
    return merge_copies(caches, sum(c.seconds for c in caches), error=FeatureCacheError)


def _one_decode(store, keys, encode, loader, *, seed, on_batch, describes, checkpoint_rows,
                verify) -> TokenCache | None:
    """All K entries from one pass of `loader.copy_micro_batches`: group i's batch k goes to
    entry k as micro-batch i of pass k (bit for bit the same batch: `tasks.items.
    copy_micro_batches`). None where some entries are complete and others are not (a pass-by-
    pass run was stopped between passes): the caller's pass-by-pass code fills the rest.

    Killed runs leave the K partial entries near one another, not always in lockstep (a
    time-based checkpoint can fall one micro-batch apart), so the pass starts at the fewest
    micro-batches any entry holds, skipping those without decoding them, and each entry skips
    the few it already has. The torch RNG is forked and seeded by `seed` as encode_copies does:
    items draw from their own seeds, so the encoder (frozen, deterministic) sees what pass k
    gave it, and the caller's RNG stream is untouched.
    """
    start_t = time.perf_counter()
    caches = [store.get(k, verify=verify) for k in keys]  # without the lock, as cached_tokens
    if all(c is not None for c in caches):
        return _hit(caches, on_batch)
    if any(c is not None for c in caches):
        return None
    batching = _batching_of(loader)
    with contextlib.ExitStack() as stack:
        # In k order, so that parallel jobs wanting the same K locks never hold them crosswise.
        writers = [stack.enter_context(store.writer(k, describe=d, batching=batching,
                                                    checkpoint_rows=checkpoint_rows,
                                                    verify=verify))
                   for k, d in zip(keys, describes)]
        finished = [w.cache for w in writers]  # by another job, while this one waited
        if all(c is not None for c in finished):
            return _hit(finished, on_batch)
        if any(c is not None for c in finished):
            return None  # leaving the block releases every lock before the passes take them
        done = [w.batches_done for w in writers]
        if done[0] and on_batch is not None:
            on_batch(writers[0].rows_done, writers[0].failures)
        first = min(done)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            # Inside the fork: making the loader's iterator draws its base seed from torch.
            torch.manual_seed(int(seed) * 1_000_003)
            if _accepts_start(loader.copy_micro_batches):
                groups = loader.copy_micro_batches(len(keys), start=first)
            else:  # decoded from the start; the groups every entry holds are dropped unencoded
                groups, first = loader.copy_micro_batches(len(keys)), 0
            for i, group in enumerate(groups, start=first):
                for k, (w, batch) in enumerate(zip(writers, group)):
                    if i < done[k]:
                        continue
                    n, failures = _write(w, batch, encode(batch))
                    if k == 0 and on_batch is not None:
                        on_batch(n, failures)
        seconds = time.perf_counter() - start_t  # the one pass's time, recorded by every entry
        return merge_copies([w.commit(seconds=seconds) for w in writers], seconds,
                            error=FeatureCacheError)
