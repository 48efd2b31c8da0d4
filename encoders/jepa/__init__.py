"""In-repo JEPA pretraining: masks, predictor, EMA/schedules and the trainer.

Importing this package is torch-free (`names()`, `load_config()` read YAML only); the torch
modules (`masks`, `predictor`, `schedules`, `trainer`) are imported when used.
Recipes live in `encoders/jepa/configs/<name>.yaml`; `harness pretrain --config NAME` runs one.
"""
from __future__ import annotations

from .config import CONFIG_DIR, PretrainConfigError, config_path, names, resolve
from .config import load as load_config

__all__ = ["CONFIG_DIR", "PretrainConfigError", "config_path", "load_config", "names", "resolve"]
