"""Compose a run's configuration with Hydra.

The encoder, task and probe groups live beside the code they configure; this module is the one
place that knows where, and puts those folders on Hydra's search path so that
`encoder=vjepa_vitl task=ssv2 probe=linear task.optim.lr=3e-4` all work as plain overrides.
"""
from __future__ import annotations

import math
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
GROUP_DIRS = {
    "encoder": REPO_ROOT / "encoders" / "configs",
    "task": REPO_ROOT / "tasks" / "configs",
    "probe": REPO_ROOT / "probes" / "configs",
}


class ConfigError(ValueError):
    """A config name or override that cannot be composed; the message says what to do."""


def group_names(group: str) -> list[str]:
    folder = GROUP_DIRS[group] / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_name(group: str, name: str) -> None:
    from common.names import unknown

    names = group_names(group)
    if name not in names:
        raise unknown(group, name, names)


def compose_run(overrides: list[str] = ()) -> "DictConfig":  # noqa: F821
    """Compose harness/configs/run.yaml with the given Hydra overrides, each overridden value
    type- and range-checked against the value it replaces (`check_override_types`)."""
    overrides = list(overrides)
    # A task whose protocol has its own probe (AVA's roi_linear) gets it unless the run names
    # one; known before the other overrides are applied, since they may set that probe's keys.
    keys = [o.partition("=")[0].lstrip("+~") for o in overrides]
    if "task" in keys and "probe" not in keys:
        default_probe = _compose([o for o in overrides if _is_selection(o)]).task.get("default_probe")
        if default_probe:
            overrides = [f"probe={default_probe}", *overrides]
    cfg = _compose(overrides)
    selections = [o for o in overrides if _is_selection(o)]
    if len(selections) < len(overrides):
        check_override_types(cfg, _compose(selections), overrides)
    return cfg


def _is_external(group: str, value: str) -> bool:
    if group == "encoder":
        return value.startswith("timm:")
    return group == "task" and value not in group_names("task")


