"""`harness data make digits --out DIR`: the synthetic digit-video tasks, as real mp4 files."""
from __future__ import annotations

import argparse

DATASETS = ("digits",)


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = sub.add_parser("make", help="write a dataset to disk")
    make.add_argument("dataset", choices=DATASETS,
                      help="digits: digits_motion + digits_appearance from scikit-learn's digits")
    make.add_argument("--out", default="data/digits", help="output folder (default data/digits)")
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.add_argument("--per-class", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                      help="videos per class in each split (default 100 25 100)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    from tasks.digits import make_digits

    sizes = {}
    if args.per_class:
        sizes = dict(zip(("per_class_train", "per_class_val", "per_class_test"), args.per_class))
    summary = make_digits(args.out, seed=args.seed, progress=not args.no_progress, **sizes)
    from rich.console import Console

    console = Console()
    for task, info in summary["tasks"].items():
        counts = ", ".join(f"{split} {s['videos']}" for split, s in info["splits"].items())
        console.print(f"[bold green]wrote[/] {task}: {len(info['classes'])} classes; {counts} "
                      f"videos ({summary['codec']}, {summary['num_frames']} frames, "
                      f"{summary['size']}px)")
    console.print(f"in {summary['root']} ({summary['seconds']:.0f} s); manifests are the release "
                  "CSV format: `path label`")
    return 0
