"""The pretraining checkpoint: the release's layout plus what exact resume needs.

Checkpoints hold only tensors and plain Python, so `torch.load(weights_only=True)` reads them,
and they are written atomically (`common.atomic.atomic_write`): a reader sees the previous file
or the new one, never a partial one.

With `checkpoint_layout: release` a checkpoint is also one the release's `app/vjepa/train.py`
resumes: model keys under `module.backbone.` (its DDP + MultiMaskWrapper names; without them its
strict load fails and it silently starts over), its optimiser parameter groups in its order
(encoder decay, predictor decay, encoder no-decay, predictor no-decay, frozen position embeddings
included) and `epoch` = epochs completed. A checkpoint the release wrote resumes here too: its
step is `epoch * steps_per_epoch`, at the start of the next epoch.

State that makes a resumed run continue exactly: model, EMA, optimiser, step (schedules are
functions of it), every rank's mask generator state, and the data position (epoch, next batch).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from common.atomic import atomic_write
from parallel import gather_objects

from .masks import rank_seed

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "latest.pth.tar"
RELEASE_PREFIX = "module.backbone."
# Keys only our checkpoints have: a file without them is the release's (it resumes at an epoch).
OURS = ("step", "mask_rng", "data_position")


def with_prefix(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def without_prefix(state: dict) -> dict:
    from ..checkpoint import strip_prefixes

    return strip_prefixes(state)


def trainer_state(trainer) -> dict:
    """The checkpoint of `trainer` now (every rank must call: the mask states are gathered)."""
    mask_states = gather_objects(trainer.masks.state_dict()["rng"].cpu())
    prefix = RELEASE_PREFIX if trainer.release_layout else ""

    def cpu(module):
        return with_prefix({k: v.detach().cpu() for k, v in module.state_dict().items()}, prefix)

    encoder = cpu(trainer.online.encoder)
    target = encoder if trainer.target_encoder is None else cpu(trainer.target_encoder)
    losses = trainer._epoch_losses
    return {
        "encoder": encoder,
        "predictor": cpu(trainer.online.predictor),
        "target_encoder": target,
        "opt": trainer.optimizer.state_dict(),
        "scaler": None if trainer.scaler is None else trainer.scaler.state_dict(),
        # release: epochs completed (its resume point); plain: the epoch in progress
        "epoch": trainer.epochs_completed if trainer.release_layout else trainer.epoch,
        "loss": sum(losses) / len(losses) if losses else None,
        "batch_size": trainer.batch_size,
        "world_size": trainer.dist.world_size,
        "lr": trainer.schedules.lr,
        "step": trainer.step,
        "mask_rng": mask_states,
        "data_position": {"epoch": trainer.epoch, "batch": trainer.batch_in_epoch},
        "epoch_losses": list(losses),
        "config": json.loads(json.dumps(trainer.cfg)),
        "arch": json.loads(json.dumps(trainer.encoder_cfg["arch"])),
        "encoder_name": trainer.encoder_cfg["name"],
    }


def write(state: dict, path: str | os.PathLike) -> Path:
    """`torch.save` through the one atomic writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save(state, f))


def read(path: str | os.PathLike, *, needs_target: bool) -> dict:
    """A resumable checkpoint (ours or the release's); weights_only: no code runs on load."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("encoder", "predictor", "opt", "epoch") if k not in state]
    if missing or (needs_target and "target_encoder" not in state):
        lacks = ", ".join(missing or ["target_encoder"])
        raise ValueError(f"{path} is not a resumable pretraining checkpoint (lacks {lacks}); "
                         "start a fresh run folder or pass resume=False")
    return state


def restore(trainer, path: str | os.PathLike) -> None:
    """Load a checkpoint written by `trainer_state` (or by the release's trainer, which resumes
    at the start of epoch `epoch`) into `trainer`: weights, optimiser, position, mask streams."""
    state = read(path, needs_target=trainer.target_encoder is not None)
    for module, key in ((trainer.online.encoder, "encoder"), (trainer.online.predictor, "predictor"),
                        (trainer.target_encoder, "target_encoder")):
        if module is None:
            continue
        try:
            module.load_state_dict(without_prefix(state[key]))
        except RuntimeError as err:
            raise ValueError(f"{path}: its {key!r} does not fit this config's model ({err}); "
                             "resume with the config that wrote it") from err
    _restore_optimizer(trainer, state, path)
    seed = int(trainer.cfg["seed"])
    rank = trainer.dist.rank
    if not all(k in state for k in OURS):
        # The release's checkpoint: `epoch` epochs done, schedules stepped epoch * ipe times.
        trainer.epoch = int(state["epoch"])
        trainer.step = trainer.epoch * trainer.steps_per_epoch
        trainer.batch_in_epoch = 0
        trainer._saved_step = trainer.step
        trainer._epoch_losses = []
        log.info("%s: a release checkpoint at epoch %d; resuming at step %d", path, trainer.epoch,
                 trainer.step)
        trainer.masks.rng.manual_seed(rank_seed(seed + trainer.step, rank))
        return
    trainer.step = int(state["step"])
    trainer._saved_step = trainer.step
    trainer.epoch = int(state["data_position"]["epoch"])
    trainer.batch_in_epoch = int(state["data_position"]["batch"])
    trainer._epoch_losses = list(state.get("epoch_losses") or [])
    rng_states = state["mask_rng"]
    if len(rng_states) == trainer.dist.world_size:
        trainer.masks.load_state_dict({"rng": rng_states[rank]})
    else:
        # A different world size cannot continue each rank's stream; restart them from a
        # seed that depends on the step, so the run stays reproducible.
        log.warning("checkpoint was written by %d processes, resuming with %d: mask streams are "
                    "re-seeded", len(rng_states), trainer.dist.world_size)
        trainer.masks.rng.manual_seed(rank_seed(seed + trainer.step, rank))


def _restore_optimizer(trainer, state: dict, path) -> None:
    try:
        trainer.optimizer.load_state_dict(state["opt"])
    except ValueError as err:  # e.g. written before encoder and predictor had their own groups
        raise ValueError(
            f"{path}: the optimiser state does not match this trainer's parameter groups "
            f"({err}); it was written by another version of the trainer. Start a fresh run "
            "folder (or --no-resume); the weights still evaluate with `harness run "
            "--checkpoint`") from err
    # A loaded state brings its own group options (a release state lacks lr_scale).
    for group, options in zip(trainer.optimizer.param_groups, trainer._group_options):
        group.pop("wd_exclude", None)
        group.pop("WD_exclude", None)
        group.update(options)
    if trainer.scaler is not None and state.get("scaler") is not None:
        trainer.scaler.load_state_dict(state["scaler"])


__all__ = ["CHECKPOINT_NAME", "RELEASE_PREFIX", "read", "restore", "trainer_state",
           "with_prefix", "without_prefix", "write"]
