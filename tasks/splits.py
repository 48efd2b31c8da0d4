"""Splits carved from a task's own data: a validation split held out from training.

Stratified by label and seeded, so the same seed always holds out the same videos, and every
class keeps at least one training video. The held-out videos' manifest hash goes into the
protocol, so a different carve is a different protocol.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def stratified_holdout(entries: Sequence[tuple[str, int]], fraction: float, seed: int
                       ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(kept, held_out): about `fraction` of each class's videos held out (at least one where a
    class has two or more), both in manifest order."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction!r}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(entries):
        # A multi-label entry is stratified by its first class (each entry is drawn once).
        by_class[int(label[0] if isinstance(label, tuple) else label)].append(i)
    rng = np.random.default_rng(int(seed))
    held: set[int] = set()
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < 2:
            continue  # a class with one video keeps it for training
        k = min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        held.update(rng.choice(idx, size=k, replace=False).tolist())
    kept = [e for i, e in enumerate(entries) if i not in held]
    out = [e for i, e in enumerate(entries) if i in held]
    return kept, out
