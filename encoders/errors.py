"""Errors raised by the encoder registry and checkpoint loading (torch-free)."""

from __future__ import annotations


class UnknownNameError(KeyError):
    """An encoder name that is not in the registry; the message lists close names."""

    def __init__(self, message: str, name: str = "", close: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.name = name
        self.close = close

    # KeyError.__str__ would repr() the message (quotes, escaped newlines); users read this one.
    def __str__(self) -> str:
        return self.message


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model (names the file and the keys)."""
