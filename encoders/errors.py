"""Errors raised by the encoder registry and checkpoint loading (torch-free)."""

from __future__ import annotations

from common.names import UnknownNameError  # noqa: F401  (the one class; re-exported for encoders)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model (names the file and the keys)."""
