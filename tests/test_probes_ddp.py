"""DDP evaluation under torchrun (2 CPU processes, gloo) gives the record of one process.

Same metrics, per-sample predictions, training history, failure accounting and protocol id, on
splits whose sizes are no multiple of the world size, with steps of several micro-batches (the
gradient sum across ranks) and a corrupt evaluation video (failures are counted globally).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    from tasks.digits import make_digits

    root = tmp_path_factory.mktemp("digits")
    make_digits(root, seed=0, per_class_train=3, per_class_val=1, per_class_test=2,
                num_frames=20, size=32, progress=False)
    # 8 classes x 3 = 24 training videos: drop one (23). The test split: 16 + a corrupt file = 17.
    train = root / "digits_motion" / "train.csv"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:-1]))
    bad = root / "digits_motion" / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    test = root / "digits_motion" / "test.csv"
    test.write_text(test.read_text() + "broken.mp4 3\n")
    return root


def _args(root: Path, out: Path, extra: list[str]) -> list[str]:
    return ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
            "--out", str(out), "--no-progress", f"task.data.root={root}",
            "task.optim.epochs=2", "task.optim.batch_size=8", "micro_batch_size=2",
            "eval_batch_size=3", "cache_features=false", "task.max_failure_fraction=0.2",
            *extra]


def _record(out: Path) -> tuple[dict, dict]:
    [path] = sorted((out / "records").glob("*.json"))
    record = json.loads(path.read_text())
    with np.load(out / "records" / record["extra"]["predictions"]) as npz:
        preds = {k: npz[k] for k in npz.files}
    return record, preds


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.mark.parametrize("extra", [[], ["probe.grid={lr: [1e-3, 3e-3], weight_decay: [0.01]}"]],
                         ids=["attentive", "grid"])
def test_two_rank_run_equals_one_process(digits_root, tmp_path, extra):
    if not TORCHRUN.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    one, two = tmp_path / "one", tmp_path / "two"
    cli = [sys.executable, "-m", "harness.cli"]
    subprocess.run(cli + _args(digits_root, one, extra), cwd=REPO, env=_env(), check=True,
                   capture_output=True, timeout=600)
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m",
                           "harness.cli"] + _args(digits_root, two, extra), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[:3000]
    assert len(list((two / "records").glob("*.json"))) == 1  # rank 0 alone writes
    r1, p1 = _record(one)
    r2, p2 = _record(two)
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert r2["protocol_id"] == r1["protocol_id"]
    assert r2["metrics"] == r1["metrics"]  # bit for bit, in fp32
    assert r2["data_problems"] == r1["data_problems"]
    assert r1["data_problems"]["failed"]["eval"] == 1
    assert r1["metrics"]["num_samples"] == 16
    h1 = [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")}
          for h in r1["extra"]["history"]]
    h2 = [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")}
          for h in r2["extra"]["history"]]
    assert h2 == h1
    assert r2["extra"]["grid"] == r1["extra"]["grid"]
    assert p1.keys() == p2.keys()
    for key in p1:
        np.testing.assert_array_equal(p2[key], p1[key], err_msg=key)
