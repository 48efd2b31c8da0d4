"""Pretraining configs (torch-free): every key and its default in `configs/defaults.yaml`, one
recipe per file of the Hydra group `configs/pretrain/`.

`names()` lists the recipes, `load(name_or_path)` reads one recipe file as it is, and
`resolve(cfg)` puts a config (a recipe, a Hydra-composed config, or a dict built in code) over
the defaults (OmegaConf's merge) and checks it up front: unknown keys with a did-you-mean, each
value's type against its default's, ranges and combinations. A typo or an impossible
combination fails before any model is built. `harness pretrain` composes with Hydra
(`harness/pretrain_config.py`) and then calls `resolve` on the result.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.names import close_matches, did_you_mean

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULTS_NAME = "defaults"          # the primary config: configs/defaults.yaml
GROUP = "pretrain"                  # the recipes: configs/pretrain/<name>.yaml
GROUP_DIR = CONFIG_DIR / GROUP
DEFAULTS_PATH = CONFIG_DIR / f"{DEFAULTS_NAME}.yaml"

TARGETS = ("latent", "pixels")
MODALITIES = ("video", "image")
MASK_SIZE_STREAMS = ("shared", "independent")
CHECKPOINT_LAYOUTS = ("release", "plain")
DTYPES = ("bfloat16", "float16", "float32")

# Keys whose value must be one of a few words.
CHOICES = {"target": TARGETS, "modality": MODALITIES, "mask_size_stream": MASK_SIZE_STREAMS,
           "checkpoint_layout": CHECKPOINT_LAYOUTS, "optim.dtype": DTYPES}
# Keys whose default is null, and what they take otherwise (float: any number).
NULL_DEFAULT_TYPES = {
    "name": str, "encoder": str, "masks": list, "optim.steps_per_epoch": int,
    "optim.total_steps": int, "optim.schedule_steps": float, "optim.warmup_steps": int,
    "data.manifest_weights": list, "data.num_frames": int, "data.resolution": int,
}
# Keys with a non-null default that null also turns off (the code that reads them says how).
MAY_BE_NULL = {"reinit_linear_std", "optim.clip_grad", "augmentation.random_resized_crop",
               "data.root", "data.manifests", "data.backend", "data.cache_decoded_mb"}
# Keys that take more than their default's type.
WIDER_TYPES = {"data.cache_decoded_mb": float, "optim.epochs": float}
# Keys whose value the combination checks judge (a word or a number).
CHECKED_LATER = {"predictor.num_heads"}
# Mappings whose keys are free (checked by what reads them: the encoder registry).
FREE_FORM = {"encoder_overrides"}
# (low, low inclusive, high, high inclusive) of the numbers; None: unbounded on that side.
RANGES = {
    "reinit_linear_std": (0, False, None, False),
    "predictor.width": (1, True, None, False),
    "predictor.depth": (1, True, None, False),
    "predictor.mlp_ratio": (0, False, None, False),
    "loss.loss_exp": (0, False, None, False),
    "optim.epochs": (0, False, None, False),
    "optim.steps_per_epoch": (1, True, None, False),
    "optim.total_steps": (1, True, None, False),
    "optim.ipe_scale": (0, False, None, False),
    "optim.schedule_steps": (1, True, None, False),
    "optim.warmup_epochs": (0, True, None, False),
    "optim.warmup_steps": (0, True, None, False),
    "optim.start_lr": (0, True, None, False),
    "optim.lr": (0, False, None, False),
    "optim.final_lr": (0, True, None, False),
    "optim.predictor_lr_scale": (0, False, None, False),
    "optim.weight_decay": (0, True, None, False),
    "optim.final_weight_decay": (0, True, None, False),
    "optim.clip_grad": (0, False, None, False),
    "optim.eps": (0, False, None, False),
    "data.batch_size": (1, True, None, False),
    "data.num_frames": (1, True, None, False),
    "data.frame_step": (1, True, None, False),
    "data.resolution": (1, True, None, False),
    "data.num_workers": (0, True, None, False),
    "data.max_failure_fraction": (0, True, 1, True),
    "data.cache_decoded_mb": (0, True, None, False),
    "checkpoint_every": (1, True, None, False),
    "log_every": (1, True, None, False),
    "monitor_every": (1, True, None, False),
    "seed": (0, True, None, False),
}
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


class PretrainConfigError(ValueError):
    """A pretraining config that cannot run; the message says what to change."""


def names() -> list[str]:
    """The recipes of the group `pretrain`."""
    return sorted(p.stem for p in GROUP_DIR.glob("*.yaml"))


def is_path(name_or_path: str | Path) -> bool:
    """Whether `--config` names a YAML file rather than a recipe of the group."""
    return Path(name_or_path).suffix in (".yaml", ".yml")


def config_path(name_or_path: str | Path) -> Path:
    """A recipe's name (`vjepa_tiny`) or a path to a YAML file -> the file. A file given by
    path is returned only once its YAML is within the parsing budget (`read_yaml`), so the
    composition that reads it next (Hydra, OmegaConf) never expands an alias bomb."""
    path = Path(name_or_path)
    if is_path(path):
        if path.is_file():
            read_yaml(path)
            return path
        raise PretrainConfigError(f"pretraining config file not found: {path}")
    candidate = GROUP_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise PretrainConfigError(
        f"unknown pretraining config {str(name_or_path)!r}.{did_you_mean(str(name_or_path), names())} "
        f"Known: {', '.join(names())} (or pass a path to a .yaml file)")


def read_yaml(path: str | Path) -> str:
    """The text of a pretraining config file, checked with `common.bounded.load_yaml` (a budget
    of nodes, aliases counted as they would expand, and of depth; a size limit): a few
    kilobytes of nested aliases are refused here, before OmegaConf or Hydra expands them."""
    from common.bounded import BoundedInputError, load_yaml, read_bytes

    what = f"pretraining config {path}"
    try:
        data = read_bytes(path, what=what)
        parsed = load_yaml(data, what=what)
        text = data.decode("utf-8-sig")
    except BoundedInputError as err:
        raise PretrainConfigError(str(err)) from None
    except UnicodeDecodeError as err:
        raise PretrainConfigError(f"{what}: not UTF-8 text (byte 0x{data[err.start]:02x} at "
                                  f"offset {err.start})") from None
    if parsed is not None and not isinstance(parsed, Mapping):
        raise PretrainConfigError(f"pretraining config {path}: a mapping of keys is expected, got "
                                  f"{type(parsed).__name__}")
    return text


def load_node(path: str | Path):
    """A pretraining config file as an OmegaConf node (what `OmegaConf.load` gives), its YAML
    checked by `read_yaml` first."""
    from omegaconf import OmegaConf

    text = read_yaml(path)
    return OmegaConf.create(text) if text.strip() else OmegaConf.create({})


def load(name_or_path: str | Path) -> dict[str, Any]:
    """One recipe file as it is written (no defaults filled): a plain dict."""
    from omegaconf import OmegaConf

    node = load_node(config_path(name_or_path))
    return OmegaConf.to_container(node, resolve=False) or {}


@functools.lru_cache(maxsize=1)
def _defaults_node():
    from omegaconf import OmegaConf

    node = OmegaConf.load(DEFAULTS_PATH)
    node.pop("defaults", None)  # Hydra's defaults list: how a recipe is composed, not a key
    return node


def defaults() -> dict[str, Any]:
    """Every key and its default (configs/defaults.yaml), as a fresh plain dict."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(_defaults_node(), resolve=True)


