"""`harness plot`: PNG charts of the records (matplotlib)."""
from __future__ import annotations

import argparse

EPILOG = """\
  harness plot bars --tasks digits_motion,digits_appearance --out bars.png
  harness plot series vjepa_tiny --out series.png

bars: one group per (task, protocol) column, one bar per (encoder, checkpoint), with 95%
intervals (bootstrap over the saved per-sample predictions; t over seeds; else binomial).
series: one encoder's checkpoints against their pretraining step, random init dashed.
Label-efficiency curves need label-fraction splits, which the task registry does not have yet.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands.leaderboard import add_results_argument

    p.epilog = EPILOG
    p.add_argument("kind", choices=["bars", "series", "low-shot"])
    p.add_argument("encoder", nargs="?", help="the encoder (series)")
    add_results_argument(p)
    p.add_argument("--tasks", help="comma-separated task names (default: all)")
    p.add_argument("--encoders", help="comma-separated encoder names or globs (bars)")
    p.add_argument("--metric", default="top1")
    p.add_argument("--out", required=True, help="PNG file to write")


def main(args) -> int:
    import results
    from results import plots
    from results.series import order_by_step, series_frame

    if args.kind == "low-shot":
        raise ValueError("label-efficiency curves need label-fraction splits (5/10/50% of "
                         "labels), which the task registry does not have yet")
    root = results.default_root(args.results)
    if not root.exists():
        raise FileNotFoundError(f"no results at '{root}': pass --results DIR or set HARNESS_RESULTS")
    store = results.ResultStore(root)
    frame = store.frame()
    from harness.commands.leaderboard import report_problems

    report_problems(store)
    if args.kind == "series":
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
    print(f"wrote {path}")
    return 0
