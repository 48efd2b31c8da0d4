"""Label-efficiency folds drawn from the publisher's annotation list, not from the files a user has.

Kinetics users each miss a different 6-8% of the videos; a fold drawn from what is on disk would
differ between any two users. Here a fold of fraction f and seed s is drawn, per class, from the
publisher's list of training samples (each class's samples ordered by their publisher file name,
so the draw depends on nothing local): round(f * n) samples of a class of n, at least one. The
fold's identity (`fold_sha256`, over the drawn names and labels) is the same for everyone; its
manifest lists the drawn samples present locally, and the report says how many are missing. A
run on a fold (`task.data.train=<out>/<fold>.csv`) hashes that manifest into its protocol.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import DataError


def fold_name(fraction: float, seed: int) -> str:
    pct = f"{100 * fraction:.6g}"
    return f"train_{pct}pct_seed{seed}"


def draw(samples, fraction: float, seed: int) -> list:
    """Stratified draw: per class (in label order) `max(1, round(fraction * n))` of its samples,
    chosen with numpy's PCG64 seeded by `seed` from the class's samples sorted by file name."""
    if not 0.0 < float(fraction) <= 1.0:
        raise DataError(f"--fraction values must be in (0, 1], got {fraction}")
    by_class: dict[int, list] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    rng = np.random.default_rng(int(seed))
    out = []
    for label in sorted(by_class):
        pool = sorted(by_class[label], key=lambda s: s.expected)
        k = min(len(pool), max(1, int(round(fraction * len(pool)))))
        idx = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
        out += [pool[i] for i in idx]
    return out


def fold_sha256(drawn) -> str:
    lines = sorted(f"{s.expected}\t{s.label}" for s in drawn)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def write_splits(task: str, root, out=None, *, fractions, seeds, annotations=None, writer=None) -> dict:
    """Write one manifest per (fraction, seed) into `out` (default ROOT/splits) plus
    `splits.json` (each fold's drawn / written / missing counts and fold_sha256)."""
    from . import _writer, preparer

    writer = _writer(writer)
    if not fractions or not seeds:
        raise DataError("give at least one --fraction and one --seed")
    root = Path(os.path.abspath(os.path.expanduser(str(root))))
    mod = preparer(task)
    prepared = mod.read(root, **({"annotations": Path(annotations)} if annotations else {}))
    samples = prepared.samples.get("train")
    if not samples:
        raise DataError(f"{task}: no training annotations under {root}; expected {mod.layout()}")
    out = Path(os.path.abspath(os.path.expanduser(str(out)))) if out else root / "splits"
    out.mkdir(parents=True, exist_ok=True)
    folds = []
    for fraction in fractions:
        for seed in seeds:
            drawn = draw(samples, float(fraction), int(seed))
            lines = []
            for s in drawn:
                if s.path is None or not s.keep:
                    continue
                p = os.path.abspath(s.path)
                rel = os.path.relpath(p, out)
                lines.append(f"{p if rel.startswith('..') else Path(rel).as_posix()} {s.label}\n")
            name = fold_name(float(fraction), int(seed))
            writer(out / f"{name}.csv", lambda f, t="".join(lines): f.write(t.encode("utf-8")))
            folds.append({"name": name, "fraction": float(fraction), "seed": int(seed),
                          "drawn": len(drawn), "written": len(lines),
                          "missing_locally": len(drawn) - len(lines), "sha256": fold_sha256(drawn),
                          "manifest": str(out / f"{name}.csv")})
    summary = {"task": task, "root": str(root), "out": str(out), "drawn_from": "the publisher's "
               "training annotations" if task != "in1k" else "the training images on disk "
               "(ImageNet publishes no training file list)", "folds": folds}
    text = json.dumps(summary, indent=1) + "\n"
    writer(out / "splits.json", lambda f: f.write(text.encode("utf-8")))
    return summary


def parse_split(text: str) -> tuple[float, int]:
    """`10pct:seed1` (the `harness run --split` form; `0.1:1` too) -> (0.1, 1)."""
    frac, sep, seed = str(text).partition(":")
    try:
        f = float(frac[:-3]) / 100 if frac.endswith("pct") else float(frac)
        s = int(seed[4:] if seed.startswith("seed") else seed)
    except ValueError:
        f, s = -1.0, -1
    if not sep or not 0 < f <= 1 or s < 0:
        raise DataError(f"--split {text!r}: expected <percent>pct:seed<n>, e.g. 10pct:seed1")
    return f, s


def fold_override(text: str, out: str = "splits") -> dict:
    """The task override a `--split` means: the fold's manifest as the training split."""
    f, s = parse_split(text)
    return {"data": {"train": f"{out}/{fold_name(f, s)}.csv"}, "train_fold": {"fraction": f, "seed": s}}
