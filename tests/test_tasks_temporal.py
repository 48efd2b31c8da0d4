"""Temporal probes derived from a video manifest: arrow of time and frame order."""
import json

import pytest
import torch

import tasks
from harness.cli import main
from tasks.errors import DataError

DIGITS = {"data": {"train": "digits_motion/train.csv", "val": "digits_motion/val.csv",
                   "eval_split": "val"},
          "sampling": {"frames_per_clip": 8, "frame_step": 2}}




def _pair(name, root):
    task = tasks.build(name, root=root, **DIGITS)
    ds = task.dataset("val", train=False, resolution=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    return task, ds[0], ds[1]


def test_every_video_gives_a_balanced_pair(digits_small):
    task = tasks.build("arrow_of_time", root=digits_small, **DIGITS)
    source = tasks.build("digits_motion", root=digits_small).entries("val")
    entries = task.entries("val")
    assert entries == [(p, label) for p, _ in source for label in (0, 1)]
    assert task.class_names == ["forward", "backward"]
    assert task.protocol("val")["temporal_probe"] == "arrow_of_time"


def test_backward_is_the_same_clip_reversed(digits_small):
    _, forward, backward = _pair("arrow_of_time", digits_small)
    assert (forward["label"], backward["label"]) == (0, 1) and forward["path"] == backward["path"]
    video = forward["video"]  # (S, V, 3, T, H, W), centred clip: the same frames for both
    assert torch.equal(backward["video"], video.flip(3))
    assert not torch.equal(backward["video"], video)


def test_shuffled_is_a_permutation_that_moves_frames(digits_small):
    _, ordered, shuffled = _pair("frame_order", digits_small)
    a, b = ordered["video"][0, 0], shuffled["video"][0, 0]  # (3, T, H, W)
    assert not torch.equal(a, b)
    frames_a = sorted(a[:, t].flatten().tolist() for t in range(a.shape[1]))
    frames_b = sorted(b[:, t].flatten().tolist() for t in range(b.shape[1]))
    assert frames_a == frames_b  # the same frames, another order


def test_a_temporal_probe_runs_end_to_end(digits_small, tmp_path):
    out = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "frame_order",
                 "--out", str(out), "--no-progress", f"task.data.root={digits_small}",
                 "task.data.train=digits_motion/train.csv", "task.data.val=digits_motion/val.csv",
                 "task.sampling.frames_per_clip=8", "task.sampling.frame_step=2",
                 "task.optim.epochs=1", "task.optim.batch_size=8"]) == 0
    [path] = (out / "records").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["protocol"]["task"]["temporal_probe"] == "frame_order"
    assert rec["metrics"]["num_samples"] == 2 * 8  # 8 val videos, each ordered and shuffled


def test_unknown_temporal_probe_is_a_clear_error(digits_small):
    with pytest.raises(DataError, match="temporal_probe must be one of arrow_of_time, frame_order"):
        tasks.build("arrow_of_time", root=digits_small, temporal_probe="backwards", **DIGITS)
    with pytest.raises(DataError, match="a temporal probe has 2 classes"):
        tasks.build("arrow_of_time", root=digits_small, num_classes=3, **DIGITS)
