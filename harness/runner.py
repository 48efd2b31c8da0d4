"""One evaluation: plan -> encoder -> trained (or loaded) probe -> metrics -> record.

The plan (`harness.plan`) decides everything before the weights are read; identity
(`harness.identity`) names the run; `harness.record_writer` writes what it measured. This module
only runs those steps in order, under the run's lock.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("harness.run")


@dataclass
class RunOutcome:
    record: dict
    path: Path | None  # None on the ranks other than 0 of a DDP run (rank 0 writes the record)
    reused: bool = False  # the run had finished before: its existing record


def run_key(plan, *, checkpoint: dict | None = None, probe_sha256: str | None = None) -> str:
    """The run's identity, decided without loading the encoder. A sweep that hashed the files
    already passes the hashes (`harness launch`)."""
    from harness import identity

    checkpoint = checkpoint or identity.checkpoint_identity(plan.c)
    probe_ckpt = plan.settings.probe_checkpoint
    if probe_ckpt and probe_sha256 is None:
        from common.digest import file_sha256

        if not Path(probe_ckpt).is_file():
            raise FileNotFoundError(f"probe checkpoint not found: {probe_ckpt}")
        probe_sha256 = file_sha256(probe_ckpt)
    return identity.run_id(plan.encoder_cfg, checkpoint, plan.task.spec.name, plan.split,
                           plan.protocol_id, plan.seed, probe_sha256 if probe_ckpt else None)


def intra_op_threads(requested, *, device: str, in_process_loading: bool) -> int | None:
    """torch's intra-op threads for a run (`torch_threads`); None keeps torch's default.

    auto is 1 on CPU when the data are loaded in the run's own process (num_workers 0: the
    digits tasks, `harness demo`): there each op is small (a tiny encoder, a probe on cached
    tokens, 64 px frames), so a second thread mostly waits for the first, and on a busy
    machine the waiting spins. Measured on 2 shared cores (vjepa_tiny random init, the
    digits_motion probe): 1 thread 40-44 CPU-s and 59-83 s, 2 threads (torch's default there)
    224 CPU-s and 416 s. The thread count also moves the number (92.25 vs 91.62 top-1: other
    reduction orders), so it is part of what reproduces a CPU run, and the record says it.
    A heavier encoder does not change this on a shared 2-core machine: the encoder's forward
    on 32 digits clips (8 frames), each side in its own process, alternated (load 3.6-4.0):
    MobileNetV2 frame by frame (0.37 GFLOPs a clip) 25.2 and 27.3 clips/s with 1 thread, 11.3
    and 11.8 with 2; ijepa_tiny 421 and 519 vs 80 and 74; vjepa_tiny 666 and 685 vs 149 and
    119. So no GFLOPs threshold picks 2 threads here; `harness demo` uses the second core by
    running two one-thread runs side by side instead (`harness.demo_jobs`).
    Elsewhere (loader workers, a GPU) torch's default stands; a number is taken as given.
    """
    if requested != "auto":
        return int(requested)
    if str(device).startswith("cpu") and in_process_loading:
        return 1
    return None


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the body with `threads` intra-op threads (None: as it is), then restore them."""
    import torch

    before = torch.get_num_threads()
    if threads is not None and threads != before:
        log.debug("torch intra-op threads: %d (was %d)", threads, before)
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def run_evaluation(cfg, frame_cache=None, overrides: list[str] | None = None,
                   stop=None) -> RunOutcome:
    """Train and evaluate the probe `cfg` describes; write and return its record.

    `frame_cache` (a `tasks.frame_cache.FrameCache`): decoded videos shared across runs in one process,
    so a caller running many evaluations on the same videos (`harness demo`) decodes each once.
    It changes no number: the clips are sliced from the same decoded frames.
    `overrides`: the command line's overrides, for the record's reproduce command.
    `stop()`: polled by the trainer; True (a SIGTERM) saves state and raises `probes.Preempted`.
    A run whose record already exists (same encoder, weights, protocol and seed) is not redone:
    its record is returned (`RunOutcome.reused`), unless resume=false.
    """
    with contextlib.ExitStack() as held:
        return _run(cfg, frame_cache, overrides, stop, held)


def _run(cfg, frame_cache, overrides, stop, held) -> RunOutcome:
    import torch

    import encoders
    import parallel
    import probes
    import results
    from common import failpoints
    from harness import identity
    from harness.plan import plan_run
    from harness.preflight import check_out_writable

    check_out_writable(cfg.out)  # a read-only --out is found before any data is read
    plan = plan_run(cfg, frame_cache=frame_cache)
    settings, main_rank = plan.settings, plan.rank == 0
    # Set for the whole run (the record's `runtime` reads it), restored when the run ends.
    held.enter_context(torch_threads(intra_op_threads(
        settings.torch_threads, device=plan.device,
        in_process_loading=plan.train_data.num_workers == 0)))
    planned = identity.checkpoint_identity(plan.c)
    key = run_key(plan, checkpoint=planned)
    records_dir = settings.out / "records"
    done = identity.find_finished(records_dir, key) if settings.resume else None
    if done is not None:
        log.info("run %s already finished: %s", key, done)
        return RunOutcome(record=results.read_record(done), path=done, reused=True)

    failpoints.hit("startup")
    torch.manual_seed(plan.seed)
    encoder = encoders.from_config(plan.encoder_cfg, checkpoint=settings.checkpoint,
                                   checkpoint_key=settings.checkpoint_key,
                                   trust_checkpoint=settings.trust_checkpoint,
                                   random_init=settings.random_init, seed=plan.seed)
    identity.check_loaded(planned, encoder.checkpoint_info)
    future = plan.task_kind.predicted_future(plan.task)
    if future is not None:  # the head reads the frozen predictor's tokens of the frames ahead
        from probes.predicted_future import PredictedFuture

        predictor = encoders.predictor_from_config(
            plan.encoder_cfg, identity.checkpoint_source(plan.c),
            trust_checkpoint=settings.trust_checkpoint, random_init=settings.random_init,
            seed=plan.seed)
        encoder = PredictedFuture(encoder, predictor, **future)
    probe = _build_probe(plan, encoder.spec)

    task = plan.task
    state_path = settings.out / "state" / f"{encoder.spec.name}__{task.spec.name}__{key}.pt"
    try:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the run folder {state_path.parent}: {err}; pass a "
                         f"writable --out") from None
    # Held until the record is written: a second identical run refuses to start (it would
    # train on the same state file) rather than removing or sharing the first one's state.
    held.enter_context(probes.state_lock(state_path if main_rank else None))
    done = identity.find_finished(records_dir, key) if settings.resume else None
    if done is not None:  # the run it waited on finished while this one built its encoder
        return RunOutcome(record=results.read_record(done), path=done, reused=True)
    if not settings.resume and state_path.exists() and main_rank:
        state_path.unlink()
    parallel.barrier()  # no rank reads the state before rank 0 has removed it

    log.info("run %s: encoder %s, task %s, protocol %s", key, plan.encoder_label,
             task.spec.name, plan.protocol_id)
    started = time.time()
    protocol, probe_info = dict(plan.protocol), None
    kind = _probe_kind(plan)
    if settings.probe_checkpoint:
        probe_info = plan.probe_type.load_trained(probe, settings.probe_checkpoint)
        protocol["probe_source"] = "checkpoint (not trained by this run)"
        result = _score_loaded_probe(plan, encoder, probe, kind)
    else:
        store, fkey = _feature_store(plan, encoder) if plan.cache else (None, None)
        selection_kind = None
        if plan.selection_items is not None:  # scored against the held-out items' own truth
            selection_kind = _probe_kind(plan, items=plan.selection_items)
        result = probes.train_probe(
            encoder, probe, plan.train_data, plan.eval_data, plan.optim,
            device=plan.device, max_failure_fraction=task.spec.max_failure_fraction,
            state_path=state_path, save_every_s=settings.state_save_every_s,
            progress=settings.progress and main_rank, encoder_chunk=settings.encoder_chunk,
            cache_features=plan.cache, cache_copies=plan.copies, cache_seed=plan.seed,
            selection=plan.selection, selection_data=plan.selection_data, stop=stop,
            feature_store=store, feature_key=fkey, kind=kind, selection_kind=selection_kind)
    if result.precision != plan.precision:  # the plan promised what the protocol says
        raise RuntimeError(f"ran in {result.precision} but planned {plan.precision}")
    from harness.record_writer import make_run_record, write_run_record

    timings = dict(result.timings)
    timings["wall_seconds"] = time.time() - started
    record = make_run_record(plan, encoder, result, protocol=protocol, identity=key,
                             overrides=overrides, probe_info=probe_info, timings=timings)
    if not main_rank:  # every rank holds the same record; rank 0 writes it
        return RunOutcome(record=record, path=None)
    path = write_run_record(plan, record, result.predictions, key)
    return RunOutcome(record=record, path=path)


