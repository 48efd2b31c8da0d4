"""Compose a pretraining config with Hydra, as `harness run` composes a run.

The primary config is `encoders/jepa/configs/defaults.yaml` (every key with its default); its
defaults list puts one option of the group `pretrain` (`encoders/jepa/configs/pretrain/`) over
it at the top level, so `harness pretrain --config ijepa_tiny optim.total_steps=200` is the
Hydra composition `pretrain@_global_=ijepa_tiny optim.total_steps=200`. The result goes through
`encoders.jepa.resolve`, which checks it (unknown keys with a did-you-mean, types, ranges).

Overrides use Hydra's grammar (`key=value`, lists `[a,b]`, `~key` to drop a value back to its
default). Every value is set with Hydra's add-or-override (`++key=value`), because the keys are
checked against defaults.yaml afterwards, where an unknown one gets a did-you-mean, and the
keys under `encoder_overrides` are free (any arch key of the encoder); `+key=value` works too.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# The defaults-list entry a recipe is selected through (the package puts it at the top level).
SELECT = "pretrain@_global_"
# The option name a recipe given as a file path is stored under in Hydra's ConfigStore.
FILE_OPTION = "_file_"


def _split(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the recipe a `pretrain=NAME` override selects, the other overrides)."""
    from encoders.jepa import GROUP, PretrainConfigError

    chosen, rest = None, []
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq and not key.startswith("~"):
            raise PretrainConfigError(f"overrides must be key=value, got {item!r}")
        if key.lstrip("+") in (GROUP, SELECT):
            chosen = value.strip("'\"")
        else:
            rest.append(item)
    return chosen, rest


def _hydra_override(item: str) -> str:
    key = item.partition("=")[0]
    if key.startswith(("~", "++", "hydra.")):
        return item
    return "++" + item.lstrip("+")


def compose_pretrain_config(config: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """The recipe `config` (a name of the group `pretrain`, or a path to a YAML file; default
    vjepa_tiny) over the defaults, with Hydra `key=value` overrides applied; checked, a plain
    dict. A `pretrain=NAME` override selects the recipe as `config` does."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from encoders.jepa import CONFIG_DIR, PretrainConfigError, config_path, resolve
    from encoders.jepa.config import DEFAULTS_NAME, GROUP, is_path

    chosen, rest = _split(overrides)
    if chosen is not None and config is not None and str(config) != chosen:
        raise PretrainConfigError(f"two pretraining configs given: --config {config} and "
                                  f"{GROUP}={chosen}; give one")
    config = str(config if config is not None else chosen or "vjepa_tiny")
    path = config_path(config)  # an unknown name or a missing file: a did-you-mean error here
    option = config
    if is_path(config):
        # A recipe outside the group: stored as an option of it, so Hydra composes it the same way.
        from hydra.core.config_store import ConfigStore

        ConfigStore.instance().store(name=FILE_OPTION, node=OmegaConf.load(path), group=GROUP)
        option = FILE_OPTION
    hydra_overrides = [f"{SELECT}={option}", *(_hydra_override(o) for o in rest)]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose(DEFAULTS_NAME, overrides=hydra_overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise PretrainConfigError(
            f"could not compose pretraining config {config!r} with overrides {list(rest)}: {err}\n"
            "Overrides are Hydra's key=value; quote a value with characters such as ~ ( ) or "
            "spaces: data.root='~/data' (and put the whole override in quotes for the shell)"
        ) from err
    return resolve(OmegaConf.to_container(cfg, resolve=True))


__all__ = ["compose_pretrain_config"]
