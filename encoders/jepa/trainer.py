"""One JEPA pretraining loop, configured: V-JEPA (latent targets), pixel targets, image (I-JEPA).

The trainer knows nothing about datasets (encoders/ never imports tasks/): it is handed a batch
factory `make_batches(epoch, start_batch) -> iterator of (B, 3, T, H, W) float tensors (or None
for a batch with no readable clip)`, and the number of batches per epoch.

Per step (latent target, as in the release's `app/vjepa/train.py`):
    h = layer_norm(target_encoder(clip))                      # no grad, no affine
    for each mask config i:  z = predictor(encoder(clip, context_i), context_i, targets_i, i)
    loss = mean over (config, target set) of mean(|z - h[targets]| ** p) / p
    AdamW step (lr, wd from schedules), grad clip, then EMA: target <- m target + (1 - m) encoder
`target: pixels` regresses per-tubelet normalised pixels of the target tubelets instead and has
no EMA (its `target_encoder` checkpoint entry is the encoder itself); `modality: image` takes one
random frame of each clip and uses 2D masks.

State that makes a resumed run continue exactly (tested bit-for-bit on CPU): model, EMA,
optimiser, step (schedules are functions of it), every rank's mask generator state, and the data
position (epoch, next batch). Checkpoints hold only tensors and plain Python, so
`torch.load(weights_only=True)` reads them.

With `checkpoint_layout: release` a checkpoint is also one the release's `app/vjepa/train.py`
resumes: model keys under `module.backbone.` (its DDP + MultiMaskWrapper names; without them its
strict load fails and it silently starts over), its optimiser parameter groups in its order
(encoder decay, predictor decay, encoder no-decay, predictor no-decay, frozen position embeddings
included) and `epoch` = epochs completed. A checkpoint the release wrote resumes here too: its
step is `epoch * steps_per_epoch`, at the start of the next epoch.
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import compose, resolve_target
from .config import PretrainConfigError, resolve
from parallel import DistInfo, all_mean, all_true, gather_objects, init_distributed
from .masks import MaskBatch, MaskCollator
from .predictor import Predictor, gather_tokens
from .schedules import Schedules, effective_rank, ema_update

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "latest.pth.tar"
METRICS_NAME = "metrics.csv"
METRICS_FIELDS = ("step", "epoch", "batch", "loss", "lr", "wd", "momentum", "target_rank",
                  "context_gain", "clips_per_s", "elapsed_s")

BatchFactory = Callable[[int, int], Iterable[torch.Tensor | None]]


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


RELEASE_PREFIX = "module.backbone."


def _param_groups(encoder: nn.Module, predictor: nn.Module, predictor_lr_scale: float = 1.0
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


def _with_prefix(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def _without_prefix(state: dict) -> dict:
    from ..checkpoint import strip_prefixes

    return strip_prefixes(state)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class JepaTrainer:
    """Builds the models, optimiser, schedules and masks of one run; `fit` trains it.

    cfg: a pretraining config (dict; see `encoders/jepa/config.py` for keys and defaults).
    steps_per_epoch: batches each process draws per epoch (the release's `ipe`).
    out_dir: run folder for `latest.pth.tar`, `metrics.csv`, `loss.png`.
    """

    def __init__(self, cfg: dict, steps_per_epoch: int, out_dir: str | os.PathLike, *,
                 device: str | torch.device | None = None, progress: bool = True,
                 dist_info: DistInfo | None = None):
        self.cfg = resolve(cfg)
        self.out_dir = Path(out_dir)
        self.dist = dist_info or init_distributed(device or self.cfg["device"])
        self.device = self.dist.device
        self.progress = progress and self.dist.is_main
        opt = self.cfg["optim"]
        if steps_per_epoch < 1:
            raise PretrainConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = int(opt["steps_per_epoch"] or steps_per_epoch)
        self.schedules = self._make_schedules(opt)
        self.batch_size = int(self.cfg["data"]["batch_size"])
        self.loss_exp = float(self.cfg["loss"]["loss_exp"])
        self.clip_grad = opt["clip_grad"]
        self.clip_after_warmup = bool(opt["clip_grad_after_warmup"])
        self.release_layout = self.cfg["checkpoint_layout"] == "release"
        self.latent = self.cfg["target"] == "latent"
        self.image = self.cfg["modality"] == "image"

        self.encoder_cfg = build_encoder_config(self.cfg)
        if (self.encoder_cfg["modality"] == "image") != self.image:
            raise PretrainConfigError(
                f"pretraining config {self.cfg['name']!r} has modality {self.cfg['modality']!r} but "
                f"encoder {self.encoder_cfg['name']!r} is a {self.encoder_cfg['modality']} encoder; "
                "pair image pretraining with an image encoder (e.g. ijepa_tiny) and video with video")
        arch = self.encoder_cfg["arch"]
        self.patch_size = int(arch["patch_size"])
        self.tubelet_size = int(arch.get("tubelet_size", 1)) if not self.image else 1
        seed = int(self.cfg["seed"])

        self._build_models(seed)
        self.masks = MaskCollator(self.cfg["masks"], self.grid, seed=self._mask_seed(seed, self.dist.rank),
                                  size_stream=str(self.cfg["mask_size_stream"]))
        groups = _param_groups(self.online.encoder, self.online.predictor,
                               float(opt["predictor_lr_scale"]))
        # Group options that are ours, re-applied after loading a state that may lack them.
        self._group_options = [{k: v for k, v in g.items() if k in ("lr_scale", "WD_exclude")}
                               for g in groups]
        self.optimizer = torch.optim.AdamW(
            groups, lr=self.schedules.learning_rate(0), betas=tuple(opt["betas"]), eps=float(opt["eps"]))
        cuda = self.device.type == "cuda"
        dtype = str(opt["dtype"]).lower()
        self.autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        self.use_autocast = cuda and self.autocast_dtype is not None  # bf16 autocast only on CUDA
        self.scaler = (torch.amp.GradScaler("cuda")
                       if self.use_autocast and self.autocast_dtype == torch.float16 else None)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._epoch_losses: list[float] = []
        self._saved_step: int | None = None
        self._last_targets: torch.Tensor | None = None  # latent targets of the last step
        self._last_context_gain: float | None = None
        self._first_rank: float | None = None
        self._warned_rank = False

    def _make_schedules(self, opt: dict) -> Schedules:
        schedules = Schedules.from_optim(opt, self.steps_per_epoch)
        if schedules.warmup_steps != schedules.configured_warmup and self.dist.is_main:
            # A run shortened by `optim.total_steps` would otherwise never leave warmup.
            log.warning("warmup of %d steps >= the %d schedule steps; using %d warmup steps",
                        schedules.configured_warmup, schedules.schedule_steps, schedules.warmup_steps)
        # The clipping rule's warm-up in epochs (the release compares the epoch with it).
        warmup = opt["warmup_steps"]
        self.warmup_epochs = (float(opt["warmup_epochs"]) if warmup is None
                              else int(warmup) / self.steps_per_epoch)
        if schedules.warmup_steps != schedules.configured_warmup:
            self.warmup_epochs = schedules.warmup_steps / self.steps_per_epoch
        return schedules

    def _build_models(self, seed: int) -> None:
        arch = self.encoder_cfg["arch"]
        # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_backbone(self.encoder_cfg)
            # Image encoders report (h, w); masks and predictor work on (1, h, w).
            self.grid = grid = tuple(encoder.grid) if len(encoder.grid) == 3 else (1, *encoder.grid)
            pcfg = self.cfg["predictor"]
            out_dim = (self.tubelet_size * self.patch_size ** 2 * int(arch.get("in_chans", 3))
                       if not self.latent else encoder.embed_dim)
            heads = pcfg["num_heads"]
            heads = int(encoder.num_heads if heads == "encoder" else heads)
            if int(pcfg["width"]) % heads:
                raise PretrainConfigError(
                    f"predictor.width {pcfg['width']} is not divisible by its {heads} heads "
                    "(predictor.num_heads; 'encoder' takes the encoder's)")
            predictor = Predictor(
                grid, encoder.embed_dim, width=int(pcfg["width"]), depth=int(pcfg["depth"]),
                num_heads=heads, mlp_ratio=float(pcfg["mlp_ratio"]),
                num_mask_tokens=len(self.cfg["masks"]), out_dim=out_dim,
                uniform_power=bool(arch.get("uniform_power", False)), video=not self.image,
                zero_init_mask_tokens=bool(pcfg["zero_init_mask_tokens"]))
            std = self.cfg["reinit_linear_std"]
            if std is not None:
                # In the same seeded stream, after both are built: the release's order.
                reinit_linear(encoder, float(std))
                reinit_linear(predictor, float(std))
            self.predictor_heads = heads
        self.online = OnlineModel(encoder, predictor).to(self.device)
        self.target_encoder = None
        if self.latent:
            self.target_encoder = copy.deepcopy(self.online.encoder)
            self.target_encoder.requires_grad_(False)
        self.model = self.online
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.online, device_ids=ids)
            if self.target_encoder is not None:  # start the EMA from the broadcast weights
                self.target_encoder.load_state_dict(self.online.encoder.state_dict())

    @property
    def epochs_completed(self) -> int:
        """The release's checkpoint `epoch`: epochs finished (it resumes at the next one)."""
        return self.epoch + (1 if self.batch_in_epoch >= self.steps_per_epoch else 0)

    def clipping(self) -> bool:
        """Whether this step clips: always, or (the release) only in epochs after the warm-up."""
        if self.clip_grad is None:
            return False
        return not self.clip_after_warmup or self.epoch > self.warmup_epochs

    @staticmethod
    def _mask_seed(seed: int, rank: int) -> int:
        # Each rank draws its own masks; a fixed offset keeps them apart and reproducible.
        return int(seed) * 1_000_003 + int(rank) + 1

    # ----- one step ---------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.schedules.total_steps

    def _prepare(self, clips: torch.Tensor) -> torch.Tensor:
        clips = clips.to(self.device, non_blocking=True).float()
        if clips.ndim != 5:
            raise ValueError(f"pretraining batches must be (B, 3, T, H, W), got {tuple(clips.shape)}")
        if self.image:
            # I-JEPA-style: one random frame of each clip (drawn from the mask generator, so it
            # is part of the saved RNG state and a resumed run picks the same frames).
            b, _, t = clips.shape[:3]
            idx = torch.randint(0, t, (b,), generator=self.masks.rng).to(clips.device)
            clips = clips[torch.arange(b, device=clips.device), :, idx].unsqueeze(2)
        grid = self.online.encoder.grid_for(clips.shape[2], clips.shape[3], clips.shape[4])
        grid = tuple(grid) if len(grid) == 3 else (1, *grid)
        if grid != self.grid:
            raise ValueError(
                f"clips of shape {tuple(clips.shape[1:])} give a token grid {grid}, but the predictor "
                f"and masks are built for {self.grid}; set data.num_frames / data.resolution to the "
                "encoder's (or override the encoder's num_frames / resolution)")
        return clips

    def compute_loss(self, clips: torch.Tensor, masks: list[MaskBatch], monitor: bool = False
                     ) -> torch.Tensor:
        contexts = [m.context for m in masks]
        targets = [m.targets for m in masks]
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.use_autocast):
            with torch.no_grad():
                if self.latent:
                    h = self.target_encoder(clips)
                    h = F.layer_norm(h.float(), (h.size(-1),))
                    self._last_targets = h
                else:
                    h = pixel_targets(clips, self.patch_size, self.tubelet_size,
                                      normalize=bool(self.cfg["loss"]["normalize_pixels"]))
            preds = self.model(clips, contexts, targets)
        loss = self._loss(preds, targets, h)
        if monitor:
            self._last_context_gain = self._context_gain(contexts, targets, h, loss)
        return loss

    def _loss(self, preds, targets, h) -> torch.Tensor:
        losses = []
        for pred_sets, target_sets in zip(preds, targets):
            for z, index in zip(pred_sets, target_sets):
                diff = z.float() - gather_tokens(h, index)
                losses.append(diff.abs().pow(self.loss_exp).mean() / self.loss_exp)
        return torch.stack(losses).mean()

    @torch.no_grad()
    def _context_gain(self, contexts, targets, h, loss) -> float:
        """Loss with the context features zeroed (the predictor keeps only the positions) minus
        the loss. Near zero or negative: the predictor ignores what the encoder saw, so the
        encoder gets no useful signal (a tiny run at the release's lr ratios did exactly that)."""
        predictor = self.online.predictor
        blind = []
        for i, (context, target_sets) in enumerate(zip(contexts, targets)):
            zeros = torch.zeros(*context.shape, predictor.embed_dim, device=context.device)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                                enabled=self.use_autocast):
                blind.append(predictor(zeros, context, list(target_sets), mask_index=i))
        return float(self._loss(blind, targets, h) - loss.detach())

    def train_step(self, clips: torch.Tensor, monitor: bool = False,
                   masks: list[MaskBatch] | None = None) -> dict:
        """One optimisation step on a batch; returns loss (mean over ranks), lr, wd, momentum,
        and the encoder's and predictor's gradient norms where this step clipped (else None).

        monitor: also measure the context gain (`_context_gain`), for a step that is logged.
        masks: use these instead of drawing (to replay another trainer's masks)."""
        step = self.step
        lr, wd = self.schedules.learning_rate(step), self.schedules.wd(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if not group.get("WD_exclude"):
                group["weight_decay"] = wd
        self.online.train()
        clips = self._prepare(clips)
        if masks is None:
            masks = self.masks(clips.shape[0], iteration=step)
        masks = [m.to(self.device) for m in masks]
        self._last_context_gain = None
        loss = self.compute_loss(clips, masks, monitor=monitor)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"pretraining loss is {loss.item()} at step {step}; lower optim.lr or check "
                "the input clips (normalised floats)")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        enc_norm = pred_norm = None
        if self.clipping():
            # Encoder and predictor clipped separately, as the release does.
            enc_norm = float(nn.utils.clip_grad_norm_(self.online.encoder.parameters(), float(self.clip_grad)))
            pred_norm = float(nn.utils.clip_grad_norm_(self.online.predictor.parameters(), float(self.clip_grad)))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        momentum = self.schedules.momentum(step)
        if self.target_encoder is not None:
            ema_update(self.target_encoder, self.online.encoder, momentum)
        self.step += 1
        value = all_mean(loss.item(), self.device)
        return {"loss": value, "lr": lr, "wd": wd, "momentum": momentum,
                "enc_grad_norm": enc_norm, "pred_grad_norm": pred_norm}

    # ----- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def state_dict(self) -> dict:
        """The release's checkpoint layout plus what exact resume needs; tensors and plain Python."""
        # Every rank's mask generator state (all ranks must call this: it is a collective).
        mask_states = gather_objects(self.masks.state_dict()["rng"].cpu())
        prefix = RELEASE_PREFIX if self.release_layout else ""

        def cpu(module):
            return _with_prefix({k: v.detach().cpu() for k, v in module.state_dict().items()}, prefix)

        encoder = cpu(self.online.encoder)
        target = encoder if self.target_encoder is None else cpu(self.target_encoder)
        epoch_loss = sum(self._epoch_losses) / len(self._epoch_losses) if self._epoch_losses else None
        return {
            "encoder": encoder,
            "predictor": cpu(self.online.predictor),
            "target_encoder": target,
            "opt": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            # release: epochs completed (its resume point); plain: the epoch in progress
            "epoch": self.epochs_completed if self.release_layout else self.epoch,
            "loss": epoch_loss,
            "batch_size": self.batch_size,
            "world_size": self.dist.world_size,
            "lr": self.schedules.lr,
            "step": self.step,
            "mask_rng": mask_states,
            "data_position": {"epoch": self.epoch, "batch": self.batch_in_epoch},
            "epoch_losses": list(self._epoch_losses),
            "config": json.loads(json.dumps(self.cfg)),
            "arch": json.loads(json.dumps(self.encoder_cfg["arch"])),
            "encoder_name": self.encoder_cfg["name"],
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the checkpoint atomically (rank 0 writes; every rank must call)."""
        path = Path(path) if path is not None else self.checkpoint_path
        state = self.state_dict()
        if self.dist.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_save(state, path)
        self._saved_step = self.step
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by `save`, or by the release's trainer (which resumes at
        the start of epoch `epoch`). weights_only: no code runs on load."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in ("encoder", "predictor", "opt", "epoch") if k not in state]
        ours = all(k in state for k in ("step", "mask_rng", "data_position"))
        if missing or (self.target_encoder is not None and "target_encoder" not in state):
            lacks = ", ".join(missing or ["target_encoder"])
            raise ValueError(f"{path} is not a resumable pretraining checkpoint (lacks {lacks}); "
                             "start a fresh run folder or pass resume=False")
        for module, key in ((self.online.encoder, "encoder"), (self.online.predictor, "predictor"),
                            (self.target_encoder, "target_encoder")):
            if module is None:
                continue
            try:
                module.load_state_dict(_without_prefix(state[key]))
            except RuntimeError as err:
                raise ValueError(f"{path}: its {key!r} does not fit this config's model ({err}); "
                                 "resume with the config that wrote it") from err
        try:
            self.optimizer.load_state_dict(state["opt"])
        except ValueError as err:  # e.g. written before encoder and predictor had their own groups
            raise ValueError(
                f"{path}: the optimiser state does not match this trainer's parameter groups "
                f"({err}); it was written by another version of the trainer. Start a fresh run "
                "folder (or --no-resume); the weights still evaluate with `harness run "
                "--checkpoint`") from err
        # A loaded state brings its own group options (a release state lacks lr_scale).
        for group, options in zip(self.optimizer.param_groups, self._group_options):
            group.pop("wd_exclude", None)
            group.pop("WD_exclude", None)
            group.update(options)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if not ours:
            # The release's checkpoint: `epoch` epochs done, schedules stepped epoch * ipe times.
            self.epoch = int(state["epoch"])
            self.step = self.epoch * self.steps_per_epoch
            self.batch_in_epoch = 0
            self._saved_step = self.step
            self._epoch_losses = []
            log.info("%s: a release checkpoint at epoch %d; resuming at step %d", path, self.epoch, self.step)
            self.masks.rng.manual_seed(self._mask_seed(int(self.cfg["seed"]) + self.step, self.dist.rank))
            return
        self.step = int(state["step"])
        self._saved_step = self.step
        self.epoch = int(state["data_position"]["epoch"])
        self.batch_in_epoch = int(state["data_position"]["batch"])
        self._epoch_losses = list(state.get("epoch_losses") or [])
        rng_states = state["mask_rng"]
        if len(rng_states) == self.dist.world_size:
            self.masks.load_state_dict({"rng": rng_states[self.dist.rank]})
        else:
            # A different world size cannot continue each rank's stream; restart them from a
            # seed that depends on the step, so the run stays reproducible.
            log.warning("checkpoint was written by %d processes, resuming with %d: mask streams are "
                        "re-seeded", len(rng_states), self.dist.world_size)
            self.masks.rng.manual_seed(self._mask_seed(int(self.cfg["seed"]) + self.step, self.dist.rank))

    # ----- the loop ---------------------------------------------------------------------------
    def fit(self, make_batches: BatchFactory, *, resume: bool = True) -> Path:
        """Train to `total_steps`, checkpointing every `checkpoint_every` steps and at the end."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
            log.info("resumed from %s at step %d", self.checkpoint_path, self.step)
        metrics = _MetricsLog(self.out_dir / METRICS_NAME, self.step, enabled=self.dist.is_main)
        self._first_rank = metrics.first_rank  # a resumed run keeps its reference for the warning
        every = int(self.cfg["checkpoint_every"])
        log_every = max(1, int(self.cfg["log_every"]))
        monitor_every = max(1, int(self.cfg["monitor_every"]))
        start_time, last = time.perf_counter(), time.perf_counter()
        rate = None
        with _Progress(self.progress, self.total_steps, self.step) as bar:
            while self.step < self.total_steps:
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self._next_epoch()
                batches = iter(make_batches(self.epoch, self.batch_in_epoch))
                consumed = self.batch_in_epoch
                for clips in _bounded(batches, self.steps_per_epoch - self.batch_in_epoch):
                    have = clips is not None and len(clips) > 0
                    if not all_true(have, self.device):
                        self.batch_in_epoch += 1  # every rank skips together (DDP needs that)
                        continue
                    global_batch = all_mean(float(len(clips)), self.device) * self.dist.world_size
                    nxt = self.step + 1
                    monitor = (nxt % log_every == 0 and nxt % monitor_every == 0
                               or nxt == self.total_steps)
                    out = self.train_step(clips, monitor=monitor and self.dist.is_main)
                    self.batch_in_epoch += 1
                    self._epoch_losses.append(out["loss"])
                    now = time.perf_counter()
                    step_rate = global_batch / max(now - last, 1e-9)
                    rate = step_rate if rate is None else 0.9 * rate + 0.1 * step_rate
                    last = now
                    if self.step % log_every == 0 or self.step == self.total_steps:
                        metrics.write(step=self.step, epoch=self.epoch, batch=self.batch_in_epoch,
                                      loss=out["loss"], lr=out["lr"], wd=out["wd"],
                                      momentum=out["momentum"], target_rank=self._watch_rank(),
                                      context_gain=_round(self._last_context_gain),
                                      clips_per_s=step_rate, elapsed_s=now - start_time)
                    bar.update(self.step, out["loss"], out["lr"], rate)
                    if self.step % every == 0 or self.step >= self.total_steps:
                        self.save()
                    if self.step >= self.total_steps:
                        break
                else:
                    # The epoch's batches are used up (or the factory ran dry): next epoch.
                    if self.batch_in_epoch == consumed:
                        raise RuntimeError(
                            f"the batch factory gave no batch for epoch {self.epoch} from batch "
                            f"{consumed}; check the pretraining manifests (data.manifests)")
                    self._next_epoch()
        if self.dist.is_main:
            metrics.plot(self.out_dir / "loss.png", title=self.cfg.get("name") or "pretraining")
        if self._saved_step != self.step:  # decided from state every rank shares (save is collective)
            self.save()
        return self.checkpoint_path

    def _watch_rank(self) -> float | str:
        """Effective rank of this step's latent targets; warns once if it falls to a quarter of
        the first logged value (partial collapse: the loss can fall while features degrade)."""
        if self._last_targets is None or not self.dist.is_main:
            return ""
        rank = effective_rank(self._last_targets)
        if self._first_rank is None:
            self._first_rank = rank
        elif rank < 0.25 * self._first_rank and not self._warned_rank:
            self._warned_rank = True
            log.warning(
                "target features are collapsing: effective rank %.1f at step %d, %.1f at the "
                "start (metrics.csv, target_rank); lower optim.lr or raise optim.ema",
                rank, self.step, self._first_rank)
        return round(rank, 3)

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        self._epoch_losses = []


def _round(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)


def _bounded(it: Iterator, n: int) -> Iterator:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item


class _MetricsLog:
    """Per-step CSV in the run folder; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.first_rank: float | None = None
        if not enabled:
            return
        rows = []
        if path.is_file() and resume_step > 0:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        ranks = [float(r["target_rank"]) for r in rows if r.get("target_rank")]
        self.first_rank = ranks[0] if ranks else None
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, **row) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=METRICS_FIELDS).writerow(row)

    def plot(self, out: Path, title: str) -> Path | None:
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [int(r["step"]) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
        k = max(1, len(losses) // 20)
        if k > 1:
            smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, lw=1.5, label=f"mean of {k}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


class _Progress:
    """rich progress bar (loss, lr, clips/s); a no-op when off or not rank 0."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total, start
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("pretrain", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, loss: float, lr: float, rate: float | None) -> None:
        if self.bar is not None:
            info = f"loss {loss:.4f} lr {lr:.2e}" + (f" {rate:.1f} clips/s" if rate else "")
            self.bar.update(self.task, completed=step, info=info)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def pretrain(cfg: dict, make_batches: BatchFactory, steps_per_epoch: int, out_dir, *,
             resume: bool = True, progress: bool = True, device=None) -> Path:
    """Build a `JepaTrainer` for `cfg` and train it; returns the final checkpoint's path."""
    trainer = JepaTrainer(cfg, steps_per_epoch, out_dir, device=device, progress=progress)
    return trainer.fit(make_batches, resume=resume)


__all__ = ["JepaTrainer", "OnlineModel", "pixel_targets", "patchify", "pretrain", "build_backbone",
           "build_encoder_config", "reinit_linear", "CHECKPOINT_NAME", "METRICS_NAME", "RELEASE_PREFIX"]
