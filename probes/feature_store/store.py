"""The on-disk store: complete entries read back memory-mapped and verified; one locked writer.

See `probes.feature_store` for the layout. Rows are appended in the loader's order; every
`checkpoint_rows` rows (and on commit) the files are fsync'ed and `progress.json` is replaced
atomically with the rows, samples and micro-batches done and a CRC-32 of every finished chunk of
each file. A killed writer's `.partial` folder is verified and continued by the next writer; an
entry becomes complete in one atomic rename, and every load re-checks the chunk checksums.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write
from probes.feature_cache import TokenCache
from probes.feature_store.keys import FORMAT_VERSION, FeatureCacheError, canonical

_log = logging.getLogger(__name__)

TOKENS, LABELS, PATHS = "tokens.f16", "labels.i64", "paths.txt"
FP16_MAX = float(np.finfo(np.float16).max)


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
               checkpoint_s: float = 60.0, verify: bool = True) -> FeatureWriter:
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
        self.describe = canonical(dict(describe or {}))
        self.batching = canonical(batching)
        self.checkpoint_rows, self.checkpoint_s = int(checkpoint_rows), float(checkpoint_s)
        self.cache: TokenCache | None = None
        self._lock_file = None
        self._files: dict = {}

    # -- lock and resume

    def __enter__(self) -> FeatureWriter:
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
        try:
            self._files[name].write(data)
        except OSError as err:  # a full disk: name the file (the CLI says what to do)
            raise OSError(err.errno, err.strerror, str(self.partial / name)) from err
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

