"""Task registry: one YAML per task in `tasks/configs/task/`, datasets, clip sampling, transforms.

`names()` and `config()` only read YAML (no torch import), so listing tasks stays fast; the
torch-heavy modules are imported when a Task is built.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError, DecodeError, UnknownNameError

if TYPE_CHECKING:
    from .dataset import Task

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "task"

__all__ = [
    "names",
    "config",
    "build",
    "from_config",
    "collate_clips",
    "make_digits",
    "UnknownNameError",
    "DataError",
    "DecodeError",
    "CONFIG_DIR",
]


def names() -> list[str]:
    """Registered task names (the YAML files of `tasks/configs/task/`)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config(name: str) -> dict:
    """The task's YAML as a plain dict."""
    import yaml

    known = names()
    if name not in known:
        raise UnknownNameError(name, known)
    with open(CONFIG_DIR / f"{name}.yaml", encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if cfg.get("name", name) != name:
        raise DataError(f"{CONFIG_DIR / name}.yaml declares name {cfg['name']!r}; it must match the file name")
    cfg.setdefault("name", name)
    return cfg


def _deep_merge(base: dict, overrides: Mapping[str, Any]) -> dict:
    """Merge `overrides` into a copy of `base`; dotted keys ('sampling.eval_views') reach inside."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        last = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(last), dict):
            node[last] = _deep_merge(node[last], value)
        else:
            node[last] = copy.deepcopy(value)
    return out


def build(name: str, root: str | None = None, *, backend: str = "auto", **overrides) -> "Task":
    """Build a registered task; `root` replaces `data.root`, other keywords deep-merge into the YAML.

    e.g. `build('digits_motion', root='data/digits', sampling={'eval_views': 1}, resolution=64)`.
    """
    cfg = _deep_merge(config(name), overrides)
    if root is not None:
        cfg = _deep_merge(cfg, {"data": {"root": str(root)}})
    return from_config(cfg, backend=backend)


def from_config(cfg: Mapping, *, backend: str = "auto") -> "Task":
    """Build a Task from an already-composed config dict (e.g. the `task` node of a Hydra config)."""
    from .dataset import Task
    from .spec import TaskSpec

    return Task(TaskSpec.from_dict(cfg), backend=backend)


def collate_clips(items):
    """See `tasks.dataset.collate_clips`."""
    from .dataset import collate_clips as _collate

    return _collate(items)


def make_digits(out_dir, **kwargs) -> dict:
    """See `tasks.digits.make_digits` (writes the digits_motion / digits_appearance videos)."""
    from .digits import make_digits as _make

    return _make(out_dir, **kwargs)
