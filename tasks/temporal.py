"""Temporal probes derived from any video manifest: is the clip played forwards or backwards
(`arrow_of_time`), are its frames in order or shuffled (`frame_order`)?

They need no labels: every video of the source manifest gives two samples, the clip as recorded
(label 0) and the clip reversed or shuffled (label 1), so the classes are balanced by
construction and the two samples of a video differ only in the order of their frames. A
single frame, or an image encoder run frame by frame with its tokens pooled, cannot tell them
apart: they measure what a video encoder adds over an image one (the "temporal burden").
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASSES = {"arrow_of_time": ("forward", "backward"), "frame_order": ("ordered", "shuffled")}


def derive_entries(entries: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Each video twice: (path, 0) as recorded, (path, 1) reordered. The source labels go."""
    return [(path, label) for path, _ in entries for label in (0, 1)]


def reorder(kind: str, segment: list[int], label: int, rng: np.random.RandomState) -> list[int]:
    """The frame indices of one clip as the probe's sample `label` shows them."""
    if label == 0 or len(segment) < 2:
        return list(segment)
    if kind == "arrow_of_time":
        return list(segment[::-1])
    if kind == "frame_order":
        # A permutation that moves at least one frame (the identity would be label 0's clip).
        order = np.arange(len(segment))
        while (order == np.arange(len(segment))).all():
            order = rng.permutation(len(segment))
        return [segment[i] for i in order]
    raise ValueError(f"unknown temporal probe {kind!r}; known: {', '.join(CLASSES)}")
