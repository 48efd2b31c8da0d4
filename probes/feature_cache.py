"""Cached frozen features: encode a split once, then train the probe for many epochs on tokens.

A frozen encoder gives the same tokens for the same clip, so when the training clips carry no
random augmentation, re-running the encoder every epoch is wasted work (a complaint users of the
release have). The cache holds tokens `(n, V, L, D)` in memory: meant for small splits (the
digits tasks, low-shot splits), not for full Kinetics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch


@dataclass
class TokenCache:
    tokens: torch.Tensor      # (n, V, L, D) float32 on CPU
    labels: torch.Tensor      # (n,) long
    failures: list            # [(path, error)] met while encoding
    seconds: float

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def nbytes(self) -> int:
        return self.tokens.numel() * self.tokens.element_size()


class TokenBatches:
    """Batches of cached tokens in the shape of the trainer's video batches.

    Shuffled with the global torch RNG, whose state the trainer saves with every epoch, so a
    resumed run draws the same order as an uninterrupted one.
    """

    def __init__(self, cache: TokenCache, batch_size: int, shuffle: bool = True):
        if len(cache) == 0:
            raise ValueError("the feature cache is empty: every training sample failed to load")
        self.cache, self.batch_size, self.shuffle = cache, int(batch_size), shuffle

    def __len__(self) -> int:
        return (len(self.cache) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[dict]:
        n = len(self.cache)
        order = torch.randperm(n) if self.shuffle else torch.arange(n)
        for idx in order.split(self.batch_size):
            yield {"tokens": self.cache.tokens[idx], "label": self.cache.labels[idx],
                   "failures": []}


def encode_loader(encoder, loader, *, device, encode: Callable, on_batch: Callable | None = None
                  ) -> TokenCache:
    """Run `encode(encoder, video) -> (B, V, L, D)` over a loader of video batches, keep on CPU."""
    import time

    start = time.perf_counter()
    tokens, labels, failures = [], [], []
    with torch.no_grad():
        for batch in loader:
            failures.extend(batch.get("failures") or [])
            video = batch.get("video")
            if video is not None and video.shape[0]:
                tokens.append(encode(encoder, video.to(device, non_blocking=True)).cpu())
                labels.append(torch.as_tensor(batch["label"]).long())
            if on_batch is not None:
                on_batch(0 if video is None else video.shape[0], batch.get("failures") or [])
    if not tokens:
        return TokenCache(torch.empty(0), torch.empty(0, dtype=torch.long), failures,
                          time.perf_counter() - start)
    return TokenCache(torch.cat(tokens), torch.cat(labels), failures, time.perf_counter() - start)

