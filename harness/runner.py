"""One evaluation: encoder + task + probe -> trained probe -> metrics -> record.

This is the only place where the three registries meet. Everything that makes two numbers
comparable goes into the record's `protocol`; everything that identifies *what* was measured
(encoder, checkpoint) or *how it ran* (device, timings, versions) goes beside it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("harness.run")


@dataclass
class RunOutcome:
    record: dict
    path: Path | None  # None on the ranks other than 0 of a DDP run (rank 0 writes the record)
    reused: bool = False  # the run had finished before: its existing record


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


def build_protocol(cfg: dict, task, split: str, cache_features: bool = False,
                   cache_copies: int = 0, precision: str = "fp32") -> dict:
    """The resolved evaluation protocol: task sampling + probe + optimisation + split + data.

    The encoder's own input size (resolution, frames of its tubelets) is a property of the
    encoder, not of the protocol, so ViT-H/16 at 224 and at 384 stay comparable, as in the paper.
    `protocol_version` (bumped when code changes what a field means) and the precision that
    really ran are part of it, so numbers made under other code or precision never share an id.
    """
    from probes import OptimConfig
    from results import PROTOCOL_VERSION

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
    if cache_features and _feature_store_root(cfg) is not None:
        # Tokens on disk are float16 (the in-memory cache keeps float32): a borderline sample
        # can flip, so the two are different protocols.
        task_protocol.setdefault("feature_cache", {})["stored_as"] = "float16"
    probe = {k: v for k, v in cfg["probe"].items()}
    if probe.get("kind") == "knn":  # block sizes bound memory, they do not change the votes
        for key in ("bank_chunk", "query_chunk"):
            probe.pop(key, None)
    if not probe.get("grid"):  # one head: nothing is selected, the keys mean nothing
        for key in ("grid", "selection", "val_fraction"):
            probe.pop(key, None)
    optim = OptimConfig.from_dict(dict(cfg["task"]["optim"])).protocol()
    return {"protocol_version": PROTOCOL_VERSION, "task": task_protocol, "probe": probe,
            "optim": optim, "precision": precision}


def run_identity(record_bits: dict) -> str:
    blob = json.dumps(record_bits, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class RunPlan:
    """Everything of a run that is decided before the encoder is read."""

    c: dict
    device: str
    precision: str
    seed: int
    task: object
    split: str
    train_data: object
    eval_data: object
    optim: object
    protocol: dict
    protocol_id: str
    cache: bool
    copies: int
    preflight: dict
    selection_data: object = None
    rank: int = 0
    world_size: int = 1
    image_frames: int | None = None  # image tasks: how many frames each image is repeated to
    selection_items: list | None = None  # detection: the held-out training keyframes


def plan_run(cfg, frame_cache=None, log_fn=None, estimate_only: bool = False) -> RunPlan:
    """Compose, validate the data (manifests, label map, every file, the first clip) and build the
    loaders: all before a multi-GB checkpoint is read and hashed. `estimate_only`: the device may
    be one this machine lacks (`--dry-run device=cuda` on a laptop)."""
    import torch

    import probes
    import results
    import tasks
    from harness.config import to_container
    from harness.preflight import check_first_clip, preflight
    from tasks.loading import ClipFinisher, EpochBatches

    import parallel

    c = to_container(cfg)
    device = resolve_device(c["device"], require_present=not estimate_only)
    rank, world = 0, 1
    if parallel.launched_world_size() > 1 and not estimate_only:
        # Under torchrun / SLURM: join the group; each rank drives cuda:LOCAL_RANK (or the CPU,
        # gloo) and loads an exact share of every batch. Only rank 0 speaks and writes.
        info = parallel.init_distributed(device)
        device, rank, world = str(info.device), info.rank, info.world_size
        if rank != 0:
            log_fn = None
    seed = c["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        optim = probes.OptimConfig.from_dict(c["task"]["optim"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"task.optim: {err}") from None
    precision = probes.resolve_precision(device, optim.bf16)

    enc = c["encoder"]
    arch = enc.get("arch") or {}
    task = tasks.from_config(c["task"])
    split = task.spec.data["eval_split"]
    boxes_probe = c["probe"]["kind"] == "roi_linear"
    if boxes_probe != (task.spec.kind == "detection"):
        raise ValueError(f"probe {c['probe']['kind']!r} cannot serve task {task.spec.name!r} (kind "
                         f"{task.spec.kind}): person boxes are classified by the roi_linear probe, "
                         f"and only detection tasks have boxes; "
                         + ("drop --probe to use the task's" if task.spec.kind == "detection"
                            else "use attentive, attentive_v2, linear or knn"))
    report = preflight(task, split, log_fn=log_fn)
    resolution = task.spec.resolution or arch.get("resolution")
    common = dict(mean=tuple(enc["mean"]), std=tuple(enc["std"]), resolution=resolution)
    image_frames = None
    if task.spec.kind == "image":
        # An image encoder sees the image once; a video encoder the image repeated to a clip, as
        # the release feeds it. Like the resolution this is the encoder's input, not protocol.
        image_frames = 1 if enc.get("modality") == "image" else task.spec.sampling.frames_per_clip
        common["num_frames"] = image_frames
    cache = task.spec.cache_features if c["cache_features"] == "auto" else bool(c["cache_features"])
    copies = task.spec.cached_train_copies if cache else 0
    if c["probe"]["kind"] == "knn":  # its bank: one fixed, unaugmented clip per training video
        cache, copies = True, 0
    # Cached copies keep the task's random augmentation; a single cached clip must be fixed.
    probe_c = c["probe"]
    grid = probe_c.get("grid")
    selection = probe_c.get("selection") or "val"
    train_entries, select_entries, select_info = None, None, None
    if grid and selection == "val" and task.spec.kind == "detection":
        # Heads are compared on training films the probe never saw, scored by the same frame
        # mAP against those films' own ground-truth boxes.
        import hashlib

        from tasks import ava

        frac = float(probe_c.get("val_fraction") or 0.1)
        train_entries, select_entries = ava.holdout(task, frac, seed)
        keys = "\n".join(sorted(kf.key for kf in select_entries)).encode()
        select_info = {"source": "training videos held out", "fraction": frac, "seed": seed,
                       "videos": len({kf.video_id for kf in select_entries}),
                       "keyframes": len(select_entries), "sha256": hashlib.sha256(keys).hexdigest()}
    elif grid and selection == "val":
        # Honest selection: the heads are compared on videos the probe never trained on and
        # that are not the evaluation split: the task's own val split where it has one apart
        # from the evaluation split, else a stratified, seeded hold-out of the training data.
        from tasks.manifest import manifest_sha256
        from tasks.splits import stratified_holdout

        if "val" in task.splits and split != "val":
            select_entries = task.entries("val")
            select_info = {"source": "the task's val split"}
        else:
            frac = float(probe_c.get("val_fraction") or 0.1)
            train_entries, select_entries = stratified_holdout(task.entries("train"), frac, seed)
            select_info = {"source": "held out from train", "fraction": frac, "seed": seed}
        select_info.update(videos=len(select_entries),
                           sha256=manifest_sha256(select_entries, task.root))
    elif grid and selection != "eval_max":
        raise ValueError(f"probe.selection must be val or eval_max, got {selection!r}")
    train_set = task.dataset("train", train=True, fixed=cache and not copies,
                             frame_cache=frame_cache, device_finish=True, entries=train_entries,
                             **common)
    eval_set = task.dataset(split, train=False, frame_cache=frame_cache, device_finish=True,
                            **common)
    with torch.random.fork_rng(devices=[]):
        report["decode_backend"] = check_first_clip(train_set, "train")
    micro = c.get("micro_batch_size") or optim.micro_batch_size
    eval_micro = c.get("eval_batch_size") or micro or optim.batch_size
    # More loader processes than CPU cores only adds contention (and warnings).
    workers = min(optim.num_workers, os.cpu_count() or 1)
    # Detection items carry their boxes (AvaDataset.collate) and arrive as finished float clips.
    detection = task.spec.kind == "detection"
    loader = dict(num_workers=workers,
                  collate_fn=train_set.collate if detection else tasks.collate_clips,
                  pin_memory=device.startswith("cuda"), rank=rank, world_size=world)

    def finisher(dataset):
        return None if detection else ClipFinisher(dataset.transform)

    # Augmented copies are cached pass by pass and must line up sample by sample: no shuffling
    # there (the cached tokens are shuffled every epoch instead).
    train_data = EpochBatches(train_set, batch_size=optim.batch_size, micro_batch_size=micro,
                              seed=seed, shuffle=not copies, finish=finisher(train_set),
                              **loader)
    eval_data = EpochBatches(eval_set, batch_size=eval_micro, micro_batch_size=eval_micro,
                             seed=seed, shuffle=False, finish=finisher(eval_set),
                             **loader)
    selection_data = None
    if select_entries is not None:
        select_set = task.dataset("train", train=False, frame_cache=frame_cache,
                                  device_finish=True, entries=select_entries, **common)
        selection_data = EpochBatches(select_set, batch_size=eval_micro, micro_batch_size=eval_micro,
                                      seed=seed, shuffle=False,
                                      finish=finisher(select_set), **loader)
    protocol = build_protocol(c, task, split, cache_features=cache, cache_copies=copies,
                              precision=precision)
    if select_info is not None:
        protocol["task"]["selection_split"] = select_info
    return RunPlan(selection_data=selection_data, rank=rank, world_size=world,
                   image_frames=image_frames, c=c, device=device, precision=precision, seed=seed, task=task, split=split,
                   train_data=train_data, eval_data=eval_data, optim=optim, protocol=protocol,
                   protocol_id=results.protocol_id(protocol), cache=cache, copies=copies,
                   preflight=report,
                   selection_items=select_entries if task.spec.kind == "detection" else None)


def _checkpoint_identity(c: dict) -> dict:
    """What identifies the encoder's weights, computed without loading them."""
    if c["random_init"] or not c["checkpoint"]:
        import encoders

        default = None if c["random_init"] else encoders.default_checkpoint(c["encoder"])
        if default is None:
            return {"random_init": bool(c["random_init"]), "sha256": None}
        path = default
    else:
        path = Path(os.path.expanduser(str(c["checkpoint"])))
        if path.is_dir():  # a Hugging Face folder: its weights file
            from encoders.checkpoint import hf_weights_file

            path = hf_weights_file(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; pass --checkpoint PATH to a "
                                f"released .pth/.pth.tar/.safetensors file")
    from encoders.checkpoint import file_sha256

    return {"random_init": False, "sha256": file_sha256(path)}