def _compose(overrides: list[str]) -> "DictConfig":  # noqa: F821
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    # A group value that is no file of its group comes from the registry itself:
    # `encoder=timm:<model>` (timm's config) and `task=path/to/my_task.yaml` or a task on
    # HARNESS_INCLUDE_PATH. Compose with the defaults, put the registry's node in its place, then
    # re-apply that group's dotted overrides on top.
    external = {}
    for item in list(overrides):
        key, _, value = item.partition("=")
        value = value.strip("'\"")
        if value and _is_external(key, value):
            external[key] = value
            overrides.remove(item)
    if external:
        import importlib

        import yaml
        from omegaconf import OmegaConf, open_dict

        def inside(item: str) -> bool:
            return any(item.startswith(f"{group}.") for group in external)

        cfg = _compose([o for o in overrides if not inside(o)])
        with open_dict(cfg):
            for group, value in external.items():
                registry = importlib.import_module("encoders" if group == "encoder" else "tasks")
                try:
                    node = registry.config(value)
                except Exception as err:  # UnknownNameError lists close names
                    raise ConfigError(str(err)) from None
                cfg[group] = OmegaConf.create(node)
            for item in overrides:
                if inside(item):
                    key, _, value = item.partition("=")
                    OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None,
                                     force_add=True)
        return cfg
    for item in overrides:
        key, _, value = item.partition("=")
        if key in GROUP_DIRS and value:
            check_name(key, value)
        if key == "task" and value:
            import tasks

            tasks.names()  # a user task on the include path named like a built-in is refused
    search = ",".join(f"file://{d}" for d in GROUP_DIRS.values())
    try:
        with initialize_config_dir(config_dir=str(RUN_CONFIG_DIR), version_base=None):
            return compose("run", overrides=[f"hydra.searchpath=[{search}]", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(
            f"could not compose the run config with overrides {overrides}: {err}\n"
            "Use key=value for keys that exist (see `harness run --show-config`), "
            "or +key=value to add a new one."
        ) from err


def quote_override(value) -> str:
    """A value for a `key=value` override: paths may hold spaces or characters Hydra's override
    grammar treats specially."""
    text = str(value)
    if any(c in text for c in " ,[]{}()=:'\"\\*?$"):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def to_container(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


# ----- typed values ---------------------------------------------------------------------------
# The dataclasses that take the composed values declare their types and ranges themselves
# (`common.fields.bounded`); the override check reads those declarations, so a bad value is
# named with the key and the text the user typed before anything is built.

def _field_rule(key: str):
    """(types, range) the dataclass taking `key` declares for it; None for other keys."""
    from common.fields import field_rule

    owner, _, name = key.rpartition(".")
    if owner == "":
        from harness.settings import RunSettings

        return field_rule(RunSettings, name)
    if owner == "task.optim":
        from probes.optim import OptimConfig

        return field_rule(OptimConfig, name)
    if owner == "task":
        from tasks.spec import TaskSpec

        return field_rule(TaskSpec, name)
    return None


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


def _is_selection(override: str) -> bool:
    """`task=ssv2`: a group choice, which changes the defaults rather than one value."""
    key = override.partition("=")[0].lstrip("+~")
    return key in GROUP_DIRS


def _kind(value) -> type | None:
    for t in (bool, int, float, str, list, dict):  # bool before int: True is an int in Python
        if isinstance(value, t):
            return t
    return None


def _fits(value, expected: type) -> bool:
    if value is None:  # null: the code that uses the key says whether it may be unset
        return True
    got = _kind(value)
    return got is expected or (expected is float and got is int)


def check_override_types(cfg, defaults, overrides: list[str]) -> None:
    """Each overridden value must have its default's type (an int where an int was, a number
    where a float was, true/false for a flag), and the values that change a number must be in
    range. One line per problem, naming the key, the value and what it takes. A string key given
    a number (`out=2024`) takes the text as typed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    last: dict[str, tuple[str, object]] = {}  # a key given twice: the later value is the one used
    for text in overrides:
        if not _is_selection(text):
            parsed = parser.parse_override(text)
            last.pop(parsed.key_or_group, None)
            last[parsed.key_or_group] = (text, parsed)
    for key, (text, parsed) in last.items():
        if parsed.is_delete():
            continue
        if key.startswith("hydra"):
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        default = OmegaConf.select(defaults, key, throw_on_missing=False)
        default = (OmegaConf.to_container(default, resolve=True) if OmegaConf.is_config(default)
                   else default)
        _check_value(cfg, key, value, default, raw=text.partition("=")[2])


def _show(value) -> str:
    return value if isinstance(value, str) else repr(value) if not isinstance(value, bool) else (
        "true" if value else "false")


def _check_value(cfg, key: str, value, default, raw: str) -> None:
    from omegaconf import OmegaConf

    shown = raw.strip() or _show(value)  # as the user typed it (`1e6`, not 1000000.0)
    rule = _field_rule(key)
    declared = tuple(str if t is Path else t for t in rule.types if t is not type(None)) \
        if rule else ()
    if len(declared) > 1 or (rule and rule.choices):  # `bool | Literal["auto"]`
        if value is not None and not rule.accepts(value):
            raise ConfigError(f"{key}={shown}: expected {rule.describe()}")
        expected = None
    elif default is not None:
        expected = _kind(default)
    else:
        expected = declared[0] if declared else None
    if expected is dict and isinstance(value, dict):
        for sub, v in value.items():
            if isinstance(default, dict) and sub in default:
                _check_value(cfg, f"{key}.{sub}", v, default[sub], raw=_show(v))
        return
    if expected is not None and not _fits(value, expected):
        if expected is str and _kind(value) in (int, float):
            # `out=2024`, `label=2`: Hydra read a number where a path or a name is meant.
            OmegaConf.update(cfg, key, raw.strip().strip("'\""), merge=False)
            return
        like = f" (default {_show(default)})" if default is not None else ""
        got = ("a number with a fraction" if expected is int and _kind(value) is float
               else _TYPE_WORDS.get(_kind(value), type(value).__name__))
        raise ConfigError(f"{key}={shown}: expected {_TYPE_WORDS[expected]}{like}, got {got}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={shown}: expected a finite number")
    problem = rule.range.problem(key.rsplit(".", 1)[-1], value) if rule and rule.range else None
    if problem:
        raise ConfigError(f"{key}={shown} is out of range: {problem}")
