"""Named fault-injection points for the kill tests (tests/test_faults_kills.py); inert otherwise.

`HARNESS_FAILPOINT=NAME[:N][@SIGNAL]` makes the N-th passage (default 1st) through point NAME
send SIGNAL (default KILL) to this process: a SIGKILL there is a power cut or an OOM kill at
that exact spot, a SIGTERM a scheduler's preemption. The test suite kills runs at every point
and checks that the re-run ends with the numbers of an uninterrupted run and no torn or
duplicate files. Nothing happens unless the variable is set (one dict lookup per passage).
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int, int]:
    spec, _, sig = spec.partition("@")
    name, _, n = spec.partition(":")
    return name, int(n or 1), getattr(signal, f"SIG{sig or 'KILL'}")


def hit(name: str) -> None:
    spec = os.environ.get("HARNESS_FAILPOINT")
    if not spec:
        return
    point, n, sig = _parse(spec)
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == n:
        os.kill(os.getpid(), sig)