def _build_probe(plan, spec):
    import probes

    s = plan.task.spec.sampling
    res = plan.task.spec.resolution or spec.resolution
    kw = plan.probe_type.build_kwargs(plan.probe_cfg, num_heads=spec.num_heads,
                                      token_grid=spec.grid_for(s.frames_per_clip, res, res))

    def make_probe():
        return probes.build(plan.probe_type.kind, embed_dim=spec.embed_dim,
                            num_classes=plan.task.num_classes, **kw)

    if not plan.grid:
        return make_probe()
    if plan.settings.probe_checkpoint:
        raise ValueError("--probe-checkpoint scores one trained probe; drop probe.grid")
    from probes.grid import ProbeGrid, grid_points

    return ProbeGrid(make_probe, grid_points(dict(plan.grid)))


def _probe_kind(plan, items=None):
    """The task kind's loss, head input, view merge and metrics (`probes.kinds`), with a
    detection task's own evaluator (of the evaluation split, or of held-out items)."""
    from probes.kinds import for_task

    return for_task(plan.task.spec.kind, **plan.task_kind.scoring(plan.task, plan.split, items))


def _score_loaded_probe(plan, encoder, probe, kind):
    import probes

    metrics, problems, info = probes.evaluate_full(
        encoder, probe, plan.eval_data, device=plan.device, bf16=plan.optim.bf16,
        encoder_chunk=plan.settings.encoder_chunk,
        max_failure_fraction=plan.task.spec.max_failure_fraction,
        progress=plan.settings.progress and plan.rank == 0, kind=kind)
    return probes.ProbeResult(metrics=metrics, probe=probe, data_problems=problems,
                              timings={"eval_s": info["eval_s"]}, precision=info["precision"],
                              num_evaluated=info["samples"], predictions=info["predictions"])


def _feature_store(plan, encoder):
    """(FeatureStore, key) of the run's cached training tokens, or (None, None) when
    `feature_store=off`. The key is the weights' digest (taken before any bf16 cast), what
    changes the clips and the training manifest actually used (after any selection hold-out)."""
    root = plan.settings.feature_store
    if root is None:
        return None, None
    from probes.feature_store import FeatureStore, feature_key, state_dict_digest, token_fields

    task, data = plan.task, plan.train_data
    fields = token_fields(task.protocol(plan.split), split="train",
                          resolution=task.spec.resolution or encoder.spec.resolution,
                          precision=plan.precision,
                          encoder={"name": encoder.spec.name,
                                   "arch": dict(plan.encoder_cfg.get("arch") or {}),
                                   "mean": list(plan.encoder_cfg["mean"]),
                                   "std": list(plan.encoder_cfg["std"])},
                          copies=plan.copies, seed=plan.seed,
                          random_clips=bool(plan.copies) or data.shuffle, views=1)
    key = feature_key(encoder_digest=state_dict_digest(encoder), fields=fields,
                      manifest_hash=task.entries_sha256(data.dataset.entries, "train"))
    return FeatureStore(root), key
