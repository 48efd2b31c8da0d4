"""Model set-up of a JEPA pretraining run: the encoder from the registry, the predictor, the
release's re-initialisation, the EMA target, DDP, and the optimiser's parameter groups.

Pixel targets (VideoMAE-style) are here too: what the predictor regresses when `target: pixels`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..registry import compose, resolve_target
from .config import PretrainConfigError
from .predictor import Predictor


def build_encoder_config(cfg: dict) -> dict:
    """The composed registry config of the encoder a pretraining config names."""
    return compose(cfg["encoder"], **dict(cfg.get("encoder_overrides") or {}))


def build_backbone(encoder_cfg: dict) -> nn.Module:
    """The registry's own builder, so pretrained weights load back into `encoders.build`."""
    return resolve_target(encoder_cfg["builder"])(encoder_cfg)


def patchify(clips: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet * patch * patch, C) in the ViT's (t, h, w) token order."""
    b, c, t, h, w = clips.shape
    x = clips.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, T', H', W', tubelet, p, p, C
    return x.reshape(b, -1, tubelet * patch * patch, c)


def pixel_targets(clips: torch.Tensor, patch: int, tubelet: int, normalize: bool = True
                  ) -> torch.Tensor:
    """VideoMAE's normalised-pixel targets: each tubelet's pixels standardised per channel.

    (B, N, tubelet * patch * patch * C). Standardising per tubelet also removes any per-channel
    affine input normalisation, so normalised and raw clips give the same targets.
    `normalize=False` keeps the (input-normalised) pixels as they are.
    """
    x = patchify(clips.float(), patch, tubelet)
    if not normalize:
        return x.flatten(2)
    mean = x.mean(dim=-2, keepdim=True)
    std = x.var(dim=-2, unbiased=True, keepdim=True).sqrt()
    x = (x - mean) / (std + 1e-6)
    return x.flatten(2)


