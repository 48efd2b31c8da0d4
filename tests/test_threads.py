"""torch's intra-op threads: the `torch_threads` setting, its auto rule (1 on CPU with
in-process loading; the figures are in `harness.runner.intra_op_threads`), and the record
saying what a run computed with.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.runner import intra_op_threads, torch_threads


def test_auto_is_one_thread_on_cpu_with_in_process_loading():
    assert intra_op_threads("auto", device="cpu", in_process_loading=True) == 1
    # loader workers or a GPU: torch's default stands
    assert intra_op_threads("auto", device="cpu", in_process_loading=False) is None
    assert intra_op_threads("auto", device="cuda", in_process_loading=True) is None
    assert intra_op_threads("auto", device="cuda:1", in_process_loading=False) is None
    # a number is taken as given
    assert intra_op_threads(3, device="cpu", in_process_loading=True) == 3
    assert intra_op_threads(2, device="cuda", in_process_loading=False) == 2


def test_the_setting_is_restored_after_the_body_even_on_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with pytest.raises(RuntimeError):
        with torch_threads(other):
            assert torch.get_num_threads() == other
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("value, message", [
    (0, "out of range"), (True, "integer or auto"), ("two", "integer or auto"),
    (1.5, "integer or auto")])
def test_settings_refuse_what_is_not_a_thread_count(value, message):
    from harness.settings import RunSettings

    with pytest.raises(ValueError, match=message):
        RunSettings(device="cpu", seed=0, torch_threads=value)
    assert RunSettings(device="cpu", seed=0).torch_threads == "auto"


def test_override_check_names_a_bad_thread_count():
    from harness.config import ConfigError, compose_run

    with pytest.raises(ConfigError, match="torch_threads=0"):
        compose_run(["torch_threads=0"])
    with pytest.raises(ConfigError, match="torch_threads=many"):
        compose_run(["torch_threads=many"])
    assert compose_run(["torch_threads=2"]).torch_threads == 2


def _run(root, out, *extra):
    from harness.cli import main

    args = ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
            "--out", str(out), f"task.data.root={root}", "task.optim.epochs=1",
            "task.optim.batch_size=8", "-q", *extra]
    assert main(args) == 0


def _record(out: Path) -> dict:
    (path,) = (out / "records").glob("*.json")
    return json.loads(path.read_text())


def test_records_say_the_threads_the_run_used_and_the_caller_keeps_its_own(digits_root,
                                                                            tmp_path):
    before = torch.get_num_threads()
    _run(digits_root, tmp_path / "auto")
    runtime = _record(tmp_path / "auto")["runtime"]
    assert runtime["torch_threads"] == 1  # CPU, digits load in process (num_workers 0)
    assert runtime["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert runtime["loader_workers"] == 0
    assert torch.get_num_threads() == before
    _run(digits_root, tmp_path / "two", "torch_threads=2")
    assert _record(tmp_path / "two")["runtime"]["torch_threads"] == 2
    assert torch.get_num_threads() == before


def test_the_demo_runs_two_jobs_only_where_two_cores_are_usable():
    """`harness demo`'s default: two one-thread worker processes on a CPU with 2 cores or more,
    one job on a single core (here: this test's child pinned to one core) and on a GPU."""
    import os
    import subprocess
    import sys

    from harness.demo_jobs import default_jobs

    assert default_jobs("cuda") == 1
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    cores = sorted(os.sched_getaffinity(0))
    assert default_jobs("cpu") == (2 if len(cores) >= 2 else 1)
    pinned = subprocess.run(
        [sys.executable, "-c", (f"import os; os.sched_setaffinity(0, {{{cores[0]}}}); "
                                "from harness.demo_jobs import default_jobs; "
                                "print(default_jobs('cpu'))")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert pinned.stdout.strip() == "1"
