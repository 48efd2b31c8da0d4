"""Per-sample predictions beside each record, for statistics after the fact.

`<record stem>.predictions.npz` (compressed numpy, no pickle): for every evaluated sample its
manifest index and path (the sample id), its label, and the top-5 classes with their
probabilities (softmax averaged over spatial views). Top-1 correctness, top-5 correctness and
any bootstrap or paired test (`results.stats`) follow from these.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

KEYS = ("index", "path", "label", "topk_index", "topk_prob")


def predictions_path(record_path: str | os.PathLike) -> Path:
    p = Path(record_path)
    return p.with_name(p.name[: -len(".json")] + ".predictions.npz") if p.name.endswith(".json") \
        else p.with_name(p.name + ".predictions.npz")


def write_predictions(path: str | os.PathLike, predictions: dict, manifest_paths: list[str]) -> Path:
    """Write atomically (temp file + rename); `manifest_paths` maps paths to manifest indices."""
    index = {p: i for i, p in enumerate(manifest_paths)}
    paths = [str(p) for p in predictions["path"]]
    arrays = {
        "index": np.array([index.get(p, -1) for p in paths], dtype=np.int64),
        "path": np.array(paths, dtype=np.str_),
        "label": np.asarray(predictions["label"], dtype=np.int64),
        "topk_index": np.asarray(predictions["topk_index"], dtype=np.int64),
        "topk_prob": np.asarray(predictions["topk_prob"], dtype=np.float32),
    }
    from results.record import atomic_write

    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_predictions(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a predictions file (or of the one beside a record path)."""
    path = Path(path)
    if path.name.endswith(".json"):
        path = predictions_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no per-sample predictions at {path}; records made before "
                                f"predictions were saved cannot be tested sample by sample")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in KEYS if k not in data]
        if missing:
            raise ValueError(f"{path} is not a predictions file (lacks {missing})")
        return {k: data[k] for k in KEYS}


def correct(pred: dict[str, np.ndarray], k: int = 1) -> np.ndarray:
    """Per-sample 0/1: the label is among the top k."""
    return (pred["topk_index"][:, :k] == pred["label"][:, None]).any(axis=1).astype(np.float64)
