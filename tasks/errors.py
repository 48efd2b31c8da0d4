"""Errors raised by the task registry and the data path (kept torch-free so `names()` stays fast)."""

from __future__ import annotations

import difflib


class UnknownNameError(KeyError):
    """A task name that is not in the registry; the message lists close matches and all names."""

    def __init__(self, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        self.message = f"unknown task {name!r}.{hint} Known tasks: {', '.join(known) or '(none)'}."
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return self.message


class DataError(RuntimeError):
    """Data that cannot be used as given: missing or malformed manifests, label maps, videos."""


class DecodeError(DataError):
    """A video file that no available backend could decode."""
