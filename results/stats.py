"""Statistics on per-sample predictions: bootstrap intervals and paired tests.

Evaluation videos are the unit of resampling: a confidence interval of top-1 resamples videos
with replacement; a comparison of two encoders on the same videos resamples the *pairs*, so the
difference's interval reflects that both saw the same clips, and McNemar's exact test checks
the videos on which exactly one of them is right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (e.g. per-sample 0/1 correctness)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_a: float
    mean_b: float
    diff: float                 # mean_a - mean_b
    ci: tuple[float, float]     # paired bootstrap interval of diff
    p_bootstrap: float          # two-sided: how often the resampled diff crosses 0
    only_a: int                 # samples right for A only (top-1)
    only_b: int
    p_mcnemar: float            # exact McNemar (binomial on the discordant pairs)

    @property
    def significant(self) -> bool:
        return self.ci[0] > 0 or self.ci[1] < 0


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact binomial test of the discordant pairs at p = 1/2 (scipy's `binomtest`,
    which for p = 1/2 is twice the smaller tail, capped at 1), from `scipy.special` alone:
    `scipy.stats` costs every leaderboard half a second to import."""
    from scipy.special import bdtr

    n = only_a + only_b
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * float(bdtr(min(only_a, only_b), n, 0.5)))


def paired(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05,
           seed: int = 0) -> PairedResult:
    """Compare per-sample 0/1 correctness of two runs on the same samples, in the same order."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired comparison needs two equal-length 1-D samples, got {a.shape} "
                         f"and {b.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = (a[idx] - b[idx]).mean(axis=1)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    return PairedResult(n=int(a.size), mean_a=float(a.mean()), mean_b=float(b.mean()),
                        diff=float(a.mean() - b.mean()), ci=(float(lo), float(hi)),
                        p_bootstrap=float(min(1.0, p)), only_a=only_a, only_b=only_b,
                        p_mcnemar=mcnemar_exact(only_a, only_b))


def align(pred_a: dict, pred_b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Row orders of two predictions over the same sample set, matched by sample id; refuses
    differing sets (a run that lost unreadable videos the other read is another sample)."""
    ids_a = [str(p) for p in pred_a["path"]]
    ids_b = [str(p) for p in pred_b["path"]]
    if len(set(ids_a)) != len(ids_a) or len(set(ids_b)) != len(ids_b):
        raise ValueError("duplicate sample ids in predictions")
    if set(ids_a) != set(ids_b):
        only_a, only_b = len(set(ids_a) - set(ids_b)), len(set(ids_b) - set(ids_a))
        raise ValueError(f"the two runs evaluated different samples ({only_a} only in the first, "
                         f"{only_b} only in the second); a paired test needs the same set")
    pos_b = {p: i for i, p in enumerate(ids_b)}
    return np.arange(len(ids_a)), np.array([pos_b[p] for p in ids_a])
