"""`harness run`: one frozen-encoder evaluation -> one record."""
from __future__ import annotations

from harness.commands.run_flags import add_arguments, overrides_from_args  # noqa: F401


def main(args) -> int:
    import os

    # --include-path reaches the registry (and launched jobs) through $HARNESS_INCLUDE_PATH for
    # this command only: a later command in the same process (the tests, a notebook) must not
    # see this one's folders.
    before = os.environ.get("HARNESS_INCLUDE_PATH")
    if getattr(args, "include_path", None):
        os.environ["HARNESS_INCLUDE_PATH"] = os.pathsep.join(
            [*map(str, args.include_path), *filter(None, [before])])
    try:
        return _main(args)
    finally:
        if before is None:
            os.environ.pop("HARNESS_INCLUDE_PATH", None)
        else:
            os.environ["HARNESS_INCLUDE_PATH"] = before


def _main(args) -> int:
    if getattr(args, "launcher", None):
        from harness.commands import launch

        return launch.main(args)
    series = checkpoint_series(args.checkpoint)
    if series is None:
        return _run_one(args)
    # A checkpoint series (`--checkpoint 'run/ckpts/*.pth.tar'`): each in turn, in step order;
    # those already recorded under the same protocol are found and not redone.
    import copy

    for i, path in enumerate(series, start=1):
        print(f"checkpoint {i}/{len(series)}: {path}", flush=True)
        one = copy.copy(args)
        one.checkpoint = path
        rc = _run_one(one)
        if rc:
            return rc
    return 0


def checkpoint_series(pattern: str | None) -> list[str] | None:
    """The files a glob `--checkpoint` names, in natural order (ep2 before ep10); None when
    it names one file (or nothing glob-like)."""
    import glob
    import os
    import re

    if not pattern:
        return None
    path = os.path.expanduser(str(pattern))
    if os.path.exists(path) or not glob.has_magic(path):
        return None
    files = sorted(glob.glob(path), key=lambda f: [int(t) if t.isdigit() else t
                                                  for t in re.split(r"(\d+)", f)])
    if not files:
        raise FileNotFoundError(f"--checkpoint {pattern!r} matches no file")
    return files


def _run_one(args) -> int:
    import logging
    import sys

    from harness.config import compose_run

    log = logging.getLogger("harness.run")
    overrides = overrides_from_args(args)
    cfg = compose_run(overrides)
    if cfg.task.get("kind") == "voe":  # no probe: the predictor's surprise (harness.voe_run)
        return _run_voe(args, cfg, overrides)
    if args.show_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return 0
    if args.dry_run:
        from harness.dryrun import estimate
        from harness.plan import plan_run

        estimate(plan_run(cfg, estimate_only=True), say=print)
        return 0
    import signal

    from harness.runner import run_evaluation
    from probes import Preempted

    # SLURM (and most schedulers) send SIGTERM before preempting or at the time limit: save the
    # training state at the next step and exit, so a requeued job resumes instead of restarting.
    requested = {"stop": False}

    def on_term(signum, frame):
        requested["stop"] = True
        log.warning("%s: saving the training state at the next step, then stopping",
                    signal.Signals(signum).name)

    # SIGUSR1: SLURM's warning signal (`--signal=USR1@120`), sent ahead of the time limit.
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        outcome = run_evaluation(cfg, overrides=overrides, stop=lambda: requested["stop"])
    except Preempted as stopped:
        log.warning("%s", stopped)
        return 143  # 128 + SIGTERM, what a scheduler expects of a terminated job
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if outcome.path is None:  # a DDP rank other than 0: rank 0 reports and writes the record
        return 0
    if getattr(args, "quiet", False):  # scripts: the record's path and nothing else
        print(outcome.path)
        return 0
    from rich.console import Console
    from rich.text import Text

    from harness.output import printable

    console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    record = outcome.record
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items()
                        if isinstance(v, float))
    label = record["encoder"].get("label") or record["encoder"]["name"]
    line = Text("already done " if outcome.reused else "done ", style="bold green")
    line.append(printable(f"{label} on {record['task']} ({record['split']}): {metrics}"))
    console.print(line)
    console.print(Text(printable(f"protocol_id {record['protocol_id']}; record {outcome.path}")))
    return 0


def _run_voe(args, cfg=None, overrides=None) -> int:
    """`harness run` on a violation-of-expectation task: surprise on every pair, one record."""
    from harness import voe_run

    overrides = overrides if overrides is not None else overrides_from_args(args)
    voe_run.check_flags(args, list(args.overrides))
    if cfg is None:
        from harness.config import compose_run

        cfg = compose_run(overrides)
    if args.show_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return 0
    if args.dry_run:
        for line in voe_run.describe(voe_run.plan_voe(cfg)):
            print(line)
        return 0
    outcome = voe_run.run_voe(cfg, overrides=overrides)
    if getattr(args, "quiet", False):
        print(outcome.path)
        return 0
    _print_voe(outcome)
    return 0


def _print_voe(outcome) -> None:
    import sys

    from rich.console import Console
    from rich.text import Text

    from harness.output import printable

    console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    record, m = outcome.record, outcome.record["metrics"]
    label = record["encoder"].get("label") or record["encoder"]["name"]
    line = Text("already done " if outcome.reused else "done ", style="bold green")
    line.append(printable(f"{label} on {record['task']} ({record['split']}), "
                          f"{m.get('num_pairs')} pairs"))
    console.print(line)
    main = (record.get("extra") or {}).get("main_metric")
    shown = [main] if main in m else []
    shown += ["relative_mean", "relative_max", "absolute_max", "auroc_mean", "auroc_max"]
    for name in shown:
        if name in m and f"{name}_lo" in m:
            console.print(Text(printable(f"  {name} {m[name]:.3f} [{m[name + '_lo']:.3f}, "
                                         f"{m[name + '_hi']:.3f}]")))
    problems = record.get("data_problems") or {}
    if problems.get("unreadable_pairs"):
        console.print(Text(printable(f"  {problems['unreadable_pairs']} pair(s) could not be "
                                     f"read and were left out: "
                                     f"{'; '.join(problems.get('examples') or [])}"),
                           style="yellow"))
    console.print(Text(printable(f"protocol_id {record['protocol_id']}; record {outcome.path}")))
