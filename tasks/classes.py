"""`classes: present`: probe only the classes the training manifest uses.

A miniature replica, a label-efficiency experiment on a few classes or a partial download holds
samples of some of the label map's classes only. With `classes: all` (the default) the probe has
one output per class of the label map, as the paper's protocol. With `classes: present`:

* the kept classes are those with at least one sample in the training manifest (for a
  multi-label task: in at least one sample's classes), in label-map order; the task's
  `num_classes` is their number and every split's labels are renumbered 0..K-1 the same way
  (`ClassSubset.remap`), so train, val and test agree;
* an evaluation sample of a class the probe never saw cannot be scored: it is dropped, counted
  (`Task.dropped(split)`), logged as a warning and recorded in the protocol. A multi-label
  sample loses its untrained classes (counted as labels) and is dropped only when none is left;
* the protocol records `classes: {select: present, of: <label-map classes>, kept: K, kept_sha256,
  dropped: {train: {samples, labels}, eval: {...}}}` (kept_sha256 over the kept classes'
  label-map indices and names), so numbers on a subset never share a protocol id with
  full-label numbers, nor with another subset.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from common.digest import lines_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassSubset:
    kept: tuple[int, ...]  # the label map's indices of the kept classes, ascending
    total: int             # classes in the label map

    @classmethod
    def present_in(cls, entries: Sequence[tuple[str, object]], total: int) -> "ClassSubset":
        seen: set[int] = set()
        for _, label in entries:
            seen.update(label if isinstance(label, tuple) else (label,))
        return cls(tuple(sorted(int(c) for c in seen)), int(total))

    @property
    def index(self) -> dict[int, int]:
        """Label-map index -> the probe's index."""
        return {c: i for i, c in enumerate(self.kept)}

    def remap(self, entries: Sequence[tuple[str, object]]) -> tuple[list[tuple[str, object]], dict]:
        """`(entries renumbered to the kept classes, {"samples": dropped, "labels": dropped})`:
        a single-label sample of a class not kept is dropped (one sample, one label); a
        multi-label one loses its classes not kept (counted as labels), dropped when none is left."""
        index = self.index
        out, samples, labels = [], 0, 0
        for path, label in entries:
            if isinstance(label, tuple):
                mapped = tuple(sorted(index[c] for c in label if c in index))
                labels += len(label) - len(mapped)
                if mapped:
                    out.append((path, mapped))
                else:
                    samples += 1
            elif label in index:
                out.append((path, index[label]))
            else:
                samples, labels = samples + 1, labels + 1
        return out, {"samples": samples, "labels": labels}

    def names(self, names: Sequence[str]) -> list[str]:
        return [names[c] for c in self.kept]

    def sha256(self, names: Sequence[str]) -> str:
        return lines_digest(f"{c}\t{names[c]}" for c in self.kept)

    def protocol(self, names: Sequence[str], dropped: dict[str, dict]) -> dict:
        return {"select": "present", "of": self.total, "kept": len(self.kept),
                "kept_sha256": self.sha256(names), "dropped": dict(dropped)}


def warn_dropped(task_name: str, split: str, dropped: dict, total: int, kept: int) -> None:
    if dropped["samples"] or dropped["labels"]:
        log.warning("task %r, %s split: %d of %d samples (%d labels) are of classes absent from "
                    "the training manifest (classes: present keeps %d); they are dropped from "
                    "this split and counted in the protocol (classes.dropped)", task_name, split,
                    dropped["samples"], total, dropped["labels"], kept)
