"""Errors raised by the task registry and the data path (kept torch-free so `names()` stays fast)."""

from __future__ import annotations

from common.names import UnknownNameError, unknown


def unknown_task(name: str, known: list[str]) -> UnknownNameError:
    return unknown("task", name, known)


class DataError(RuntimeError):
    """Data that cannot be used as given: missing or malformed manifests, label maps, videos."""


class DecodeError(DataError):
    """A video file that no available backend could decode."""