@torch.no_grad()
def reinit_linear(module: nn.Module, std: float = 0.02) -> None:
    """The release's `init_video_model` pass: every Linear trunc-normal(std) with zero bias and
    every LayerNorm (1, 0), in module order. Convolutions keep their construction init."""
    from timm.layers import trunc_normal_

    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class OnlineModel(nn.Module):
    """Context encoder + predictor in one module, so DDP sees one forward and one backward per step."""

    def __init__(self, encoder: nn.Module, predictor: Predictor):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor

    def forward(self, clips: torch.Tensor, contexts: list[torch.Tensor],
                targets: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        out = []
        for i, (context, target_sets) in enumerate(zip(contexts, targets)):
            z = self.encoder(clips, masks=context)
            out.append(self.predictor(z, context, list(target_sets), mask_index=i))
        return out


@dataclass
class Models:
    """What `build_models` makes: the modules of a run and the facts the loop needs of them."""

    online: OnlineModel              # context encoder + predictor (trained)
    target_encoder: nn.Module | None  # the EMA copy (latent targets); None for pixel targets
    model: nn.Module                 # `online`, wrapped in DDP when several processes train
    grid: tuple[int, int, int]       # token grid (t, h, w); (1, h, w) for image encoders
    patch_size: int
    tubelet_size: int                # 1 for image pretraining
    predictor_heads: int


def check_pairing(cfg: dict, encoder_cfg: dict) -> None:
    """Image pretraining needs an image encoder and video a video one."""
    if (encoder_cfg["modality"] == "image") != (cfg["modality"] == "image"):
        raise PretrainConfigError(
            f"pretraining config {cfg['name']!r} has modality {cfg['modality']!r} but "
            f"encoder {encoder_cfg['name']!r} is a {encoder_cfg['modality']} encoder; "
            "pair image pretraining with an image encoder (e.g. ijepa_tiny) and video with video")


def build_models(cfg: dict, encoder_cfg: dict, device: torch.device, world_size: int = 1) -> Models:
    """The encoder, predictor and (latent targets) EMA target of a resolved config.

    Built under `seed` in a forked RNG, so every rank starts from identical weights (DDP also
    broadcasts rank 0's) and the caller's random state is untouched."""
    check_pairing(cfg, encoder_cfg)
    arch = encoder_cfg["arch"]
    image, latent = cfg["modality"] == "image", cfg["target"] == "latent"
    patch_size = int(arch["patch_size"])
    tubelet_size = int(arch.get("tubelet_size", 1)) if not image else 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))
        encoder = build_backbone(encoder_cfg)
        # Image encoders report (h, w); masks and predictor work on (1, h, w).
        grid = tuple(encoder.grid) if len(encoder.grid) == 3 else (1, *encoder.grid)
        pcfg = cfg["predictor"]
        out_dim = (tubelet_size * patch_size ** 2 * int(arch.get("in_chans", 3))
                   if not latent else encoder.embed_dim)
        heads = pcfg["num_heads"]
        heads = int(encoder.num_heads if heads == "encoder" else heads)
        if int(pcfg["width"]) % heads:
            raise PretrainConfigError(
                f"predictor.width {pcfg['width']} is not divisible by its {heads} heads "
                "(predictor.num_heads; 'encoder' takes the encoder's)")
        predictor = Predictor(
            grid, encoder.embed_dim, width=int(pcfg["width"]), depth=int(pcfg["depth"]),
            num_heads=heads, mlp_ratio=float(pcfg["mlp_ratio"]),
            num_mask_tokens=len(cfg["masks"]), out_dim=out_dim,
            uniform_power=bool(arch.get("uniform_power", False)), video=not image,
            zero_init_mask_tokens=bool(pcfg["zero_init_mask_tokens"]))
        std = cfg["reinit_linear_std"]
        if std is not None:
            # In the same seeded stream, after both are built: the release's order.
            reinit_linear(encoder, float(std))
            reinit_linear(predictor, float(std))
    online = OnlineModel(encoder, predictor).to(device)
    target_encoder = None
    if latent:
        target_encoder = copy.deepcopy(online.encoder)
        target_encoder.requires_grad_(False)
    model: nn.Module = online
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(online, device_ids=ids)
        if target_encoder is not None:  # start the EMA from the broadcast weights
            target_encoder.load_state_dict(online.encoder.state_dict())
    return Models(online=online, target_encoder=target_encoder, model=model, grid=grid,
                  patch_size=patch_size, tubelet_size=tubelet_size, predictor_heads=heads)


def param_groups(encoder: nn.Module, predictor: nn.Module, predictor_lr_scale: float = 1.0
                 ) -> list[dict]:
    """AdamW groups exactly as the release's `init_opt` builds them, so optimiser states cross.

    Order: encoder decay, predictor decay, encoder no-decay, predictor no-decay; no decay on
    parameters named *bias* or 1-D (norms). Frozen parameters (the sin-cos position tables) stay
    in, as in the release: they get no gradient, so AdamW leaves them alone, but they take a
    place in the state's parameter numbering. `WD_exclude` is the release's key (its wd
    scheduler reads it); `lr_scale` scales the predictor's lr on top of the schedule's."""
    def split(module, no_decay):
        return [p for n, p in module.named_parameters()
                if (("bias" in n) or p.ndim == 1) == no_decay]

    scale = float(predictor_lr_scale)
    return [{"params": split(encoder, False), "lr_scale": 1.0},
            {"params": split(predictor, False), "lr_scale": scale},
            {"params": split(encoder, True), "WD_exclude": True, "weight_decay": 0.0, "lr_scale": 1.0},
            {"params": split(predictor, True), "WD_exclude": True, "weight_decay": 0.0,
             "lr_scale": scale}]


__all__ = ["Models", "OnlineModel", "build_backbone", "build_encoder_config", "build_models",
           "check_pairing", "param_groups", "patchify", "pixel_targets", "reinit_linear"]
