"""Read encoder checkpoints safely and load them strictly.

* `.pth` / `.pth.tar` / `.pt` (any torch.save file) is read with `weights_only=True`; a file that
  needs arbitrary unpickling is refused unless the caller trusts it (`--trust-checkpoint`).
* `.safetensors` is read with safetensors; a Hugging Face folder stands for its weights file(s).
* Each file is read once; the sha256 recorded is of the bytes parsed (`checkpoint_files`).
* The release layout is a dict of sub-state-dicts (`encoder`, `predictor`, `target_encoder`,
  `opt`, `scaler`, `epoch`, ...); the key comes from the encoder config (`target_encoder`) unless
  the user picks another. A flat state dict is taken as is.
* Prefixes `module.` (DDP) and `backbone.` (the release's wrappers) are stripped.
* Loading into a model is strict: missing, unexpected and mis-shaped keys are errors that list
  them. The only adaptation is resampling `pos_embed` to the model's token grid.
"""

from __future__ import annotations

import io
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


from .checkpoint_files import combined_sha256, read_once, safetensors_header, weights_files
from .errors import CheckpointError
from .pos_embed import interpolate_pos_embed

STRIP_PREFIXES = ("module.", "backbone.")
# Top-level / leading key names of attentive- or linear-probe checkpoints (release eval and ours).
PROBE_MARKERS = ("classifier", "classifiers", "probe", "pooler", "linear", "head", "heads", "query_tokens")
STEP_KEYS = ("epoch", "step", "itr", "global_step", "iteration")
LIST_LIMIT = 10


def _listing(items: list[str], limit: int = LIST_LIMIT) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown


