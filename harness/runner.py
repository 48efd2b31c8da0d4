"""One evaluation: encoder + task + probe -> trained probe -> metrics -> record.

This is the only place where the three registries meet. Everything that makes two numbers
comparable goes into the record's `protocol`; everything that identifies *what* was measured
(encoder, checkpoint) or *how it ran* (device, timings, versions) goes beside it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("harness.run")


@dataclass
class RunOutcome:
    record: dict
    path: Path


def resolve_device(name: str) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available; use device=cpu")
    return name


def build_protocol(cfg: dict, task, split: str, cache_features: bool = False,
                   cache_copies: int = 0) -> dict:
    """The resolved evaluation protocol: task sampling + probe + optimisation + split + data.

    The encoder's own input size (resolution, frames of its tubelets) is a property of the
    encoder, not of the protocol, so ViT-H/16 at 224 and at 384 stay comparable, as in the paper.
    """
    task_protocol = dict(task.protocol(split))
    task_protocol.pop("resolution", None)
    if cache_features and cache_copies > 0:
        # The task's augmentation, drawn a fixed number of times per video and cached: close
        # to online augmentation, but not the same protocol, so it changes the protocol id.
        task_protocol["feature_cache"] = {"augmented_copies_per_video": int(cache_copies)}
    elif cache_features:
        # Cached features mean fixed centred training clips with no augmentation: a different
        # protocol from online augmentation, so it must change the protocol id.
        task_protocol["train_aug"] = "none: fixed centred clips, cached frozen features"
    probe = {k: v for k, v in cfg["probe"].items()}
    optim = dict(cfg["task"]["optim"])
    optim.pop("num_workers", None)  # throughput knob, not protocol
    return {"task": task_protocol, "probe": probe, "optim": optim}


def run_identity(record_bits: dict) -> str:
    blob = json.dumps(record_bits, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_evaluation(cfg, frame_cache=None) -> RunOutcome:
    """Train and evaluate the probe `cfg` describes; write and return its record.

    `frame_cache` (a `tasks.decode.FrameCache`): decoded videos shared across runs in one process,
    so a caller running many evaluations on the same videos (`harness demo`) decodes each once.
    It changes no number: the clips are sliced from the same decoded frames.
    """
    import torch
    from torch.utils.data import DataLoader

    import encoders
    import probes
    import results
    import tasks
    from harness.config import to_container

    c = to_container(cfg)
    device = resolve_device(c["device"])
    seed = int(c["seed"])
    torch.manual_seed(seed)

    encoder_cfg = dict(c["encoder"])
    encoder = encoders.from_config(
        encoder_cfg,
        checkpoint=c["checkpoint"],
        checkpoint_key=c["checkpoint_key"],
        trust_checkpoint=bool(c["trust_checkpoint"]),
        random_init=bool(c["random_init"]),
        seed=seed,
    ).to(device)
    spec = encoder.spec

    task = tasks.from_config(c["task"])
    split = task.spec.data["eval_split"]
    resolution = task.spec.resolution or spec.resolution
    common = dict(mean=spec.mean, std=spec.std, resolution=resolution)
    cache = task.spec.cache_features if c["cache_features"] == "auto" else bool(c["cache_features"])
    copies = task.spec.cached_train_copies if cache else 0
    # Cached copies keep the task's random augmentation; a single cached clip must be fixed.
    train_set = task.dataset("train", train=True, fixed=cache and not copies,
                             frame_cache=frame_cache, **common)
    eval_set = task.dataset(split, train=False, frame_cache=frame_cache, **common)

    optim = probes.OptimConfig.from_dict(c["task"]["optim"])
    eval_bs = c.get("eval_batch_size") or optim.batch_size
    generator = torch.Generator().manual_seed(seed)
    loader_args = dict(num_workers=optim.num_workers, collate_fn=tasks.collate_clips,
                       persistent_workers=False, pin_memory=device.startswith("cuda"))
    # Augmented copies are cached pass by pass and must line up sample by sample: no shuffling
    # there (the cached tokens are shuffled every epoch instead).
    train_loader = DataLoader(train_set, batch_size=optim.batch_size, shuffle=not copies,
                              drop_last=False, generator=generator, **loader_args)
    eval_loader = DataLoader(eval_set, batch_size=eval_bs, shuffle=False, **loader_args)

    probe_cfg = {k: v for k, v in c["probe"].items() if k != "kind"}
    if probe_cfg.get("num_heads") is None:
        probe_cfg["num_heads"] = spec.num_heads
    probe = probes.build(c["probe"]["kind"], embed_dim=spec.embed_dim,
                         num_classes=task.num_classes, **_supported(c["probe"]["kind"], probe_cfg))

    protocol = build_protocol(c, task, split, cache_features=cache, cache_copies=copies)
    pid = results.protocol_id(protocol)
    checkpoint_info = dict(encoder.checkpoint_info)
    identity = run_identity({"encoder": encoder_cfg, "checkpoint": checkpoint_info.get("sha256"),
                             "random_init": checkpoint_info.get("random_init"),
                             "protocol_id": pid, "seed": seed})
    out = Path(c["out"])
    state_path = out / "state" / f"{spec.name}__{task.spec.name}__{identity}.pt"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    if not c["resume"] and state_path.exists():
        state_path.unlink()

    log.info("run %s: encoder %s, task %s, protocol %s", identity, spec.name, task.spec.name, pid)
    started = time.time()
    result = probes.train_probe(
        encoder, probe, train_loader, eval_loader, optim,
        device=device,
        max_failure_fraction=task.spec.max_failure_fraction,
        state_path=state_path,
        progress=bool(c["progress"]),
        cache_features=cache,
        cache_copies=copies,
    )
    timings = dict(result.timings)
    timings["wall_seconds"] = time.time() - started

    record = results.make_record(
        encoder={"name": spec.name, "family": spec.family, "modality": spec.modality,
                 "spec": spec.to_dict(), "config": encoder_cfg},
        checkpoint=checkpoint_info,
        task=task.spec.name,
        split=split,
        protocol=protocol,
        metrics=result.metrics,
        data_problems=result.data_problems.to_dict(),
        timings=timings,
        seed=seed,
        device=device,
        world_size=1,
        extra={"label": c.get("label"),
               "run_id": identity, "command": _reproduce_command(c), "history": result.history},
    )
    path = results.write_record(record, out / "records")
    return RunOutcome(record=record, path=path)


def _supported(kind: str, cfg: dict) -> dict:
    # The linear probe has no heads/queries; keep one probe YAML schema without failing on them.
    if kind == "linear":
        return {k: v for k, v in cfg.items() if k not in ("num_heads", "num_queries", "depth",
                                                          "mlp_ratio")}
    return cfg


def _reproduce_command(c: dict) -> str:
    parts = ["harness run", f"--encoder {c['encoder']['name']}", f"--task {c['task']['name']}",
             f"--probe {c['probe']['kind']}"]
    if c["checkpoint"]:
        parts.append(f"--checkpoint '{c['checkpoint']}'")
    if c["random_init"]:
        parts.append("--random-init")
    parts.append(f"--seed {c['seed']}")
    return " ".join(parts)
