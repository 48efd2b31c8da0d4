"""`harness data ...`: make the synthetic digits, prepare and check datasets in their native formats.

    harness data make digits --out data/digits
    harness data make physics --out data/physics   # synthetic violation-of-expectation pairs
    harness data prepare k400 --root /datasets/kinetics400 [--out DIR]
    harness data check k400 --root DIR
    harness data prepare ava --root /datasets/ava   # boxes, proposals, excluded frames; seeks videos
    harness data split k400 --root DIR --fraction 0.05,0.1,0.5 --seeds 0,1,2
"""
from __future__ import annotations

import argparse

DATASETS = ("digits", "physics")
DEFAULT_OUT = {"digits": "data/digits", "physics": "data/physics"}
# tasks.native.PREPARERS: classification / detection, then violation-of-expectation pairs
NATIVE = ("k400", "ssv2", "in1k", "places205", "inat21", "diving48", "jester", "ava",
          "intphys", "grasp", "inflevel", "intphys2")
SPLITTABLE = NATIVE[:7]  # label-efficiency folds: single-label classification tasks
_SHOWN = 20  # problems printed per kind; the report file holds them all


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = sub.add_parser("make", help="write a dataset to disk")
    make.add_argument("dataset", choices=DATASETS,
                      help="digits: digits_motion + digits_appearance from scikit-learn's digits; "
                           "physics: synthetic violation-of-expectation pairs (task physics_synth)")
    make.add_argument("--out", help="output folder (default data/digits or data/physics)")
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.add_argument("--per-class", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                      help="digits: videos per class in each split (default 100 25 100)")
    make.add_argument("--pairs", type=int, default=40,
                      help="physics: pairs per property (default 40)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")

    prep = sub.add_parser("prepare", help="native layout -> manifests + label map (+ report)")
    prep.add_argument("task", choices=NATIVE)
    prep.add_argument("--root", required=True, help="the dataset as its publisher ships it")
    prep.add_argument("--out", help="where manifests, classes.txt and prepare_report.json go "
                      "(default: --root); then run with task.data.root=OUT")
    prep.add_argument("--annotations", help="folder of the annotation files if not under --root")
    prep.add_argument("--no-verify", action="store_true",
                      help="do not open the files (only list missing ones): fast, less safe")
    prep.add_argument("--workers", type=int, default=0, help="worker processes (default: cores, at most 8)")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.add_argument("--all-problems", action="store_true", help="print every problem, not the first 20 per kind")

    chk = sub.add_parser("check", help="open every file of a task's manifests and report problems")
    chk.add_argument("task")
    chk.add_argument("--root", help="the task's data.root (default: the task config's)")
    chk.add_argument("--report", help="report file (default ROOT/check_report.json)")
    chk.add_argument("--workers", type=int, default=0, help="worker processes (default: cores, at most 8)")
    chk.add_argument("--no-progress", action="store_true", help="no progress bar")
    chk.add_argument("--all-problems", action="store_true", help="print every problem, not the first 20 per kind")

    spl = sub.add_parser("split", help="label-efficiency folds drawn from the publisher's list")
    spl.add_argument("task", choices=SPLITTABLE)
    spl.add_argument("--root", required=True, help="the dataset as its publisher ships it")
    spl.add_argument("--out", help="where the fold manifests go (default: ROOT/splits)")
    spl.add_argument("--annotations", help="folder of the annotation files if not under --root")
    spl.add_argument("--fraction", default="0.05,0.1,0.5", help="comma-separated fractions of train")
    spl.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")


def _print_problems(console, report: dict, all_problems: bool) -> None:
    from rich.markup import escape

    shown: dict[str, int] = {}
    for p in report["problems"]:
        k = p["kind"]
        shown[k] = shown.get(k, 0) + 1
        if all_problems or shown[k] <= _SHOWN:
            at = f" [{p['path']}]" if p.get("path") else ""
            console.print(escape(f"  {k}: {p['where']}: {p['detail']}{at}"), highlight=False, soft_wrap=True)
    for k, n in shown.items():
        if not all_problems and n > _SHOWN:
            console.print(f"  ... {n - _SHOWN} more {k} (all in the report)")


def main(args) -> int:
    """SIGTERM and SIGINT stop every action within moments (`tasks.native.stopping`): exit 143
    or 130, only whole files left behind, a manifest set written all together or not at all."""
    from rich.console import Console

    from tasks.native.stopping import StopOnSignals, Stopped

    console = Console(soft_wrap=True)
    with StopOnSignals() as stop:
        try:
            return _main(args, console, stop)
        except Stopped as stopped:
            _say_stopped(args, stopped)
            return stopped.exit_code


def _say_stopped(args, stopped) -> None:
    import sys

    what = {"make": "no manifest of an unfinished split was written; re-run to make the rest",
            "prepare": "no manifest was written (those already in the output folder, if any, "
                       "are unchanged)",
            "check": "no report was written",
            "split": "no fold was written"}[args.action]
    if stopped.deferred:
        what = ("it first finished the set of files it was writing (they are complete and "
                "belong together)")
    saved = getattr(stopped, "saved", None)
    if saved is not None:
        what += (f"; the verdicts of the {stopped.opened} of {stopped.total} files opened so far "
                 f"are in {saved}, and a re-run opens only the others")
    print(f"stopped by {stopped.name}: {what}", file=sys.stderr, flush=True)


