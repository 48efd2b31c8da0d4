"""SLURM (or local) launching through submitit: one run, or a job array for a sweep.

A sweep is the cartesian product of Hydra-style comma lists (`--encoder a,b --task t1,t2
seed=0,1,2`, checkpoint globs). Runs whose record already exists under the same identity
(encoder, weights, protocol, seed: what `harness.runner` calls the run id) are dropped before
anything is submitted. Each job is an `EvaluationJob`: on SLURM's timeout / preemption signal
submitit calls its `checkpoint()`, which asks the running evaluation to stop at its next step
(the probe trainer then saves its full state), and returns the same call for requeueing; the
requeued job resumes from that state to the same numbers.

Every value that reaches the sbatch script (partition, account, qos, constraint, job name, the
log folder) is one line of printable text, checked here with an error naming its flag (a
newline would end the `#SBATCH` line and start a shell line of its own), and submitit quotes
it (shlex). The run lines printed are shell-quoted (`results.escape.shell_join`).
"""
from __future__ import annotations

import glob
import itertools
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit

log = logging.getLogger("harness.launch")

# `harness run` flags whose value may be a comma list (or, for checkpoints, a glob) in a sweep.
SWEEP_FLAGS = ("encoder", "task", "probe", "checkpoint")
_GLOB_CHARS = "*?["


def check_script_value(flag: str, value) -> None:
    """Refuse a value bound for the sbatch script that holds a newline or another control
    character (C0, C1, DEL, line separators): in the script it would end its `#SBATCH` line and
    the rest would run as a shell command. `flag` names where the value came from."""
    if value is None:
        return
    text = str(value)
    bad = sorted({c for c in text if not c.isprintable()})
    if bad:
        from results.escape import printable

        shown = ", ".join(printable(c) for c in bad)
        raise ValueError(f"{flag} {printable(repr(text))}: holds a newline or control character "
                         f"({shown}); a value written into the sbatch script must be one line of "
                         f"printable text")


# The Resources fields written into the sbatch script as text, by the flag that sets them.
SCRIPT_TEXT_FLAGS = {"partition": "--partition", "account": "--account", "qos": "--qos",
                     "constraint": "--constraint", "job_name": "the job name"}


