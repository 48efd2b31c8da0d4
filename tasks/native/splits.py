"""Label-efficiency folds drawn from the publisher's annotation list, not from the files a user has.

Kinetics users each miss a different 6-8% of the videos; a fold drawn from what is on disk would
differ between any two users. Here a fold of fraction f and seed s is drawn, per class, from the
publisher's list of training samples (each class's samples ordered by their publisher file name,
so the draw depends on nothing local): round(f * n) samples of a class of n, at least one. The
fold's identity (`fold_sha256`, over the drawn names and labels) is the same for everyone; its
manifest lists the drawn samples present locally, and the report says how many are missing.
Folds go to ROOT/splits/ by default, where `harness run ... --split 10pct:seed1` finds them
(`fold_override`); a run on a fold hashes its manifest, fraction and seed into its protocol.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text

from ..errors import DataError
from ..manifest import output_folder, own_folder
from .common import manifest_path_text, preparer

# Where `harness run --split` looks for folds, relative to the task's data root.
FOLDS_DIR = "splits"


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


def split_text(fraction: float, seed: int) -> str:
    """The `harness run --split` value of a fold: `10pct:seed1` (`parse_split` reads it back)."""
    return f"{100 * fraction:.6g}pct:seed{seed}"


def write_splits(task: str, root, out=None, *, fractions, seeds, annotations=None,
                 stop=None) -> dict:
    """Write one manifest per (fraction, seed) into `out` (default ROOT/splits) plus
    `splits.json` (each fold's drawn / written / missing counts, fold_sha256 and its `--split`
    value); `run` in the summary says how to train on a fold."""
    if not fractions or not seeds:
        raise DataError("give at least one --fraction and one --seed")
    root = Path(os.path.abspath(os.path.expanduser(str(root))))
    mod = preparer(task)
    prepared = mod.read(root, **({"annotations": Path(annotations)} if annotations else {}))
    samples = prepared.samples.get("train")
    if not samples:
        raise DataError(f"{task}: no training annotations under {root}; expected {mod.layout()}")
    # --out is used as named; the default ROOT/splits must not be a link leading out of ROOT.
    out = (output_folder(os.path.abspath(os.path.expanduser(str(out)))) if out
           else own_folder(root, FOLDS_DIR))
    from .stopping import holding

    with holding(stop):  # the folds and splits.json: all of them, or none (a signal waits)
        return _write_folds(task, root, out, samples, fractions, seeds)


def _write_folds(task: str, root: Path, out: Path, samples, fractions, seeds) -> dict:
    folds = []
    for fraction in fractions:
        for seed in seeds:
            drawn = draw(samples, float(fraction), int(seed))
            lines = []
            for s in drawn:
                if s.path is None or not s.keep:
                    continue
                lines.append(f"{manifest_path_text(s.path, out)} {s.label}\n")
            name = fold_name(float(fraction), int(seed))
            atomic_write_text(out / f"{name}.csv", "".join(lines))
            folds.append({"name": name, "fraction": float(fraction), "seed": int(seed),
                          "split": split_text(float(fraction), int(seed)),
                          "drawn": len(drawn), "written": len(lines),
                          "missing_locally": len(drawn) - len(lines), "sha256": fold_sha256(drawn),
                          "manifest": str(out / f"{name}.csv")})
    summary = {"task": task, "root": str(root), "out": str(out), "drawn_from": "the publisher's "
               "training annotations" if task != "in1k" else "the training images on disk "
               "(ImageNet publishes no training file list)", "folds": folds,
               "run": _run_hint(task, root, out, folds)}
    atomic_write_text(out / "splits.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _run_hint(task: str, root: Path, out: Path, folds: list[dict]) -> str:
    """How to train on the folds: `--split` (the README's way) when they are where it looks."""
    example = folds[0]["split"] if folds else "10pct:seed1"
    hint = f"harness run --task {task} --split {example} task.data.root={root} ..."
    if out != root / FOLDS_DIR:
        hint += (f"; --split reads folds from the data root's {FOLDS_DIR}/ folder, and these are "
                 f"in {out}: write them there (leave out --out) to train on them")
    return hint


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


def fold_override(text: str, out: str = FOLDS_DIR) -> dict:
    """The task override a `--split` means: the fold's manifest as the training split."""
    f, s = parse_split(text)
    return {"data": {"train": f"{out}/{fold_name(f, s)}.csv"}, "train_fold": {"fraction": f, "seed": s}}
