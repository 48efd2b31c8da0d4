"""Compose a run's configuration with Hydra.

The encoder, task and probe groups live beside the code they configure; this module is the one
place that knows where, and puts those folders on Hydra's search path so that
`encoder=vjepa_vitl task=ssv2 probe=linear task.optim.lr=3e-4` all work as plain overrides.
"""
from __future__ import annotations

import difflib
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
    names = group_names(group)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown {group} '{name}'.{hint} Known {group}s: {', '.join(names)}")


def compose_run(overrides: list[str] = ()) -> "DictConfig":  # noqa: F821
    """Compose harness/configs/run.yaml with the given Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    # `encoder=timm:<model>` is not a file of the encoder group: compose with the default and
    # put timm's config in its place, then re-apply the encoder.* overrides on top of it.
    timm_name = None
    for item in list(overrides):
        key, _, value = item.partition("=")
        if key == "encoder" and value.strip("'\"").startswith("timm:"):
            timm_name = value.strip("'\"")
            overrides.remove(item)
    if timm_name is not None:
        cfg = compose_run([o for o in overrides if not o.startswith("encoder.")])
        from omegaconf import OmegaConf, open_dict

        import encoders

        try:
            node = encoders.config(timm_name)
        except Exception as err:  # UnknownNameError lists close timm names
            raise ConfigError(str(err)) from None
        with open_dict(cfg):
            cfg.encoder = OmegaConf.create(node)
            for item in overrides:
                if item.startswith("encoder."):
                    key, _, value = item.partition("=")
                    import yaml

                    OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None,
                                     force_add=True)
        return cfg
    for item in overrides:
        key, _, value = item.partition("=")
        if key in GROUP_DIRS and value:
            check_name(key, value)
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


def to_container(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)
