"""On-disk feature cache: a split's frozen-encoder tokens written once as memory-mapped fp16 files.

The frozen encoder's forward is the whole cost of an evaluation. Protocols without training
augmentation (linear probes, k-NN, low-shot, centre-crop image tasks) see the same tokens every
epoch and every run, so they are encoded once and read back from disk.

A cache entry is keyed by a content hash of everything that changes the tokens (`feature_key`):
a digest of the encoder's weights (`state_dict_digest`), the protocol fields that change what the
encoder sees (sampling, transform, resolution, frames, copies, the seed where clips are random,
the precision the encoder ran in) and the manifest's hash. A changed checkpoint, transform or
video list is another key, so stale features are never reused (CLIP_benchmark keys its cache
by model and dataset *names*, and silently reuses features after a preprocessing change).

Layout under `root`:

    <key>/             a complete entry: meta.json, tokens.f16, labels.i64, paths.txt
    <key>.partial/     an entry being written (or left by a killed writer): progress.json + files
    <key>.lock         fcntl lock held by the one process writing <key>

Rows are appended in the loader's order. Every `checkpoint_rows` rows (and on commit) the files
are fsync'ed and `progress.json` is replaced atomically with the rows, samples and micro-batches
done and a CRC-32 of every finished chunk of each file. A writer killed anywhere leaves
a `.partial` folder that `get` never reads; the next writer verifies its chunks, cuts the files
back to the last verified one and encodes only what is missing. The entry becomes complete in one
atomic step: `meta.json` is written into the partial folder, then the folder is renamed to
`<key>`. Every load re-checks the chunk checksums, so a damaged file is a clear error that names
it, never wrong numbers.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from probes.digest import content_digest
from probes.feature_cache import TokenCache, merge_copies
from common.atomic import atomic_write

_log = logging.getLogger(__name__)

# Bumped when the layout or the meaning of an entry changes (it is part of every key).
FORMAT_VERSION = 1
TOKENS, LABELS, PATHS = "tokens.f16", "labels.i64", "paths.txt"
FP16_MAX = float(np.finfo(np.float16).max)


class FeatureCacheError(ValueError):
    """A cache entry that cannot be used (damaged file, wrong layout) or tokens it cannot hold."""


# --------------------------------------------------------------------------------------------
# keys


def state_dict_digest(weights: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """`probes.digest.content_digest` of every tensor's name, dtype, shape and bytes.

    Computed on the loaded weights, so the same weights hash alike whatever file they came from
    (pth, safetensors, a converted release checkpoint). Take it before any precision cast: a
    bf16 copy of the weights is another digest (and the precision belongs in the fields anyway).
    One pass over the bytes: sha256 is the fastest hashlib digest on CPUs with SHA extensions
    (about 0.5 GB/s on this project's shared machine: ViT-L's 1.2 GB in ~2.5 s, next to a
    checkpoint load that reads the same bytes). A cryptographic digest, because a collision
    here would silently reuse another model's features."""
    sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    return content_digest({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)  # exact; JSON would also print floats exactly, this only makes it plain
    # str() of arbitrary objects can embed memory addresses: a key must never depend on them.
    raise FeatureCacheError(f"feature cache key field of type {type(value).__name__} "
                            f"({value!r}) is not plain data; pass str, int, float, bool, lists "
                            f"or dicts of them")


def feature_key(*, encoder_digest: str, fields: Mapping[str, Any], manifest_hash: str) -> str:
    """The entry name: sha256 of (format version, encoder digest, token-changing fields, manifest).

    `fields` must hold everything besides the weights and the video list that changes the
    tokens: the encoder's architecture overrides (resolution, frames, pos-embed interpolation),
    the clip sampling and the transform that made the clips (the eval transform, or the train
    augmentation for augmented copies), the split, copies, the seed where clips are random
    (random eval placement, augmented copies, a shuffled caching order), and the precision the
    encoder ran in."""
    if not encoder_digest or not manifest_hash:
        raise FeatureCacheError("feature_key needs the encoder's weight digest and the manifest "
                                "hash (an empty one would let different runs share an entry)")
    blob = json.dumps({"format": FORMAT_VERSION, "encoder": str(encoder_digest),
                       "fields": _canonical(fields), "manifest": str(manifest_hash)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def token_fields(task_protocol: Mapping[str, Any], *, split: str, resolution: int | None,
                 precision: str, encoder: Mapping[str, Any] | None = None, copies: int = 0,
                 seed: int | None = None, random_clips: bool = False,
                 views: int | None = None) -> dict:
    """The `fields` of `feature_key` for one split, from a task's `protocol()` dict.

    `encoder`: the encoder's name and architecture overrides (resolution, frames, pos-embed
    settings: the same weights at another input size give other tokens). The transform is the
    eval transform, or the train augmentation when `copies` augmented passes are cached.
    `random_clips`: the clips depend on the seed (random eval placement, augmented copies, a
    shuffled caching order); only then is `seed` part of the key, so deterministic clips are
    shared across probe seeds. `views`: how many views per sample are kept (training caches
    keep view 0)."""
    random_clips = bool(random_clips or copies)
    if random_clips and seed is None:
        raise FeatureCacheError("clips drawn at random need their seed in the feature cache key")
    return {"split": split, "sampling": task_protocol.get("sampling"),
            "transform": task_protocol.get("train_aug" if copies else "eval_transform"),
            "resolution": resolution, "precision": precision, "encoder": dict(encoder or {}),
            "copies": int(copies), "seed": int(seed) if random_clips else None, "views": views,
            "label_map": task_protocol.get("label_map_sha256")}


# --------------------------------------------------------------------------------------------
# the store


class _Checksum:
    """CRC-32 of a file's chunk. It guards against damage, not tampering (the key's digest does
    identity), and at ~1.6 GB/s here it costs the writer little next to the encoder; any damage
    up to 32 consecutive bits is always caught, anything else missed with odds 2**-32."""

    def __init__(self):
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


_BLOCK = 16 * 2**20


def _range_checksum(f, start: int, stop: int) -> tuple[str, int]:
    """(checksum, bytes read) of bytes [start, stop) of an open file, read in blocks."""
    f.seek(start)
    c, got = _Checksum(), 0
    while got < stop - start:
        data = f.read(min(_BLOCK, stop - start - got))
        if not data:
            break
        c.update(data)
        got += len(data)
    return c.hexdigest(), got


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _restart_hint(folder: Path) -> str:
    return f"delete the folder {folder} to encode these features again"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _verify_chunks(folder: Path, chunks: list[dict], row_bytes: int, *,
                   strict: bool) -> int:
    """Number of leading chunks whose checksums match the files. `strict`: the first mismatch
    (or missing file) is a FeatureCacheError naming the file; else verification stops there."""
    good = 0
    handles = {}
    try:
        for name in (TOKENS, LABELS, PATHS):
            try:
                handles[name] = open(folder / name, "rb")
            except FileNotFoundError:
                if strict:
                    raise FeatureCacheError(f"feature cache file {folder / name} is missing; "
                                            f"{_restart_hint(folder)}") from None
                return 0
        for chunk in chunks:
            a, b = chunk["rows"]
            pa, pb = chunk["path_bytes"]
            ranges = {TOKENS: (a * row_bytes, b * row_bytes), LABELS: (a * 8, b * 8),
                      PATHS: (pa, pb)}
            for name, (start, stop) in ranges.items():
                checksum, got = _range_checksum(handles[name], start, stop)
                if got != stop - start or checksum != chunk[name]:
                    if strict:
                        what = "is shorter than its index says" if got != stop - start \
                            else "fails its checksum"
                        raise FeatureCacheError(
                            f"feature cache file {folder / name} {what} (rows {a}-{b}): it was "
                            f"damaged or changed after it was written; {_restart_hint(folder)}")
                    return good
            good += 1
    finally:
        for f in handles.values():
            f.close()
    return good


def _load_entry(folder: Path, key: str, verify: bool) -> TokenCache:
    start = time.perf_counter()
    try:
        meta = _read_json(folder / "meta.json")
    except (OSError, ValueError) as err:
        raise FeatureCacheError(f"feature cache index {folder / 'meta.json'} cannot be read "
                                f"({err}); {_restart_hint(folder)}") from None
    if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
        raise FeatureCacheError(f"feature cache entry {folder} has format "
                                f"{meta.get('format')!r} / key {meta.get('key')!r}, expected "
                                f"{FORMAT_VERSION} / {key}; {_restart_hint(folder)}")
    rows, row_shape = int(meta["rows"]), tuple(meta["row_shape"] or ())
    row_bytes = int(np.prod(row_shape)) * 2 if row_shape else 0
    if verify:
        _verify_chunks(folder, meta["chunks"], row_bytes, strict=True)
    for name, size in ((TOKENS, rows * row_bytes), (LABELS, rows * 8)):
        actual = (folder / name).stat().st_size
        if actual != size:
            raise FeatureCacheError(f"feature cache file {folder / name} holds {actual} bytes, "
                                    f"its index says {size}; {_restart_hint(folder)}")
    if rows == 0:
        tokens = torch.empty((0, *row_shape), dtype=torch.float16)
        labels = torch.empty(0, dtype=torch.long)
    else:
        # Copy-on-write map: pages are read on demand and never written back; the tensor is
        # writable (torch warns on read-only arrays) but the file is never changed.
        arr = np.memmap(folder / TOKENS, dtype="<f2", mode="c", shape=(rows, *row_shape))
        tokens = torch.from_numpy(arr)
        labels = torch.from_numpy(np.fromfile(folder / LABELS, dtype="<i8").astype(np.int64))
    paths = (folder / PATHS).read_text(encoding="utf-8").split("\n")[:rows]
    failures = [tuple(f) for f in meta.get("failures", [])]
    return TokenCache(tokens, labels, failures, time.perf_counter() - start, paths=paths)


class FeatureStore:
    """A folder of cache entries, one per key (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def _check_key(self, key: str) -> str:
        if not key or any(c in key for c in "/\\.") or key.startswith("-"):
            raise FeatureCacheError(f"feature cache key {key!r} is not a plain name; make one "
                                    f"with probes.feature_store.feature_key")
        return key

    def exists(self, key: str) -> bool:
        return (self.path(self._check_key(key)) / "meta.json").is_file()

    def get(self, key: str, *, verify: bool = True) -> TokenCache | None:
        """The complete entry (tokens memory-mapped, fp16), or None. A partial entry is never
        returned. `verify` re-checks every chunk's checksum (one read of the files)."""
        folder = self.path(self._check_key(key))
        if not (folder / "meta.json").is_file():
            return None
        return _load_entry(folder, key, verify)

    def writer(self, key: str, *, describe: Mapping[str, Any] | None = None,
               batching: Any = None, checkpoint_rows: int = 1024,
               checkpoint_s: float = 60.0, verify: bool = True) -> "FeatureWriter":
        """A context manager that holds the entry's lock and appends rows (see FeatureWriter)."""
        return FeatureWriter(self, self._check_key(key), describe=describe, batching=batching,
                             checkpoint_rows=checkpoint_rows, checkpoint_s=checkpoint_s,
                             verify=verify)


class FeatureWriter:
    """Appends rows to one entry under an exclusive lock; resumes a partial entry.

    Inside `with store.writer(key) as w:` either `w.cache` is the complete entry (another writer
    finished it, possibly while this one waited for the lock) or `w.rows_done`, `w.samples_done`
    and `w.batches_done` say where a killed writer stopped (0 for a fresh entry). `write` appends
    rows in order, `commit` publishes the entry and returns it. Leaving the block without
    `commit` keeps the partial entry for the next writer.
    """

    def __init__(self, store: FeatureStore, key: str, *, describe, batching, checkpoint_rows,
                 checkpoint_s, verify=True):
        self.store, self.key, self.verify = store, key, bool(verify)
        self.final = store.path(key)
        self.partial = store.root / f"{key}.partial"
        self.describe = _canonical(dict(describe or {}))
        self.batching = _canonical(batching)
        self.checkpoint_rows, self.checkpoint_s = int(checkpoint_rows), float(checkpoint_s)
        self.cache: TokenCache | None = None
        self._lock_file = None
        self._files: dict = {}

    # -- lock and resume

    def __enter__(self) -> "FeatureWriter":
        self.store.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.store.root / f"{self.key}.lock", "a+b")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.info("feature cache %s: another process is writing it; waiting", self.final)
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        try:
            self.cache = self.store.get(self.key, verify=self.verify)
            if self.cache is None:
                self._resume()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._close_files()
        self._release()

    def _release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _fresh_state(self) -> None:
        self.row_shape: tuple | None = None
        self.chunks: list[dict] = []
        self.rows_done = self.samples_done = self.batches_done = self.path_bytes = 0
        self._chunk_failures: list = []

    def _resume(self) -> None:
        self._fresh_state()
        progress = self.partial / "progress.json"
        state = None
        if progress.is_file():
            try:
                state = _read_json(progress)
            except ValueError:
                state = None  # atomically replaced, so unreadable only if tampered with
        if state is not None and (state.get("format") != FORMAT_VERSION or state.get("key") != self.key
                                  or state.get("batching") != self.batching):
            _log.warning("feature cache %s: the partial entry was written with another format "
                         "or batching; starting it over", self.partial)
            state = None
        if state is None:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
        else:
            self.row_shape = tuple(state["row_shape"]) if state.get("row_shape") else None
            chunks = state["chunks"]
            row_bytes = self._row_bytes()
            good = _verify_chunks(self.partial, chunks, row_bytes, strict=False)
            if good < len(chunks):
                _log.warning("feature cache %s: chunk %d of %d fails its checksum; rows from %d "
                             "are encoded again", self.partial, good, len(chunks),
                             chunks[good]["rows"][0])
            self.chunks = chunks[:good]
            if self.chunks:
                last = self.chunks[-1]
                self.rows_done, self.path_bytes = last["rows"][1], last["path_bytes"][1]
                self.samples_done, self.batches_done = last["samples"], last["batches"]
            if not self.rows_done:
                self.row_shape = None  # nothing kept: the next rows set it afresh
        self._open_files()
        if self.rows_done or self.samples_done:
            _log.info("feature cache %s: resuming a partial entry after %d rows",
                      self.final, self.rows_done)

    def _row_bytes(self) -> int:
        return int(np.prod(self.row_shape)) * 2 if self.row_shape else 0

    def _open_files(self) -> None:
        # Cut every file back to the last verified chunk: what a killed writer added after it
        # (rows written but never checkpointed, a torn last write) is written again.
        sizes = {TOKENS: self.rows_done * self._row_bytes(), LABELS: self.rows_done * 8,
                 PATHS: self.path_bytes}
        for name, size in sizes.items():
            f = open(self.partial / name, "a+b")
            f.truncate(size)
            f.seek(0, os.SEEK_END)
            self._files[name] = f
        self._hashers = {name: _Checksum() for name in sizes}
        self._chunk_start = (self.rows_done, self.path_bytes)
        self._last_checkpoint = time.monotonic()

    def _close_files(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    @property
    def failures(self) -> list:
        return [tuple(f) for c in self.chunks for f in c["failures"]] + list(self._chunk_failures)

    # -- writing

    def _append(self, name: str, data: bytes) -> None:
        self._files[name].write(data)
        self._hashers[name].update(data)

    def write(self, tokens: torch.Tensor | None, labels=None, paths: Iterable[str] | None = None,
              *, samples: int | None = None, failures: Iterable = ()) -> None:
        """Append one micro-batch: `tokens` (b, ...) (None when nothing in it loaded), `labels`
        (b,), `paths` (b strings), `samples` it covered (loaded + failed; default b) and its
        `failures` [(path, error)]. Tokens are stored as fp16; values beyond fp16's range are an
        error rather than silent infinities."""
        if self.cache is not None:
            raise FeatureCacheError(f"feature cache {self.final} is already complete")
        failures = [tuple(map(str, f)) for f in failures]
        n = 0 if tokens is None else int(tokens.shape[0])
        if n:
            row_shape = tuple(int(s) for s in tokens.shape[1:])
            if self.row_shape is None:
                self.row_shape = row_shape
            elif row_shape != self.row_shape:
                raise FeatureCacheError(
                    f"tokens of shape {row_shape} per sample cannot join feature cache "
                    f"{self.final}, whose rows are {self.row_shape}; {_restart_hint(self.partial)}")
            # One pass on the source (on its device; fp16 maths on a CPU is slow): NaN spreads
            # to both ends, an infinity or an out-of-range value shows at one.
            lo, hi = (v.item() for v in torch.aminmax(tokens.detach()))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise FeatureCacheError("the encoder returned NaN or infinite tokens; they are "
                                        "not cached. Check the checkpoint's weights")
            if max(-lo, hi) > FP16_MAX:
                peak = max(-lo, hi)
                raise FeatureCacheError(
                    f"tokens reach {peak:.4g}, beyond float16's range ({FP16_MAX:.0f}): this "
                    f"encoder's features cannot be cached in fp16; run without the feature cache")
            half = tokens.detach().to(torch.float16).cpu().contiguous()
            labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
            if labels.shape[0] != n:
                raise ValueError(f"{n} token rows but {labels.shape[0]} labels")
            paths = [str(p) for p in paths] if paths is not None else [""] * n
            if len(paths) != n or any("\n" in p for p in paths):
                raise ValueError("feature cache paths: one per row, without newlines")
            self._append(TOKENS, half.numpy().astype("<f2", copy=False).reshape(-1).view(np.uint8))
            self._append(LABELS, labels.contiguous().numpy().astype("<i8").tobytes())
            text = "".join(p + "\n" for p in paths).encode("utf-8")
            self._append(PATHS, text)
            self.path_bytes += len(text)
        self.rows_done += n
        self.samples_done += n + len(failures) if samples is None else int(samples)
        self.batches_done += 1
        self._chunk_failures.extend(failures)
        if (self.rows_done - self._chunk_start[0] >= self.checkpoint_rows
                or time.monotonic() - self._last_checkpoint >= self.checkpoint_s):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make everything written so far durable and record it (resumable from here)."""
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
        a, pa = self._chunk_start
        if self.batches_done > (self.chunks[-1]["batches"] if self.chunks else 0):
            chunk = {"rows": [a, self.rows_done], "path_bytes": [pa, self.path_bytes],
                     "samples": self.samples_done, "batches": self.batches_done,
                     "failures": [list(f) for f in self._chunk_failures]}
            chunk.update({name: h.hexdigest() for name, h in self._hashers.items()})
            self.chunks.append(chunk)
        self._hashers = {name: _Checksum() for name in self._hashers}
        self._chunk_start = (self.rows_done, self.path_bytes)
        self._chunk_failures = []
        self._last_checkpoint = time.monotonic()
        self._write_json(self.partial / "progress.json", self._index())

    def _index(self) -> dict:
        return {"format": FORMAT_VERSION, "key": self.key, "batching": self.batching,
                "row_shape": list(self.row_shape) if self.row_shape else None,
                "dtype": "float16", "rows": self.rows_done, "samples": self.samples_done,
                "chunks": self.chunks}

    @staticmethod
    def _write_json(path: Path, data: dict) -> None:
        text = json.dumps(data, indent=1) + "\n"
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))

    def commit(self, seconds: float | None = None) -> TokenCache:
        """Publish the entry (meta.json, then one atomic rename of the folder) and return it."""
        if self.cache is not None:
            return self.cache
        self.checkpoint()
        self._close_files()
        meta = {**self._index(), "failures": [list(f) for f in self.failures],
                "describe": self.describe, "encode_seconds": seconds,
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._write_json(self.partial / "meta.json", meta)
        os.rename(self.partial, self.final)  # the entry appears complete, or not at all
        _fsync_dir(self.store.root)
        (self.final / "progress.json").unlink(missing_ok=True)
        self.cache = _load_entry(self.final, self.key, verify=False)
        if seconds is not None:  # what the encoding took, not the reading back
            self.cache.seconds = float(seconds)
        return self.cache


# --------------------------------------------------------------------------------------------
# the trainer's helper


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


def copy_key(key: str, copy: int) -> str:
    """The entry of augmented copy `copy` of the split keyed `key`."""
    return hashlib.sha256(f"{key}/copy{int(copy)}".encode()).hexdigest()[:32]


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
