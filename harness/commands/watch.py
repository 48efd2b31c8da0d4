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


class _Stop(BaseException):
    """SIGTERM while the watcher itself (not a run's training loop) has control."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Stopping:
    """SIGTERM stops the watcher within moments, with exit 143 (`main`).

    Between evaluations, and while one is being planned, the watcher's own handler raises at
    once (nothing is being written then). While an evaluation trains, `harness run`'s handler
    is in charge: it saves the training state and stops that run (143), or, past the run's last
    save, lets it finish its record. Either way the signal is not lost: every signal Python
    handles also writes its number to the wakeup pipe, whichever handler runs, and the watcher
    reads the pipe after each evaluation, so it stops instead of polling on."""

    def __enter__(self) -> "_Stopping":
        import os
        import signal
        import threading

        self.active = threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        if not self.active:
            return self
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._old = {sig: signal.signal(sig, self._raise) for sig in (signal.SIGTERM,)}
        return self

    def _raise(self, signum, frame) -> None:
        self.received = signum
        raise _Stop(signum)

    def pending(self) -> int | None:
        """A SIGTERM that arrived since the last look (whoever's handler ran), else None."""
        import os
        import signal

        if not self.active:
            return self.received
        data = b""
        while True:  # drain it (other handled signals, SIGCHLD from data workers, write bytes too)
            try:
                chunk = os.read(self._read, 4096)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                break
            data += chunk
        if signal.SIGTERM in data:
            self.received = self.received or signal.SIGTERM
        return self.received

    def __exit__(self, *exc) -> bool:
        import os
        import signal

        if self.active:
            for sig, handler in self._old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(self._old_fd)
            os.close(self._read)
            os.close(self._write)
        return False


def main(args) -> int:
    import signal
    import sys

    with _Stopping() as stopping:
        try:
            return _watch(args, stopping)
        except _Stop as stop:
            print(f"stopped by {signal.Signals(stop.signum).name}: re-run the same command to "
                  f"go on (checkpoints already recorded are not evaluated again)",
                  file=sys.stderr, flush=True)
            return 128 + stop.signum
        except KeyboardInterrupt:
            print("interrupted: re-run the same command to go on (checkpoints already recorded "
                  "are not evaluated again; a run's training resumes from its last save)",
                  file=sys.stderr, flush=True)
            return 130


def _watch(args, stopping: _Stopping) -> int:
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
        try:
            found = checkpoint_series(pattern) or ([pattern] if os.path.isfile(pattern) else [])
        except FileNotFoundError:  # nothing matches yet: the run has not saved its first one
            found = []
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
            signum = stopping.pending()
            if signum is not None:  # the run's handler had it: that run saved or finished
                raise _Stop(signum)
            if rc:
                return rc
            seen[path] = now
        if args.once:
            if not found:
                print(f"no checkpoint matches {folder / args.pattern}")
            return 0
        time.sleep(args.interval)  # a SIGTERM here raises at once (the watcher's handler)