# ----- reading files --------------------------------------------------------------------------
# Each file is read once into memory; its sha256 is taken of those bytes and the same bytes are
# parsed, so what is recorded is what was loaded (a file swapped meanwhile cannot slip in).
def _parse_safetensors(path: Path, data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    header = safetensors_header(data, path)
    try:
        return load(data), {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: it is truncated or corrupt ({e})") from e


def _parse_torch(path: Path, data: bytes, trust: bool) -> Any:
    import argparse

    try:
        # The VideoMAE releases store their training `args` (an argparse.Namespace: plain
        # attributes, no code) beside the weights; allow exactly that, nothing else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        msg = str(e)
        found = re.search(r"GLOBAL (\S+)", msg)
        if not trust and found:
            raise CheckpointError(
                f"checkpoint {path} contains pickled Python objects (e.g. {found.group(1)}), not only tensors; "
                "loading it can run arbitrary code. Pass --trust-checkpoint (trust_checkpoint=True) only if you "
                "trust the file's source."
            ) from e
        raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt or not a torch checkpoint ({msg.splitlines()[-1] if msg else e})") from e
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, ModuleNotFoundError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated, corrupt or not a torch checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def _parse(path: Path, data: bytes, trust: bool) -> tuple[Any, dict[str, str]]:
    """The object held in `data` (the bytes of `path`) and any file-level metadata (safetensors)."""
    if path.name.endswith(".safetensors"):
        return _parse_safetensors(path, data)
    return _parse_torch(path, data, trust), {}


def read_checkpoint_hashed(path: str | Path, trust: bool = False) -> tuple[Any, dict[str, str], str]:
    """`(object, metadata, sha256)` of one weights file: the hash is of the very bytes parsed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    data, sha = read_once(path)
    obj, metadata = _parse(path, data, trust)
    return obj, metadata, sha


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[Any, dict[str, str]]:
    """The raw object stored in `path` and any file-level metadata (safetensors)."""
    obj, metadata, _ = read_checkpoint_hashed(path, trust)
    return obj, metadata


# ----- choosing the encoder's state dict ------------------------------------------------------
def _is_flat(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _looks_like_probe(keys: list[str]) -> bool:
    # A probe checkpoint holds nothing but probe parts; an image model that ships its ImageNet
    # `classifier` beside `features` is still an encoder checkpoint.
    heads = {k.split(".")[0] for k in keys}
    return not any(k.startswith("blocks.") for k in keys) and bool(heads) and heads <= set(PROBE_MARKERS)


def _probe_error(path: Path, keys: list[str]) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} looks like a probe (classifier) checkpoint, not an encoder: it holds "
        f"{_listing(sorted(keys))} and no transformer blocks. Pass the encoder's pretraining checkpoint "
        "as --checkpoint; probe checkpoints are loaded by the probe, not the encoder."
    )


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = STRIP_PREFIXES) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (`module.`, `backbone.`) from every key, repeatedly, in any order."""
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for p in prefixes:
                if key.startswith(p):
                    key, stripped = key[len(p):], True
        if key in out:
            raise CheckpointError(f"two checkpoint entries map to {key!r} after stripping {prefixes}")
        out[key] = value
    return out


def select_state(obj: Any, key: str | None, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The encoder state dict inside a loaded checkpoint object, and the key it was found under."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict or a dict of them")
    if _is_flat(obj):
        return dict(obj), None
    if key is None:
        raise CheckpointError(
            f"checkpoint {path} is a nested dict; choose the encoder's entry with --checkpoint-key. "
            f"Available top-level keys: {_listing(sorted(map(str, obj)))}"
        )
    if "|" in key:  # alternatives, in order: "model|module" (VideoMAE's --model_key)
        for alt in key.split("|"):
            if alt in obj:
                return select_state(obj, alt, path)
        raise CheckpointError(
            f"checkpoint {path} has none of the entries {key.split('|')}. Available top-level "
            f"keys: {_listing(sorted(map(str, obj)))}. Choose one with --checkpoint-key.")
    node: Any = obj
    if key in obj:
        node = obj[key]
    else:  # a dotted path into nested dicts, e.g. "model.encoder"
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                top = sorted(map(str, obj))
                if any(k in PROBE_MARKERS for k in top):
                    raise _probe_error(path, top)
                raise CheckpointError(
                    f"checkpoint {path} has no entry {key!r}. Available top-level keys: {_listing(top)}. "
                    "Choose one with --checkpoint-key."
                )
            node = node[part]
    if not isinstance(node, Mapping) or not _is_flat(node):
        raise CheckpointError(f"entry {key!r} of checkpoint {path} is not a state dict of tensors")
    return dict(node), key


def hf_weights_file(path: Path) -> Path:
    """A Hugging Face model folder stands for its weights file (a sharded folder: its index);
    each family's `checkpoint_filter` maps the HF key layout onto our modules."""
    path = Path(path)
    if path.is_dir():
        files = weights_files(path)
        return files[0] if len(files) == 1 else path / "model.safetensors.index.json"
    return path


def _read_all(path: Path, trust: bool) -> tuple[Any, dict[str, str], str, list[Path]]:
    """Every weights file of `path` read once: `(object, metadata, sha256, files)`; the shards of a
    sharded folder are merged into one flat state dict."""
    files = weights_files(path)
    if len(files) == 1:
        obj, metadata, sha = read_checkpoint_hashed(files[0], trust)
        return obj, metadata, sha, files
    merged: dict[str, Any] = {}
    hashes = []
    for f in files:
        part, _, sha = read_checkpoint_hashed(f, trust)
        if not isinstance(part, Mapping) or not _is_flat(part):
            raise CheckpointError(f"shard {f} is not a flat state dict of tensors")
        clash = sorted(set(part) & set(merged))
        if clash:
            raise CheckpointError(f"shards of {path} both hold {_listing(clash)}")
        merged.update(part)
        hashes.append((f, sha))
    return merged, {}, combined_sha256(hashes), files


def load_encoder_state(path: str | Path, key: str | None = None, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the encoder's state dict from a checkpoint file or Hugging Face folder.

    Returns `(state_dict, info)`; `info` has `path`, `sha256` (of the bytes parsed here, see
    `checkpoint_files`), `key` (None for a flat state dict), `format`, and `epoch`/`step` when the
    checkpoint records them.
    """
    given = Path(path).expanduser()
    obj, metadata, sha, files = _read_all(given, trust)
    where = files[0] if len(files) == 1 else given
    state, key_used = select_state(obj, key, where)
    state = strip_prefixes(state)
    if _looks_like_probe(list(state)):
        raise _probe_error(where, list(state))
    info: dict[str, Any] = {
        "path": str(where.resolve()),
        "sha256": sha,
        "key": key_used,
        "format": "safetensors" if files[0].name.endswith(".safetensors") else "torch",
    }
    if given.is_dir():
        info["format"] = "huggingface"
        info["folder"] = str(given.resolve())
        info["weights_files"] = [f.name for f in files]
    source = obj if isinstance(obj, Mapping) and not _is_flat(obj) else metadata
    for k in STEP_KEYS:
        v = source.get(k) if isinstance(source, Mapping) else None
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            try:
                info[k] = int(v)
            except ValueError:
                pass
    return state, info


# ----- loading into a model -------------------------------------------------------------------
def _source_grid(n: int, model_grid: tuple[int, ...]) -> tuple[int, ...] | None:
    """Guess the token grid a checkpoint's `pos_embed` of n tokens was made for.

    Same frame count at another (square) resolution first, then another frame count at the same
    resolution: the two ways the release's models differ (ViT-H 224 vs 384, 16 vs 8 frames).
    """
    if len(model_grid) == 2:
        s = math.isqrt(n)
        return (s, s) if s * s == n else None
    t, h, w = model_grid
    if n % t == 0:
        s = math.isqrt(n // t)
        if s * s == n // t:
            return (t, s, s)
    if n % (h * w) == 0:
        return (n // (h * w), h, w)
    return None


def adapt_pos_embed(state: dict[str, torch.Tensor], model: nn.Module, info: dict[str, Any]) -> None:
    """Resample the checkpoint's `pos_embed` to the model's grid when their token counts differ."""
    ck, own = state.get("pos_embed"), getattr(model, "pos_embed", None)
    if ck is None or own is None or ck.ndim != 3 or ck.shape == own.shape or ck.shape[-1] != own.shape[-1]:
        return
    model_grid = tuple(model.grid)
    src = _source_grid(ck.shape[1], model_grid)
    if src is None:
        raise CheckpointError(
            f"pos_embed of checkpoint {info.get('path')} has {ck.shape[1]} tokens, which fits no grid "
            f"comparable to the model's {model_grid}; check --encoder and the arch overrides"
        )
    state["pos_embed"] = interpolate_pos_embed(ck.float(), src, model_grid)
    info["pos_embed_interpolated"] = {"from": list(src), "to": list(model_grid)}


def fit_problems(expected: Mapping[str, Any], state: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """`(missing, unexpected, mismatched)` of a state dict against a model's `state_dict()`
    (anything with `.shape`: meta tensors do); all empty means a strict load would take it."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    return missing, unexpected, mismatched


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Load `state` into `model`, refusing any missing, unexpected or mis-shaped key.

    Works for a model built on the meta device too (its tensors are then replaced by the
    checkpoint's, cast to float32).
    """
    adapt_pos_embed(state, model, info)
    expected = model.state_dict()
    missing, unexpected, mismatched = fit_problems(expected, state)
    if missing or unexpected or mismatched:
        parts = [f"checkpoint {info.get('path')} (key {info.get('key')!r}) does not fit the model:"]
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
            heads = {k.split(".")[0] for k in unexpected}
            if len(heads) == 1 and missing:
                parts.append(f"(all unexpected keys start with {next(iter(heads))!r}: wrong --checkpoint-key, "
                             "or a prefix to strip?)")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
            parts.append("(is --encoder the architecture this checkpoint was trained with?)")
        raise CheckpointError("\n  ".join(parts))
    # Integer or bool tensors where the model holds float weights: a converted or hand-edited
    # file gone wrong (torch would fail mid-copy with a traceback, or assign them as they are).
    # Integer buffers the model itself has (BatchNorm's num_batches_tracked in the CNNs) stay.
    wrong = sorted(f"{k} ({str(state[k].dtype).removeprefix('torch.')})"
                   for k in set(expected) & set(state)
                   if expected[k].is_floating_point() and not state[k].is_floating_point())
    if wrong:
        raise CheckpointError(f"checkpoint {info.get('path')} holds {len(wrong)} non-float tensor(s) "
                              f"where the model has float weights: {_listing(wrong)}. It is not a "
                              f"checkpoint of trained weights for this encoder (was it converted "
                              f"or edited?); pass the original weights file")
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:  # a diverged or corrupted run: every number the probe would report is meaningless
        raise CheckpointError(f"checkpoint {info.get('path')} holds NaN or infinite values in "
                              f"{len(bad)} tensor(s): {_listing(bad)}. The run that wrote it "
                              f"diverged or the file is corrupt; use an earlier checkpoint")
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    meta = any(t.is_meta for t in expected.values())
    model.load_state_dict(state, strict=True, assign=meta)
