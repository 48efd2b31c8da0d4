"""95% intervals of leaderboard cells, inside the range a percentage can take.

- a single run with saved per-sample predictions: the percentile bootstrap over its evaluation
  samples (means of 0/1 values: always inside [0, 100]);
- a single run with only its sample count: the Wilson score interval of a binomial proportion
  (inside [0, 100], unlike the normal approximation, which leaves it near 0% and 100%);
- several runs (seeds, label-efficiency folds): the t interval of their mean, intersected with
  [0, 100] (the true value lies in that range, so the intersection keeps the coverage).
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5% point


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (fractions, inside [0, 1])."""
    if n <= 0:
        raise ValueError("a proportion of no samples has no interval")
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n successes the bound is exactly 0 (1); rounding would leave a hair beside it.
    low = 0.0 if p == 0.0 else max(0.0, centre - half)
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return low, high


def clip(low: float, high: float, lo: float = 0.0, hi: float = 100.0) -> tuple[float, float]:
    return min(max(low, lo), hi), max(min(high, hi), lo)


def t_interval(values: list[float], percent: bool = True) -> tuple[float, float]:
    """The t interval of the mean of `values` (at least 2), inside [0, 100] when `percent`."""
    from scipy.special import stdtrit  # the t quantile (scipy.stats.t.ppf), without scipy.stats

    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stdtrit(n - 1, 0.975)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    return clip(low, high) if percent else (low, high)


def is_percent(metric: str, values) -> bool:
    """Accuracies and mAP are percentages here; any other metric only if its values fit."""
    if metric in ("top1", "top5", "mAP"):
        return True
    return all(0.0 <= float(v) <= 100.0 for v in values)


def cell_interval(cell, metric: str = "top1", *, n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float, str] | None:
    """(low, high, how) of a 95% interval of a `Cell`'s value, in the metric's units; None
    when nothing is known to build one."""
    k = {"top1": 1, "top5": 5}.get(metric)
    if cell.runs == 1 and cell.paths and k:
        from results.predictions import correct, predictions_path, read_predictions
        from results.stats import bootstrap_ci

        try:
            pred = read_predictions(predictions_path(cell.paths[0]))
            hits = correct(pred, k) if len(pred["label"]) else None
        except (OSError, ValueError, KeyError):
            hits = None
        if hits is not None:
            lo, hi = bootstrap_ci(hits, n_boot=n_boot, seed=seed)
            return 100 * lo, 100 * hi, "bootstrap"
    values = list(cell.values) if getattr(cell, "values", None) else [cell.mean] * cell.runs
    if cell.runs > 1 and cell.std is not None and len(values) > 1:
        percent = is_percent(metric, values)
        lo, hi = t_interval(values, percent=percent)
        return lo, hi, "t over runs" + (", within [0, 100]" if percent and (
            lo <= 0.0 or hi >= 100.0) else "")
    if cell.num_samples and 0 <= cell.mean <= 100:
        lo, hi = wilson(cell.mean / 100 * cell.num_samples, cell.num_samples)
        return 100 * lo, 100 * hi, "wilson"
    return None
