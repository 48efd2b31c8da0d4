"""A run planned once: the composed config becomes a typed `RunPlan` that validates itself.

Everything of a run that is decided before the encoder's weights are read: the settings, the
encoder's resolved config and label, the task and its kind, the probe and what it needs, the
data checked and its loaders built, the protocol and its id. Probe-specific knowledge comes from
the probe registry (`probes.registry.ProbeType`), task-kind knowledge from the task kind
(`tasks.kinds.TaskKind`): nothing here branches on a probe's or a kind's name.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from harness.settings import RunSettings

log = logging.getLogger("harness.plan")


@dataclass
class RunPlan:
    """Everything of a run that is decided before the encoder is read."""

    c: dict                      # the composed config as plain data (reproduce command)
    settings: RunSettings
    encoder_cfg: dict            # resolved: a Hugging Face folder's config.json applied
    encoder_label: str
    probe_cfg: dict
    probe_type: object           # probes.registry.ProbeType
    task: object
    task_kind: object            # tasks.kinds.TaskKind
    split: str
    device: str
    precision: str
    optim: object                # probes.OptimConfig
    train_data: object
    eval_data: object
    protocol: dict
    protocol_id: str
    departures: dict
    cache: bool
    copies: int
    preflight: dict
    selection_data: object = None
    selection_items: list | None = None  # the held-out items a detection evaluator scores
    rank: int = 0
    world_size: int = 1
    image_frames: int | None = None  # image tasks: how many frames each image is repeated to
    notes: list[str] = field(default_factory=list)  # what pre-flight said about the run's size

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def grid(self) -> dict | None:
        return self.probe_cfg.get("grid") or None

    @property
    def selection(self) -> str:
        return self.probe_cfg.get("selection") or "val"


def resolve_device(name: str, require_present: bool = True) -> str:
    """'auto' -> cuda when available, else cpu; anything else must be a real torch device
    (present on this machine unless `require_present` is False: dry-run estimates for another)."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = str(name)
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {text!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and require_present:
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} requested but CUDA is not available on this "
                             f"machine; use device=cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return text


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (a container's or taskset's limit), not
    the machine's count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def local_processes() -> int:
    """Processes of this run sharing this process's CPUs: torchrun's LOCAL_WORLD_SIZE (its ranks
    share one affinity mask); 1 otherwise. SLURM's tasks are not counted: srun gives each task
    its own mask (`--cpus-per-task`), which `available_cpus` already reads."""
    text = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1


