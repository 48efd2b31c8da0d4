"""Violation-of-expectation (VoE) metrics as Garrido et al. 2025 report them, with intervals.

Input: per video its surprise (mean and max over windows, from `encoders.surprise`), whether it
is physically possible, its pair and its property (permanence, continuity, ...). Each pair is one
possible video and its impossible twin.

* Relative (pairwise) accuracy: the share of pairs whose possible video is strictly less
  surprising than its impossible twin, on mean and on max surprise (their `compute_metrics`).
* Absolute accuracy (max): one threshold for all videos, taken from the possible videos' max
  surprise at index ceil(0.9 n) of their sorted values (the authors' "90th percentile", which
  for n >= 10 is exactly their index; below 10 pairs their index runs past the end, and we take
  the largest value); a video is called impossible when its max surprise is above it, possible
  when below.
* AUROC of surprise separating impossible from possible videos (their `roc_curve(labels,
  -surprise)` with label 1 = possible is the same number), on mean and on max.

Intervals: the percentile bootstrap over pairs (the unit the benchmark is built of): relative
accuracy through `results.stats.bootstrap_ci` on per-pair hits; absolute accuracy and AUROC by
recomputing them on the same resampled pairs (same generator, same draws). Two encoders on the
same pairs: `results.stats.paired` on per-pair hits (paired bootstrap and exact McNemar).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from results.stats import PairedResult, bootstrap_ci, paired

STATS = ("mean", "max")


@dataclass(frozen=True)
class PairScores:
    """Surprise of matched VoE pairs, one row per pair (ordered by pair id)."""

    pair_ids: tuple[str, ...]
    properties: tuple[str, ...]
    possible: dict           # stat ("mean" | "max") -> np.ndarray (n,)
    impossible: dict

    def __len__(self) -> int:
        return len(self.pair_ids)

    def subset(self, keep: np.ndarray) -> "PairScores":
        idx = np.flatnonzero(keep)
        return PairScores(tuple(self.pair_ids[i] for i in idx), tuple(self.properties[i] for i in idx),
                          {k: v[idx] for k, v in self.possible.items()},
                          {k: v[idx] for k, v in self.impossible.items()})


def pairs_from_videos(videos: Iterable[Mapping]) -> PairScores:
    """Match per-video rows (`pair`, `possible` (bool), `property`, `mean`, `max`) into pairs.

    Every pair needs exactly one possible and one impossible video of the same property."""
    groups: dict[str, dict] = {}
    for row in videos:
        pid = str(row["pair"])
        side = "possible" if bool(row["possible"]) else "impossible"
        g = groups.setdefault(pid, {"property": str(row.get("property", "all"))})
        if side in g:
            raise ValueError(f"pair {pid!r} has two {side} videos; a VoE pair is one possible and one impossible")
        if g["property"] != str(row.get("property", "all")):
            raise ValueError(f"pair {pid!r} mixes properties {g['property']!r} and {row.get('property')!r}")
        g[side] = {s: float(row[s]) for s in STATS}
    incomplete = sorted(p for p, g in groups.items() if "possible" not in g or "impossible" not in g)
    if incomplete:
        raise ValueError(f"{len(incomplete)} pair(s) lack their possible or impossible video: "
                         f"{', '.join(incomplete[:5])}")
    if not groups:
        raise ValueError("no VoE pairs to score")
    ids = sorted(groups)
    return PairScores(tuple(ids), tuple(groups[p]["property"] for p in ids),
                      {s: np.array([groups[p]["possible"][s] for p in ids]) for s in STATS},
                      {s: np.array([groups[p]["impossible"][s] for p in ids]) for s in STATS})


def relative_hits(pairs: PairScores, stat: str = "max") -> np.ndarray:
    """Per pair 1.0 when the possible video is strictly less surprising (ties are misses)."""
    return (pairs.possible[stat] < pairs.impossible[stat]).astype(np.float64)


def absolute_threshold(possible_max: np.ndarray) -> float:
    ordered = np.sort(np.asarray(possible_max, dtype=np.float64))
    return float(ordered[min(math.ceil(0.9 * ordered.size), ordered.size - 1)])


def absolute_accuracy(possible_max: np.ndarray, impossible_max: np.ndarray) -> tuple[float, float]:
    """(accuracy in %, threshold): possible videos below the threshold and impossible ones above."""
    thr = absolute_threshold(possible_max)
    right = (np.asarray(possible_max) < thr).sum() + (np.asarray(impossible_max) > thr).sum()
    return 100.0 * float(right) / (len(possible_max) + len(impossible_max)), thr


def auroc(possible: np.ndarray, impossible: np.ndarray) -> float:
    """Area under the ROC curve of surprise as the score of 'impossible': the Mann-Whitney
    form (ties count one half), which is sklearn's `roc_auc_score` and the authors'
    `auc(roc_curve(labels, -surprise))` to rounding, at a fraction of their cost (the bootstrap
    calls it 4,000 times per `voe_metrics`)."""
    from scipy.stats import rankdata

    possible = np.asarray(possible, np.float64)
    impossible = np.asarray(impossible, np.float64)
    ranks = rankdata(np.concatenate([possible, impossible]))[len(possible):]
    n_pos, n_neg = len(impossible), len(possible)
    return float((ranks.sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _pair_bootstrap(fn, pairs: PairScores, *, n_boot: int, alpha: float, seed: int) -> tuple[float, float]:
    """Percentile interval of `fn(possible, impossible)` over pairs resampled with replacement
    (the draws `results.stats.bootstrap_ci` makes with the same seed)."""
    n = len(pairs)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    vals = np.array([fn(pairs, i) for i in idx])
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def voe_metrics(pairs: PairScores, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Every VoE metric with its bootstrap interval: accuracies in %, AUROC in [0, 1]."""
    out: dict = {"n_pairs": len(pairs)}
    for s in STATS:
        hits = relative_hits(pairs, s)
        lo, hi = bootstrap_ci(hits, n_boot=n_boot, alpha=alpha, seed=seed)
        out[f"relative_{s}"] = {"value": 100.0 * float(hits.mean()), "ci": [100.0 * lo, 100.0 * hi]}
        out[f"auroc_{s}"] = {
            "value": auroc(pairs.possible[s], pairs.impossible[s]),
            "ci": list(_pair_bootstrap(lambda p, i, s=s: auroc(p.possible[s][i], p.impossible[s][i]), pairs,
                                       n_boot=n_boot, alpha=alpha, seed=seed))}
    acc, thr = absolute_accuracy(pairs.possible["max"], pairs.impossible["max"])
    out["absolute_max"] = {
        "value": acc, "threshold": thr,
        "ci": list(_pair_bootstrap(lambda p, i: absolute_accuracy(p.possible["max"][i], p.impossible["max"][i])[0],
                                   pairs, n_boot=n_boot, alpha=alpha, seed=seed))}
    return out


def by_property(pairs: PairScores, **kw) -> dict[str, dict]:
    """`voe_metrics` of each property's pairs, and of all of them under `all`."""
    props = np.array(pairs.properties)
    out = {p: voe_metrics(pairs.subset(props == p), **kw) for p in sorted(set(pairs.properties))}
    out["all"] = voe_metrics(pairs, **kw)
    return out


def compare(a: PairScores, b: PairScores, stat: str = "max", *, n_boot: int = 2000, alpha: float = 0.05,
            seed: int = 0) -> PairedResult:
    """Relative accuracy of encoder A against encoder B on the same pairs (matched by pair id)."""
    if set(a.pair_ids) != set(b.pair_ids):
        raise ValueError(f"the two evaluations scored different pairs ({len(set(a.pair_ids) - set(b.pair_ids))} "
                         f"only in the first, {len(set(b.pair_ids) - set(a.pair_ids))} only in the second); a "
                         f"paired test needs the same pairs")
    order = {p: i for i, p in enumerate(b.pair_ids)}
    hits_b = relative_hits(b, stat)[[order[p] for p in a.pair_ids]]
    return paired(relative_hits(a, stat), hits_b, n_boot=n_boot, alpha=alpha, seed=seed)