def run_id(plan: RunPlan, *, checkpoint_identity: dict | None = None,
           probe_sha256: str | None = None) -> str:
    """The run's identity (encoder, weights, protocol, seed), decided without loading the
    encoder. A sweep that hashed the files already passes the hashes (`harness launch`)."""
    c = plan.c
    ident = checkpoint_identity or _checkpoint_identity(c)
    bits = {"encoder": dict(c["encoder"]), "checkpoint": ident["sha256"],
            "random_init": ident["random_init"], "protocol_id": plan.protocol_id,
            "seed": plan.seed}
    probe_ckpt = c.get("probe_checkpoint")
    if probe_ckpt:
        if probe_sha256 is None:
            from encoders.checkpoint import file_sha256

            if not Path(probe_ckpt).is_file():
                raise FileNotFoundError(f"probe checkpoint not found: {probe_ckpt}")
            probe_sha256 = file_sha256(probe_ckpt)
        bits["probe_checkpoint"] = probe_sha256
    return run_identity(bits)


def find_finished(records_dir: Path, run_id: str) -> Path | None:
    """A record already written by the run with this identity, if any."""
    if not records_dir.is_dir():
        return None
    for path in sorted(records_dir.glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and (rec.get("extra") or {}).get("run_id") == run_id:
            return path
    return None


def run_evaluation(cfg, frame_cache=None, overrides: list[str] | None = None,
                   log_fn=None, stop=None) -> RunOutcome:
    """Train and evaluate the probe `cfg` describes; write and return its record.

    `frame_cache` (a `tasks.decode.FrameCache`): decoded videos shared across runs in one process,
    so a caller running many evaluations on the same videos (`harness demo`) decodes each once.
    It changes no number: the clips are sliced from the same decoded frames.
    `overrides`: the command line's overrides, for the record's reproduce command.
    `stop()`: polled by the trainer; True (a SIGTERM) saves state and raises `probes.Preempted`.
    A run whose record already exists (same encoder, weights, protocol and seed) is not redone:
    its record is returned (`RunOutcome.reused`), unless resume=false.
    """
    import contextlib

    with contextlib.ExitStack() as held:
        return _run_evaluation(cfg, frame_cache, overrides, log_fn, stop, held)


def _run_evaluation(cfg, frame_cache, overrides, log_fn, stop, held) -> RunOutcome:
    import torch

    import encoders
    import probes
    import results
    from harness.preflight import check_out_writable

    check_out_writable(cfg.out)  # a read-only --out is found before any data is read
    plan = plan_run(cfg, frame_cache=frame_cache, log_fn=log_fn)
    c, device, seed = plan.c, plan.device, plan.seed
    main_rank = plan.rank == 0
    show_progress = bool(c["progress"]) and main_rank
    encoder_cfg = dict(c["encoder"])
    pid = plan.protocol_id
    probe_ckpt = c.get("probe_checkpoint")
    identity = run_id(plan)
    out = Path(c["out"])
    done = find_finished(out / "records", identity) if c["resume"] else None
    if done is not None:
        log.info("run %s already finished: %s", identity, done)
        return RunOutcome(record=results.read_record(done), path=done, reused=True)

    from common import failpoints

    failpoints.hit("startup")
    torch.manual_seed(seed)
    encoder = encoders.from_config(
        encoder_cfg,
        checkpoint=c["checkpoint"],
        checkpoint_key=c["checkpoint_key"],
        trust_checkpoint=bool(c["trust_checkpoint"]),
        random_init=bool(c["random_init"]),
        seed=seed,
    )
    spec = encoder.spec
    task = plan.task
    from probes.registry import GRID_KEYS

    probe_cfg = {k: v for k, v in c["probe"].items() if k != "kind" and k not in GRID_KEYS}
    if probe_cfg.get("num_heads") is None and c["probe"]["kind"] != "attentive_v2":
        probe_cfg["num_heads"] = spec.num_heads

    if c["probe"]["kind"] == "roi_linear":  # reads the token map of one clip
        s = task.spec.sampling
        res = task.spec.resolution or spec.resolution
        probe_cfg["token_grid"] = spec.grid_for(s.frames_per_clip, res, res)
    kind = probe_kind(task, plan.split)
    selection_kind = None
    if plan.selection_items is not None:  # detection: scored against the held-out films' truth
        from probes.kinds import for_task
        from tasks import ava

        selection_kind = for_task("detection", evaluate=ava.items_evaluator(task, plan.selection_items),
                                  class_ids=ava.class_ids(task))

    def make_probe():
        return probes.build(c["probe"]["kind"], embed_dim=spec.embed_dim,
                            num_classes=task.num_classes, **_supported(c["probe"]["kind"], probe_cfg))

    grid = c["probe"].get("grid")
    if grid:
        from probes.grid import ProbeGrid, grid_points

        probe = ProbeGrid(make_probe, grid_points(dict(grid)))
        if c.get("probe_checkpoint"):
            raise ValueError("--probe-checkpoint scores one trained probe; drop probe.grid")
    else:
        probe = make_probe()

    state_path = out / "state" / f"{spec.name}__{task.spec.name}__{identity}.pt"
    try:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the run folder {state_path.parent}: {err}; pass a "
                         f"writable --out") from None
    # Held until the record is written: a second identical run refuses to start (it would
    # train on the same state file) rather than removing or sharing the first one's state.
    held.enter_context(probes.state_lock(state_path if main_rank else None))
    done = find_finished(out / "records", identity) if c["resume"] else None
    if done is not None:  # the run it waited on finished while this one built its encoder
        return RunOutcome(record=results.read_record(done), path=done, reused=True)
    if not c["resume"] and state_path.exists() and main_rank:
        state_path.unlink()
    import parallel

    parallel.barrier()  # no rank reads the state before rank 0 has removed it

    log.info("run %s: encoder %s, task %s, protocol %s", identity, spec.name, task.spec.name, pid)
    started = time.time()
    chunk = c.get("encoder_chunk")
    protocol = dict(plan.protocol)
    probe_info = None
    if probe_ckpt:
        if c["probe"]["kind"] == "attentive_v2":
            from probes.attentive_v2 import load_release_probe_checkpoint, load_release_state_dict

            states = load_release_probe_checkpoint(probe_ckpt)
            if len(states) != 1:
                raise ValueError(f"{probe_ckpt} holds {len(states)} probe heads (V-JEPA 2 saves its "
                                 f"whole grid); this scores one trained probe: save the chosen "
                                 f"head alone as {{'classifiers': [state_dict]}}")
            load_release_state_dict(probe, states[0])
            probe_info = {"format": "vjepa2 release", "heads_in_file": 1}
        else:
            from probes.attentive import load_probe_checkpoint

            probe_info = load_probe_checkpoint(probe, probe_ckpt)
        protocol["probe_source"] = "checkpoint (not trained by this run)"
        pid = results.protocol_id(protocol)
        metrics, problems, info = probes.evaluate_full(
            encoder, probe, plan.eval_data, device=device, bf16=plan.optim.bf16,
            encoder_chunk=chunk, max_failure_fraction=task.spec.max_failure_fraction,
            progress=show_progress, kind=kind)
        result = probes.ProbeResult(metrics=metrics, probe=probe, data_problems=problems,
                                    timings={"eval_s": info["eval_s"]},
                                    precision=info["precision"], num_evaluated=info["samples"],
                                    predictions=info["predictions"])
    else:
        store, fkey = _feature_store(c, plan, encoder, out) if plan.cache else (None, None)
        result = probes.train_probe(
            encoder, probe, plan.train_data, plan.eval_data, plan.optim,
            device=device,
            max_failure_fraction=task.spec.max_failure_fraction,
            state_path=state_path,
            save_every_s=float(c.get("state_save_every_s", 300.0)),
            progress=show_progress,
            log=None if main_rank else (lambda _: None),
            encoder_chunk=chunk,
            cache_features=plan.cache,
            cache_copies=plan.copies,
            cache_seed=seed,
            selection=c["probe"].get("selection") or "val",
            selection_data=plan.selection_data,
            stop=stop,
            feature_store=store,
            feature_key=fkey,
            kind=kind,
            selection_kind=selection_kind,
        )
    if result.precision != plan.precision:  # the plan promised what the protocol says
        raise RuntimeError(f"ran in {result.precision} but planned {plan.precision}")
    timings = dict(result.timings)
    timings["wall_seconds"] = time.time() - started
    metrics = dict(result.metrics)
    metrics["num_samples"] = result.num_evaluated
    checkpoint_info = dict(encoder.checkpoint_info)
    from encoders.metadata import cost, describe

    s = task.spec.sampling
    metadata = describe(encoder_cfg)
    metadata["at_run_input"] = cost(encoder_cfg, frames=s.frames_per_clip,
                                    resolution=task.spec.resolution or spec.resolution)
    record = results.make_record(
        encoder={"name": spec.name, "family": spec.family, "modality": spec.modality,
                 "spec": spec.to_dict(), "config": encoder_cfg, "metadata": metadata},
        checkpoint=checkpoint_info,
        task=task.spec.name,
        split=plan.split,
        protocol=protocol,
        metrics=metrics,
        data_problems=result.data_problems.to_dict(),
        timings=timings,
        seed=seed,
        device=device,
        world_size=plan.world_size,
        precision=result.precision,
        extra={"label": c.get("label"), "run_id": identity,
               "command": reproduce_command(c, overrides), "history": result.history,
               "preflight": plan.preflight, "probe_checkpoint": probe_info,
               "micro_batch_size": plan.train_data.micro_batch_size,
               "grid": result.heads, "chosen_head": result.chosen_head,
               "image_frames": plan.image_frames},
    )
    if not main_rank:  # every rank holds the same record; rank 0 writes it
        return RunOutcome(record=record, path=None)
    records_dir = out / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    # The name's last 6 characters are the run identity's: a run killed between its predictions
    # and its record leaves predictions no record claims, which its re-run (holding the
    # identity's lock) recognises as its own and replaces.
    filename = results.record_filename(record)[:-len("xxxxxx.json")] + identity[:6] + ".json"
    _remove_unclaimed_predictions(records_dir, filename)
    predictions = result.predictions
    if predictions:
        from results.predictions import predictions_path, write_predictions

        pred_path = predictions_path(records_dir / filename)
        write_predictions(pred_path, predictions, [p for p, _ in task.entries(plan.split)])
        record["extra"]["predictions"] = pred_path.name
        from common import failpoints

        failpoints.hit("record")  # between the predictions and the record
    path = results.write_record(record, records_dir, filename=filename)
    return RunOutcome(record=record, path=path)