def resolve(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` over the defaults, checked; returns a plain dict (what checkpoints record)."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    label = given.get("name") or "<unnamed>"
    problems: list[str] = []
    given = _checked(given, defaults(), "", problems)
    if problems:
        raise PretrainConfigError(f"pretraining config {label!r}: " + "; ".join(problems))
    merged = OmegaConf.merge(_defaults_node(), OmegaConf.create(given))
    out = OmegaConf.to_container(merged, resolve=True)
    _check_values(out, problems)
    if problems:
        raise PretrainConfigError(f"pretraining config {label!r}: " + "; ".join(problems))
    return out


# ----- checks ---------------------------------------------------------------------------------
def _kind(value) -> type | None:
    for t in (bool, int, float, str, list, dict):  # bool before int: True is an int in Python
        if isinstance(value, t):
            return t
    if isinstance(value, tuple):  # a config built in code may hold (0.9, 0.999)
        return list
    return dict if isinstance(value, Mapping) else None


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)


def _checked(given: Mapping, schema: Mapping, where: str, problems: list[str]) -> dict:
    """`given` with unknown keys and mistyped values reported; a number given for a string key
    (`data.root=2024`, as Hydra reads it) becomes that string."""
    out = {}
    for key, value in given.items():
        path = f"{where}{key}"
        if key not in schema:
            hint = did_you_mean(str(key), list(schema), n=1)
            known = f" Known keys{' of ' + where[:-1] if where else ''}: {', '.join(schema)}."
            problems.append(f"unknown key {path}.{hint}{known}")
            continue
        default = schema[key]
        if isinstance(default, dict) and isinstance(value, Mapping) and path not in FREE_FORM:
            out[key] = _checked(value, default, f"{path}.", problems)
            continue
        expected = (WIDER_TYPES.get(path) or _kind(default) if default is not None
                    else NULL_DEFAULT_TYPES.get(path))
        if value is None:
            if default is not None and path not in MAY_BE_NULL:
                takes = (f"a mapping of {', '.join(default)}" if isinstance(default, dict)
                         else f"default {_show(default)}")
                problems.append(f"{path} may not be null ({takes})")
            out[key] = value
            continue
        got = _kind(value)
        if expected is None or path in CHECKED_LATER:
            out[key] = value
            continue
        if expected is str and got in (int, float):
            value, got = str(value), str
        if not (got is expected or (expected is float and got is int)):
            what = ("a number with a fraction" if expected is int and got is float
                    else _TYPE_WORDS.get(got, type(value).__name__))
            like = f" (default {_show(default)})" if default is not None else ""
            problems.append(f"{path}={_show(value)}: expected {_TYPE_WORDS[expected]}{like}, "
                            f"got {what}")
            continue
        if got is float and not math.isfinite(value):
            problems.append(f"{path}={value}: expected a finite number")
            continue
        out[key] = value
    return out


def _get(cfg: Mapping, path: str):
    node = cfg
    for part in path.split("."):
        node = node[part]
    return node


def _check_values(out: dict, problems: list[str]) -> None:
    """Ranges, choices and what no single value says (a list's length, a required key)."""
    for path, (low, low_in, high, high_in) in RANGES.items():
        value = _get(out, path)
        if value is None or isinstance(value, bool):
            continue
        below = low is not None and (value < low or (value == low and not low_in))
        above = high is not None and (value > high or (value == high and not high_in))
        if below or above:
            lo = "" if low is None else f"{low} {'<=' if low_in else '<'} "
            hi = "" if high is None else f" {'<=' if high_in else '<'} {high}"
            problems.append(f"{path}={value} is out of range: expected {lo}"
                            f"{path.rsplit('.', 1)[-1]}{hi}")
    for path, allowed in CHOICES.items():
        value = _get(out, path)
        if value not in allowed:
            close = close_matches(str(value), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{path} must be one of {', '.join(allowed)}, got {value!r}{hint}")
    if not out["encoder"]:
        problems.append("`encoder` (a registry name such as vjepa_tiny) is required")
    masks = out["masks"]
    if not masks or not isinstance(masks, list) or not all(isinstance(m, dict) for m in masks):
        problems.append("`masks` must be a non-empty list of mask configs (mappings)")
    opt = out["optim"]
    if len(opt["ema"]) != 2:
        problems.append(f"optim.ema must be [start, end], got {opt['ema']}")
    if len(opt["betas"]) != 2:
        problems.append(f"optim.betas must be [beta1, beta2], got {opt['betas']}")
    heads = out["predictor"]["num_heads"]
    if heads != "encoder" and not (_kind(heads) is int and heads >= 1):
        problems.append(f"predictor.num_heads must be a positive integer or 'encoder', got {heads!r}")
    rrc = out["augmentation"]["random_resized_crop"]
    if rrc is not None and (len(rrc["scale"]) != 2 or len(rrc["ratio"]) != 2):
        problems.append(f"augmentation.random_resized_crop needs scale and ratio as [low, high], "
                        f"got {rrc}")
    weights = out["data"]["manifest_weights"]
    if weights is not None:
        n = len(out["data"]["manifests"] or [])
        if len(weights) != n:
            problems.append(f"data.manifest_weights needs one weight per manifest ({n}), got {weights!r}")
        elif (any(_kind(w) not in (int, float) or w < 0 for w in weights)
              or sum(weights) <= 0):
            problems.append(f"data.manifest_weights must be >= 0 with a positive sum, got {weights}")
