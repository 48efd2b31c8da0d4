"""Encoder registry, ViT backbones and checkpoint loading for frozen evaluation.

`names()`, `config()` and the errors are torch-free; `build()` / `from_config()` import the model
code lazily, so `harness --help` and `harness encoders` stay fast.
"""

from __future__ import annotations

from typing import Any

from .errors import CheckpointError, UnknownNameError
from .registry import build, compose, config, default_checkpoint, names
from .spec import EncoderSpec

__all__ = [
    "CheckpointError", "EncoderSpec", "FrozenEncoder", "UnknownNameError", "build", "compose",
    "config", "default_checkpoint", "from_config", "load_encoder_state", "names",
]


def from_config(cfg, checkpoint=None, *, checkpoint_key=None, trust_checkpoint=False, random_init=False,
                seed=None):
    """Build a `FrozenEncoder` from an already-composed encoder config dict (see `frozen.from_config`)."""
    from .frozen import from_config as _from_config

    return _from_config(cfg, checkpoint=checkpoint, checkpoint_key=checkpoint_key,
                        trust_checkpoint=trust_checkpoint, random_init=random_init, seed=seed)


def __getattr__(name: str) -> Any:  # lazy, torch-importing names
    if name == "FrozenEncoder":
        from .frozen import FrozenEncoder

        return FrozenEncoder
    if name == "load_encoder_state":
        from .checkpoint import load_encoder_state

        return load_encoder_state
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")
