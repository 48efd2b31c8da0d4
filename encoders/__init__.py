"""Encoder registry, ViT backbones and checkpoint loading for frozen evaluation.

`names()`, `config()`, `compose()`, `checkpoint_sha256()` and the errors are torch-free;
`resolve_config()` reads a Hugging Face folder's config.json (importing that family's module);
`build()` / `from_config()` import the model code lazily, so `harness --help` and
`harness encoders` stay fast.

A run is planned as `cfg = resolve_config(compose(name, **overrides), checkpoint)` (the
architecture a Hugging Face folder states), `checkpoint_sha256(checkpoint)` (identity, before
loading), then `from_config(cfg, checkpoint=checkpoint)`, whose `checkpoint_info["sha256"]` is
of the bytes it loaded.
"""

from __future__ import annotations

from typing import Any

from .checkpoint_files import checkpoint_sha256
from .errors import CheckpointError, UnknownNameError
from .registry import compose, config, default_checkpoint, names
from .spec import EncoderSpec

__all__ = [
    "CheckpointError", "EncoderSpec", "FrozenEncoder", "UnknownNameError", "build", "checkpoint_sha256",
    "compose", "config", "default_checkpoint", "from_config", "load_encoder_state", "names", "resolve_config",
    "FrozenPredictor", "PredictorSpec", "build_predictor", "predictor_from_config",
]


def resolve_config(cfg, checkpoint=None) -> dict[str, Any]:
    """The encoder config to build for `checkpoint` (see `hf.resolve_config`): a Hugging Face
    folder's config.json sets `arch`; anything else leaves `cfg` as it is (a plain dict)."""
    from .hf import resolve_config as _resolve

    return _resolve(cfg, checkpoint)


def from_config(cfg, checkpoint=None, *, checkpoint_key=None, trust_checkpoint=False, random_init=False,
                seed=None):
    """Build a `FrozenEncoder` from an already-composed encoder config dict (see `frozen.from_config`)."""
    from .frozen import from_config as _from_config

    return _from_config(cfg, checkpoint=checkpoint, checkpoint_key=checkpoint_key,
                        trust_checkpoint=trust_checkpoint, random_init=random_init, seed=seed)


def build(name: str, checkpoint=None, *, checkpoint_key: str | None = None, trust_checkpoint: bool = False,
          random_init: bool = False, seed: int | None = None, **overrides: Any):
    """Build the registered encoder `name` as a `FrozenEncoder`: `compose(name, **overrides)`, then
    `from_config` (which reads a Hugging Face folder's config.json)."""
    return from_config(compose(name, **overrides), checkpoint=checkpoint, checkpoint_key=checkpoint_key,
                       trust_checkpoint=trust_checkpoint, random_init=random_init, seed=seed)


def __getattr__(name: str) -> Any:  # lazy, torch-importing names
    if name == "FrozenEncoder":
        from .frozen import FrozenEncoder

        return FrozenEncoder
    if name in ("FrozenPredictor", "PredictorSpec", "build_predictor", "predictor_from_config"):
        from . import predictors

        return getattr(predictors, name)
    if name == "load_encoder_state":
        from .checkpoint import load_encoder_state

        return load_encoder_state
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")
