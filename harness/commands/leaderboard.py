"""`harness leaderboard`: encoders x tasks, side by side only under the same protocol_id."""
from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="runs",
                   help="results root holding records/ (default: runs)")
    p.add_argument("--tasks", help="comma-separated task names (default: all)")
    p.add_argument("--metric", default="top1", help="metric to show (default top1)")
    p.add_argument("--format", choices=["rich", "markdown", "csv"], default="rich")


def main(args) -> int:
    from pathlib import Path

    import results

    root = Path(args.results)
    if not root.exists():
        raise FileNotFoundError(f"no results at '{root}': run `harness run ...` first or pass "
                                "--results DIR")
    store = results.ResultStore(root)
    frame = store.frame()
    wanted = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    lb = results.leaderboard(frame, tasks=wanted, metric=args.metric)
    text = results.render(lb, args.format)
    if text:
        print(text)
    for problem in getattr(store, "problems", []) or []:
        print(f"skipped unreadable record: {problem}")
    return 0
