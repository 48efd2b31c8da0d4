"""The encoder registry: one YAML file per encoder in `configs/encoder/` (torch-free).

The config directory *is* the registry (it doubles as the Hydra group `encoder`), so listing
encoders or reading a config never imports torch; the model code named by `builder`
("module:function") is imported only when an encoder is built. `encoders.build` (the package)
composes a config here and builds it with `encoders.frozen`; this module imports no model code.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any, Callable, Mapping

from common.bounded import load_yaml
from common.names import did_you_mean, unknown

from .errors import UnknownNameError  # noqa: F401  (re-exported)

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "encoder"

REQUIRED_KEYS = ("name", "modality", "builder", "arch", "mean", "std")
TOP_LEVEL_KEYS = frozenset(REQUIRED_KEYS + ("family", "description", "checkpoint_key", "checkpoint_filter",
                                            "default_checkpoint", "metadata"))
REQUIRED_ARCH_KEYS = ("embed_dim", "depth", "num_heads", "patch_size", "resolution")
# Keys the ViT builders understand; a flat override such as `num_frames=4` goes into `arch`.
ARCH_KEYS = frozenset(REQUIRED_ARCH_KEYS + (
    "mlp_ratio", "tubelet_size", "num_frames", "uniform_power", "qkv_bias", "in_chans",
    "drop_path_rate", "init_std", "use_rope", "mlp_hidden_dim", "cos_attn", "init_values", "norm_eps",
    "final_norm", "final_norm_eps",
))
METADATA_KEYS = ("paper", "weights", "licence", "pretraining_data", "notes")


def names() -> list[str]:
    """Registered encoder names (the YAML stems), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _unknown(name: str, choices: list[str], what: str = "encoder") -> UnknownNameError:
    return unknown(what, name, choices, n=5)


def config(name: str) -> dict[str, Any]:
    """The registered config of `name` as a plain dict (a fresh copy each call).

    `timm:<model_name>` is any timm image model, run frame by frame; its config is read from
    timm (no network; imports torch and timm, unlike the YAML entries)."""
    if str(name).startswith("timm:"):
        from .timm_image import timm_config

        return timm_config(name)
    path = CONFIG_DIR / f"{name}.yaml"
    if not name or "/" in name or not path.is_file():
        raise _unknown(name, names())
    cfg = load_yaml(path, what=f"encoder config {path}") or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: an encoder config is a mapping of keys ({', '.join(REQUIRED_KEYS)}, "
                         f"...), got {type(cfg).__name__}")
    if cfg.get("name", name) != name:
        raise ValueError(f"{path}: 'name: {cfg['name']}' does not match the file name {name!r}")
    cfg.setdefault("name", name)
    return cfg


