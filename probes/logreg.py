"""MVEB's protocol: scikit-learn logistic regression on mean-pooled frozen tokens, as mteb runs it.

MVEB (the video benchmark inside `embeddings-benchmark/mteb`) scores a video encoder on a
classification task with `mteb.abstasks.classification.AbsTaskClassification`: the encoder's
tokens mean-pooled into one vector per video (no normalisation), then `n_experiments` times: keep
at most `samples_per_label` training videos of each label (`_undersample_data`), fit
`LogisticRegression(max_iter=100)` (every other setting scikit-learn's default, `random_state`
set to the task's seed) on them, predict every evaluation video, and score accuracy, macro and
weighted F1, precision and recall (plus average precision when the evaluation labels are
binary). The reported numbers are the means over the experiments. Defaults: 8 per label, 10
experiments, seed 42 (mteb's HMDB51Classification and UCF101VideoClassification use these).

The undersampling is mteb's to the index: a fresh `np.random.RandomState(seed)` shuffles the
index list in place at every experiment, and the list is carried from one experiment to the
next, so experiment i sees the seed's permutation applied i + 1 times; the first
`samples_per_label` indices of each label in that order are kept (in that order). Tasks that have
no training split run mteb's cross-validation variant (`cross_validate`): `KFold(n_splits,
shuffle=True, random_state=seed)` over the evaluation split, each fold's training part
undersampled with the index list carried across folds exactly as mteb carries it (built from the
first fold's length).

Equality with mteb on the same features: `tests/test_mveb.py` against the numbers mteb 2.26.24
itself produced (`tests/fixtures/mveb/`).

As a probe (`LogRegProbe`, kind `logreg`, fitted, not trained): `fit` runs the experiments on
the training split's cached tokens; in evaluation every forward call records each experiment's
predictions, and `pass_metrics(labels)` turns the recorded pass into mteb's averaged metrics.
`forward` itself returns the log of the experiments' mean predicted probabilities (their soft
ensemble): the trainer's generic top-1 / top-5 of that pass are the ensemble's, not MVEB's
number, which only `pass_metrics` gives.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

_log = logging.getLogger(__name__)

BENCHMARK = "mveb"
# mteb's metric names, in its order (ClassificationMetrics).
METRICS = ("accuracy", "f1", "f1_weighted", "precision", "precision_weighted", "recall",
           "recall_weighted", "ap", "ap_weighted")


@dataclass(frozen=True)
class MtebSettings:
    """AbsTaskClassification's class attributes and its evaluator model's settings."""

    samples_per_label: int = 8
    n_experiments: int = 10
    seed: int = 42
    max_iter: int = 100
    n_splits: int = 5  # folds of the cross-validation variant

    def __post_init__(self):
        for name in ("samples_per_label", "n_experiments", "max_iter", "n_splits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"logreg {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"logreg seed must be an integer >= 0, got {self.seed!r}")
        if self.n_splits < 2:
            raise ValueError(f"logreg n_splits must be >= 2 (KFold), got {self.n_splits}")

    def to_dict(self) -> dict:
        return asdict(self)


def classifier(settings: MtebSettings):
    """mteb's evaluator model: `LogisticRegression(max_iter=100)` with `random_state` = seed."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=settings.max_iter, random_state=settings.seed)


def undersample(labels, samples_per_label: int, seed: int,
                order: list[int] | None = None) -> tuple[list[int], list[int]]:
    """mteb's `_undersample_data`: (the shuffled index list to carry on, the indices kept).

    `order` (the list the previous experiment returned) is shuffled in place, as mteb does."""
    if order is None:
        order = list(range(len(labels)))
    np.random.RandomState(seed).shuffle(order)  # a list, as in mteb: the same permutation path
    counts: dict = defaultdict(int)
    kept = []
    for i in order:
        label = labels[i]
        if counts[label] < samples_per_label:
            kept.append(i)
            counts[label] += 1
    return order, kept


def experiment_indices(labels, settings: MtebSettings) -> list[list[int]]:
    """The training indices of each experiment (`_evaluate_subset`'s simulated undersamplings)."""
    labels = [int(v) for v in labels]
    order, selected = None, []
    for _ in range(settings.n_experiments):
        order, kept = undersample(labels, settings.samples_per_label, settings.seed, order)
        selected.append(kept)
    return selected