def _main(args, console, stop) -> int:
    if args.action == "make":
        return _make(args, console)
    if args.action == "prepare":
        from tasks.native import prepare

        report = prepare(args.task, args.root, args.out, annotations=args.annotations,
                         verify=not args.no_verify, workers=args.workers,
                         progress=not args.no_progress, stop=stop)
        _print_problems(console, report, args.all_problems)
        for note in report["notes"]:
            console.print(f"  note: {note}", highlight=False)
        kinds = ", ".join(f"{n} {k}" for k, n in report["problem_counts"].items()) or "no problems"
        if any("pairs_written" in c for c in report["splits"].values()):  # a VoE task
            return _say_prepared_pairs(args, report, kinds, console)
        counts = ", ".join(f"{s} {c['written']} of {c['listed']}" for s, c in report["splits"].items())
        console.print(f"[bold green]prepared[/] {args.task}: {report['num_classes']} classes; "
                      f"{counts} samples written; {kinds}", highlight=False)
        console.print(f"manifests and classes.txt in {report['out']}; report "
                      f"{report['out']}/prepare_report.json. Run with task.data.root={report['out']}",
                      highlight=False)
        return 0
    if args.action == "check":
        from tasks.native import check

        report = check(args.task, args.root, workers=args.workers, progress=not args.no_progress,
                       report_path=args.report, stop=stop)
        _print_problems(console, report, args.all_problems)
        for note in report["notes"]:
            console.print(f"  note: {note}", highlight=False)
        counts = ", ".join(f"{s} {c['usable']} of {c['entries']} usable" for s, c in report["splits"].items())
        kinds = ", ".join(f"{n} {k}" for k, n in report["problem_counts"].items()) or "no problems"
        console.print(f"[bold]checked[/] {args.task}: {counts}; {kinds}. Report {report['report_path']}",
                      highlight=False)
        return 0
    if args.action == "split":
        from tasks.native.splits import write_splits

        fractions = [float(x) for x in str(args.fraction).split(",") if x.strip()]
        seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
        summary = write_splits(args.task, args.root, args.out, fractions=fractions, seeds=seeds,
                               annotations=args.annotations, stop=stop)
        import shlex

        for fold in summary["folds"]:
            console.print(f"  {fold['name']}: {fold['drawn']} drawn, {fold['written']} written, "
                          f"{fold['missing_locally']} missing locally  sha256 {fold['sha256'][:12]}",
                          highlight=False, markup=False)
        first = summary["folds"][0] if summary["folds"] else None
        example = shlex.join(["harness", "run", "--encoder", "ENCODER", "--checkpoint", "FILE",
                              "--task", args.task, "--split",
                              f"{100 * first['fraction']:.6g}pct:seed{first['seed']}"
                              if first and "fraction" in first else "10pct:seed0",
                              *([f"task.data.root={args.root}"] if args.root else [])])
        console.print(f"wrote {len(summary['folds'])} folds in {summary['out']}; run on one with "
                      f"--split FRACTIONpct:seedSEED, e.g.\n  {example}", highlight=False,
                      markup=False)
        return 0
    raise ValueError(f"unknown data action {args.action!r}")


def _make(args, console) -> int:
    out = args.out or DEFAULT_OUT[args.dataset]
    if args.dataset == "physics":
        return _make_physics(args, out, console)
    from tasks.digits import make_digits

    sizes = {}
    if args.per_class:
        sizes = dict(zip(("per_class_train", "per_class_val", "per_class_test"), args.per_class))
    summary = make_digits(out, seed=args.seed, progress=not args.no_progress, **sizes)
    for task, info in summary["tasks"].items():
        counts = ", ".join(f"{split} {s['videos']}" for split, s in info["splits"].items())
        console.print(f"[bold green]wrote[/] {task}: {len(info['classes'])} classes; {counts} "
                      f"videos ({summary['codec']}, {summary['num_frames']} frames, "
                      f"{summary['size']}px)")
    console.print(f"in {summary['root']} ({summary['seconds']:.0f} s); manifests are the release "
                  "CSV format: `path label`")
    return 0


def _say_prepared_pairs(args, report: dict, kinds: str, console) -> int:
    """A violation-of-expectation task's summary: pairs (and unlabelled videos) per split."""
    parts = []
    for split, c in report["splits"].items():
        part = f"{split} {c['pairs_written']} of {c['pairs_listed']} pairs"
        if c["videos_written"]:
            part = (f"{split} {c['videos_written']} unlabelled videos" if not c["pairs_listed"]
                    else f"{part} and {c['videos_written']} unlabelled videos")
        parts.append(part)
    console.print(f"[bold green]prepared[/] {args.task}: {'; '.join(parts)}; {kinds}",
                  highlight=False, markup=True)
    console.print(f"pair manifests ({', '.join(s + '.json' for s in report['splits'])}) in "
                  f"{report['out']}; report {report['out']}/prepare_report.json. Run with "
                  f"task.data.root={report['out']}", highlight=False, markup=False)
    return 0


def _make_physics(args, out: str, console) -> int:
    from tasks.physics_synth import make_physics

    summary = make_physics(out, seed=args.seed, pairs_per_property=args.pairs,
                           progress=not args.no_progress)
    pairs = ", ".join(f"{p} {n}" for p, n in summary["pairs"].items())
    console.print(f"[bold green]wrote[/] physics_synth: {pairs} pairs ({summary['num_frames']} "
                  f"frames, {summary['size']}px, PNG frame folders)")
    console.print(f"in {summary['root']} ({summary['seconds']:.0f} s); pair manifest "
                  f"{summary['manifest']}; pixels sha256 {summary['pixels_sha256'][:16]}",
                  highlight=False, markup=False)
    return 0
