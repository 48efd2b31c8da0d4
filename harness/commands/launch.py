"""`harness launch`: submit runs (one, or a sweep as a job array) through submitit."""
from __future__ import annotations

import argparse

EPILOG = """\
Takes every flag and key=value override of `harness run`. With --sweep, comma lists expand to
the cartesian product of runs, submitted as one job array; checkpoint globs expand to the
matching files:

  harness launch --sweep --encoder vjepa_vitl,vjepa_vith --task k400,ssv2 seed=0,1,2 \\
      --checkpoint 'ckpts/*.pth.tar' --partition gpu --gpus-per-node 8 --time 720 --dry-run \\
      --data-root k400=/data/k400 --data-root ssv2=/data/ssv2

--device (cpu, cuda) is the device the jobs run on; without it, cuda when --gpus-per-node > 0,
else cpu. The device decides the precision, which is part of the protocol, so records made on
another device under another precision do not count as done.

Runs already recorded under <out>/records with the same encoder, weights, protocol and seed are
skipped before anything is submitted. A job that reaches its time limit or is preempted saves
the probe's training state at the next step, is requeued by submitit and resumes from that state
to the same numbers. With several GPUs per node each GPU is one torch.distributed rank (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are exported). --launcher local runs the jobs
on this machine with submitit's local executor and waits for them. Job logs go to --folder
(default <out>/submitit). SBATCH_* environment variables override the sbatch options as usual.
Intuitive-physics tasks (kind voe) launch the same way, one device per job (--gpus-per-node 0
or 1); they save no state, so a requeued one starts over.
"""

LAUNCH_DEFAULTS = {"sweep": False, "partition": None, "gpus_per_node": 0, "nodes": 1,
                   "cpus_per_task": None, "mem": None, "time": 24 * 60, "account": None,
                   "qos": None, "constraint": None, "max_parallel": None, "folder": None,
                   "wait": False}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands import run_flags as run_cmd

    run_cmd.add_arguments(name, p)  # every flag of `harness run`, --launcher included
    p.epilog = EPILOG
    p.set_defaults(launcher="slurm")
    for action in p._actions:
        if action.dest == "dry_run":
            action.help = ("print the expanded runs (and which are already recorded) and the "
                           "sbatch parameters; submit nothing")
        if action.dest == "launcher":
            action.help = "slurm (default) or local (submitit's local executor, this machine)"
    g = p.add_argument_group("launch")
    g.add_argument("--sweep", action="store_true",
                   help="expand comma lists (flags and key=a,b overrides) and checkpoint globs "
                        "into one run per combination")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--gpus-per-node", type=int, help="GPUs per node, one process each (default 0)")
    g.add_argument("--nodes", type=int, help="nodes per job (default 1)")
    g.add_argument("--cpus-per-task", type=int, help="CPU cores per process")
    g.add_argument("--mem", type=float, help="memory per node in GB")
    g.add_argument("--time", type=int,
                   help="time limit per job in minutes (default 1440); a job at its limit is "
                        "requeued and resumes")
    g.add_argument("--account", help="SLURM account")
    g.add_argument("--qos", help="SLURM quality of service")
    g.add_argument("--constraint", help="SLURM node constraint (features)")
    g.add_argument("--max-parallel", type=int, help="array tasks running at once")
    g.add_argument("--folder", help="submitit logs and job files (default <out>/submitit)")
    g.add_argument("--data-root", action="append", default=[], metavar="TASK=DIR",
                   help="the data folder of one task of the sweep (repeatable: one per task)")
    g.add_argument("--wait", action="store_true",
                   help="wait for the jobs and print their results (always with --launcher local)")


def _data_roots(items: list[str]) -> dict[str, str]:
    from harness.config import ConfigError

    roots = {}
    for item in items:
        task, sep, folder = item.partition("=")
        if not sep or not task or not folder:
            raise ConfigError(f"--data-root {item!r}: expected TASK=DIR, e.g. --data-root "
                              f"k400=/data/k400")
        if task in roots and roots[task] != folder:
            raise ConfigError(f"--data-root gives task {task!r} two folders: {roots[task]} and "
                              f"{folder}")
        roots[task] = folder
    return roots


