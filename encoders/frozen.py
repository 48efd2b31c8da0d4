"""`FrozenEncoder`: a backbone in eval mode without gradients, plus its spec and provenance."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from .backbone import build_backbone, convert_state
from .checkpoint import load_encoder_state, load_state_strict
from .errors import CheckpointError
from .families import hint
from .hf import plain_config, resolve_config
from .registry import default_checkpoint, validate_config
from .spec import EncoderSpec

DEFAULT_SEED = 0


class FrozenEncoder(nn.Module):
    """Wraps a backbone for frozen evaluation: `(B, 3, T, H, W)` normalised video -> tokens `(B, N, D)`.

    Image encoders see each frame on its own (frames folded into the batch) and return every
    frame's tokens concatenated along N, frame-major.
    """

    def __init__(self, backbone: nn.Module, spec: EncoderSpec, checkpoint_info: Mapping[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.checkpoint_info = dict(checkpoint_info or {})
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenEncoder":
        # Frozen means frozen: a probe trainer calling model.train() must not switch on dropout,
        # drop-path or anything else in the backbone.
        return super().train(False)

    @torch.no_grad()
    def forward(self, video: torch.Tensor, out_layers: Sequence[int] | None = None):
        """Tokens (B, N, D); with `out_layers`, a list of those blocks' normed outputs instead."""
        if video.ndim != 5 or video.shape[1] != len(self.spec.mean):
            raise ValueError(
                f"encoder {self.spec.name!r} expects normalised video (B, {len(self.spec.mean)}, T, H, W), "
                f"got shape {tuple(video.shape)}"
            )
        if self.spec.modality == "video":
            return self.backbone(video, out_layers=out_layers)
        b, c, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)  # fold time into the batch

        def unfold(tokens: torch.Tensor) -> torch.Tensor:  # (B*T, n, D) -> (B, T*n, D), frame-major
            return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])

        out = self.backbone(frames, out_layers=out_layers)
        return [unfold(o) for o in out] if out_layers is not None else unfold(out)

    def extra_repr(self) -> str:
        src = "random init" if self.checkpoint_info.get("random_init") else self.checkpoint_info.get("path")
        return f"name={self.spec.name!r}, modality={self.spec.modality!r}, weights={src}"


def from_config(cfg: Mapping[str, Any], checkpoint: str | Path | None = None, *, checkpoint_key: str | None = None,
                trust_checkpoint: bool = False, random_init: bool = False, seed: int | None = None) -> FrozenEncoder:
    """Build the encoder a composed config describes, with weights from `checkpoint` or a seeded random init.

    `checkpoint_key` defaults to the config's `checkpoint_key`. Fields `checkpoint`,
    `trust_checkpoint`, `random_init` and `seed` in `cfg` are used when the arguments are not given,
    so a Hydra-composed encoder group may carry them. A Hugging Face folder's `config.json` sets the
    architecture (`hf.resolve_config`, idempotent: a config the caller resolved stays as it is).
    `checkpoint_info["sha256"]` is of the bytes loaded (see `checkpoint_files`).
    """
    cfg = validate_config(plain_config(cfg))
    checkpoint = checkpoint if checkpoint is not None else cfg.get("checkpoint")
    trust_checkpoint = bool(trust_checkpoint or cfg.get("trust_checkpoint", False))
    random_init = bool(random_init or cfg.get("random_init", False))
    seed = seed if seed is not None else cfg.get("seed")
    if checkpoint is None and not random_init:
        checkpoint = default_checkpoint(cfg)  # weights shipped in an installed package, if any
    if checkpoint is not None and random_init:
        raise ValueError(f"encoder {cfg['name']!r}: pass either a checkpoint or --random-init, not both")
    if checkpoint is None and not random_init:
        raise ValueError(
            f"encoder {cfg['name']!r} needs weights: pass --checkpoint PATH (checkpoint=...) to load a trained "
            "encoder, or --random-init (random_init=True) to evaluate a randomly initialised one"
        )
    if checkpoint is not None:
        cfg = validate_config(resolve_config(cfg, checkpoint))
    spec = EncoderSpec.from_config(cfg)

    if random_init:
        seed = DEFAULT_SEED if seed is None else int(seed)
        # Seeded on a forked RNG: the same seed gives the same weights, and the caller's RNG
        # stream is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = build_backbone(cfg)
        info = {"path": None, "sha256": None, "key": None, "random_init": True, "seed": seed}
        return FrozenEncoder(backbone, spec, info)

    key = checkpoint_key if checkpoint_key is not None else cfg.get("checkpoint_key")
    state, info = load_encoder_state(checkpoint, key=key, trust=trust_checkpoint)
    # Build on the meta device when the builder allows: every tensor comes from the checkpoint,
    # so a ViT-H is not randomly initialised only to be overwritten.
    raw = state
    backbone = build_backbone(cfg, device="meta")
    try:
        # timm-style: a family's converter maps its release layout onto our module, in one place.
        load_state_strict(backbone, convert_state(cfg, state, model=backbone), info)
    except CheckpointError as err:
        # A file of another family (a VideoMAE file given to vjepa_vitl): name the entry, or the
        # overrides, it was tried against and fits.
        extra = hint(raw, exclude=cfg["name"], requested=cfg, key=info.get("key"))
        if extra:
            raise CheckpointError(f"{err}\n  {extra}") from None
        raise
    # Parameters and *all* buffers: a non-persistent buffer (e.g. a relative-position index)
    # is not in state_dict() and would stay empty on meta without an error.
    if any(t.is_meta for t in itertools.chain(backbone.parameters(), backbone.buffers())):
        raise RuntimeError(f"encoder {cfg['name']!r}: builder left tensors on the meta device after loading")
    info["random_init"] = False
    return FrozenEncoder(backbone, spec, info)
