"""The task registry: one YAML per task in `tasks/configs/task/` (the built-in tasks), plus task
configs outside the repo: a path (`config('path/to/my_task.yaml')`), or folders on the search
path ($HARNESS_INCLUDE_PATH, os.pathsep-separated, or `include=`), as lm-evaluation-harness
does; their configs are validated when read.

A user's task never takes a built-in task's name: a YAML given by path or found on the search
path whose name is a built-in's is an error naming both files (its numbers would otherwise be
filed under the built-in protocol's name). `names()` and `config()` only read YAML (no torch
import), so listing tasks stays fast; the torch-heavy modules are imported when a Task is built.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError, unknown_task

if TYPE_CHECKING:
    from .dataset import Task

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "task"

INCLUDE_ENV = "HARNESS_INCLUDE_PATH"
_YAML = (".yaml", ".yml")


def include_paths(include: str | os.PathLike | list | None = None) -> list[Path]:
    """Folders searched for task configs after the repo's own: `include` (a folder, an
    os.pathsep-separated string or a list), then $HARNESS_INCLUDE_PATH; each folder's YAMLs and
    those of its `task/` subfolder (the layout of this repo's config groups)."""
    items: list = []
    for source in (include, os.environ.get(INCLUDE_ENV)):
        if not source:
            continue
        if isinstance(source, (list, tuple)):
            items += [str(x) for x in source]
        else:
            items += str(source).split(os.pathsep)
    out = []
    for item in items:
        if not item.strip():
            continue
        folder = Path(os.path.expanduser(item)).resolve()
        if not folder.is_dir():
            where = f"${INCLUDE_ENV}" if item in (os.environ.get(INCLUDE_ENV) or "").split(os.pathsep) \
                else "--include-path"
            raise DataError(f"{where}: {item} is not a folder; give folders holding task YAML files")
        out.append(folder)
    return list(dict.fromkeys(out))


def builtin_files() -> dict[str, Path]:
    """`name -> YAML path` of the built-in tasks (the repo's `tasks/configs/task/`)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def _shadowing(path: Path, name: str) -> DataError:
    return DataError(f"{path} defines task {name!r}, the name of a built-in task "
                     f"({builtin_files()[name]}); a user task never takes a built-in's name, so "
                     f"its numbers are never filed under the built-in's: rename the file and its "
                     f"`name:` (e.g. {name}_custom), or override the built-in's keys on the "
                     f"command line instead (`--task {name} task.KEY=VALUE`)")


def _is_builtin_file(path: Path) -> bool:
    return path.resolve() in {p.resolve() for p in builtin_files().values()}


def _config_files(include=None) -> dict[str, Path]:
    """`name -> YAML path` over the repo's folder and the include paths. A name defined twice is
    an error, and so is a user file named like a built-in task (a user's `k400.yaml` silently
    replacing the paper's protocol, or being silently ignored, would be worse)."""
    files: dict[str, Path] = builtin_files()
    builtin = set(files)
    for folder in include_paths(include):
        for sub in (folder, folder / "task"):
            for p in sorted(q for ext in _YAML for q in sub.glob(f"*{ext}")):
                if p.stem in builtin and not _is_builtin_file(p):
                    raise _shadowing(p, p.stem)
                if p.stem in files and files[p.stem] != p:
                    raise DataError(f"task {p.stem!r} is defined twice: {files[p.stem]} and {p}; "
                                    "rename one (the name is the file name)")
                files[p.stem] = p
    return files


def is_config_path(name: str) -> bool:
    """`--task path/to/my_task.yaml`: a YAML file name or a path, rather than a registered name."""
    return str(name).endswith(_YAML) or os.sep in str(name) or "/" in str(name)


def names(include=None) -> list[str]:
    """Registered task names: the YAML files of `tasks/configs/task/` and of the include paths."""
    return sorted(_config_files(include))


def config(name: str, include=None) -> dict:
    """The task's YAML as a plain dict; `name` is a registered name or a path to a YAML file."""
    if is_config_path(name):
        path = Path(os.path.expanduser(str(name)))
        if not path.is_file():
            raise DataError(f"task config {name} not found (a --task that ends in .yaml or holds a "
                            f"/ is read as a file); known task names: {', '.join(names(include))}")
        if _is_builtin_file(path):  # the built-in's own file, named by its path
            return _read_config(path, path.stem, validate=False)
        return _read_config(path, path.stem, validate=True, user=True)
    files = _config_files(include)
    if name not in files:
        raise unknown_task(name, sorted(files))
    outside = files[name].parent != CONFIG_DIR
    return _read_config(files[name], name, validate=outside, user=outside)


def _read_config(path: Path, name: str, *, validate: bool, user: bool = False) -> dict:
    """A task YAML as a dict. Read with `common.bounded.load_yaml`: a user's file is parsed
    within a budget of nodes (aliases counted as they would expand) and depth, so a few
    kilobytes of nested aliases are refused at once rather than expanded by everything that
    copies the config afterwards (OmegaConf, Hydra, the protocol's canonical JSON)."""
    from common.bounded import BoundedInputError, load_yaml

    try:
        cfg = load_yaml(path, what=f"task config {path}")
    except BoundedInputError as err:
        raise DataError(str(err)) from None
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: a task config is a mapping of keys (name, kind, num_classes, data, "
                        f"sampling, ...), got {type(cfg).__name__}")
    bad_keys = [k for k in cfg if not isinstance(k, str)]
    if bad_keys:
        bad_key = bad_keys[0]
        raise DataError(f"{path}: keys of a task config are names, got {bad_key!r} "
                        f"({type(bad_key).__name__})")
    from .spec import name_problem

    for given in dict.fromkeys([name, cfg.get("name", name)]):
        problem = name_problem(given)
        if problem:
            raise DataError(f"{path}: {problem}")
    if user and str(cfg.get("name", name)) in builtin_files():
        raise _shadowing(path, str(cfg.get("name", name)))
    if cfg.get("name", name) != name:
        raise DataError(f"{path} declares name {cfg['name']!r}; it must match the file name")
    cfg.setdefault("name", name)
    if validate:  # a config from outside the repo: the spec's clear errors now, not mid-run
        from .spec import TaskSpec

        TaskSpec.from_dict(cfg)
    return cfg


def _merged(base: dict, overrides: Mapping[str, Any]) -> dict:
    """`overrides` merged into a copy of `base` with OmegaConf (as Hydra merges groups): mappings
    merge key by key, anything else replaces; dotted keys ('sampling.eval_views') reach inside."""
    from omegaconf import OmegaConf

    conf = OmegaConf.create(copy.deepcopy(dict(base)))
    for key, value in overrides.items():
        OmegaConf.update(conf, str(key), copy.deepcopy(value), merge=True, force_add=True)
    return OmegaConf.to_container(conf, resolve=False)


def build(name: str, root: str | None = None, *, include=None, **overrides) -> "Task":
    """Build a registered task (or one from a YAML path); `root` replaces `data.root`, other
    keywords deep-merge into the YAML; `include`: extra config folders (see `include_paths`).

    e.g. `build('digits_motion', root='data/digits', sampling={'eval_views': 1}, resolution=64)`,
    `build('k400', root=..., decoder='pyav', classes='present')`.
    """
    cfg = _merged(config(name, include=include), overrides)
    if root is not None:
        cfg = _merged(cfg, {"data.root": str(root)})
    return from_config(cfg)


def from_config(cfg: Mapping) -> "Task":
    """Build a Task from an already-composed config dict (e.g. the `task` node of a Hydra config)."""
    from .dataset import Task
    from .spec import TaskSpec

    return Task(TaskSpec.from_dict(cfg))