@dataclass
class Resources:
    """What one job asks the scheduler for. None: the scheduler's (or submitit's) default."""

    partition: str | None = None
    gpus_per_node: int = 0
    nodes: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 24 * 60  # a job at its limit is requeued and resumes, so a day is safe
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_parallel: int | None = None  # array tasks running at once
    signal_delay_s: int = 90  # SLURM sends the signal this long before the limit
    job_name: str = "harness"

    def __post_init__(self) -> None:
        for name, flag in SCRIPT_TEXT_FLAGS.items():
            check_script_value(flag, getattr(self, name))
        for name in ("gpus_per_node", "nodes", "cpus_per_task", "time_min", "max_parallel"):
            value = getattr(self, name)
            low = 0 if name == "gpus_per_node" else 1
            if value is not None and (not isinstance(value, int) or value < low):
                flag = "--" + name.replace("_min", "").replace("_", "-")
                raise ValueError(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ValueError(f"--mem must be a positive number of GB, got {self.mem_gb!r}")

    @property
    def tasks_per_node(self) -> int:
        # One process (one DDP rank) per GPU; a CPU job is one process.
        return max(1, self.gpus_per_node)

    def generic_parameters(self) -> dict:
        """submitit's cluster-independent parameters."""
        params = {"timeout_min": self.time_min, "nodes": self.nodes,
                  "gpus_per_node": self.gpus_per_node, "tasks_per_node": self.tasks_per_node,
                  "cpus_per_task": self.cpus_per_task, "mem_gb": self.mem_gb,
                  "name": self.job_name}
        return {k: v for k, v in params.items() if v is not None}

    def slurm_parameters(self) -> dict:
        """SLURM-only parameters, under the SLURM executor's names."""
        params = {"partition": self.partition, "account": self.account, "qos": self.qos,
                  "constraint": self.constraint, "array_parallelism": self.max_parallel,
                  "signal_delay_s": self.signal_delay_s}
        return {k: v for k, v in params.items() if v is not None}

    def executor_parameters(self) -> dict:
        """AutoExecutor parameters (the slurm_* ones are ignored by the local executor)."""
        return {**self.generic_parameters(),
                **{f"slurm_{k}": v for k, v in self.slurm_parameters().items()}}


@dataclass
class PlannedRun:
    overrides: list[str]
    finished: Path | None = None  # its record, when the run is already done

    @property
    def command(self) -> str:
        """The `harness run` line of this run, shell-quoted: one printable line (an argument
        with a control character as bash's $'...') that runs exactly these overrides."""
        from results.escape import shell_join

        return shell_join(["harness", "run", *self.overrides])


@dataclass
class Launch:
    runs: list[PlannedRun]
    jobs: list = field(default_factory=list)

    @property
    def to_submit(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.finished is None]

    @property
    def skipped(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.finished is not None]


# ---------------------------------------------------------------- sweep expansion


def _split(flag: str, value: str, sweep: bool) -> list[str]:
    if flag == "checkpoint" and Path(os.path.expanduser(value)).exists():
        return [value]  # an existing path is one value, whatever characters it holds
    parts = [p.strip() for p in value.split(",")] if sweep else [value]
    parts = [p for p in parts if p]
    if not sweep and "," in value:
        raise ValueError(f"--{flag} {value!r} is a comma list: add --sweep to launch one run "
                         f"per value")
    if flag != "checkpoint":
        return parts
    out = []
    for part in parts:
        if any(c in part for c in _GLOB_CHARS):
            matches = sorted(glob.glob(os.path.expanduser(part)))
            if not matches:
                raise FileNotFoundError(f"--checkpoint {part!r} matches no file; check the "
                                        f"pattern (quote it so the shell leaves it alone)")
            if len(matches) > 1 and not sweep:
                raise ValueError(f"--checkpoint {part!r} matches {len(matches)} files: add "
                                 f"--sweep to launch one run per checkpoint")
            out.extend(matches)
        else:
            out.append(part)
    return out


def _override_axis(text: str, sweep: bool, parser) -> list[str]:
    from harness.config import ConfigError

    try:
        (override,) = parser.parse_overrides([text])
    except Exception as err:  # noqa: BLE001 - Hydra's grammar errors have no common base here
        if sweep and "," in text:
            raise ConfigError(f"cannot read the sweep override {text!r}: {err}") from None
        return [text]  # composing the run reports it (or handles it: encoder=timm:<name>)
    if not override.is_sweep_override():
        return [text]
    if not sweep:
        raise ConfigError(f"{text!r} is a sweep (a comma list or range): add --sweep to launch "
                          f"one run per value")
    if not override.is_discrete_sweep():
        raise ConfigError(f"{text!r}: only comma lists, range(...) and choice(...) sweeps can be "
                          f"launched")
    key = override.get_key_element()
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


def expand_runs(flags: dict, fixed: list[str], overrides: list[str], sweep: bool = False,
                data_roots: dict[str, str] | None = None) -> list[list[str]]:
    """The runs of a launch, each a `harness run` override list.

    `flags`: values of SWEEP_FLAGS given on the command line (comma lists / globs with `sweep`);
    `fixed`: the other flags as overrides (`run.overrides_from_args` of them); `overrides`: the
    user's key=value overrides, where `sweep` expands comma lists, range() and choice().
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from harness.config import quote_override as _quote

    axes = []
    for flag in SWEEP_FLAGS:
        value = flags.get(flag)
        if value is not None:
            axes.append([f"{flag}={_quote(v)}" for v in _split(flag, str(value), sweep)])
    axes += [[item] for item in fixed]
    parser = OverridesParser.create()
    axes += [_override_axis(text, sweep, parser) for text in overrides]
    runs = [list(row) for row in itertools.product(*axes)]
    runs = [list(r) for r in dict.fromkeys(tuple(r) for r in runs)]  # `seed=0,0`: one run
    return _with_data_roots(runs, data_roots or {})


def _task_of(run: list[str]) -> str | None:
    for item in run:
        key, _, value = item.partition("=")
        if key == "task":
            return value.strip("'\"")
    return None


def _with_data_roots(runs: list[list[str]], roots: dict[str, str]) -> list[list[str]]:
    """Each task's own data root (`--data-root TASK=DIR`), in place of one `task.data.root=`
    for every task of the sweep (right only where the tasks share a folder, as the digits do)."""
    from harness.config import ConfigError, quote_override

    tasks_run = {_task_of(r) for r in runs}
    unknown = sorted(set(roots) - tasks_run)
    if unknown:
        raise ConfigError(f"--data-root names task(s) {', '.join(unknown)} that this launch does "
                          f"not run (its tasks: {', '.join(sorted(t for t in tasks_run if t))})")
    out = []
    for run in runs:
        task = _task_of(run)
        if task in roots:  # replaces a `task.data.root=` shared by every task of the sweep
            run = [o for o in run if not o.startswith("task.data.root=")]
            run.append(f"task.data.root={quote_override(roots[task])}")
        out.append(run)
    return out


def plan_launch(runs: list[list[str]], resources: Resources) -> Launch:
    """Compose every run (a bad override fails here, before anything is submitted), fix its
    device to what the job will have, and find those already recorded."""
    from harness.config import compose_run, to_container
    from harness.recorded_runs import finished_record
    from results.escape import shell_join

    planned, hashes = [], {}
    for i, overrides in enumerate(runs, 1):
        overrides = list(overrides)
        cfg = compose_run(overrides)
        if not to_container(cfg)["resume"]:
            # A requeued job must resume its own saved state, which resume=false would delete.
            raise ValueError("--no-resume / resume=false cannot be launched: a requeued job "
                             "resumes its saved state. To redo a run, delete its record and "
                             "state under <out>, or launch with another --out")
        if to_container(cfg)["device"] in (None, "auto"):
            # The device decides the precision, so the protocol: the launcher (on a login node
            # without GPUs) must plan with the device the job will run on.
            overrides.append("device=cuda" if resources.gpus_per_node > 0 else "device=cpu")
            cfg = compose_run(overrides)
        log.info("checking run %d/%d: %s", i, len(runs), shell_join(overrides))
        if cfg.task.get("kind") == "voe":
            _check_voe(cfg, overrides, resources)
        planned.append(PlannedRun(overrides=overrides, finished=finished_record(cfg, hashes)))
    return Launch(runs=planned)


def _check_voe(cfg, overrides: list[str], resources: Resources) -> None:
    """A VoE run (the predictor's surprise, `harness.voe_run`) trains no probe and scores on one
    device: probe keys and several GPUs per job are errors that say so."""
    from harness import voe_run

    voe_run.refuse_probe_only(cfg.task.get("name"), voe_run.probe_only_keys(overrides))
    if resources.tasks_per_node > 1 or resources.nodes > 1:
        raise ValueError(f"task {cfg.task.get('name')!r} is a violation-of-expectation task: "
                         f"it scores on one device, so a job of it takes --gpus-per-node 1 (or "
                         f"0 for the CPU) and --nodes 1")


# ---------------------------------------------------------------- submission


def make_executor(launcher: str, folder: Path, resources: Resources):
    check_script_value("--folder", folder)
    if launcher not in ("slurm", "local"):
        raise ValueError(f"unknown launcher {launcher!r}; use slurm or local")
    if launcher == "local" and resources.nodes > 1:
        raise ValueError("--launcher local runs on this machine: use --nodes 1")
    # Each timeout requeues and resumes; a preemption does not count against this.
    executor = submitit.AutoExecutor(folder=str(folder), cluster=launcher,
                                     slurm_max_num_timeout=10, local_max_num_timeout=10)
    executor.update_parameters(**resources.executor_parameters())
    return executor


def sbatch_script(folder: Path, resources: Resources, array_size: int) -> str:
    """The sbatch file submitit would write for this launch (for --dry-run, on any machine)."""
    from submitit.slurm.slurm import SlurmExecutor

    class RenderOnly(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1  # writing the file needs no cluster; submitting does (see `submit`)

    check_script_value("--folder", folder)
    executor = RenderOnly(folder)
    params = executor._convert_parameters(resources.generic_parameters())
    executor.update_parameters(**params, **resources.slurm_parameters())
    if array_size > 1:
        executor.parameters["map_count"] = array_size  # what submitit sets for an array
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


def submit(launch: Launch, launcher: str, folder: Path, resources: Resources) -> list:
    """Submit the runs not yet recorded, as one job array; returns submitit jobs."""
    todo = launch.to_submit
    if not todo:
        return []
    if launcher == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("sbatch is not on this machine's PATH: launch from a SLURM login node, "
                         "or use --launcher local to run the jobs here")
    Path(folder).mkdir(parents=True, exist_ok=True)
    executor = make_executor(launcher, Path(folder), resources)
    grace = max(5.0, resources.signal_delay_s - 15.0) if launcher == "slurm" else 25.0
    with executor.batch():
        jobs = [executor.submit(EvaluationJob(run.overrides, grace_s=grace)) for run in todo]
    launch.jobs = jobs
    return jobs


# ---------------------------------------------------------------- the job


def export_distributed() -> tuple[int, int]:
    """In a job of several tasks (GPUs), export RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
    MASTER_PORT for torch.distributed; returns (rank, world size)."""
    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        # Every task sees all the node's GPUs and takes cuda:LOCAL_RANK itself (the trainer's
        # rule), so CUDA_VISIBLE_DEVICES is left alone; the job's values win over any the
        # submitting shell passed on.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                              overwrite=True)
    return env.global_rank, env.num_tasks


class EvaluationJob(submitit.helpers.Checkpointable):
    """One `harness run` (its override list) as a requeueable submitit job.

    The evaluation runs in a worker thread so that submitit's signal handler, which runs on the
    main thread and exits the process when it returns, can first ask it to stop at its next step
    and wait (up to `grace_s`) for the training state to be saved.
    """

    def __init__(self, overrides: list[str], grace_s: float = 60.0):
        self.overrides = list(overrides)
        self.grace_s = float(grace_s)
        self._running = None  # (stop event, worker thread): this process only, never pickled

    def __getstate__(self) -> dict:
        return {"overrides": self.overrides, "grace_s": self.grace_s}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._running = None

    def __call__(self) -> dict:
        from harness.config import compose_run
        from harness.runner import run_evaluation
        from probes import Preempted

        from harness import output

        rank, _ = export_distributed()
        output.install(0, rank=rank)  # the job's log file shows what `harness run` would
        from harness.host_memory import keep_freed_memory

        keep_freed_memory()  # as `harness run` does: submitit starts the job's own process
        cfg = compose_run(self.overrides)
        stop = threading.Event()
        box: dict = {}

        def evaluate() -> None:
            try:
                if cfg.task.get("kind") == "voe":  # nothing to save: a requeued job redoes it
                    from harness.voe_run import run_voe

                    box["outcome"] = run_voe(cfg, overrides=self.overrides)
                else:
                    box["outcome"] = run_evaluation(cfg, overrides=self.overrides,
                                                    stop=stop.is_set)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread as is
                box["error"] = err

        worker = threading.Thread(target=evaluate, name="harness-evaluation", daemon=True)
        self._running = (stop, worker)
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.5)  # wakes for signals: submitit's handler runs here
        self._running = None
        err = box.get("error")
        if isinstance(err, Preempted) and rank != 0:
            # Rank 0 requeues the whole job; the other ranks only wait to be ended with it.
            time.sleep(self.grace_s + 30.0)
        if err is not None:
            raise err
        outcome = box["outcome"]
        return {"record": str(outcome.path) if outcome.path else None,
                "reused": bool(outcome.reused),
                "protocol_id": outcome.record.get("protocol_id"),
                "main_metric": (outcome.record.get("extra") or {}).get("main_metric"),
                "metrics": dict(outcome.record.get("metrics") or {})}

    def checkpoint(self, *args, **kwargs):
        running = self._running
        if running is not None:
            stop, worker = running
            log.warning("preemption or time limit: saving the training state at the next "
                        "step, then requeueing")
            stop.set()
            worker.join(timeout=self.grace_s)
            if worker.is_alive():
                log.warning(f"the state was not saved within {self.grace_s:.0f} s; the "
                     f"requeued job resumes from the last save (work since then is redone)")
        return super().checkpoint(*args, **kwargs)


def wait(jobs: list) -> list[tuple[object, dict | None, str | None]]:
    """(job, result, error) per job once all have ended."""
    out = []
    for job in jobs:
        try:
            out.append((job, job.result(), None))
        except Exception as err:  # noqa: BLE001 - a failed job: say where its log is
            first = str(err).strip().splitlines()
            out.append((job, None, first[-1] if first else type(err).__name__))
    return out
