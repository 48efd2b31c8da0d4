"""`harness leaderboard`: encoders x tasks, side by side only under the same protocol_id."""
from __future__ import annotations

import argparse

FORMATS = ("rich", "plain", "markdown", "csv", "json", "latex", "html")

EPILOG = """\
Rows are (encoder, checkpoint), the encoder by its label: an architecture overridden from its
registry entry is its own row (`videomae_vits (embed_dim 192, depth 2)`). Columns are (task,
protocol), named by what sets the protocol apart, e.g. `k400 (16x8x3, attentive)`, and where it
departs from the task's published protocol (`k400 (16x8x3, attentive; epochs 1, batch_size
8)`), with each column's protocol id in the legend. Several
runs of one cell (seeds, folds) show as mean ± std (n=runs); `[N/M]` means the run evaluated N
of the split's M samples. `*` marks the best of a column, `~` a cell not significantly
different from it (McNemar on the saved predictions where possible). Each task shows the metric
its protocol names (the column says which where the board mixes them); --metric shows one
metric for every task.

  harness leaderboard --results runs/demo
  harness leaderboard --tasks k400,ssv2 --encoder 'vjepa_*' --since 2026-11-01
  harness leaderboard --format html --output board.html
  harness leaderboard --series vjepa_tiny          # one encoder's checkpoints by step
  harness leaderboard --export store.parquet       # the whole store as one file
  harness leaderboard --import other_machine.csv   # its records merged into --results

The results folder: --results DIR, else $HARNESS_RESULTS, else ./runs.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands.results import add_results_argument

    p.epilog = EPILOG
    add_results_argument(p)
    p.add_argument("--tasks", help="comma-separated task names (default: all)")
    p.add_argument("--encoder", help="comma-separated encoder names, labels or globs ('vjepa_*')")
    p.add_argument("--protocol", help="comma-separated protocol id prefixes")
    p.add_argument("--since", help="records created on or after this date (ISO, e.g. 2026-12-01)")
    p.add_argument("--until", help="records created on or before this date")
    p.add_argument("--metric", default=None,
                   help="metric to show (default: each task's own: top1, mAP for AVA, recall5 "
                        "for EK100, paper_relative_mean for intuitive physics)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="default: rich on a terminal, plain text when piped, else from --output")
    p.add_argument("--output", "-o", help="write to this file (format from its suffix: .html, "
                                          ".md, .csv, .json, .tex, .txt)")
    p.add_argument("--cost", action="store_true",
                   help="add parameters, GFLOPs per clip, clips/s and device-hours columns")
    p.add_argument("--series", metavar="ENCODER",
                   help="one encoder's checkpoints as rows, ordered by pretraining step")
    p.add_argument("--no-significance", action="store_true",
                   help="skip the tests against each column's best (faster on huge stores)")
    p.add_argument("--export", metavar="FILE", help="write the whole store as one .parquet or .csv")
    p.add_argument("--import", dest="import_", metavar="FILE",
                   help="merge an exported store's records into --results")


def main(args) -> int:
    import sys
    from pathlib import Path

    import results
    from harness.output import print_line, report_skipped
    from results.formats import format_for_path, render
    from results.exchange import export_store

    root = results.default_root(args.results)
    if args.import_:
        from harness.commands.results import run_import

        return run_import(args.import_, root)
    if not root.exists():
        raise FileNotFoundError(f"no results at '{root}': run `harness run ...` first, pass "
                                f"--results DIR or set HARNESS_RESULTS")
    store = results.ResultStore(root)
    if args.export:
        n = export_store(store, args.export)
        report_skipped(store)
        print_line(f"exported {n} record(s) from {root} to {args.export}")
        return 0
    # The date window applies before one record per run is kept (the board as it stood then).
    # A plain board reads the runs of each cell folded together from the index (the same
    # board, without a frame of every run); series and cost columns need the frame of runs.
    frame = None
    if not (args.series or args.cost):
        frame = store.cell_frame(args.metric, since=args.since, until=args.until)
    if frame is None:
        frame = store.frame(since=args.since, until=args.until, text=False)
    report_skipped(store)
    encoders = args.encoder
    if args.series:
        from results.series import series_frame

        frame, encoders = series_frame(frame, args.series), args.series
    lb = results.leaderboard(frame, tasks=args.tasks, metric=args.metric, encoders=encoders,
                             protocols=args.protocol, since=args.since, until=args.until,
                             significance=not args.no_significance, cost=args.cost)
    if args.series:
        from results.series import order_by_step

        order_by_step(lb)
    fmt = args.format or (format_for_path(args.output) if args.output else None)
    if fmt is None:
        fmt = "rich" if sys.stdout.isatty() else "plain"
    width = _terminal_width() if fmt == "rich" else 120
    text = render(lb, fmt, width=width)
    if args.output:
        from common.atomic import atomic_write

        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda f: f.write(text.encode("utf-8")))
        print_line(f"wrote {out} ({fmt})")
        return 0
    # Every format's text is already neutralised (`results.formats`): control characters of the
    # data show as escapes, so writing it to a terminal moves no cursor and sets no title.
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 24)).columns
