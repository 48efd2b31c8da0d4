"""Fault injection: a run killed anywhere (SIGKILL) or preempted (SIGTERM) resumes to the numbers
of an uninterrupted run, and leaves no torn, stray or duplicate file behind.

Each chain kills one run at a named point (`common.failpoints`), re-runs the same command, kills
that re-run at the next point, and so on; the last re-run completes. After every kill the output
folder holds whole files only (no `.part`), and at the end exactly one record and one
predictions file, with the metrics and protocol id of a run that was never interrupted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    from tasks.digits import make_digits

    root = tmp_path_factory.mktemp("digits")
    make_digits(root, seed=0, per_class_train=3, per_class_val=1, per_class_test=2,
                num_frames=20, size=32, progress=False)
    return root


def _run(root: Path, out: Path, extra: list[str], failpoint: str | None = None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("HARNESS_FAILPOINT", None)
    if failpoint:
        env["HARNESS_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "harness.cli", "run", "--encoder", "vjepa_tiny", "--random-init",
           "--task", "digits_motion", "--out", str(out), "--no-progress",
           f"task.data.root={root}", "task.optim.epochs=2", "task.optim.batch_size=8",
           "micro_batch_size=4", "state_save_every_s=0", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _final(out: Path) -> dict:
    records = sorted((out / "records").glob("*.json"))
    preds = sorted((out / "records").glob("*.predictions.npz"))
    assert len(records) == 1 and len(preds) == 1, _files(out)
    record = json.loads(records[0].read_text())
    assert record["extra"]["predictions"] == preds[0].name
    return record


CHAINS = {
    # online training data (mid-epoch resume from any step), state saved after every step
    "online": (["cache_features=false"],
               ["startup", "step:2", "step:1@TERM", "saved:2", "eval:2", "record"]),
    # cached features (4 augmented copies per video, encoded before the first epoch)
    "cached": (["cache_features=true"], ["cache:3", "step:4", "record"]),
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_killed_anywhere_resumes_to_identical_numbers(digits_root, tmp_path, chain):
    extra, points = CHAINS[chain]
    clean = _run(digits_root, tmp_path / "clean", extra)
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = _final(tmp_path / "clean")

    out = tmp_path / "killed"
    for point in points:
        done = _run(digits_root, out, extra, failpoint=point)
        want = 143 if point.endswith("@TERM") else -signal.SIGKILL
        assert done.returncode == want, f"{point}: rc {done.returncode}\n{done.stderr[-2000:]}"
        if want == 143:
            assert "saved" in done.stderr and "re-run the same command" in done.stderr
        files = _files(out)
        assert not [f for f in files if f.endswith(".part")], f"{point}: torn files {files}"
        assert len([f for f in files if f.endswith(".json")]) == 0, f"{point}: {files}"
    resumed = _run(digits_root, out, extra)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = _final(out)
    assert got["protocol_id"] == expected["protocol_id"]
    assert got["metrics"] == expected["metrics"]
    assert got["data_problems"] == expected["data_problems"]
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("seconds", "samples_per_s")} for e in h]  # noqa: E731
    assert strip(got["extra"]["history"]) == strip(expected["extra"]["history"])
    leftovers = [f for f in _files(out) if not f.startswith("records/")]
    assert all(f.startswith("state/") and f.endswith((".pt", ".pt.lock")) for f in leftovers), leftovers

    # A finished run re-run is not redone and writes nothing new.
    again = _run(digits_root, out, extra)
    assert again.returncode == 0 and "already done" in again.stdout
    assert _final(out)["created"] == got["created"]