def _remove_unclaimed_predictions(records_dir: Path, filename: str) -> None:
    """Predictions of this identity (same encoder, task, protocol, run-id suffix) whose record was
    never written: left by a run killed between the two files."""
    head, _, rest = filename.rpartition("__")
    suffix = rest[-len("xxxxxx.json"):-len(".json")]
    import glob

    for npz in records_dir.glob(f"{glob.escape(head)}__*-{suffix}.predictions.npz"):
        if not npz.with_name(npz.name[:-len(".predictions.npz")] + ".json").exists():
            npz.unlink(missing_ok=True)


def _feature_store_root(c: dict) -> Path | None:
    """Where `feature_store` keeps cached tokens: None when off (the default)."""
    where = c.get("feature_store", "off")
    if where in (None, False) or str(where).lower() in ("off", "false", "none"):
        return None
    if where is True or str(where).lower() == "auto":
        return Path(c["out"]) / "features"
    return Path(os.path.expanduser(str(where)))


def _feature_store(c: dict, plan: RunPlan, encoder, out: Path):
    """(FeatureStore, key) of the run's cached training tokens, or (None, None) when
    `feature_store=off`. The key is the weights' digest (taken before any bf16 cast), what
    changes the clips and the training manifest actually used (after any selection hold-out)."""
    root = _feature_store_root(c)
    if root is None:
        return None, None
    from probes.feature_store import FeatureStore, feature_key, state_dict_digest, token_fields
    from tasks.manifest import manifest_sha256

    task, data = plan.task, plan.train_data
    fields = token_fields(task.protocol(plan.split), split="train",
                          resolution=task.spec.resolution or encoder.spec.resolution,
                          precision=plan.precision,
                          encoder={"name": encoder.spec.name,
                                   "arch": dict(c["encoder"].get("arch") or {}),
                                   "mean": list(c["encoder"]["mean"]),
                                   "std": list(c["encoder"]["std"])},
                          copies=plan.copies, seed=plan.seed,
                          random_clips=bool(plan.copies) or data.shuffle, views=1)
    key = feature_key(encoder_digest=state_dict_digest(encoder), fields=fields,
                      manifest_hash=manifest_sha256(data.dataset.entries, task.root))
    return FeatureStore(root), key


