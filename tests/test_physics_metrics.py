"""VoE metrics: the authors' `compute_metrics` on the same numbers, hand-computed cases,
intervals, properties and paired comparisons."""
from __future__ import annotations

import builtins
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from results.physics import (PairScores, absolute_accuracy, absolute_threshold, auroc, by_property, compare,
                             pairs_from_videos, relative_hits, voe_metrics)

FIXTURES = Path(__file__).parent / "fixtures" / "predictors"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_predictors_fixture", FIXTURES / "make_predictors_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rows(possible, impossible, prop="all", prefix="p"):
    out = []
    for i, (p, q) in enumerate(zip(possible, impossible)):
        out.append({"pair": f"{prefix}{i:03d}", "possible": True, "property": prop, "mean": p[0], "max": p[1]})
        out.append({"pair": f"{prefix}{i:03d}", "possible": False, "property": prop, "mean": q[0], "max": q[1]})
    return out


def test_equals_the_authors_compute_metrics():
    FX = _fixture_module()
    rec = json.loads((FIXTURES / "predictors.json").read_text())["intphys"]["metrics"]
    losses, labels = FX.metric_inputs(rec["config"])
    losses = losses.double().numpy()
    videos = [{"pair": i // 2, "possible": bool(labels[i]), "property": "x", "mean": float(losses[i].mean()),
               "max": float(losses[i].max())} for i in range(len(labels))]
    m = voe_metrics(pairs_from_videos(videos), n_boot=200)
    theirs = rec["values"]
    assert m["relative_mean"]["value"] == pytest.approx(theirs["Relative Accuracy (avg)"], abs=1e-4)
    assert m["relative_max"]["value"] == pytest.approx(theirs["Relative Accuracy (max)"], abs=1e-4)
    assert m["absolute_max"]["value"] == pytest.approx(theirs["Absolute Accuracy (max)"], abs=1e-4)
    assert m["absolute_max"]["threshold"] == pytest.approx(rec["threshold"], abs=1e-6)
    assert m["auroc_mean"]["value"] == pytest.approx(theirs["AUROC (avg)"], abs=1e-9)
    assert m["auroc_max"]["value"] == pytest.approx(theirs["AUROC (max)"], abs=1e-9)


def test_hand_computed_case():
    # pairs (possible, impossible) as (mean, max): pair 0 right on both, pair 1 right on max only,
    # pair 2 a tie on max (a miss) and wrong on mean.
    pairs = pairs_from_videos(rows([(1.0, 2.0), (3.0, 1.0), (5.0, 4.0)], [(2.0, 3.0), (2.0, 2.0), (4.0, 4.0)]))
    assert relative_hits(pairs, "max").tolist() == [1.0, 1.0, 0.0]
    assert relative_hits(pairs, "mean").tolist() == [1.0, 0.0, 0.0]
    # 3 possible maxima sorted [1, 2, 4]: index min(ceil(2.7), 2) = 2 -> threshold 4.
    assert absolute_threshold(pairs.possible["max"]) == 4.0
    acc, thr = absolute_accuracy(pairs.possible["max"], pairs.impossible["max"])
    assert thr == 4.0 and acc == pytest.approx(100 * 2 / 6)   # possible 1 and 2 below; no impossible above
    # AUROC of max: impossible {3, 2, 4} vs possible {2, 1, 4}: wins 3>2,3>1, 2>1, 4>2,4>1 and ties
    # 2=2, 4=4 -> (5 + 2 * 0.5) / 9.
    assert auroc(pairs.possible["max"], pairs.impossible["max"]) == pytest.approx(6 / 9)
    m = voe_metrics(pairs, n_boot=100)
    assert m["relative_max"]["value"] == pytest.approx(200 / 3) and m["n_pairs"] == 3
    lo, hi = m["relative_max"]["ci"]
    assert 0.0 <= lo <= m["relative_max"]["value"] <= hi <= 100.0


def test_auroc_without_sklearn_is_the_same(monkeypatch):
    rng = np.random.default_rng(0)
    p, q = rng.random(30), rng.random(30) + 0.2
    p[3] = q[5]  # a tie across the classes
    want = auroc(p, q)
    real_import = builtins.__import__

    def no_sklearn(name, *a, **kw):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    assert auroc(p, q) == pytest.approx(want, abs=1e-12)


def test_perfect_and_chance_intervals():
    perfect = pairs_from_videos(rows([(0.1, 0.1)] * 20, [(0.9, 0.9)] * 20))
    m = voe_metrics(perfect, n_boot=200)
    assert m["relative_max"] == {"value": 100.0, "ci": [100.0, 100.0]}
    assert m["auroc_max"]["value"] == 1.0
    rng = np.random.default_rng(1)
    noise = pairs_from_videos(rows([(a, a) for a in rng.random(200)], [(b, b) for b in rng.random(200)]))
    lo, hi = voe_metrics(noise, n_boot=100)["relative_max"]["ci"]
    assert lo < 50.0 < hi


def test_by_property_and_pair_checks():
    videos = rows([(1, 1)] * 4, [(2, 2)] * 4, prop="permanence", prefix="a") + \
        rows([(2, 2)] * 4, [(1, 1)] * 4, prop="continuity", prefix="b")
    out = by_property(pairs_from_videos(videos), n_boot=50)
    assert out["permanence"]["relative_max"]["value"] == 100.0
    assert out["continuity"]["relative_max"]["value"] == 0.0
    assert out["all"]["relative_max"]["value"] == 50.0 and out["all"]["n_pairs"] == 8
    with pytest.raises(ValueError, match="two possible"):
        pairs_from_videos(rows([(1, 1)], [(2, 2)]) + [{"pair": "p000", "possible": True, "mean": 1, "max": 1}])
    with pytest.raises(ValueError, match="lack their"):
        pairs_from_videos(rows([(1, 1)], [(2, 2)])[:1])


def test_paired_comparison_between_encoders():
    rng = np.random.default_rng(2)
    good = pairs_from_videos(rows([(a, a) for a in rng.random(60)], [(a + 1, a + 1) for a in rng.random(60)]))
    bad = pairs_from_videos(rows([(a, a) for a in rng.random(60)], [(a, a) for a in rng.random(60)]))
    res = compare(good, bad, "max", n_boot=500)
    assert res.n == 60 and res.mean_a == 1.0 and res.diff > 0 and res.significant and res.p_mcnemar < 0.05
    other = PairScores(good.pair_ids[:-1], good.properties[:-1], {k: v[:-1] for k, v in good.possible.items()},
                       {k: v[:-1] for k, v in good.impossible.items()})
    with pytest.raises(ValueError, match="different pairs"):
        compare(good, other)
