"""One output path: what `harness run` says, with --no-progress and with -q, and honest small runs."""
from __future__ import annotations

import json
from pathlib import Path


from harness.cli import main




def _args(root, out, *extra):
    return ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
            "--out", str(out), f"task.data.root={root}", "task.optim.epochs=2",
            "task.optim.batch_size=8", *extra]


def test_no_progress_still_shows_epochs_chosen_head_and_metrics(digits_root, tmp_path, capsys):
    grid = "+probe.grid={lr:[0.001,0.01],weight_decay:[0.01]}"
    assert main(_args(digits_root, tmp_path / "runs", "--no-progress", grid)) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "epoch 1/2: loss" in err and "epoch 2/2: loss" in err and "lr" in err
    assert "chosen on the held-out validation split" in err
    assert "evaluation: top1" in err
    assert "cached training features" in err
    assert "done " in captured.out and "record " in captured.out
    # the re-run finds the record and says so
    assert main(_args(digits_root, tmp_path / "runs", "--no-progress", grid)) == 0
    assert "already done" in capsys.readouterr().out


def test_quiet_prints_only_the_record_path(digits_root, tmp_path, capsys):
    assert main(_args(digits_root, tmp_path / "runs", "-q")) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(".json") and Path(lines[0]).is_file()
    assert captured.err == ""
    record = json.loads(Path(lines[0]).read_text())
    assert record["encoder"]["label"] == "vjepa_tiny"
    import torch

    # torch_threads: auto is one intra-op thread on a CPU run that loads in process
    assert record["runtime"] == {"torch_threads": 1,
                                 "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                 "loader_workers": 0}


def test_resume_is_said(digits_root, tmp_path, capsys):
    # A run killed right after its first state save (common.failpoints), then run again.
    out = tmp_path / "runs"
    import os
    import subprocess
    import sys

    env = {**os.environ, "HARNESS_FAILPOINT": "saved:1"}
    args = _args(digits_root, out, "--no-progress", "cache_features=false")
    proc = subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode != 0  # killed at its first save
    assert main(args) == 0
    assert "resuming probe training from" in capsys.readouterr().err


def test_a_global_batch_above_the_training_split_is_said_before_training(digits_root, tmp_path,
                                                                          capsys):
    args = _args(digits_root, tmp_path / "runs", "--no-progress", "task.optim.batch_size=256",
                 "task.optim.epochs=1")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 optimiser step(s) per epoch" in err and "256" in err
    record = json.loads(next((tmp_path / "runs" / "records").glob("*.json")).read_text())
    assert record["protocol_departures"] == {"optim.batch_size": 256, "optim.epochs": 1}
