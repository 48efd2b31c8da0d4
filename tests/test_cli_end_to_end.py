"""The CLI end to end on CPU: real mp4 files -> frozen tiny encoder -> probe -> record -> leaderboard."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

REPO = Path(__file__).resolve().parent.parent




def _run(args: list[str]) -> int:
    return main(args)


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True,
                         text=True, cwd=REPO, check=True).stdout
    for command in ("run", "encoders", "tasks", "leaderboard", "data", "pretrain", "demo"):
        assert command in out


def test_listing_does_not_import_torch():
    code = ("import sys; from harness.cli import main; main(['encoders', '--format', 'csv']); "
            "main(['tasks', '--format', 'csv']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout
    assert "vjepa_vitl" in out and "digits_motion" in out and "ssv2" in out
    assert out.strip().splitlines()[-1] == "False"


def test_unknown_encoder_names_close_matches(capsys):
    assert _run(["run", "--encoder", "vjepa_vitll", "--task", "digits_motion"]) == 2
    err = capsys.readouterr().err
    assert "vjepa_vitl" in err and "unknown encoder" in err


def test_unknown_override_key_is_a_clear_error(capsys):
    assert _run(["run", "--encoder", "vjepa_tiny", "--random-init", "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_show_config_composes_groups(capsys):
    # overrides may stand between flags
    assert _run(["run", "--encoder", "vjepa_tiny", "task.optim.epochs=7", "--task", "ssv2",
                 "--probe", "linear", "--show-config", "task.optim.lr=0.0003"]) == 0
    out = capsys.readouterr().out
    assert "num_classes: 174" in out and "kind: linear" in out and "lr: 0.0003" in out
    assert "epochs: 7" in out


def test_run_records_and_leaderboard(digits_root, tmp_path, capsys):
    out = tmp_path / "runs"
    common = ["--encoder", "vjepa_tiny", "--random-init", "--out", str(out), "--no-progress",
              f"task.data.root={digits_root}", "task.optim.epochs=2", "task.optim.batch_size=8"]
    assert _run(["run", "--task", "digits_motion", *common]) == 0
    # digits tasks cache frozen features by default; this run trains with online augmentation
    assert _run(["run", "--task", "digits_appearance", *common, "cache_features=false"]) == 0
    assert _run(["run", "--task", "digits_motion", "--probe", "linear", *common]) == 0

    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    assert len(records) == 3
    by_key = {(r["task"], r["protocol"]["probe"]["kind"]): r for r in records}
    attentive = by_key[("digits_motion", "attentive")]
    linear = by_key[("digits_motion", "linear")]
    assert attentive["protocol_id"] != linear["protocol_id"]
    assert attentive["checkpoint"]["random_init"] is True
    assert attentive["split"] == "test"
    assert attentive["timings"]["feature_cache"]["samples"] == 32  # 4 train videos x 8 classes
    appearance = by_key[("digits_appearance", "attentive")]
    assert "feature_cache" not in appearance["timings"]
    assert appearance["protocol"]["task"]["train_aug"]["random_resized_crop"]["scale"] == [0.5, 1.0]
    # Cached features keep the task's augmentation, drawn 4 times per video (the digits tasks'
    # cached_train_copies), and the protocol says so.
    assert attentive["timings"]["feature_cache"]["copies"] == 4
    assert attentive["protocol"]["task"]["feature_cache"] == {"augmented_copies_per_video": 4}
    assert attentive["protocol"]["task"]["train_aug"]["random_resized_crop"]["scale"] == [0.5, 1.0]
    assert attentive["protocol_id"] != appearance["protocol_id"]
    assert 0.0 <= attentive["metrics"]["top1"] <= 100.0
    assert attentive["protocol"]["task"]["sampling"]["eval_segments"] == 2
    for field in ("protocol_id", "versions", "timings", "data_problems", "seed", "device"):
        assert field in attentive
    # The test split has 2 videos per class for 8 motions.
    assert attentive["data_problems"]["seen"]["eval"] == 16
    assert attentive["data_problems"]["failed"].get("eval", 0) == 0

    capsys.readouterr()
    assert _run(["leaderboard", "--results", str(out), "--format", "markdown"]) == 0
    board = capsys.readouterr().out
    assert "digits_appearance" in board and "digits_motion" in board
    assert linear["protocol_id"] in board and attentive["protocol_id"] in board
    assert "probe.kind" in board  # the note says what differs between the two protocols


def test_rerun_resumes_from_saved_state(digits_root, tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
            "--out", str(out), "--no-progress", f"task.data.root={digits_root}",
            "task.optim.epochs=1", "task.optim.batch_size=8"]
    assert _run(args) == 0
    first = json.loads(next((out / "records").glob("*.json")).read_text())
    assert list((out / "state").glob("*.pt"))
    assert _run(args) == 0  # finds the finished run's record: nothing is redone or rewritten
    assert len(list((out / "records").glob("*.json"))) == 1
    # A job killed after training but before its record was written: the finished state is
    # found, only the evaluation runs again, and the metrics are the same.
    next((out / "records").glob("*.json")).unlink()
    assert _run(args) == 0
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 1 and records[0]["timings"]["train_s"] == 0
    assert records[0]["metrics"] == first["metrics"]


def test_shared_frame_cache_decodes_each_video_once_and_changes_no_number(digits_root, tmp_path):
    from harness.config import compose_run
    from harness.runner import run_evaluation
    from tasks.frame_cache import FrameCache

    def overrides(out):
        return ["encoder=vjepa_tiny", "task=digits_motion", "random_init=true", f"out={out}",
                "progress=false", f"task.data.root={digits_root}", "task.optim.epochs=2",
                "task.optim.batch_size=8"]

    plain = run_evaluation(compose_run(overrides(tmp_path / "plain"))).record
    cache = FrameCache(2**30)
    first = run_evaluation(compose_run(overrides(tmp_path / "a")), frame_cache=cache).record
    assert len(cache) == 32 + 16  # every train and test video, decoded once
    second = run_evaluation(compose_run(overrides(tmp_path / "b")), frame_cache=cache).record
    assert len(cache) == 48  # the second run decoded nothing new
    assert plain["metrics"] == first["metrics"] == second["metrics"]


def test_predictions_are_saved_and_compare_runs_a_paired_test(digits_root, tmp_path, capsys):
    import numpy as np

    from results.predictions import correct, read_predictions

    out = tmp_path / "runs"
    base = ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
            "--out", str(out), "--no-progress", f"task.data.root={digits_root}",
            "task.optim.epochs=2", "task.optim.batch_size=8"]
    assert _run(base + ["--seed", "0", "label=seed0"]) == 0
    assert _run(base + ["--seed", "1", "label=seed1"]) == 0
    paths = sorted((out / "records").glob("*.json"))
    assert len(paths) == 2
    for p in paths:
        rec = json.loads(p.read_text())
        pred = read_predictions(p)
        assert rec["extra"]["predictions"].endswith(".predictions.npz")
        assert len(pred["label"]) == rec["metrics"]["num_samples"] == 16
        assert sorted(pred["index"].tolist()) == list(range(16))  # manifest ids
        assert 100 * correct(pred).mean() == pytest.approx(rec["metrics"]["top1"], abs=1e-4)
        assert np.allclose(pred["topk_prob"].sum(1) <= 1 + 1e-5, True)
    capsys.readouterr()
    assert _run(["compare", "seed0", "seed1", "--task", "digits_motion", "--results", str(out)]) == 0
    text = capsys.readouterr().out
    assert "16 samples" in text and "McNemar exact" in text and "95% CI" in text
    # another protocol: refused
    assert _run(base + ["--seed", "0", "label=lin", "--probe", "linear"]) == 0
    assert _run(["compare", "seed0", "lin", "--task", "digits_motion", "--results", str(out)]) == 2
    assert "different protocols" in capsys.readouterr().err


def test_any_timm_image_model_runs_frame_by_frame(digits_root, tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--encoder", "timm:vit_tiny_patch16_224", "--random-init", "--task",
            "digits_motion", "--out", str(out), "--no-progress", f"task.data.root={digits_root}",
            "task.optim.epochs=1", "task.optim.batch_size=8", "encoder.arch.resolution=32",
            "encoder.arch.depth=2"]
    assert _run(args) == 0
    rec = json.loads(next((out / "records").glob("*.json")).read_text())
    assert rec["encoder"]["name"] == "timm:vit_tiny_patch16_224"
    assert rec["encoder"]["modality"] == "image" and rec["encoder"]["spec"]["resolution"] == 32
    assert rec["encoder"]["config"]["mean"] == [0.5, 0.5, 0.5]  # timm's pretrained config
    assert rec["encoder"]["spec"]["depth"] == 2 and "encoder.arch.depth=2" in rec["extra"]["command"]


def test_sigterm_saves_state_exits_143_and_the_rerun_resumes(digits_root, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "runs"
    args = [sys.executable, "-m", "harness", "run", "--encoder", "vjepa_tiny", "--random-init",
            "--task", "digits_motion", "--out", str(out), "--no-progress",
            f"task.data.root={digits_root}", "task.optim.epochs=12", "task.optim.batch_size=4",
            "cache_features=false"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "state").glob("*.pt")) and time.time() < deadline:  # epoch 1 saved
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "training state saved after epoch" in err and "re-run the same command" in err
    assert not list((out / "records").glob("*.json"))
    assert _run(args[3:] + ["task.optim.epochs=12"]) == 0  # the same command: resumes, finishes
    rec = json.loads(next((out / "records").glob("*.json")).read_text())
    assert rec["timings"]["resumed_from_epoch"] >= 1


def test_listings_piped_print_every_name_whole():
    import encoders
    import tasks

    for what, names in (("encoders", encoders.names()), ("tasks", tasks.names())):
        out = subprocess.run([sys.executable, "-m", "harness", what], capture_output=True,
                             text=True, cwd=REPO, check=True).stdout  # stdout is a pipe here
        first_words = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
        assert set(names) <= first_words, set(names) - first_words
        assert "…" not in out
