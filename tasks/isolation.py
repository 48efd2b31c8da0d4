"""Decoding in a child process, so that a decoder that crashes or hangs costs one sample.

Native decoders can take the whole process down (decord aborts on an mp4 whose time-to-sample
table claims 0x7FFFFFF0 samples) or hang. Under `isolation="subprocess"` the clip reader
(`tasks.clip_reader.read_frames`) decodes in a child process that is restarted after a crash and
stopped after `timeout_s` (a hang), at the cost `benchmarks/decode.py` prints. This module knows
nothing of how frames are decoded: the child runs the function the caller names (`entry`, a
`module:function` taking the socket's file descriptor, which calls `serve(fd, read)`).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from .backends import short
from .errors import DecodeError

IndicesFn = Callable[[int], Sequence[int]]
# read(path, indices_fn, backend, num_threads) -> (uint8 frames tensor, num_frames, backend name)
ReadFn = Callable[[str, IndicesFn, str, int], tuple]

_START_TIMEOUT_S = 120.0  # the child's imports, on a loaded machine


class IsolatedWorker:
    """One decoding child process, started on first use and again after it crashed or was
    stopped. It runs the caller's in-process reader (`entry`); each `indices_fn(n)` call is a round trip
    to this process, so the caller's index logic (header corrections included) runs unchanged.
    Started with subprocess, not multiprocessing: DataLoader workers are daemonic processes,
    which multiprocessing forbids to have children."""

    def __init__(self, entry: str):
        self.entry = entry  # "module:function", called in the child with the socket's fd
        self.proc: subprocess.Popen | None = None
        self.conn = None
        self.stderr = None
        self.starts = 0

    def _start(self) -> None:
        import socket
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        self.stderr = tempfile.TemporaryFile()
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [repo, *filter(None, [os.environ.get("PYTHONPATH")])]))
        module, _, function = self.entry.partition(":")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import sys; from {module} import {function}; "
                                   f"{function}(int(sys.argv[1]))", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.stderr, env=env, close_fds=True)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.starts += 1
        # The child imports torch and the decoders first (seconds); that is not the file's time.
        try:
            ready = self.conn.poll(_START_TIMEOUT_S) and self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            tail = self._stderr_tail()
            self.close()
            raise DecodeError(f"the isolated decoder process did not start"
                              f"{': ' + tail if tail else ''}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.conn is not None:
            self.conn.close()
        if self.stderr is not None:
            self.stderr.close()
        self.proc = self.conn = self.stderr = None

    def _stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            lines = [ln.strip() for ln in self.stderr.read().decode("utf-8", "replace").splitlines()]
        except (OSError, ValueError, AttributeError):
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else ""

    def read(self, path: str, indices_fn: IndicesFn, *, backend: str, num_threads: int,
             timeout_s: float | None) -> tuple:
        """`(frames, num_frames, backend)` of the child's read; DecodeError on a crash or hang."""
        import torch

        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.conn.send((path, backend, num_threads))
        failed: BaseException | None = None
        while True:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                ready = self.conn.poll(wait)
                msg = self.conn.recv() if ready else None
            except (EOFError, OSError):
                msg, ready = None, True
            if not ready:  # past the limit: the decoder hangs or crawls; stop it, lose this sample
                self.close()
                raise DecodeError(f"decoding {path} took longer than {timeout_s:g} s "
                                  f"(decode_timeout_s); the decoder process was stopped")
            if msg is None:  # the child died: a native crash (abort, segfault, out of memory)
                code = self.proc.wait()
                tail = self._stderr_tail()
                self.close()
                how = (f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}")
                raise DecodeError(f"the decoder crashed on {path} ({how}"
                                  f"{': ' + tail if tail else ''}); the decoder process is restarted "
                                  f"for the next file")
            kind = msg[0]
            if kind == "indices":
                try:
                    reply = ("ok", [int(i) for i in indices_fn(msg[1])])
                except Exception as e:  # the caller's bug: re-raised here once the child is idle
                    failed, reply = e, ("fail", short(e))
                self.conn.send(reply)
            elif kind == "frames":
                return torch.from_numpy(msg[1]), msg[2], msg[3]
            else:
                if failed is not None:
                    raise failed
                raise DecodeError(msg[1])


_workers: dict[tuple[int, str], IsolatedWorker] = {}


def worker(entry: str) -> IsolatedWorker:
    """This process's child for `entry`. One per process: a DataLoader worker forked from a
    process holding a child must not talk to that process's child."""
    key = (os.getpid(), entry)
    if key not in _workers:
        _workers[key] = IsolatedWorker(entry)
    return _workers[key]


@atexit.register
def _stop_workers() -> None:
    for key in [k for k in _workers if k[0] == os.getpid()]:
        _workers.pop(key).close()


def serve(fd: int, read: ReadFn) -> None:
    """The child's loop: requests in, frames (numpy) or an error message out, until EOF.
    `read(path, indices_fn, backend, num_threads)` decodes in this process (no header check:
    the parent made it before sending the file)."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    import torch  # noqa: F401  (imported before 'ready': the per-file clock starts after it)

    conn.send(("ready",))
    while True:
        try:
            path, backend, num_threads = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return

        def remote_indices(n: int) -> list[int]:
            conn.send(("indices", int(n)))
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(f"indices_fn failed in the caller: {value}")
            return value

        try:
            frames, n, used = read(path, remote_indices, backend, num_threads)
            conn.send(("frames", frames.numpy(), n, used))
        except Exception as e:
            conn.send(("error", str(e) if isinstance(e, DecodeError) else
                       f"could not decode {path}: {short(e)}"))
