"""Any timm image model as a frame-wise encoder: `timm:<model_name>` with a local weights file.

* `timm_config(name)` makes the encoder config of `timm:<model_name>` (a `model_name[.tag]` timm
  knows; the tag picks the pretrained config whose normalisation is used) from the model built on
  the meta device and its pretrained config. Nothing is downloaded: `pretrained=False` always,
  and the mean/std come from `timm.data.resolve_model_data_config` (the pretrained config, local).
* `build_timm(cfg, device=None)` makes `timm.create_model(name, pretrained=False, num_classes=0)`
  wrapped in `TimmTokens`: tokens are `forward_features` without prefix (cls / register / distill)
  tokens, a CNN's (or NHWC model's) last feature map flattened row-major; `out_layers` come from
  `forward_intermediates(norm=True)` (each block or stage; ViTs apply their final norm, like
  `encoders.vit.VisionTransformer`'s taps). Models that support it are built with
  `dynamic_img_size=True`, so their position table keeps the checkpoint's size (`arch.img_size`)
  and is resampled per forward (timm's bicubic) for other input sizes. Models with computed,
  non-persistent buffers (Swin's relative-position index and masks, ...) are built on the CPU even
  when the loader asks for meta, since no checkpoint holds those buffers.
* `checkpoint_filter(state, model=None)` fits a state dict as timm saves it (`model.state_dict()`,
  e.g. a hub `model.safetensors`) to `TimmTokens`: the ImageNet classifier is dropped (the encoder
  is built headless) and keys get the wrapper's `model.` prefix. Given the built model it is exact
  (the classifier names of that model's pretrained config, then timm's own `checkpoint_filter_fn`
  for the model's module, which also converts original release layouts such as DINOv2 / OpenAI
  CLIP and resamples position tables); without, the classifier is recognised by the names timm
  models use for it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from common.names import close_matches

from .errors import UnknownNameError

PREFIX = "timm:"
WRAPPED = "model."  # TimmTokens keeps the timm model as `self.model`
# Classifier modules of timm models (their pretrained configs' `classifier` entries); only their
# `.weight` / `.bias` are dropped, so e.g. ConvNeXt's `head.norm` (kept headless) stays.
CLASSIFIER_NAMES = (
    "head", "head.fc", "head.fc2", "head.fc.fc2", "head.linear", "head.l", "head.proj", "head.head.l",
    "head.head_dist.l", "head.classifier.4", "head.classifier.linear", "head_dist", "head_dist.linear",
    "aux_head", "classifier", "classif", "fc", "last_linear",
    *(f"heads.{i}" for i in range(4)), *(f"heads_dist.{i}" for i in range(4)),
)


def model_name_of(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def _unknown(model_name: str) -> UnknownNameError:
    import timm

    base = model_name.split(".")[0]
    if timm.is_model(base):  # a known architecture with a tag timm does not have
        choices = timm.list_pretrained(f"{base}.*")
        close = tuple(close_matches(model_name, choices, n=5, cutoff=0.0))
        hint = f" Its tags: {', '.join(PREFIX + c for c in choices)}." if choices else " It has no pretrained tags."
        return UnknownNameError(f"unknown timm pretrained tag {model_name!r}.{hint}",
                                name=PREFIX + model_name, close=tuple(PREFIX + c for c in close))
    choices = timm.list_models()
    close = tuple(close_matches(base, choices, n=5, cutoff=0.6))
    hint = f" Did you mean: {', '.join(PREFIX + c for c in close)}?" if close else ""
    return UnknownNameError(f"unknown timm model {model_name!r}.{hint} (timm.list_models() lists them.)",
                            name=PREFIX + model_name, close=tuple(PREFIX + c for c in close))


def _create(model_name: str, device=None, **kwargs: Any) -> nn.Module:
    """`timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)` on `device`."""
    import timm

    base, _, tag = model_name.partition(".")
    if not timm.is_model(base) or (tag and model_name not in timm.list_pretrained(f"{base}.*")):
        raise _unknown(model_name)
    args = dict(pretrained=False, num_classes=0, **kwargs)
    if device is None:
        return timm.create_model(model_name, **args)
    try:
        return timm.create_model(model_name, device=device, **args)
    except TypeError as e:  # an older model class without device=: build under a device context
        if "device" not in str(e):
            raise
        with torch.device(device):
            return timm.create_model(model_name, **args)


def _has_non_persistent_buffers(model: nn.Module) -> bool:
    return any(m._non_persistent_buffers_set for m in model.modules())


@functools.lru_cache(maxsize=64)
def _model_facts(model_name: str) -> tuple[frozenset[str], bool]:
    """(named constructor arguments of the model's class, whether it has non-persistent buffers).

    A subclass whose `__init__` takes `**kwargs` (e.g. the distilled ViT) passes them on, so its
    bases' arguments count too.
    """
    model = _create(model_name, device="meta")
    names: set[str] = set()
    for cls in type(model).__mro__:
        if cls is nn.Module or "__init__" not in vars(cls):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return frozenset(names), _has_non_persistent_buffers(model)


def _init_params(model_name: str) -> frozenset[str]:
    return _model_facts(model_name)[0]


def _num_heads(model: nn.Module, dim: int) -> int:
    heads = [m.num_heads for m in model.modules() if isinstance(getattr(m, "num_heads", None), int)]
    if heads and heads[-1] > 0 and dim % heads[-1] == 0:
        return heads[-1]  # the last attention (the last stage of a hierarchical model)
    # A CNN has none; this is for the attentive probe: 64-wide heads where they fit.
    if dim % 64 == 0:
        return dim // 64
    return next(h for h in (8, 6, 4, 3, 2, 1) if dim % h == 0)


def _patch_size(model: nn.Module) -> int:
    info = getattr(model, "feature_info", None)
    if info:
        return int(info[-1]["reduction"])
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        raise ValueError(f"cannot tell the output stride of timm model {type(model).__name__}")
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def _depth(model: nn.Module) -> int:
    info = getattr(model, "feature_info", None)
    if info:
        return len(info)  # the indices forward_intermediates takes (blocks of a ViT, stages of a CNN)
    blocks = getattr(model, "blocks", None)
    return len(blocks) if blocks is not None else 1


def timm_config(name: str) -> dict[str, Any]:
    """The encoder config of `timm:<model_name>` (prefix optional), read from timm without network."""
    from timm.data import resolve_model_data_config

    model_name = model_name_of(name)
    model = _create(model_name, device="meta")
    data = resolve_model_data_config(model)
    _, h, w = data["input_size"]
    if h != w:
        raise ValueError(f"timm model {model_name!r} has a non-square input size {data['input_size']}; "
                         "the harness's encoders take square inputs")
    pcfg = dict(getattr(model, "pretrained_cfg", None) or {})
    dim = int(model.num_features)
    arch: dict[str, Any] = {
        "timm_model": model_name,
        "embed_dim": dim,
        "depth": _depth(model),
        "num_heads": _num_heads(model, dim),
        "patch_size": _patch_size(model),
        "resolution": int(h),
        "tubelet_size": 1,
        "num_frames": 1,
        "num_prefix_tokens": int(getattr(model, "num_prefix_tokens", 0) or 0),
    }
    if "img_size" in _init_params(model_name):
        arch["img_size"] = int(h)  # the size its position tables are built for (the checkpoint's)
    tag = pcfg.get("tag") or ""
    source = pcfg.get("hf_hub_id") or pcfg.get("url") or "no pretrained weights listed"
    return {
        "name": PREFIX + model_name,
        "family": "timm",
        "modality": "image",
        "builder": "encoders.timm_image:build_timm",
        "checkpoint_filter": "encoders.timm_image:checkpoint_filter",
        "description": (f"timm {pcfg.get('architecture', model_name)}{'.' + tag if tag else ''} frame by frame "
                        f"(weights as timm publishes them: {source}); tokens = forward_features without "
                        f"{arch['num_prefix_tokens']} prefix tokens"),
        "arch": arch,
        "mean": [float(v) for v in data["mean"]],
        "std": [float(v) for v in data["std"]],
    }


class TimmTokens(nn.Module):
    """A headless timm model; (B, 3, H, W) -> (B, N, D) patch / feature-map tokens."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self.output_fmt = str(getattr(model, "output_fmt", "NCHW"))
        self.depth = _depth(model)

    def tokens(self, features: torch.Tensor, fmt: str | None = None) -> torch.Tensor:
        if features.ndim == 3:  # (B, prefix + N, D)
            return features[:, self.num_prefix_tokens:]
        if features.ndim == 4:
            if (fmt or self.output_fmt) == "NHWC":
                return features.reshape(features.shape[0], -1, features.shape[-1])
            return features.flatten(2).transpose(1, 2)
        raise ValueError(f"timm model {type(self.model).__name__} gave features of shape {tuple(features.shape)}")

    def forward(self, x: torch.Tensor, masks=None, out_layers: Sequence[int] | None = None):
        if masks is not None:
            raise ValueError("a timm encoder cannot drop tokens (masks); it is evaluation-only here")
        if x.ndim == 5:
            if x.shape[2] != 1:
                raise ValueError(f"image encoder got {x.shape[2]} frames; FrozenEncoder folds frames into the batch")
            x = x[:, :, 0]
        if out_layers is None:
            return self.tokens(self.model.forward_features(x))
        if not hasattr(self.model, "forward_intermediates"):
            raise ValueError(f"timm model {type(self.model).__name__} has no forward_intermediates; out_layers "
                             "are not available for it")
        bad = [i for i in out_layers if not -self.depth <= i < self.depth]
        if bad:
            raise ValueError(f"out_layers {bad} out of range for a timm model with {self.depth} blocks/stages")
        wanted = [i % self.depth for i in out_layers]
        take = sorted(set(wanted))
        kw = {"indices": take, "output_fmt": "NCHW", "intermediates_only": True}
        if "norm" in inspect.signature(self.model.forward_intermediates).parameters:
            kw["norm"] = True
        outs = self.model.forward_intermediates(x, **kw)
        by_index = {i: self.tokens(o, "NCHW") for i, o in zip(take, outs)}
        return [by_index[i] for i in wanted]  # in the order asked for


def build_timm(cfg: Mapping[str, Any], device=None) -> TimmTokens:
    """The headless timm model of `cfg['arch']['timm_model']` (a composed encoder config)."""
    arch = dict(cfg["arch"])
    model_name = model_name_of(str(arch.get("timm_model") or cfg["name"]))
    accepted = _init_params(model_name)
    kwargs: dict[str, Any] = {}
    if "img_size" in accepted:
        kwargs["img_size"] = int(arch.get("img_size", arch["resolution"]))
    if "dynamic_img_size" in accepted:
        kwargs["dynamic_img_size"] = True
    if int(arch.get("in_chans", 3)) != 3:
        kwargs["in_chans"] = int(arch["in_chans"])
    if device is not None and torch.device(device).type == "meta" and _model_facts(model_name)[1]:
        # Computed, non-persistent buffers (relative-position indices, attention masks) are not
        # in any checkpoint, so a meta model would keep them empty after loading: build it for real.
        device = None
    return TimmTokens(_create(model_name, device=device, **kwargs))


def _timm_filter_fn(model: nn.Module):
    module = sys.modules.get(type(model).__module__) or importlib.import_module(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def checkpoint_filter(state: Mapping[str, torch.Tensor], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A state dict as timm saves it -> `TimmTokens` keys (classifier dropped, `model.` prefix).

    With `model` (the built `TimmTokens` or timm model, meta is fine) the classifier is the one its
    pretrained config names and timm's `checkpoint_filter_fn` of its module runs first (release
    layouts, position-table resampling); without, classifier weights are recognised by name.
    """
    state = dict(state)
    if state and all(k.startswith(WRAPPED) for k in state):
        return state  # already ours (a saved TimmTokens)
    timm_model = model.model if isinstance(model, TimmTokens) else model
    if timm_model is not None:
        fn = _timm_filter_fn(timm_model)
        if fn is not None:
            state = dict(fn(state, timm_model))
        classifier = (getattr(timm_model, "pretrained_cfg", None) or {}).get("classifier") or ()
        names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        own = set(timm_model.state_dict())
        state = {k: v for k, v in state.items()
                 if k in own or not any(k == n or k.startswith(n + ".") for n in names)}
    else:
        drop = {f"{n}.{p}" for n in CLASSIFIER_NAMES for p in ("weight", "bias")}
        state = {k: v for k, v in state.items() if k not in drop}
    return {WRAPPED + k: v for k, v in state.items()}
