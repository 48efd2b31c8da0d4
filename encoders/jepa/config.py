"""Pretraining configs: one YAML per recipe in `encoders/jepa/configs/` (torch-free).

`names()` lists them, `load(name_or_path)` reads one, `resolve(cfg)` fills defaults and checks
it up front, so a typo or an impossible combination fails before any model is built.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

TARGETS = ("latent", "pixels")
MODALITIES = ("video", "image")
MASK_SIZE_STREAMS = ("shared", "independent")
CHECKPOINT_LAYOUTS = ("release", "plain")

# Every key a config may hold, with its default (None = required or derived).
DEFAULTS: dict[str, Any] = {
    "name": None,
    "encoder": None,                 # registry name (encoders/configs/encoder/<name>.yaml)
    "encoder_overrides": {},         # arch overrides, e.g. {depth: 2}
    "modality": "video",             # video (V-JEPA) | image (I-JEPA: one frame per clip)
    "target": "latent",              # latent (EMA target encoder) | pixels (VideoMAE-style)
    # num_heads "encoder": the encoder's head count, as the release's init_video_model ties them.
    "predictor": {"width": 384, "depth": 12, "num_heads": "encoder", "mlp_ratio": 4.0,
                  "zero_init_mask_tokens": True},
    # After both models are built, every Linear is re-drawn trunc-normal at this std (bias 0) and
    # every LayerNorm reset, as the release's init_video_model does; this undoes the
    # 1/sqrt(2 * layer) rescale of attn.proj / mlp.fc2. null keeps the rescaled construction init.
    "reinit_linear_std": 0.02,
    "masks": None,                   # list of mask configs (see encoders/jepa/masks.py)
    # shared: the block sizes of every mask config come from one generator seeded with the
    # iteration number (the release: correlated across configs, the same on every rank and run);
    # independent: sizes drawn in turn from the run's seeded mask generator.
    "mask_size_stream": "shared",
    # release: encoder / predictor / target_encoder keys under `module.backbone.` and `epoch` =
    # epochs completed, so the release's trainer resumes our checkpoints; plain: bare keys.
    "checkpoint_layout": "release",
    "loss": {"loss_exp": 1.0,
             "normalize_pixels": True},  # pixel targets: standardise each tubelet (VideoMAE)
    "optim": {
        "epochs": 1,
        "steps_per_epoch": None,     # null -> dataset size // global batch (the release's ipe)
        "total_steps": None,         # run length; null -> epochs * steps_per_epoch
        # Schedule length (lr, wd, EMA) = ipe_scale x the run, as the release's ipe_scale: with
        # 1.25 a run stops at 80% of its cosine and EMA ramps. schedule_steps sets it outright.
        "ipe_scale": 1.0,
        "schedule_steps": None,
        "warmup_epochs": 0.0,        # or warmup_steps
        "warmup_steps": None,
        "start_lr": 2.0e-4,
        "lr": 6.25e-4,
        "final_lr": 1.0e-6,
        "predictor_lr_scale": 1.0,   # predictor lr = this x the schedule's lr (release: 1)
        "weight_decay": 0.04,
        "final_weight_decay": 0.4,
        "ema": [0.998, 1.0],
        "clip_grad": 10.0,
        # The release clips only in epochs after the warm-up (`epoch > warmup`, 0-based epoch).
        "clip_grad_after_warmup": True,
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "dtype": "bfloat16",         # autocast dtype on CUDA; CPU runs in float32
    },
    "data": {
        "root": ".",                 # manifests' relative paths resolve against it
        "manifests": [],
        # One sampling weight per manifest (the release's datasets_weights): each epoch draws its
        # clips with replacement, a manifest's share of them equal to its weight's share.
        # null: every video once per epoch, in a seeded shuffle.
        "manifest_weights": None,
        "batch_size": 8,             # per process (the release keeps it under data too)
        "num_frames": None,          # null -> the encoder's
        "frame_step": 4,
        "resolution": None,          # null -> the encoder's
        "num_workers": 0,
        "max_failure_fraction": 0.1,
        "backend": "auto",
        "cache_decoded_mb": 0,       # >0: keep whole decoded videos in RAM (per process/worker)
    },
    "augmentation": {
        "random_resized_crop": {"scale": [0.3, 1.0], "ratio": [0.75, 1.35]},
        "horizontal_flip": True,
    },
    "device": "auto",                # auto -> cuda when available, else cpu
    "checkpoint_every": 100,         # steps
    "log_every": 1,                  # steps between CSV rows
    "monitor_every": 10,             # steps between context_gain measurements (an extra
                                     # predictor pass; other rows leave the column empty)
    "seed": 0,
}


class PretrainConfigError(ValueError):
    """A pretraining config that cannot run; the message says what to change."""


def names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """A registered name (`vjepa_tiny`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    close = difflib.get_close_matches(str(name_or_path), names(), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise PretrainConfigError(
        f"unknown pretraining config {str(name_or_path)!r}.{hint} Known: {', '.join(names())} "
        "(or pass a path to a .yaml file)")


def load(name_or_path: str | Path) -> dict[str, Any]:
    with open(config_path(name_or_path)) as f:
        return yaml.safe_load(f) or {}


def _merge(defaults: Mapping, given: Mapping, where: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        close = {k: difflib.get_close_matches(k, list(defaults), n=1) for k in unknown}
        hints = ", ".join(f"{k} (did you mean {c[0]}?)" if c else k for k, c in close.items())
        raise PretrainConfigError(f"{where}: unknown key(s) {hints}; known: {', '.join(defaults)}")
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if isinstance(defaults.get(key), Mapping) and key != "encoder_overrides" and value is not None:
            if not isinstance(value, Mapping):
                raise PretrainConfigError(f"{where}.{key} must be a mapping, got {value!r}")
            out[key] = _merge(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in and the combination checked; returns a plain dict."""
    out = _merge(DEFAULTS, dict(cfg), "pretrain config")
    label = out.get("name") or "<unnamed>"
    problems = []
    if not out["encoder"]:
        problems.append("`encoder` (a registry name such as vjepa_tiny) is required")
    if out["target"] not in TARGETS:
        problems.append(f"target must be one of {TARGETS}, got {out['target']!r}")
    if out["modality"] not in MODALITIES:
        problems.append(f"modality must be one of {MODALITIES}, got {out['modality']!r}")
    masks = out["masks"]
    if not masks or not isinstance(masks, list):
        problems.append("`masks` must be a non-empty list of mask configs")
    opt = out["optim"]
    if int(out["data"]["batch_size"]) < 1:
        problems.append(f"data.batch_size must be >= 1, got {out['data']['batch_size']}")
    if len(opt["ema"]) != 2:
        problems.append(f"optim.ema must be [start, end], got {opt['ema']}")
    if float(opt["predictor_lr_scale"]) <= 0:
        problems.append(f"optim.predictor_lr_scale must be > 0, got {opt['predictor_lr_scale']}")
    if int(out["checkpoint_every"]) < 1:
        problems.append("checkpoint_every must be >= 1 (steps)")
    if float(opt["ipe_scale"]) <= 0:
        problems.append(f"optim.ipe_scale must be > 0, got {opt['ipe_scale']}")
    if opt["schedule_steps"] is not None and int(opt["schedule_steps"]) < 1:
        problems.append(f"optim.schedule_steps must be >= 1 or null, got {opt['schedule_steps']}")
    heads = out["predictor"]["num_heads"]
    if heads != "encoder" and not (isinstance(heads, int) and heads >= 1):
        problems.append(f"predictor.num_heads must be a positive integer or 'encoder', got {heads!r}")
    std = out["reinit_linear_std"]
    if std is not None and not (isinstance(std, (int, float)) and std > 0):
        problems.append(f"reinit_linear_std must be a positive number or null, got {std!r}")
    for key, allowed in (("mask_size_stream", MASK_SIZE_STREAMS),
                         ("checkpoint_layout", CHECKPOINT_LAYOUTS)):
        if out[key] not in allowed:
            close = difflib.get_close_matches(str(out[key]), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{key} must be one of {', '.join(allowed)}, got {out[key]!r}{hint}")
    weights = out["data"]["manifest_weights"]
    if weights is not None:
        n = len(out["data"]["manifests"] or [])
        if not isinstance(weights, list) or len(weights) != n:
            problems.append(f"data.manifest_weights needs one weight per manifest ({n}), got {weights!r}")
        elif any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
            problems.append(f"data.manifest_weights must be >= 0 with a positive sum, got {weights}")
    if problems:
        raise PretrainConfigError(f"pretraining config {label!r}: " + "; ".join(problems))
    return out
