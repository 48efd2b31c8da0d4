"""Freed host memory kept for reuse (`harness.host_memory`): a second large block costs no page
faults, the opt-out leaves malloc as it is, and a run's record is the same either way."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt's settings are glibc's (this C library is not glibc)")

REPO = Path(__file__).resolve().parent.parent

# Allocate, touch and free a 64 MiB block twice; print whether the settings took and the
# minor page faults of the second block (a block given back is fresh pages again: 16,384).
PROBE = """
import ctypes, resource, sys
from harness.host_memory import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, faults[1])
"""


def _probe(flag: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_KEEP_FREED_MEMORY"}
    if flag is not None:
        env["HARNESS_KEEP_FREED_MEMORY"] = flag
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


def test_a_freed_block_is_reused_without_page_faults_and_the_opt_out_gives_it_back():
    applied, faults = _probe(None)
    assert applied == "True" and faults < 1000          # the same pages again
    applied, faults = _probe("0")
    assert applied == "False" and faults > 10000         # 64 MiB of fresh 4 KiB pages


def test_a_run_writes_the_same_record_either_way(digits_root, tmp_path):
    records = []
    for flag in ("1", "0"):
        out = tmp_path / f"keep{flag}"
        env = {**os.environ, "HARNESS_KEEP_FREED_MEMORY": flag, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "harness", "run", "--encoder", "vjepa_tiny",
                        "--random-init", "--task", "digits_motion", "--out", str(out),
                        "--no-progress", f"task.data.root={digits_root}",
                        "task.optim.epochs=1", "task.optim.batch_size=8"],
                       cwd=REPO, env=env, check=True, capture_output=True)
        (path,) = (out / "records").glob("*.json")
        records.append(json.loads(path.read_text()))
    assert records[0]["metrics"] == records[1]["metrics"]
    assert records[0]["protocol_id"] == records[1]["protocol_id"]
