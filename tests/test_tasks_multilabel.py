"""Multi-label tasks: `path 3,17` manifests -> multi-hot targets -> BCE probe -> mAP record."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import tasks
from harness.cli import main
from results.predictions import read_predictions
from tasks.errors import DataError
from tasks.manifest import manifest_sha256, read_manifest


def test_multilabel_manifest_lines(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("a b.mp4 3,1,3\nc.mp4 2\n")
    assert read_manifest(m, 4, multilabel=True) == [(str(tmp_path / "a b.mp4"), (1, 3)),
                                                    (str(tmp_path / "c.mp4"), (2,))]
    m.write_text("c.mp4 1;2\n")
    with pytest.raises(DataError, match=r"m.csv:1: label '1;2' is not class indices joined by commas"):
        read_manifest(m, 4, multilabel=True)
    m.write_text("c.mp4 1,4\n")
    with pytest.raises(DataError, match=r"label 4 out of range \[0, 3\]"):
        read_manifest(m, 4, multilabel=True)
    # single-label manifests are unchanged: a comma is no integer
    m.write_text("c.mp4 1,2\n")
    with pytest.raises(DataError, match="is not an integer"):
        read_manifest(m, 4)
    # the label set (not its order in the line) is hashed
    one = manifest_sha256([(str(tmp_path / "c.mp4"), (1, 2))], tmp_path)
    assert one == manifest_sha256([(str(tmp_path / "c.mp4"), tuple(sorted((2, 1))))], tmp_path)
    assert one != manifest_sha256([(str(tmp_path / "c.mp4"), (1,))], tmp_path)


@pytest.fixture(scope="module")
def multilabel_task(tmp_path_factory) -> Path:
    """digits_motion videos, labelled with their motion (0-7) and their motion's parity (8: even,
    9: odd): two classes per video."""
    from tasks.digits import make_digits

    root = tmp_path_factory.mktemp("multilabel")
    make_digits(root, seed=0, per_class_train=4, per_class_val=1, per_class_test=2, num_frames=20,
                size=32, progress=False)
    src = root / "digits_motion"
    for split in ("train", "val", "test"):
        lines = []
        for path, label in read_manifest(src / f"{split}.csv", 8):
            lines.append(f"{path} {label},{8 + label % 2}\n")
        (root / f"ml_{split}.csv").write_text("".join(lines))
    names = (src / "classes.txt").read_text().split("\n")[:8] + ["even motion", "odd motion"]
    (root / "ml_classes.txt").write_text("\n".join(names) + "\n")
    cfg = tasks.config("digits_motion")
    cfg.update(name="digits_multilabel", kind="multilabel", metric="mAP", num_classes=10,
               data={"root": str(root), "train": "ml_train.csv", "val": "ml_val.csv",
                     "test": "ml_test.csv", "labels": "ml_classes.txt", "eval_split": "test"})
    path = root / "digits_multilabel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("encoder", ["vjepa_tiny", "ijepa_tiny"])  # a video and an image encoder
def test_multilabel_task_runs_end_to_end(multilabel_task, tmp_path, encoder):
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", encoder, "--random-init", "--task", str(multilabel_task),
                 "--out", str(runs), "--no-progress", "task.optim.epochs=2",
                 "task.optim.batch_size=8", "cache_features=false"]) == 0
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    assert record["protocol"]["task"]["kind"] == "multilabel"
    assert record["metrics"]["classes_scored"] == 10
    assert 0.0 < record["metrics"]["mAP"] <= 100.0
    assert record["metrics"]["num_samples"] == 16
    pred = read_predictions(runs / "records" / record["extra"]["predictions"])
    assert str(pred["kind"]) == "multilabel"
    assert pred["target"].shape == (16, 10) and (pred["target"].sum(1) == 2).all()


def test_data_check_reads_a_multilabel_task(multilabel_task, tmp_path, capsys):
    assert main(["data", "check", str(multilabel_task), "--no-progress", "--workers", "1",
                 "--report", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["splits"]["train"]["usable"] == 32 and not report["problems"]
