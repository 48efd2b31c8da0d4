"""The demo's runs as jobs: pretraining, probe and VoE runs, one after another in this process
(jobs=1) or in worker processes running side by side.

Why workers and not threads inside a run: on 2 shared CPU cores a second intra-op thread costs
time for every encoder the demo runs (measured in `harness.runner.intra_op_threads`), while two
one-thread processes each keep a core busy. Every job is a whole run with its own seed, so a
run computes the same numbers in a worker as in this process (tests/test_demo_smoke.py checks
the records of jobs=1 and jobs=2 are equal). Each worker keeps its own decoded-video cache.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

# The decoded videos of the worker (or of this process with jobs=1), set by `_start_worker`.
_frame_cache = None


def default_jobs(device: str) -> int:
    """2 on a CPU with at least 2 usable cores, else 1 (a GPU's runs go one after another)."""
    if not str(device).startswith("cpu"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 if (cores or 1) >= 2 else 1


def _start_worker(cache_bytes: int, verbosity: int | None) -> None:
    """A worker's (or jobs=1's) decoded-video cache; a worker also installs the CLI's log
    handler (spawned processes start without one) at `verbosity`."""
    global _frame_cache
    from harness.host_memory import keep_freed_memory
    from tasks.frame_cache import FrameCache

    keep_freed_memory()  # a spawned worker starts with malloc as it is
    if verbosity is not None:
        from harness import output

        output.install(verbosity)
    _frame_cache = FrameCache(cache_bytes) if cache_bytes > 0 else None


def pretrain_job(config: str, overrides: list[str], out_dir: str, progress: bool,
                 torch_threads: int | None = None):
    from harness.pretrain import run_pretrain

    t = time.time()
    path = run_pretrain(config, overrides, out_dir=out_dir, resume=True, progress=progress,
                        frame_cache=_frame_cache, torch_threads=torch_threads or "auto")
    return str(path), time.time() - t


def probe_job(overrides: list[str]):
    from harness.config import compose_run
    from harness.runner import run_evaluation

    t = time.time()
    outcome = run_evaluation(compose_run(overrides), frame_cache=_frame_cache)
    return {**outcome.record, "_path": str(outcome.path)}, time.time() - t


def physics_job(overrides: list[str]):
    from harness.config import compose_run
    from harness.voe_run import run_voe

    t = time.time()
    outcome = run_voe(compose_run(overrides), overrides=overrides)
    return {**outcome.record, "_path": str(outcome.path)}, time.time() - t


def probe_overrides(entry, checkpoint: str | None, *, task: str, seed: int,
                    out_dir: Path, data_dir: Path, progress: bool,
                    torch_threads: int | None) -> list[str]:
    """The `harness run` overrides of one probe run of the demo."""
    overrides = [f"encoder={entry.encoder}", f"task={task}", "probe=attentive", f"out={out_dir}",
                 f"seed={seed}", f"label='{entry.label}'", f"task.data.root={data_dir}",
                 f"progress={'true' if progress else 'false'}",
                 f"torch_threads={torch_threads or 'auto'}"]
    if entry.random_init:
        overrides.append("random_init=true")
    if checkpoint:
        overrides.append(f"checkpoint='{checkpoint}'")
    return overrides


def make_physics_data(data_dir: Path, *, seed: int, progress: bool,
                      pairs_per_property: int = 40) -> None:
    """The synthetic VoE pairs in `data_dir` (`harness data make physics`), when missing."""
    from tasks.physics_synth import MANIFEST, make_physics

    if not (data_dir / MANIFEST).is_file():
        make_physics(data_dir, seed=seed, progress=progress,
                     pairs_per_property=pairs_per_property)


def physics_overrides(entry, checkpoint: str | None, *, out_dir: Path,
                      data_dir: Path, seed: int, progress: bool,
                      torch_threads: int | None) -> list[str]:
    """The `harness run --task physics_synth` overrides scoring a V-JEPA tiny entry (its
    pretraining file's predictor, or a random one) on the synthetic pairs in `data_dir`."""
    overrides = [f"encoder={entry.encoder}", "task=physics_synth", f"out={out_dir}",
                 f"seed={seed}", f"label='{entry.label}'", f"task.data.root={data_dir}",
                 f"progress={'true' if progress else 'false'}",
                 f"torch_threads={torch_threads or 'auto'}"]
    if entry.random_init:
        # the floor is the pretrained variants' architecture, untrained: their predictor's
        # sizes, not the registry default (the release's 384 wide, 12 deep)
        overrides += ["random_init=true", tiny_predictor()]
    if checkpoint:
        overrides.append(f"checkpoint='{checkpoint}'")
    return overrides


def tiny_predictor() -> str:
    """`+predictor={...}`: the predictor sizes of the `vjepa_tiny` pretraining config."""
    from encoders.predictors import OVERRIDE_KEYS
    from harness.pretrain_config import compose_pretrain_config

    sizes = compose_pretrain_config("vjepa_tiny")["predictor"]
    return "+predictor={" + ",".join(f"{k}:{sizes[k]}" for k in OVERRIDE_KEYS if k in sizes) + "}"


class _Inline:
    """Runs each job when it is submitted, in this process (jobs=1)."""

    def submit(self, fn, *args) -> Future:
        done: Future = Future()
        done.set_result(fn(*args))
        return done

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


@dataclass
class Plan:
    """What the demo runs, per entry index: a pretraining job (config, overrides, out dir) or
    none; the probe runs it gets once its checkpoint is known (key -> overrides); and its VoE
    run's overrides or None. `probes` and `physics` take the entry's checkpoint (or None)."""
    pretrain: dict[int, tuple[str, list[str], str]]
    probes: Callable[[int, str | None], dict[tuple, list[str]]]
    physics: Callable[[int, str | None], list[str] | None]
    order: list[int] = field(default_factory=list)  # entries without pretraining, first first
    torch_threads: int | None = None  # pretraining's intra-op threads; None: the auto rule


def run_jobs(plan: Plan, *, jobs: int, cache_bytes: int, verbosity: int, progress: bool,
             announce=None) -> tuple[dict, dict, dict[str, float]]:
    """Run every job of `plan` on `jobs` processes; return (probe records by key, VoE records
    by entry index, seconds spent per kind of job, summed over jobs).

    The entries that need no pretraining go first, in `plan.order` (the demo puts the frame-wise
    ImageNet runs, about half its CPU time, at the front, so the short runs fill in around them);
    then the pretraining jobs; each pretrained entry's runs are queued when its file is written.
    `announce(kind, key, record_or_path, seconds)` is called as each job ends.
    """
    if jobs > 1:
        import multiprocessing

        pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(cache_bytes, verbosity))
        progress = False  # two bars on one terminal would overwrite each other
    else:
        _start_worker(cache_bytes, None)
        pool = _Inline()
    running: dict[Future, tuple[str, object]] = {}
    probes, physics, seconds = {}, {}, {"pretrain_s": 0.0, "probe_s": 0.0, "physics_s": 0.0}

    def queue_runs(index: int, checkpoint: str | None) -> None:
        for key, overrides in plan.probes(index, checkpoint).items():
            running[pool.submit(probe_job, overrides)] = ("probe", key)
        overrides = plan.physics(index, checkpoint)
        if overrides is not None:
            running[pool.submit(physics_job, overrides)] = ("physics", index)

    try:
        for index in plan.order:
            queue_runs(index, None)
        for index, (config, overrides, out_dir) in plan.pretrain.items():
            running[pool.submit(pretrain_job, config, overrides, out_dir, progress,
                                plan.torch_threads)] = \
                ("pretrain", index)
        while running:
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                kind, key = running.pop(future)
                result, spent = future.result()
                seconds[f"{kind}_s"] += spent
                if kind == "pretrain":
                    queue_runs(key, result)
                elif kind == "probe":
                    probes[key] = result
                else:
                    physics[key] = result
                if announce is not None:
                    announce(kind, key, result, spent)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    finally:
        _stop_inline_cache()
    pool.shutdown()
    return probes, physics, seconds


def _stop_inline_cache() -> None:
    """jobs=1 kept the decoded videos in this process: let them go with the demo."""
    global _frame_cache
    _frame_cache = None