def scores(y_true, y_pred) -> dict:
    """mteb's `_calculate_scores` (fractions, not percent)."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
    )

    out = {
        "accuracy": accuracy_score(y_true, y_pred),
        "f1": f1_score(y_true, y_pred, average="macro"),
        "f1_weighted": f1_score(y_true, y_pred, average="weighted"),
        "precision": precision_score(y_true, y_pred, average="macro"),
        "precision_weighted": precision_score(y_true, y_pred, average="weighted"),
        "recall": recall_score(y_true, y_pred, average="macro"),
        "recall_weighted": recall_score(y_true, y_pred, average="weighted"),
        "ap": None,
        "ap_weighted": None,
    }
    if len(np.unique(y_true)) == 2:  # mteb: average precision of the hard predictions
        out["ap"] = average_precision_score(y_true, y_pred, average="macro")
        out["ap_weighted"] = average_precision_score(y_true, y_pred, average="weighted")
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def average(per_experiment: list[dict]) -> dict:
    """mteb's `_calculate_avg_scores`: each metric's mean over the experiments that have it
    (NaN where none has: `ap` of a task that is not binary), plus `scores_per_experiment`."""
    out = {}
    for key in per_experiment[0]:
        values = [s[key] for s in per_experiment if s[key] is not None]
        out[key] = float(np.mean(values)) if values else float("nan")
    out["scores_per_experiment"] = per_experiment
    return out


def _as_features(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected features (n, D), got shape {x.shape}")
    return x


def _as_labels(y) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return y.reshape(-1).astype(np.int64)


def fit_experiments(train_x, train_y, settings: MtebSettings) -> list:
    """One fitted classifier per experiment, on that experiment's undersampled training rows."""
    x, y = _as_features(train_x), _as_labels(train_y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} training features but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("logreg has no training sample to fit")
    fitted = []
    for kept in experiment_indices(y.tolist(), settings):
        clf = classifier(settings)
        if len(np.unique(y[kept])) < 2:
            raise ValueError("logistic regression needs at least 2 classes among the training "
                             f"samples, got {len(np.unique(y[kept]))}")
        clf.fit(x[kept], y[kept].tolist())  # mteb passes the label column as a list
        fitted.append(clf)
    return fitted


def evaluate(train_x, train_y, test_x, test_y, settings: MtebSettings | None = None) -> dict:
    """mteb's `_evaluate_subset` on given features: the averaged metrics (fractions) and
    `scores_per_experiment`."""
    settings = settings or MtebSettings()
    test_x, test_y = _as_features(test_x), _as_labels(test_y)
    per_experiment = [scores(test_y.tolist(), clf.predict(test_x))
                      for clf in fit_experiments(train_x, train_y, settings)]
    return average(per_experiment)


def cross_validate(x, y, settings: MtebSettings | None = None) -> dict:
    """mteb's `_evaluate_subset_cross_validation`: KFold over one split; fold i's training part
    undersampled by experiment number i with the index list carried from fold to fold."""
    from sklearn.model_selection import KFold

    settings = settings or MtebSettings()
    x, y = _as_features(x), _as_labels(y)
    folds = KFold(n_splits=settings.n_splits, shuffle=True, random_state=settings.seed)
    order, per_fold = None, []
    for train_idx, val_idx in folds.split(range(len(y))):
        fold_labels = y[train_idx].tolist()
        order, kept = undersample(fold_labels, settings.samples_per_label, settings.seed, order)
        clf = classifier(settings)
        clf.fit(x[train_idx][kept], [fold_labels[i] for i in kept])
        per_fold.append(scores(y[val_idx].tolist(), clf.predict(x[val_idx])))
    return average(per_fold)


