"""The numbers of a violation-of-expectation run (`harness.voe_run`): its metrics from the
per-video surprises, and the predictions file that keeps those surprises beside the record.

Metrics: every one with its interval on the Filtered surprise (the minimum over context
lengths) of all pairs (`results.physics.voe_metrics`); per property and per context length the
relative accuracies with intervals (`results.stats.bootstrap_ci` on per-pair hits); and the
paper's headline (`paper_headline`). Predictions: `<record>.predictions.npz` of kind `voe`,
readable through `results.predictions.record_predictions`; `surprise_rows` turns it back into
the rows `results.physics.pairs_from_videos` pairs, so `results.physics.compare` tests two
records on the same pairs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MAIN_METRIC = "paper_relative_mean"
FILTERED = "min"            # video_scores' key of the elementwise minimum over context lengths
N_BOOT, ALPHA = 2000, 0.05


def metric_rows(rows: list[dict], key: str) -> list[dict]:
    """`results.physics.pairs_from_videos` rows of one surprise curve (a context length or
    `min`)."""
    return [{"pair": r["pair"], "property": r["property"], "possible": r["possible"],
             "mean": r["scores"][key]["mean"], "max": r["scores"][key]["max"]} for r in rows]


def paper_headline(rows: list[dict], keys: list[str], *, n_boot: int = N_BOOT,
                   alpha: float = ALPHA, seed: int = 0) -> dict:
    """The paper's number: per property the best relative accuracy on mean surprise over the
    curves `keys` (context lengths and Filtered), averaged over properties; its interval
    resamples pairs within each property and redoes the choice."""
    from results.physics import pairs_from_videos, relative_hits

    per_key = {k: pairs_from_videos(metric_rows(rows, k)) for k in keys}
    first = per_key[keys[0]]
    props = sorted(set(first.properties))
    hits = {p: np.stack([relative_hits(per_key[k], "mean")[np.array(per_key[k].properties) == p]
                         for k in keys]) for p in props}          # (keys, pairs of p)
    best = {p: float(hits[p].mean(axis=1).max()) * 100 for p in props}
    rng = np.random.default_rng(seed)
    draws = np.zeros(n_boot)
    for p in props:
        n = hits[p].shape[1]
        idx = rng.integers(0, n, size=(n_boot, n))
        draws += hits[p][:, idx].mean(axis=2).max(axis=0) * 100  # (n_boot,)
    draws /= len(props)
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return {"value": float(np.mean(list(best.values()))), "ci": [float(lo), float(hi)],
            "per_property": best,
            "chosen": {p: keys[int(hits[p].mean(axis=1).argmax())] for p in props}}


def flat_metrics(m: dict, prefix: str = "") -> dict:
    """`voe_metrics` output as record metrics: `relative_mean`, `relative_mean_lo`, ..."""
    out = {}
    for name in ("relative_mean", "relative_max", "absolute_max", "auroc_mean", "auroc_max"):
        out[f"{prefix}{name}"] = m[name]["value"]
        out[f"{prefix}{name}_lo"], out[f"{prefix}{name}_hi"] = m[name]["ci"]
    out[f"{prefix}absolute_max_threshold"] = m["absolute_max"]["threshold"]
    return out


def compute_metrics(rows: list[dict], protocol, *, seed: int = 0) -> tuple[dict, dict]:
    """(record metrics, the breakdown): every metric with its interval on the Filtered surprise
    of all pairs (`results.physics.voe_metrics`); per property and per context length the
    relative accuracies, with intervals (`results.stats.bootstrap_ci` on per-pair hits, the
    draws voe_metrics makes); the paper's headline with its interval.

    Per property the absolute accuracy and AUROC are left out: each costs 4,000 AUROCs, which
    `results.physics.auroc` computes through sklearn at ~7 ms each (see the report of this
    module's change)."""
    from results.physics import pairs_from_videos, relative_hits, voe_metrics
    from results.stats import bootstrap_ci

    keys = [str(c) for c in protocol.context_frames] + [FILTERED]
    kw = {"n_boot": N_BOOT, "alpha": ALPHA, "seed": seed}
    per_curve = {}
    for k in keys:
        pairs = pairs_from_videos(metric_rows(rows, k))
        props = np.array(pairs.properties)
        per_curve[k] = {}
        for prop in [*sorted(set(pairs.properties)), "all"]:
            keep = np.ones(len(pairs), bool) if prop == "all" else props == prop
            cell = {"n_pairs": int(keep.sum())}
            for stat in ("mean", "max"):
                hits = relative_hits(pairs, stat)[keep]
                lo, hi = bootstrap_ci(hits, **kw)
                cell[f"relative_{stat}"] = {"value": 100.0 * float(hits.mean()),
                                            "ci": [100.0 * lo, 100.0 * hi]}
            per_curve[k][prop] = cell
    overall = voe_metrics(pairs_from_videos(metric_rows(rows, FILTERED)), **kw)
    headline = paper_headline(rows, keys, **kw)
    metrics = {MAIN_METRIC: headline["value"], f"{MAIN_METRIC}_lo": headline["ci"][0],
               f"{MAIN_METRIC}_hi": headline["ci"][1], **flat_metrics(overall)}
    for prop, cell in sorted(per_curve[FILTERED].items()):
        if prop == "all":
            continue
        for name in ("relative_mean", "relative_max"):
            metrics[f"{name}/{prop}"] = cell[name]["value"]
            metrics[f"{name}/{prop}_lo"], metrics[f"{name}/{prop}_hi"] = cell[name]["ci"]
    metrics["num_pairs"] = overall["n_pairs"]
    # The unit of pairwise accuracy is the pair: what the store's fallback tests (Wilson, two
    # proportions) must count.
    metrics["num_samples"] = overall["n_pairs"]
    return metrics, {"headline": headline, "filtered": overall, "curves": per_curve}


def write_surprises(path: Path, rows: list[dict]) -> Path:
    """npz (no pickle): per video its pair, property, label, name and path, and for each curve
    (context length or `min`) its mean and max surprise and every window's (flattened, with
    `windows_<key>_offsets`)."""
    from common.atomic import atomic_write

    keys = list(rows[0]["scores"])
    arrays = {"kind": np.array("voe"),
              "pair": np.array([r["pair"] for r in rows], dtype=np.str_),
              "property": np.array([r["property"] for r in rows], dtype=np.str_),
              "possible": np.array([r["possible"] for r in rows], dtype=bool),
              "name": np.array([r["name"] for r in rows], dtype=np.str_),
              "path": np.array([r["path"] for r in rows], dtype=np.str_),
              "curves": np.array(keys, dtype=np.str_)}
    for k in keys:
        arrays[f"mean_{k}"] = np.array([r["scores"][k]["mean"] for r in rows], dtype=np.float64)
        arrays[f"max_{k}"] = np.array([r["scores"][k]["max"] for r in rows], dtype=np.float64)
        windows = [r["scores"][k]["windows"] for r in rows]
        arrays[f"windows_{k}"] = np.array([w for ws in windows for w in ws], dtype=np.float64)
        arrays[f"windows_{k}_offsets"] = np.cumsum([0] + [len(w) for w in windows])
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def surprise_rows(predictions: dict, curve: str = FILTERED) -> list[dict]:
    """`results.physics.pairs_from_videos` rows from a VoE predictions file's arrays
    (`results.predictions.record_predictions`), so `results.physics.compare` can pair two
    encoders' records."""
    if str(np.asarray(predictions.get("kind"))) != "voe":
        raise ValueError("not the predictions of a VoE run (kind voe)")
    if f"mean_{curve}" not in predictions:
        raise ValueError(f"no surprise curve {curve!r}; curves: "
                         f"{', '.join(str(c) for c in predictions['curves'])}")
    return [{"pair": str(p), "property": str(q), "possible": bool(b), "mean": float(m),
             "max": float(x)}
            for p, q, b, m, x in zip(predictions["pair"], predictions["property"],
                                     predictions["possible"], predictions[f"mean_{curve}"],
                                     predictions[f"max_{curve}"])]
