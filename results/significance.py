"""Which leaderboard cells are not significantly different from their column's best.

The best cell of a column is marked, and each other cell is tested against it: McNemar's exact
test on the saved per-sample predictions where both are single runs on the same samples;
Welch's t-test over runs where both have several; else a two-proportion test from the sample
counts. A cell with p >= ALPHA is `tied`.
"""
from __future__ import annotations

import math

ALPHA = 0.05


def mark(cells: list, metric: str) -> None:
    """Set `best` on the highest cell and `tied`, `test`, `p_value` on the others."""
    if not cells:
        return
    best = max(cells, key=lambda c: c.mean)
    best.best = True
    for cell in cells:
        if cell is best:
            continue
        test, p = compare_cells(best, cell, metric)
        cell.test, cell.p_value = test, p
        cell.tied = p is not None and p >= ALPHA


def compare_cells(best, other, metric: str) -> tuple[str | None, float | None]:
    """(test name, p-value) of `best` vs `other`; (None, None) when nothing can be tested."""
    k = {"top1": 1, "top5": 5}.get(metric)
    if k and best.runs == 1 and other.runs == 1 and best.paths and other.paths:
        p = _mcnemar(best.paths[0], other.paths[0], k)
        if p is not None:
            return "mcnemar", p
    if best.runs > 1 and other.runs > 1:
        if best.std == 0 and other.std == 0:
            return "welch", 1.0 if best.mean == other.mean else 0.0
        return "welch", _welch(best, other)
    if best.num_samples and other.num_samples and 0 <= best.mean <= 100 and 0 <= other.mean <= 100:
        p1, n1, p2, n2 = best.mean / 100, best.num_samples, other.mean / 100, other.num_samples
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if se == 0:
            return "two-proportion", 1.0 if p1 == p2 else 0.0
        return "two-proportion", math.erfc(abs(p1 - p2) / se / math.sqrt(2))  # 2 * normal sf
    return None, None


def _welch(a, b) -> float:
    """Welch's two-sided t-test p-value of cells `a` and `b` (scipy's
    `ttest_ind(equal_var=False)` on their runs), from their mean, std and number of runs (a
    column of thousands of seeds is tested in O(1) per cell), with `scipy.special` alone:
    `scipy.stats` costs every leaderboard half a second to import."""
    from scipy.special import stdtr

    na, nb = a.runs, b.runs
    va, vb = a.std ** 2 / na, b.std ** 2 / nb
    t = (a.mean - b.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return float(2 * stdtr(df, -abs(t)))


def _mcnemar(path_a: str, path_b: str, k: int) -> float | None:
    from results.predictions import correct, predictions_path, read_predictions
    from results.stats import align, mcnemar_exact

    try:
        pa, pb = read_predictions(predictions_path(path_a)), read_predictions(predictions_path(path_b))
        ia, ib = align(pa, pb)
        a, b = correct(pa, k)[ia], correct(pb, k)[ib]
    except (OSError, ValueError, KeyError):
        return None  # no predictions, or not the same samples: fall back to the unpaired test
    return mcnemar_exact(int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum()))
