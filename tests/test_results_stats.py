"""Bootstrap intervals and paired tests, checked against independent computations."""
from __future__ import annotations

import numpy as np
import pytest

from results.stats import align, bootstrap_ci, mcnemar_exact, paired


def test_bootstrap_ci_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    x = (rng.random(4000) < 0.7).astype(float)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=0)
    se = np.sqrt(x.mean() * (1 - x.mean()) / x.size)
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.004)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.004)


def test_mcnemar_hand_worked_case():
    # 10 discordant pairs, 9 favour A: two-sided exact p = 2 * P(X >= 9 | n=10, 1/2) = 22/1024
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0


def test_paired_difference_and_interval():
    rng = np.random.default_rng(0)
    base = (rng.random(3000) < 0.6).astype(float)
    better = base.copy()
    flip = np.flatnonzero(base == 0)[:150]  # A is right on 150 more samples: +5 points
    better[flip] = 1
    r = paired(better, base, n_boot=2000, seed=0)
    assert r.diff == pytest.approx(0.05) and r.significant and r.only_a == 150 and r.only_b == 0
    assert r.p_mcnemar < 1e-10
    same = paired(base, base)
    assert same.diff == 0 and not same.significant and same.p_mcnemar == 1.0


def test_align_matches_ids_and_refuses_other_samples():
    a = {"path": np.array(["x", "y", "z"])}
    b = {"path": np.array(["z", "x", "y"])}
    ia, ib = align(a, b)
    assert [a["path"][i] for i in ia] == [b["path"][j] for j in ib]
    with pytest.raises(ValueError, match="different samples"):
        align(a, {"path": np.array(["x", "y"])})