def _option(args, name):
    value = getattr(args, name, None)  # `harness run --launcher` has none of these options
    return LAUNCH_DEFAULTS[name] if value is None else value


def main(args) -> int:
    from pathlib import Path

    from harness import launch
    from harness.commands.run_flags import overrides_from_args
    from harness.config import compose_run, to_container
    from harness.output import print_line

    if getattr(args, "show_config", False):
        raise ValueError("--show-config shows one run: use `harness run ... --show-config`")
    resources = launch.Resources(
        partition=_option(args, "partition"), gpus_per_node=_option(args, "gpus_per_node"),
        nodes=_option(args, "nodes"), cpus_per_task=_option(args, "cpus_per_task"),
        mem_gb=_option(args, "mem"), time_min=_option(args, "time"),
        account=_option(args, "account"), qos=_option(args, "qos"),
        constraint=_option(args, "constraint"), max_parallel=_option(args, "max_parallel"))
    # Checked before any run is composed: the values the sbatch script will hold (Resources
    # checks its own), the log folder among them.
    launch.check_script_value("--folder", _option(args, "folder"))
    flags = {name: getattr(args, name, None) for name in launch.SWEEP_FLAGS}
    rest = argparse.Namespace(**vars(args))
    for name in launch.SWEEP_FLAGS:
        setattr(rest, name, None)
    rest.overrides = []
    runs = launch.expand_runs(flags, overrides_from_args(rest), list(args.overrides),
                              sweep=_option(args, "sweep"),
                              data_roots=_data_roots(getattr(args, "data_root", None) or []))
    planned = launch.plan_launch(runs, resources)
    out = Path(to_container(compose_run(planned.runs[0].overrides))["out"])
    if not _option(args, "folder"):
        launch.check_script_value("--out", out)  # the default log folder is <out>/submitit
    folder = Path(_option(args, "folder") or out / "submitit")
    launcher = args.launcher

    print(f"{len(planned.runs)} run(s): {len(planned.to_submit)} to submit, "
          f"{len(planned.skipped)} already recorded")
    for run in planned.runs:
        # `run.command` is shell-quoted, one printable line that runs exactly these overrides.
        print(f"  {'recorded' if run.finished else 'submit'}: {run.command}")
        if run.finished:
            print_line(f"    record {run.finished}")
    if args.dry_run:
        if launcher == "slurm":
            print(launch.sbatch_script(folder, resources, len(planned.to_submit)))
        else:
            params = launch.make_executor("local", folder, resources).parameters
            print_line("local executor parameters: " + ", ".join(f"{k}={v}" for k, v in
                                                                   sorted(params.items())))
        return 0
    jobs = launch.submit(planned, launcher, folder, resources)
    if not jobs:
        print("nothing to submit: every run is recorded")
        return 0
    print_line(f"submitted {len(jobs)} job(s) to {launcher}: "
               f"{', '.join(j.job_id for j in jobs)}; logs in {folder}")
    if launcher != "local" and not _option(args, "wait"):
        return 0
    failed = 0
    for job, result, error in launch.wait(jobs):
        if error is not None:
            failed += 1
            print_line(f"  job {job.job_id} failed: {error} (log: {job.paths.stderr})")
            continue
        shown = result["metrics"]
        main = result.get("main_metric")
        if main in shown:  # a VoE run's dozens of metrics: its headline and interval
            shown = {k: shown[k] for k in (main, f"{main}_lo", f"{main}_hi") if k in shown}
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in shown.items() if isinstance(v, float))
        word = "already done" if result["reused"] else "done"
        print_line(f"  job {job.job_id} {word}: {metrics}; record {result['record']}")
    return 1 if failed else 0
