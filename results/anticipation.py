"""Class-mean recall@k for action anticipation (EPIC-KITCHENS-100), as V-JEPA 2 scores it.

The release (facebookresearch/vjepa2, `evals/action_anticipation_frozen/metrics.py`,
`ClassMeanRecall`) does, per head and per output (verb, noun, action):

- ranks `sigmoid(logits)` (float32) and takes the top k = 5 classes of each sample;
- counts, per ground-truth class, a true positive when the label is among them, else a false
  negative; the counts accumulate over the whole evaluation pass;
- recall = 100 * sum_c TP_c / (TP_c + FN_c + 1e-8) / (number of classes with TP_c + FN_c > 0):
  the mean over the classes that occur among the evaluated labels. Classes absent from the
  evaluation split add 0 to the sum and are not counted in the denominator;
- accuracy = 100 * sum TP / sum (TP + FN) (top-k accuracy over samples).

`validate()` never passes `valid_classes` (the masking branch of `ClassMeanRecall.__call__`), so
every class of the training vocabulary competes for the top 5; that is what this module does.

Equality with the release's function on its own output is tested on fixtures
(tests/fixtures/ek100/, README there). Ranking: sigmoid is monotone, but float32 sigmoid
saturates (equal scores for logits above about 17); ties are broken by the lower class index
(a stable sort), which is what makes the result deterministic here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EPS = 1e-8  # the release's eps in TP / (TP + FN + eps)
OUTPUTS = ("verb", "noun", "action")


def top_k(logits, k: int = 5) -> np.ndarray:
    """The k highest-scoring classes of each row of `logits` (B, C), by float32 sigmoid as the
    release ranks them; ties go to the lower class index."""
    x = np.asarray(logits, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"logits must be (samples, classes), got shape {x.shape}")
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of classes ({x.shape[1]})")
    with np.errstate(over="ignore"):
        scores = (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@dataclass
class ClassMeanRecall:
    """Accumulated TP / FN counts per class; `update` per batch, `result()` at any time (the
    release reports the running value after the last batch of the pass)."""

    num_classes: int
    k: int = 5
    tp: np.ndarray = field(init=False)
    fn: np.ndarray = field(init=False)

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        self.tp = np.zeros(self.num_classes, dtype=np.int64)
        self.fn = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, logits, labels) -> None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        logits = np.asarray(logits)
        if logits.shape[:1] != labels.shape or logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits ({len(labels)}, {self.num_classes}) for {len(labels)} "
                             f"labels, got {logits.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]")
        hit = (top_k(logits, self.k) == labels[:, None]).any(axis=1)
        np.add.at(self.tp, labels[hit], 1)
        np.add.at(self.fn, labels[~hit], 1)

    def merge(self, other: ClassMeanRecall) -> None:
        """Add another shard's counts (the release all-reduces TP and FN across ranks)."""
        if (other.num_classes, other.k) != (self.num_classes, self.k):
            raise ValueError("cannot merge recall counts of different classes or k")
        self.tp += other.tp
        self.fn += other.fn

    def result(self) -> dict:
        """`{"recall", "accuracy", "classes_scored", "samples"}`, both scores in percent."""
        seen = self.tp + self.fn
        n = int(seen.sum())
        classes = int((seen > 0).sum())
        if n == 0:
            raise ValueError("no samples scored")
        recall = 100.0 * float((self.tp / (seen + EPS)).sum()) / classes
        return {"recall": recall, "accuracy": 100.0 * float(self.tp.sum()) / n,
                "classes_scored": classes, "samples": n}


def class_mean_recall(logits, labels, num_classes: int | None = None, k: int = 5) -> dict:
    """One pass's recall@k and top-k accuracy (percent) of `logits` (B, C) against `labels` (B,)."""
    logits = np.asarray(logits)
    m = ClassMeanRecall(num_classes or logits.shape[1], k)
    m.update(logits, labels)
    return m.result()


def anticipation_scores(logits: dict, labels: dict, k: int = 5) -> dict:
    """`{output: class_mean_recall(...)}` for each of verb, noun and action present in both
    `logits` and `labels` (dicts keyed by output name)."""
    missing = [o for o in OUTPUTS if (o in logits) != (o in labels)]
    if missing:
        raise ValueError(f"logits and labels must both hold {', '.join(missing)}")
    return {o: class_mean_recall(logits[o], labels[o], k=k) for o in OUTPUTS if o in logits}
