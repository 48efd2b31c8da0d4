"""In-repo JEPA pretraining: masks, predictor, EMA/schedules, model set-up, checkpoints, monitors
and the training loop.

Importing this package is torch-free (`names()`, `load_config()`, `resolve()` read YAML only);
the torch modules (`masks`, `predictor`, `schedules`, `model`, `checkpoints`, `monitors`,
`reporting`, `trainer`) are imported when used. Every key and its default is in
`encoders/jepa/configs/defaults.yaml`; the recipes are the Hydra group `pretrain`
(`encoders/jepa/configs/pretrain/<name>.yaml`); `harness pretrain --config NAME key=value ...`
composes and runs one.
"""
from __future__ import annotations

from .config import (
                     CONFIG_DIR,
                     DEFAULTS_PATH,
                     GROUP,
                     GROUP_DIR,
                     PretrainConfigError,
                     config_path,
                     defaults,
                     names,
                     resolve,
)
from .config import load as load_config

__all__ = ["CONFIG_DIR", "DEFAULTS_PATH", "GROUP", "GROUP_DIR", "PretrainConfigError",
           "config_path", "defaults", "load_config", "names", "resolve"]
