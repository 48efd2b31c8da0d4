"""`FrameCache`: whole decoded videos kept in RAM, for small datasets read many times."""

from __future__ import annotations

import logging
import os

from .clip_reader import Decoded, IndicesFn, checked, gather, read_frames

log = logging.getLogger(__name__)


class FrameCache:
    """Whole decoded videos kept in RAM, up to a byte budget, for small datasets read many times.

    Pretraining on the digits videos draws a new clip from every video each epoch; decoding was
    the bottleneck there (`benchmarks/measure.py pretrain`), so each video is decoded once, in
    full, and later clips are sliced from memory. Once the budget is spent, videos not yet cached
    are decoded per read as usual (nothing is evicted: a dataset that does not fit gains nothing
    from churning). Unreadable files are never cached, so each read reports them again.
    Each DataLoader worker process holds its own cache.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.used = 0
        self.full = False
        self._videos: dict[str, Decoded] = {}

    def __len__(self) -> int:
        return len(self._videos)

    def read(self, path: str | os.PathLike, indices_fn: IndicesFn, *, backend: str = "auto",
             num_threads: int = 1, **isolation) -> Decoded:
        """As `read_frames` (the same keyword arguments: `isolation`, `timeout_s`,
        `check_header`), served from memory when the whole video is cached (`.backend` is the
        backend that decoded it)."""
        path = os.path.abspath(os.fspath(path))  # one entry per file, however it was named
        hit = self._videos.get(path)
        if hit is None:
            if self.full:
                return read_frames(path, indices_fn, backend=backend, num_threads=num_threads,
                                   **isolation)
            hit = read_frames(path, lambda n: range(n), backend=backend, num_threads=num_threads,
                              **isolation)
            size = hit[0].numel() * hit[0].element_size()
            if self.used + size <= self.max_bytes:
                self._videos[path] = hit
                self.used += size
            else:
                self.full = True
                log.info("decoded-frame cache full at %.0f MiB (%d videos); decoding the rest "
                         "per read", self.used / 2**20, len(self._videos))
        frames, n = hit
        return Decoded(gather(frames.numpy(), checked(indices_fn(n), n)), n, hit.backend)