def loader_workers(requested) -> int:
    """Loader processes of this process: `auto` (or null) is its share of the CPUs available
    (every rank on a machine starts its own workers, so under torchrun with 8 ranks on 96 cores
    each gets 12), at least 1; a number is honoured up to that share (more only adds
    contention). The K400 loader costs ~0.09 CPU-s per clip (`benchmarks/datapath.py`): a fixed
    8 workers starve a GPU that consumes hundreds of clips a second."""
    share = max(1, available_cpus() // local_processes())
    if requested in (None, "auto"):
        return share
    return min(int(requested), share)


def plan_run(cfg, frame_cache=None, estimate_only: bool = False) -> RunPlan:
    """Compose, validate the data (manifests, label map, every file, the first clip) and build the
    loaders: all before a multi-GB checkpoint is read and hashed. `estimate_only`: the device may
    be one this machine lacks (`--dry-run device=cuda` on a laptop)."""
    import torch

    import encoders
    import parallel
    import probes
    import results
    import tasks
    from harness import identity
    from harness.config import to_container
    from harness.preflight import check_first_clip, preflight, run_size_notes
    from probes.registry import probe_type
    from tasks.kinds import for_task
    from tasks.loading import EpochBatches

    c = to_container(cfg)
    settings = RunSettings.from_config(c)
    device = resolve_device(settings.device, require_present=not estimate_only)
    rank, world = 0, 1
    if parallel.launched_world_size() > 1 and not estimate_only:
        # Under torchrun / SLURM: join the group; each rank drives cuda:LOCAL_RANK (or the CPU,
        # gloo) and loads an exact share of every batch. Only rank 0 speaks and writes.
        info = parallel.init_distributed(device)
        device, rank, world = str(info.device), info.rank, info.world_size
    try:
        optim = probes.OptimConfig.from_dict(c["task"]["optim"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"task.optim: {err}") from None
    precision = probes.resolve_precision(device, optim.bf16)

    encoder_cfg = encoders.resolve_config(dict(c["encoder"]), settings.checkpoint)
    probe_cfg = dict(c["probe"])
    ptype = probe_type(probe_cfg["kind"])
    task = tasks.from_config(c["task"])
    kind = for_task(task)
    split = task.spec.data["eval_split"]
    if ptype.reads_boxes != kind.boxes:
        raise ValueError(f"probe {ptype.kind!r} cannot serve task {task.spec.name!r} (kind "
                         f"{kind.name}): person boxes are classified by a probe that reads boxes "
                         f"(roi_linear), and only detection tasks have boxes; "
                         + ("drop --probe to use the task's" if kind.boxes
                            else "use attentive, attentive_v2, linear or knn"))
    if kind.segments and not ptype.outputs:
        raise ValueError(f"probe {ptype.kind!r} cannot serve task {task.spec.name!r} (kind "
                         f"{kind.name}): it has verb, noun and action heads; use "
                         f"--probe attentive_v2 (the release's head, one query per output)")
    report = preflight(task, split, kind)
    arch = encoder_cfg.get("arch") or {}
    resolution = task.spec.resolution or arch.get("resolution")
    common = dict(mean=tuple(encoder_cfg["mean"]), std=tuple(encoder_cfg["std"]),
                  resolution=resolution)
    image_frames = None
    if kind.images:
        # An image encoder sees the image once; a video encoder the image repeated to a clip, as
        # the release feeds it. Like the resolution this is the encoder's input, not protocol.
        image_frames = 1 if encoder_cfg.get("modality") == "image" else \
            task.spec.sampling.frames_per_clip
        common["num_frames"] = image_frames
    cache = task.spec.cache_features if settings.cache_features == "auto" else \
        bool(settings.cache_features)
    copies = task.spec.cached_train_copies if cache else 0
    if not ptype.trained:  # its bank: one fixed, unaugmented clip per training video
        cache, copies = True, 0

    grid, selection = probe_cfg.get("grid"), probe_cfg.get("selection") or "val"
    train_entries, held, select_info = None, None, None
    if grid and selection == "val":
        # Honest selection: heads are compared on data the probe never trained on and that is
        # not the evaluation split.
        frac = float(probe_cfg.get("val_fraction") or 0.1)
        train_entries, held, select_info = kind.holdout(task, split, frac, settings.seed)
    elif grid and selection != "eval_max":
        raise ValueError(f"probe.selection must be val or eval_max, got {selection!r}")

    # Cached copies keep the task's random augmentation; a single cached clip must be fixed.
    train_set = task.dataset("train", train=True, fixed=cache and not copies,
                             frame_cache=frame_cache, device_finish=True, entries=train_entries,
                             **common)
    eval_set = task.dataset(split, train=False, frame_cache=frame_cache, device_finish=True,
                            **common)
    with torch.random.fork_rng(devices=[]):
        report["decode_backend"] = check_first_clip(train_set, "train")
    micro = settings.micro_batch_size or optim.micro_batch_size
    eval_micro = settings.eval_batch_size or micro or optim.batch_size
    loader = dict(num_workers=loader_workers(optim.num_workers),
                  collate_fn=kind.collate(train_set), pin_memory=device.startswith("cuda"),
                  rank=rank, world_size=world)
    # Augmented copies are cached pass by pass and must line up sample by sample: no shuffling
    # there (the cached tokens are shuffled every epoch instead).
    train_data = EpochBatches(train_set, batch_size=optim.batch_size, micro_batch_size=micro,
                              seed=settings.seed, shuffle=not copies,
                              finish=kind.finisher(train_set), **loader)
    eval_data = EpochBatches(eval_set, batch_size=eval_micro, micro_batch_size=eval_micro,
                             seed=settings.seed, shuffle=False, finish=kind.finisher(eval_set),
                             **loader)
    selection_data = None
    if held is not None:
        select_set = task.dataset("train", train=False, frame_cache=frame_cache,
                                  device_finish=True, entries=held, **common)
        selection_data = EpochBatches(select_set, batch_size=eval_micro,
                                      micro_batch_size=eval_micro, seed=settings.seed,
                                      shuffle=False, finish=kind.finisher(select_set), **loader)
    protocol = identity.build_protocol(
        task, split, probe_type=ptype, probe_cfg=probe_cfg, optim=optim, precision=precision,
        cache=cache, copies=copies, stored=settings.feature_store is not None,
        selection=select_info)
    plan = RunPlan(
        c=c, settings=settings, encoder_cfg=encoder_cfg,
        encoder_label=identity.encoder_label(encoder_cfg), probe_cfg=probe_cfg,
        probe_type=ptype, task=task, task_kind=kind, split=split, device=device,
        precision=precision, optim=optim, train_data=train_data, eval_data=eval_data,
        protocol=protocol, protocol_id=results.protocol_id(protocol),
        departures=identity.departures(c["task"], optim.protocol()), cache=cache,
        copies=copies, preflight=report, selection_data=selection_data,
        selection_items=held if kind.boxes else None, rank=rank, world_size=world,
        image_frames=image_frames)
    plan.notes = run_size_notes(plan)
    for note in plan.notes:
        log.warning("%s", note)
    if plan.departures:
        log.info("this protocol departs from the published %s: %s (recorded; leaderboard "
                 "columns show it)", task.spec.name,
                 ", ".join(f"{k} {v}" for k, v in plan.departures.items()))
    return plan