def probe_kind(task, split: str):
    """The task kind's loss, head input, view merge and metrics (`probes.kinds`); a detection
    task's evaluator is its own (AVA: ActivityNet's frame mAP, `tasks.ava_eval`)."""
    from probes.kinds import for_task

    if task.spec.kind != "detection":
        return for_task(task.spec.kind)
    from tasks import ava

    evaluate = ava.evaluator(task, split)
    return for_task("detection", evaluate=evaluate, class_ids=ava.class_ids(task))


def _supported(kind: str, cfg: dict) -> dict:
    if kind == "knn":  # not a network: only its own keys (probes/configs/probe/knn.yaml)
        return {k: v for k, v in cfg.items() if k in ("k", "temperature", "bank_chunk",
                                                      "query_chunk")}
    # The linear probe has no heads/queries; keep one probe YAML schema without failing on them.
    if kind in ("linear", "roi_linear"):
        return {k: v for k, v in cfg.items() if k not in ("num_heads", "num_queries", "depth",
                                                          "mlp_ratio", "xattn_proj")}
    return cfg


# Overrides that only say where things go or how they are shown: the reproduce command keeps
# them out so it stays runnable elsewhere; everything else (what changes a number) stays.
_PLACE_KEYS = ("out", "progress", "resume", "device")


def reproduce_command(c: dict, overrides: list[str] | None = None) -> str:
    """The one-line command that reproduces this run: its flags and every `key=value` override."""
    import shlex

    parts = ["harness", "run", "--encoder", c["encoder"]["name"], "--task", c["task"]["name"],
             "--probe", c["probe"]["kind"]]
    if c["checkpoint"]:
        parts += ["--checkpoint", str(c["checkpoint"])]
    if c.get("probe_checkpoint"):
        parts += ["--probe-checkpoint", str(c["probe_checkpoint"])]
    if c["random_init"]:
        parts.append("--random-init")
    if c.get("trust_checkpoint"):
        parts.append("--trust-checkpoint")
    parts += ["--seed", str(c["seed"])]
    flag_keys = {"encoder", "task", "probe", "checkpoint", "probe_checkpoint", "random_init",
                 "trust_checkpoint", "seed", "checkpoint_key"}
    if c.get("checkpoint_key"):
        parts += ["--checkpoint-key", str(c["checkpoint_key"])]
    for item in overrides or []:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in flag_keys or key in _PLACE_KEYS or key.startswith("hydra"):
            continue
        parts.append(item)
    return shlex.join(parts)