def _merged(conf, update: Mapping[str, Any]):
    """`update` merged into the OmegaConf node `conf` (mappings merge key by key; anything else,
    lists included, replaces), the one merge the harness uses for configs."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(conf, OmegaConf.create(dict(update), flags={"allow_objects": True}))


def apply_overrides(cfg: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """`overrides` merged into a copy of `cfg` (with OmegaConf, as Hydra merges the config groups).

    Architecture keys may be given flat (`num_frames=4`) or nested (`arch={"num_frames": 4}`);
    anything else must be a known top-level key (a typo is an error naming close keys, not a
    silently ignored setting).
    """
    from omegaconf import OmegaConf

    base = copy.deepcopy(dict(cfg))
    base.setdefault("arch", {})
    conf = OmegaConf.create(base, flags={"allow_objects": True})
    for key, value in overrides.items():
        arch = conf.get("arch") or {}
        if key == "arch":
            if not isinstance(value, Mapping):
                raise ValueError(f"override arch= must be a mapping, got {type(value).__name__}")
            conf = _merged(conf, {"arch": value})
        elif key in arch or key in ARCH_KEYS:
            conf = _merged(conf, {"arch": {key: value}})
        elif key in conf or key in TOP_LEVEL_KEYS:
            conf = _merged(conf, {key: value})
        else:
            choices = sorted(set(conf) | set(arch) | TOP_LEVEL_KEYS | ARCH_KEYS)
            raise ValueError(f"unknown encoder setting {key!r}.{did_you_mean(key, choices)} "
                             f"Known settings: {', '.join(choices)}.")
    return OmegaConf.to_container(conf, resolve=False)


def validate_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check a composed encoder config up front, with messages that say what is wrong."""
    cfg = dict(cfg)
    label = cfg.get("name", "<unnamed>")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"encoder config {label!r} lacks required keys: {', '.join(missing)}")
    arch = cfg["arch"]
    if not isinstance(arch, Mapping):
        raise ValueError(f"encoder config {label!r}: 'arch' must be a mapping")
    missing = [k for k in REQUIRED_ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f"encoder config {label!r}: arch lacks {', '.join(missing)}")
    if cfg["modality"] not in ("video", "image"):
        raise ValueError(f"encoder config {label!r}: modality must be 'video' or 'image', got {cfg['modality']!r}")
    d, h, p, r = (int(arch[k]) for k in ("embed_dim", "num_heads", "patch_size", "resolution"))
    t, f = int(arch.get("tubelet_size", 1)), int(arch.get("num_frames", 1))
    problems = []
    if d % h:
        problems.append(f"embed_dim {d} is not divisible by num_heads {h}")
    if r % p:
        problems.append(f"resolution {r} is not a multiple of patch_size {p}")
    if cfg["modality"] == "video" and f % t:
        problems.append(f"num_frames {f} is not a multiple of tubelet_size {t}")
    if cfg["modality"] == "image" and (t != 1 or f != 1):
        problems.append(f"an image encoder needs tubelet_size 1 and num_frames 1 (got {t} and {f}); "
                        "it runs frame by frame on video")
    for k in ("mean", "std"):
        if len(cfg[k]) != int(arch.get("in_chans", 3)):
            problems.append(f"{k} has {len(cfg[k])} values for {arch.get('in_chans', 3)} channels")
    if ":" not in str(cfg["builder"]):
        problems.append(f"builder {cfg['builder']!r} must be 'module:function'")
    if problems:
        raise ValueError(f"encoder config {label!r}: " + "; ".join(problems))
    check_metadata(label, cfg.get("metadata"))
    return cfg


def check_metadata(label: str, metadata: Any) -> dict[str, str]:
    """An entry's `metadata:` mapping (paper, weights, licence, ...) as strings; unknown keys are errors."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"encoder config {label!r}: metadata must be a mapping of "
                         f"{', '.join(METADATA_KEYS)}")
    unknown_keys = sorted(set(metadata) - set(METADATA_KEYS))
    if unknown_keys:
        raise ValueError(f"encoder config {label!r}: unknown metadata key(s) {', '.join(unknown_keys)}; "
                         f"allowed: {', '.join(METADATA_KEYS)}")
    return {str(k): str(v) for k, v in metadata.items()}


def resolve_target(target: str) -> Callable[..., Any]:
    """Import the lazy target "package.module:function"."""
    module_name, _, attr = str(target).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r} for target {target!r}: {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no attribute {attr!r} (target {target!r})") from None


def compose(name: str, **overrides: Any) -> dict[str, Any]:
    """The registered config of `name` with `overrides` merged and validated."""
    return validate_config(apply_overrides(config(name), **overrides))


def default_checkpoint(name_or_cfg) -> Path | None:
    """Weights that ship inside an installed package, named by `default_checkpoint` in the config.

    `{package: NAME, path: relative/file}` is looked up with importlib's finder, which locates the
    package without importing (running) it; None when the config names none or it is not installed.
    """
    import importlib.util

    cfg = config(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    entry = cfg.get("default_checkpoint")
    if not entry:
        return None
    try:
        spec = importlib.util.find_spec(entry["package"])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry["path"]
    return path if path.is_file() else None
