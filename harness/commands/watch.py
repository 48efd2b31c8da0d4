"""`harness watch DIR --encoder E --task T`: evaluate each checkpoint a pretraining run writes.

Polls DIR for files matching `--pattern`; a file is evaluated once its size and modification
time have held still for one poll (a checkpoint still being written is left alone), and again
whenever it changes (a `latest.pth.tar` overwritten by the next save is new weights). Each
evaluation is an ordinary `harness run` with `--checkpoint FILE`: records, resume and the
skip of runs already recorded under the same protocol all apply, so stopping and restarting the
watcher loses nothing.
"""
from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands import run_flags

    run_flags.add_arguments(name, p)
    p.epilog = ("Every flag and key=value override of `harness run` applies to each evaluation, "
                "for example:\n\n  harness watch runs/pretrain/vjepa_vitl --encoder vjepa_vitl "
                "--task k400 --pattern 'e*.pth.tar'\n")
    p.add_argument("folder", help="the folder a pretraining run writes its checkpoints to")
    p.add_argument("--pattern", default="*.pth.tar",
                   help="checkpoint file names to evaluate (glob; default *.pth.tar)")
    p.add_argument("--interval", type=float, default=60.0,
                   help="seconds between two looks at the folder (default 60)")
    p.add_argument("--once", action="store_true",
                   help="evaluate what is there now (stable files) and exit")


def main(args) -> int:
    import copy
    import os
    import time
    from pathlib import Path

    from harness.commands.run import _run_one, checkpoint_series

    folder = Path(os.path.expanduser(args.folder))
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder} to watch; pass the pretraining run's "
                                f"output folder")
    if args.checkpoint:
        raise ValueError("harness watch evaluates the checkpoints it finds: drop --checkpoint")
    seen: dict[str, tuple] = {}      # path -> (size, mtime) when evaluated
    pending: dict[str, tuple] = {}   # path -> (size, mtime) at the last look
    if args.once:
        print(f"evaluating the checkpoints matching {folder / args.pattern} now, once "
              f"(files still being written are evaluated as they are)", flush=True)
    else:
        print(f"watching {folder / args.pattern} every {args.interval:g} s (Ctrl-C to stop)",
              flush=True)
    while True:
        pattern = str(folder / args.pattern)
        found = checkpoint_series(pattern) or ([pattern] if os.path.isfile(pattern) else [])
        for path in found:
            try:
                st = os.stat(path)
            except FileNotFoundError:  # replaced between the listing and now
                continue
            now = (st.st_size, st.st_mtime_ns)
            if seen.get(path) == now:
                continue
            if pending.get(path) != now and not args.once:
                pending[path] = now  # still being written? look again next time
                continue
            one = copy.copy(args)
            one.checkpoint = path
            print(f"evaluating {path}", flush=True)
            rc = _run_one(one)
            if rc:
                return rc
            seen[path] = now
        if args.once:
            if not found:
                print(f"no checkpoint matches {folder / args.pattern}")
            return 0
        time.sleep(args.interval)
