"""Feature cache keys: a content hash of everything that changes a split's frozen tokens
(the weights' digest, the token-changing protocol fields, the manifest; see `probes.feature_store`).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

from probes.digest import content_digest

# Bumped when the layout or the meaning of an entry changes (it is part of every key).
FORMAT_VERSION = 1


class FeatureCacheError(ValueError):
    """A cache entry that cannot be used (damaged file, wrong layout) or tokens it cannot hold."""


def state_dict_digest(weights: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """`probes.digest.content_digest` of every tensor's name, dtype, shape and bytes.

    Computed on the loaded weights, so the same weights hash alike whatever file they came from
    (pth, safetensors, a converted release checkpoint). Take it before any precision cast: a
    bf16 copy of the weights is another digest (and the precision belongs in the fields anyway).
    One pass over the bytes: sha256 is the fastest hashlib digest on CPUs with SHA extensions
    (about 0.5 GB/s on this project's shared machine: ViT-L's 1.2 GB in ~2.5 s, next to a
    checkpoint load that reads the same bytes). A cryptographic digest, because a collision
    here would silently reuse another model's features."""
    sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    return content_digest({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})


def canonical(value: Any) -> Any:
    """`value` as plain JSON data for a key (floats exactly, by repr); anything else is refused."""
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)  # exact; JSON would also print floats exactly, this only makes it plain
    # str() of arbitrary objects can embed memory addresses: a key must never depend on them.
    raise FeatureCacheError(f"feature cache key field of type {type(value).__name__} "
                            f"({value!r}) is not plain data; pass str, int, float, bool, lists "
                            f"or dicts of them")


def feature_key(*, encoder_digest: str, fields: Mapping[str, Any], manifest_hash: str) -> str:
    """The entry name: sha256 of (format version, encoder digest, token-changing fields, manifest).

    `fields` must hold everything besides the weights and the video list that changes the
    tokens: the encoder's architecture overrides (resolution, frames, pos-embed interpolation),
    the clip sampling and the transform that made the clips (the eval transform, or the train
    augmentation for augmented copies), the split, copies, the seed where clips are random
    (random eval placement, augmented copies, a shuffled caching order), and the precision the
    encoder ran in."""
    if not encoder_digest or not manifest_hash:
        raise FeatureCacheError("feature_key needs the encoder's weight digest and the manifest "
                                "hash (an empty one would let different runs share an entry)")
    blob = json.dumps({"format": FORMAT_VERSION, "encoder": str(encoder_digest),
                       "fields": canonical(fields), "manifest": str(manifest_hash)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def token_fields(task_protocol: Mapping[str, Any], *, split: str, resolution: int | None,
                 precision: str, encoder: Mapping[str, Any] | None = None, copies: int = 0,
                 seed: int | None = None, random_clips: bool = False,
                 views: int | None = None) -> dict:
    """The `fields` of `feature_key` for one split, from a task's `protocol()` dict.

    `encoder`: the encoder's name and architecture overrides (resolution, frames, pos-embed
    settings: the same weights at another input size give other tokens). The transform is the
    eval transform, or the train augmentation when `copies` augmented passes are cached.
    `random_clips`: the clips depend on the seed (random eval placement, augmented copies, a
    shuffled caching order); only then is `seed` part of the key, so deterministic clips are
    shared across probe seeds. `views`: how many views per sample are kept (training caches
    keep view 0)."""
    random_clips = bool(random_clips or copies)
    if random_clips and seed is None:
        raise FeatureCacheError("clips drawn at random need their seed in the feature cache key")
    return {"split": split, "sampling": task_protocol.get("sampling"),
            "transform": task_protocol.get("train_aug" if copies else "eval_transform"),
            "resolution": resolution, "precision": precision, "encoder": dict(encoder or {}),
            "copies": int(copies), "seed": int(seed) if random_clips else None, "views": views,
            "label_map": task_protocol.get("label_map_sha256")}



def copy_key(key: str, copy: int) -> str:
    """The entry of augmented copy `copy` of the split keyed `key`."""
    return hashlib.sha256(f"{key}/copy{int(copy)}".encode()).hexdigest()[:32]
