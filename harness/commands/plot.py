"""`harness plot`: PNG charts of the records (matplotlib)."""
from __future__ import annotations

import argparse

EPILOG = """\
  harness plot bars --tasks digits_motion,digits_appearance --out bars.png
  harness plot series vjepa_tiny --out series.png
  harness plot low-shot --tasks k400 --out low_shot.png

bars: one group per (task, protocol) column, one bar per (encoder, checkpoint), with 95%
intervals inside [0, 100] (percentile bootstrap over the saved per-sample predictions; t over
seeds, within [0, 100]; else the Wilson interval from the sample count).
series: one encoder's checkpoints against their pretraining step, random init dashed.
low-shot: label-efficiency curves, top-1 against the fraction of training labels, from the
records of runs on label-efficiency folds (`harness data split TASK --root DIR --fraction
0.05,0.1,0.5 --seeds 0,1,2`, then `harness run ... task.data.root=DIR --split 10pct:seed0`):
each point the mean over the fraction's folds with its 95% interval; a full-label run under the
same protocol is the 100% point.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands.results import add_results_argument

    p.epilog = EPILOG
    p.add_argument("kind", choices=["bars", "series", "low-shot"])
    p.add_argument("encoder", nargs="?", help="the encoder (series): registry name or label")
    add_results_argument(p)
    p.add_argument("--tasks", help="comma-separated task names (default: all)")
    p.add_argument("--encoders", help="comma-separated encoder names, labels or globs (bars, "
                                      "low-shot)")
    p.add_argument("--metric", default="top1")
    p.add_argument("--out", required=True, help="PNG file to write")


def main(args) -> int:
    import results
    from harness.output import print_line
    from results import plots
    from results.series import order_by_step, series_frame

    root = results.default_root(args.results)
    if not root.exists():
        raise FileNotFoundError(f"no results at '{root}': pass --results DIR or set HARNESS_RESULTS")
    store = results.ResultStore(root)
    frame = store.frame(text=False)
    from harness.output import report_skipped

    report_skipped(store)
    if args.kind == "low-shot":
        from results.label_efficiency import curves

        found, notes = curves(frame, tasks=args.tasks, encoders=args.encoders, metric=args.metric)
        if not found:
            raise ValueError(
                f"no records of label-efficiency folds under {root}"
                + (f" ({'; '.join(notes)})" if notes else "")
                + ": a fold run records protocol.task.train_fold. Make folds with `harness data "
                "split TASK --root DIR --fraction 0.05,0.1,0.5 --seeds 0,1,2` and evaluate them "
                "with `harness run ... task.data.root=DIR --split 10pct:seed0`")
        path = plots.low_shot(found, args.out, metric=args.metric)
        for c in found:
            points = ", ".join(
                f"{100 * p.fraction:g}% {p.mean:.1f}"
                + (f" [{p.low:.1f}, {p.high:.1f}]" if p.low is not None else "")
                + f" (n={p.runs})" for p in c.points)
            print_line(f"{c.column}: {c.name}: {points}")
        for note in notes:
            print_line(f"note: {note}")
    elif args.kind == "series":
        if not args.encoder:
            raise ValueError("`harness plot series ENCODER --out FILE.png`: name the encoder")
        lb = results.leaderboard(series_frame(frame, args.encoder), tasks=args.tasks,
                                 metric=args.metric, significance=False)
        order_by_step(lb)
        path = plots.series(lb, args.out, title=f"{args.encoder}: {args.metric} by pretraining step")
    else:
        lb = results.leaderboard(frame, tasks=args.tasks, metric=args.metric,
                                 encoders=args.encoders, significance=False)
        path = plots.bars(lb, args.out)
    print_line(f"wrote {path}")
    return 0
