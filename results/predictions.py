"""Per-sample predictions beside each record, for statistics after the fact.

`<record stem>.predictions.npz` (compressed numpy, no pickle): for every evaluated sample its
manifest index and path (the sample id), its label, and the top-5 classes with their
probabilities (softmax averaged over spatial views). Top-1 correctness, top-5 correctness and
any bootstrap or paired test (`results.stats`) follow from these.

Other task kinds keep what their metric needs (`probes.kinds`): multi-label tasks every sample's
`target` (multi-hot) and `scores` (mean sigmoid over views); detection every box's frame `key`,
`boxes` (x1, y1, x2, y2, normalised) and class `scores`. Their files carry `kind`.
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
    from common.atomic import atomic_write

    if "topk_index" not in predictions:  # multi-label or detection: the kind's own arrays
        kind = ("detection" if "boxes" in predictions
                else "anticipation" if "action_top5" in predictions else "multilabel")
        arrays = {"kind": np.array(kind)}
        for key, value in predictions.items():
            arrays[key] = np.array([str(v) for v in value], dtype=np.str_) \
                if isinstance(value, list) else np.asarray(value)
        return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    index = {p: i for i, p in enumerate(manifest_paths)}
    paths = [str(p) for p in predictions["path"]]
    arrays = {
        "index": np.array([index.get(p, -1) for p in paths], dtype=np.int64),
        "path": np.array(paths, dtype=np.str_),
        "label": np.asarray(predictions["label"], dtype=np.int64),
        "topk_index": np.asarray(predictions["topk_index"], dtype=np.int64),
        "topk_prob": np.asarray(predictions["topk_prob"], dtype=np.float32),
    }
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
        if "kind" in data:  # multi-label or detection predictions: every array as written
            return {k: data[k] for k in data.files}
        missing = [k for k in KEYS if k not in data]
        if missing:
            raise ValueError(f"{path} is not a predictions file (lacks {missing})")
        return {k: data[k] for k in KEYS}


def correct(pred: dict[str, np.ndarray], k: int = 1) -> np.ndarray:
    """Per-sample 0/1: the label is among the top k."""
    return (pred["topk_index"][:, :k] == pred["label"][:, None]).any(axis=1).astype(np.float64)


def missing_reason(record: dict, record_path: str | os.PathLike) -> str | None:
    """Why a record has no per-sample predictions beside it, or None when the file is there.

    Three cases, told apart by the record itself: the run saved none (the record names no
    `extra.predictions`: runs made before predictions were saved); the record was imported
    from an export (`imported`; an export carries records only); the run saved them but the
    file is gone (deleted, moved, or the record copied without it)."""
    path = predictions_path(record_path)
    if path.is_file():
        return None
    saved = (record.get("extra") or {}).get("predictions")
    imported = record.get("imported")
    if isinstance(imported, dict):
        return (f"{record_path} was imported from {imported.get('from', 'an export')} (at "
                f"{imported.get('at', '?')}): an export carries the records only, not their "
                f"per-sample predictions; compare on the machine that ran it, or copy "
                f"{saved or path.name} from there beside the record")
    if not saved:
        return (f"the run of {record_path} saved no per-sample predictions (the record names "
                f"none; runs made before predictions were saved cannot be tested sample by "
                f"sample)")
    where = "" if Path(str(saved)).name == path.name else f"; put it back as {path.name}"
    return (f"the run of {record_path} saved its per-sample predictions as {saved}, but no such "
            f"file is beside the record: it was deleted or moved, or the record was copied or "
            f"imported without it{where}")


def record_predictions(record: dict, record_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`read_predictions` of the file beside a record; a missing file raises FileNotFoundError
    with the true reason (`missing_reason`)."""
    why = missing_reason(record, record_path)
    if why is None:
        return read_predictions(record_path)
    saved = (record.get("extra") or {}).get("predictions")
    # The record names its file beside it: only the name is taken (a record is untrusted; a
    # path in it never leads the read elsewhere).
    named = Path(record_path).parent / Path(str(saved)).name if saved else None
    if named is not None and named.name.endswith(".predictions.npz") and named.is_file():
        return read_predictions(named)  # the record file was renamed; its predictions were not
    raise FileNotFoundError(why)
