"""Stopping a long data command (`harness data prepare`, `check`, `make`) on SIGTERM or SIGINT
within moments, leaving only whole files behind.

`StopOnSignals` installs handlers for the signals while it is active; a signal raises `Stopped`
at once wherever the command is (walking folders, reading annotations, waiting on the workers
that open files), except inside `held()`, the sections that write a set of files which belong
together (the manifests, the label map and the report): there it is noted, and `Stopped` is
raised as the section ends. Every file is written atomically, so a file on disk is always
whole; the holds keep the set consistent too.

`Stopped` derives from BaseException, as KeyboardInterrupt does: the `except Exception` that
turns a decoder's failure into "unreadable: ..." must not turn a stop request into a verdict.
"""
from __future__ import annotations

import contextlib
import signal
import threading


class Stopped(BaseException):
    """A signal asked the command to stop; `exit_code` is 128 + its number (143, 130)."""

    def __init__(self, signum: int, *, deferred: bool = False):
        self.signum = signum
        self.deferred = deferred  # True: raised as a held section (a set of files) completed
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopOnSignals:
    """`with StopOnSignals() as stop:` SIGTERM and SIGINT raise `Stopped` (see the module doc);
    `stop.held()` defers them over a section; `stop.requested` is the signal received, if any.
    Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.requested: int | None = None
        self._holding = 0
        self._delivered = False  # Stopped already raised for the signal received
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.requested is None:
            self.requested = signum
        if self._holding == 0:  # (a second signal after a first stop: still stuck, stop again)
            self._delivered = True
            raise Stopped(self.requested)

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    @contextlib.contextmanager
    def held(self):
        """A section a signal does not interrupt; it raises `Stopped` as the section ends."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        self._raise_deferred()

    def _raise_deferred(self) -> None:
        if self._holding == 0 and self.requested is not None and not self._delivered:
            self._delivered = True
            raise Stopped(self.requested, deferred=True)

    def check(self) -> None:
        """Raise `Stopped` for a signal held back and not yet raised (a safe point)."""
        self._raise_deferred()


@contextlib.contextmanager
def not_held():
    """`held()` of no stopper: nothing deferred."""
    yield


def holding(stop: StopOnSignals | None):
    """`stop.held()`, or a no-op context when there is no stopper."""
    return stop.held() if stop is not None else not_held()


def ignore_interrupts() -> None:
    """A worker process's initializer: a terminal's Ctrl-C reaches the whole process group, and
    the parent alone decides what stops (it ends its workers)."""
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def abandon_pool(pool) -> None:
    """End a ProcessPoolExecutor now: pending work cancelled, running workers terminated (a
    stop must not wait for every queued file to be opened). `_processes` is the executor's
    own table of its workers; read defensively."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(timeout=5)


@contextlib.contextmanager
def verdicts_kept(out: dict, pool=None):
    """Around the loop that fills `out` (file -> verdict): a stop carries the verdicts so far
    (`Stopped.verdicts`, kept for the re-run) and ends the pool's workers now; any other
    failure ends them too; a loop that finishes shuts the pool down normally."""
    try:
        yield
    except Stopped as stop:
        stop.verdicts = dict(out)
        if pool is not None:
            abandon_pool(pool)
        raise
    except BaseException:
        if pool is not None:
            abandon_pool(pool)
        raise
    if pool is not None:
        pool.shutdown(wait=True)
