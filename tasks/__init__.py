"""Tasks: the registry (one YAML per task in `tasks/configs/task/`, plus user configs by path or
on $HARNESS_INCLUDE_PATH; `tasks.registry`), datasets, clip sampling, transforms, metrics.

`names()` and `config()` only read YAML (no torch import), so listing tasks stays fast; the
torch-heavy modules are imported when a Task is built. This package's modules never import it
(its names live in `tasks.registry` and below), so nothing here is an import circle.
"""

from __future__ import annotations

from .errors import DataError, DecodeError, UnknownNameError
from .registry import (CONFIG_DIR, INCLUDE_ENV, build, builtin_files, config, from_config,
                       include_paths, is_config_path, names)

__all__ = [
    "names",
    "config",
    "build",
    "from_config",
    "builtin_files",
    "collate_clips",
    "make_digits",
    "UnknownNameError",
    "DataError",
    "DecodeError",
    "CONFIG_DIR",
    "INCLUDE_ENV",
    "include_paths",
    "is_config_path",
]


def collate_clips(items):
    """See `tasks.items.collate_clips`."""
    from .items import collate_clips as _collate

    return _collate(items)


def make_digits(out_dir, **kwargs) -> dict:
    """See `tasks.digits.make_digits` (writes the digits_motion / digits_appearance videos)."""
    from .digits import make_digits as _make

    return _make(out_dir, **kwargs)