def pool(tokens: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n, L, D) or (n, 1, L, D) -> the mean over L in fp32 (n, D), read `chunk` rows at a time
    (a memory-mapped fp16 cache is never loaded whole). Not normalised: mteb's wrappers return
    `last_hidden_state.mean(dim=1)`."""
    if tokens.ndim == 4:
        if tokens.shape[1] != 1:
            raise ValueError(f"logreg fits one clip per training video (mteb's protocol); got "
                             f"{tokens.shape[1]} views per sample")
        tokens = tokens[:, 0]
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens (n, L, D), got {tuple(tokens.shape)}")
    if tokens.shape[0] == 0:
        return torch.empty(0, tokens.shape[-1])
    return torch.cat([t.float().mean(dim=1) for t in tokens.split(chunk)])


class LogRegProbe(nn.Module):
    """MVEB's logistic-regression protocol as a fitted probe (see the module docstring)."""

    kind = "logreg"
    trainable = False

    def __init__(self, embed_dim: int, num_classes: int, samples_per_label: int = 8,
                 n_experiments: int = 10, seed: int = 42, max_iter: int = 100,
                 benchmark: str = BENCHMARK):
        super().__init__()
        if benchmark != BENCHMARK:  # the label of the records: only the protocol built here
            raise ValueError(f"logreg benchmark must be {BENCHMARK!r} (mteb's protocol), got "
                             f"{benchmark!r}")
        self.embed_dim, self.num_classes = int(embed_dim), int(num_classes)
        self.settings = MtebSettings(samples_per_label=samples_per_label,
                                     n_experiments=n_experiments, seed=seed, max_iter=max_iter)
        self.classifiers: list = []
        self._recorded: list[np.ndarray] = []  # per eval forward call: (E, rows) predictions
        self.last_pass: dict | None = None

    def fit(self, tokens: torch.Tensor, labels: torch.Tensor) -> LogRegProbe:
        if tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"logreg probe of width {self.embed_dim} got tokens "
                             f"{tuple(tokens.shape)}")
        labels = _as_labels(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"training labels must lie in [0, {self.num_classes})")
        features = pool(tokens).numpy()
        self.classifiers = fit_experiments(features, labels, self.settings)
        self._recorded = []
        _log.info("logreg: %d experiments of at most %d training videos per label fitted",
                  len(self.classifiers), self.settings.samples_per_label)
        return self

    def experiment_probabilities(self, features: np.ndarray) -> np.ndarray:
        """(E, n, num_classes) each experiment's predicted probabilities; a class absent from
        an experiment's training rows has probability 0."""
        out = np.zeros((len(self.classifiers), features.shape[0], self.num_classes))
        for e, clf in enumerate(self.classifiers):
            out[e][:, clf.classes_] = clf.predict_proba(features)
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.classifiers:
            raise RuntimeError("the logreg probe is not fitted: fit() it on the training "
                               "split's tokens before evaluating")
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"logreg probe expects tokens (B, N, {self.embed_dim}), got "
                             f"{tuple(tokens.shape)}")
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            features = pool(tokens).cpu().numpy()
        if not self.training:  # an evaluation pass: what mteb scores, experiment by experiment
            self._recorded.append(np.stack([clf.predict(features) for clf in self.classifiers]))
        mean = self.experiment_probabilities(features).mean(axis=0)
        # log(0) = -inf would make the trainer's softmax NaN where no experiment gives a class
        # any probability; a floor far below any fitted probability keeps the ranking.
        return torch.from_numpy(np.log(np.maximum(mean, 1e-30))).float().to(tokens.device)

    def pass_metrics(self, labels) -> dict:
        """mteb's averaged metrics, in percent, over the evaluation rows recorded since the last
        call (consumed): `top1` is mteb's accuracy (its main score), then f1, precision, recall
        (macro and weighted; ap where the labels are binary). The rows must be one view per
        sample, in the order of `labels`. `last_pass` keeps mteb's whole result, per experiment."""
        labels = _as_labels(labels)
        if not self._recorded:
            raise RuntimeError("no evaluation pass recorded: run the probe in eval mode first")
        predictions, self._recorded = np.concatenate(self._recorded, axis=1), []
        if predictions.shape[1] != labels.shape[0]:
            raise ValueError(f"{predictions.shape[1]} evaluated rows for {labels.shape[0]} "
                             f"labels: MVEB's protocol scores one clip per video (set the "
                             f"task's sampling.eval_views to 1)")
        result = average([scores(labels.tolist(), p) for p in predictions])
        metrics = {"top1": 100.0 * result["accuracy"]}
        for key in METRICS[1:]:
            if np.isfinite(result[key]):
                metrics[key] = 100.0 * result[key]
        self.last_pass = result  # mteb's full result (fractions), per experiment too
        return metrics
