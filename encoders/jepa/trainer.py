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

The jobs around the loop live beside it: `model` (encoder, predictor, EMA target, DDP,
optimiser groups), `checkpoints` (the release's layout; exact resume, tested bit-for-bit on
CPU), `monitors` (target rank, collapse warning, context gain), `reporting` (metrics.csv,
progress bar). The loss plot is `results/pretrain_plot.py`'s, drawn from metrics.csv.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from parallel import DistInfo, all_mean, all_true, init_distributed

from . import checkpoints
from .checkpoints import CHECKPOINT_NAME
from .config import PretrainConfigError, resolve
from .masks import MaskBatch, MaskCollator, rank_seed
from .model import build_encoder_config, build_models, param_groups, pixel_targets
from .monitors import CollapseWatch, context_gain
from .predictor import gather_tokens
from .reporting import METRICS_NAME, MetricsLog, Progress, rounded
from .schedules import Schedules, ema_update

log = logging.getLogger(__name__)

BatchFactory = Callable[[int, int], Iterable[torch.Tensor | None]]


class JepaTrainer:
    """Builds the models, optimiser, schedules and masks of one run; `fit` trains it.

    cfg: a pretraining config (dict; keys and defaults in `encoders/jepa/configs/defaults.yaml`).
    steps_per_epoch: batches each process draws per epoch (the release's `ipe`).
    out_dir: run folder for `latest.pth.tar` and `metrics.csv`.
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
        models = build_models(self.cfg, self.encoder_cfg, self.device, self.dist.world_size)
        self.online, self.target_encoder, self.model = models.online, models.target_encoder, models.model
        self.grid, self.predictor_heads = models.grid, models.predictor_heads
        self.patch_size, self.tubelet_size = models.patch_size, models.tubelet_size
        seed = int(self.cfg["seed"])
        self.masks = MaskCollator(self.cfg["masks"], self.grid, seed=rank_seed(seed, self.dist.rank),
                                  size_stream=str(self.cfg["mask_size_stream"]))
        groups = param_groups(self.online.encoder, self.online.predictor,
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
        self.collapse_watch = CollapseWatch()

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

    @property
    def epochs_completed(self) -> int:
        """The release's checkpoint `epoch`: epochs finished (it resumes at the next one)."""
        return self.epoch + (1 if self.batch_in_epoch >= self.steps_per_epoch else 0)

    def clipping(self) -> bool:
        """Whether this step clips: always, or (the release) only in epochs after the warm-up."""
        if self.clip_grad is None:
            return False
        return not self.clip_after_warmup or self.epoch > self.warmup_epochs

    # ----- one step ---------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.schedules.total_steps

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                              enabled=self.use_autocast)

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
        with self._autocast():
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
            self._last_context_gain = context_gain(self.online.predictor, contexts, targets, h,
                                                   loss, self._loss, self._autocast)
        return loss

    def _loss(self, preds, targets, h) -> torch.Tensor:
        losses = []
        for pred_sets, target_sets in zip(preds, targets):
            for z, index in zip(pred_sets, target_sets):
                diff = z.float() - gather_tokens(h, index)
                losses.append(diff.abs().pow(self.loss_exp).mean() / self.loss_exp)
        return torch.stack(losses).mean()

    def train_step(self, clips: torch.Tensor, monitor: bool = False,
                   masks: list[MaskBatch] | None = None) -> dict:
        """One optimisation step on a batch; returns loss (mean over ranks), lr, wd, momentum,
        and the encoder's and predictor's gradient norms where this step clipped (else None).

        monitor: also measure the context gain (`monitors.context_gain`), for a logged step.
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

    # ----- checkpoints (layout: checkpoints.py) -----------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def state_dict(self) -> dict:
        """The release's checkpoint layout plus what exact resume needs; tensors and plain Python."""
        return checkpoints.trainer_state(self)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the checkpoint atomically (rank 0 writes; every rank must call)."""
        path = Path(path) if path is not None else self.checkpoint_path
        state = self.state_dict()
        if self.dist.is_main:
            checkpoints.write(state, path)
        self._saved_step = self.step
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by `save`, or by the release's trainer (which resumes at
        the start of epoch `epoch`)."""
        checkpoints.restore(self, path)

    # ----- the loop ---------------------------------------------------------------------------
    def fit(self, make_batches: BatchFactory, *, resume: bool = True) -> Path:
        """Train to `total_steps`, checkpointing every `checkpoint_every` steps and at the end."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
            log.info("resumed from %s at step %d", self.checkpoint_path, self.step)
        metrics = MetricsLog(self.out_dir / METRICS_NAME, self.step, enabled=self.dist.is_main)
        self.collapse_watch.first = metrics.first_rank  # a resumed run keeps its reference
        every = int(self.cfg["checkpoint_every"])
        log_every = max(1, int(self.cfg["log_every"]))
        monitor_every = max(1, int(self.cfg["monitor_every"]))
        start_time, last = time.perf_counter(), time.perf_counter()
        rate = None
        with Progress(self.progress, self.total_steps, self.step) as bar:
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
                                      context_gain=rounded(self._last_context_gain),
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
        if self._saved_step != self.step:  # decided from state every rank shares (save is collective)
            self.save()
        return self.checkpoint_path

    def _watch_rank(self) -> float | str:
        """Effective rank of this step's latent targets (`monitors.CollapseWatch`); empty for
        pixel targets and on ranks other than 0."""
        if self._last_targets is None or not self.dist.is_main:
            return ""
        return self.collapse_watch(self._last_targets, self.step)

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        self._epoch_losses = []


def _bounded(it: Iterator, n: int) -> Iterator:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item


def pretrain(cfg: dict, make_batches: BatchFactory, steps_per_epoch: int, out_dir, *,
             resume: bool = True, progress: bool = True, device=None) -> Path:
    """Build a `JepaTrainer` for `cfg` and train it; returns the final checkpoint's path.
    (`metrics.csv` is in `out_dir`; `results.pretrain_plot.plot_loss` draws it.)"""
    trainer = JepaTrainer(cfg, steps_per_epoch, out_dir, device=device, progress=progress)
    return trainer.fit(make_batches, resume=resume)


__all__ = ["BatchFactory", "JepaTrainer", "pretrain"]
