"""Resumable probe-training state: one file per run, verified on load, locked while in use.

The state holds the probe, the optimiser, the epoch and step it was taken after, the partial
statistics of an unfinished epoch, the history, the data problems so far and the global RNG. It is
written atomically (a preempted job leaves the old state or the new one, never a torn file) with
the digest of its contents, which every load checks: torch.load reads overwritten tensor bytes
without complaint. A fingerprint of what must match (probe type and size, the optimisation
protocol, steps per epoch) refuses a state written by another run.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

import parallel
from common import failpoints
from common.atomic import atomic_write
from probes.digest import content_digest
from probes.optim import OptimConfig

STATE_VERSION = 3  # 3: states carry the digest of their contents


class StateInUseError(RuntimeError):
    """A second run of the same identity while the first still trains on its state file."""


class Preempted(Exception):
    """Training stopped on request (SIGTERM / SIGUSR1 from SLURM): state saved, re-run to resume."""

    def __init__(self, epoch: int, step: int, state_path):
        self.epoch, self.step, self.state_path = epoch, step, state_path
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        saved = (f"training state saved after {where} in {state_path}" if state_path is not None
                 else "no state path was given, nothing was saved")
        super().__init__(f"stopped on request (SIGTERM or SIGUSR1): {saved}; re-run the same command to "
                         f"resume")


def fingerprint(probe: nn.Module, optim: OptimConfig, steps_per_epoch: int) -> dict:
    """What must match for a saved state to be continued; memory and throughput knobs
    (micro_batch_size, num_workers) do not change the maths beyond float summation order."""
    cfg = optim.to_dict()
    for k in OptimConfig.NOT_PROTOCOL:
        cfg.pop(k)
    return {"probe": type(probe).__name__,
            "num_params": sum(p.numel() for p in probe.parameters()),
            "optim": cfg, "steps_per_epoch": steps_per_epoch}


class StateFile:
    """The state file of one run (`path` None: nothing is saved or resumed)."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: dict):
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def load(self) -> dict:
        """The saved state (verified: version, fingerprint, digest); the global RNG restored."""
        path, start_over = self.path, "Delete the file to start the probe training over."
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read probe training state {path}: {exc}. {start_over}") from exc
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION \
                or state.get("fingerprint") != self.fingerprint:
            theirs = (state.get("fingerprint") if isinstance(state, dict) else None) or {}
            differ = sorted(k for k in set(theirs) | set(self.fingerprint)
                            if theirs.get(k) != self.fingerprint.get(k))
            raise ValueError(f"probe training state {path} was written by a different run or "
                             f"version (differs in {differ or ['version']}); delete it or use "
                             f"another state path to start over.")
        stored = state.pop("checksum", None)
        if stored != content_digest(state):
            raise ValueError(f"probe training state {path} is corrupt: its contents do not match "
                             f"the checksum saved with them (a damaged disk or a partial copy). "
                             f"{start_over}")
        _set_rng_state(state["rng"])
        return state

    def save(self, **contents) -> None:
        """Write `contents` with the version, fingerprint and global RNG state.

        Every rank holds the same state; rank 0 writes it, the others wait until it is on disk
        (a rank that stopped first could otherwise end the job while the file is written)."""
        if parallel.rank() != 0:
            parallel.barrier()
            return
        state = {"version": STATE_VERSION, "fingerprint": self.fingerprint, **contents,
                 "rng": _rng_state()}
        state = {**state, "checksum": content_digest(state)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda f: torch.save(state, f))
        failpoints.hit("saved")
        parallel.barrier()


@contextlib.contextmanager
def state_lock(path: Path | None):
    """Hold an exclusive lock beside the state file for the run's lifetime: a second identical
    run (same state file) refuses to start instead of training on the same state. The kernel
    drops the lock when the process dies, so a killed run never leaves it stale."""
    if path is None:
        yield
        return
    import fcntl

    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StateInUseError(f"another run with the same identity is training on {path} "
                                  f"({holder}); wait for it to finish (re-running the command "
                                  f"then reuses its record) or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    # Restoring the global RNG makes a `shuffle=True` DataLoader draw the same order for the next
    # epoch as the uninterrupted run would (it seeds each epoch's iterator from this RNG).
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available() and \
            len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
