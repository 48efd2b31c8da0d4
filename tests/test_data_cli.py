"""`harness data split`: label-efficiency folds drawn from the publisher's list, and the CLI's
clear errors for `harness data prepare / check`."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main

CLASSES = ("abseiling", "passing American football (in game)", "riding a bike")


def _k400_annotations(root: Path, per_class=(20, 7, 1), present=lambda k: True) -> None:
    """A K400 training list of sum(per_class) clips; `present(k)` decides which exist locally
    (placeholder files: a split never decodes)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    k = 0
    with open(root / "annotations" / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for label, n in zip(CLASSES, per_class):
            for _ in range(n):
                ytid = f"id{k:09d}"
                w.writerow([label, ytid, 10, 20, "train"])
                if present(k):
                    p = root / "train" / label / f"{ytid}_000010_000020.mp4"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(b"placeholder")
                k += 1


def test_folds_are_stratified_with_one_per_class_and_deterministic(tmp_path, capsys):
    root = tmp_path / "k400"
    _k400_annotations(root)
    assert main(["data", "split", "k400", "--root", str(root), "--fraction", "0.05,0.5",
                 "--seeds", "0,1"]) == 0
    summary = json.loads((root / "splits" / "splits.json").read_text())
    folds = {f["name"]: f for f in summary["folds"]}
    assert set(folds) == {"train_5pct_seed0", "train_5pct_seed1", "train_50pct_seed0", "train_50pct_seed1"}
    from tasks.manifest import read_manifest

    five = read_manifest(root / "splits" / "train_5pct_seed0.csv", 400)
    # round(0.05 x 20) = 1, round(0.05 x 7) = 0 -> 1, 1 -> 1: every class keeps one sample
    assert sorted(Counter(lab for _, lab in five).values()) == [1, 1, 1]
    half = read_manifest(root / "splits" / "train_50pct_seed0.csv", 400)
    assert sorted(Counter(lab for _, lab in half).values()) == [1, 4, 10]
    assert folds["train_50pct_seed0"]["sha256"] != folds["train_50pct_seed1"]["sha256"]
    first = (root / "splits" / "train_50pct_seed1.csv").read_text()
    assert main(["data", "split", "k400", "--root", str(root), "--fraction", "0.5", "--seeds", "1"]) == 0
    assert (root / "splits" / "train_50pct_seed1.csv").read_text() == first
    assert "missing locally" in capsys.readouterr().out


def test_two_users_missing_different_files_draw_the_same_fold(tmp_path):
    from tasks.native.splits import write_splits

    a, b = tmp_path / "a", tmp_path / "b"
    _k400_annotations(a, present=lambda k: k % 7 != 3)
    _k400_annotations(b, present=lambda k: k % 5 != 1)
    fa = write_splits("k400", a, fractions=[0.5], seeds=[2])["folds"][0]
    fb = write_splits("k400", b, fractions=[0.5], seeds=[2])["folds"][0]
    assert fa["sha256"] == fb["sha256"] and fa["drawn"] == fb["drawn"] == 15
    assert fa["missing_locally"] > 0 and fb["missing_locally"] > 0
    assert fa["written"] + fa["missing_locally"] == 15
    # what each user has of the fold is a subset of the same drawn list
    names_a = {Path(line.rsplit(" ", 1)[0]).name for line in Path(fa["manifest"]).read_text().splitlines()}
    names_b = {Path(line.rsplit(" ", 1)[0]).name for line in Path(fb["manifest"]).read_text().splitlines()}
    full = tmp_path / "full"
    _k400_annotations(full)
    ff = write_splits("k400", full, fractions=[0.5], seeds=[2])["folds"][0]
    names_full = {Path(line.rsplit(" ", 1)[0]).name for line in Path(ff["manifest"]).read_text().splitlines()}
    assert names_a <= names_full and names_b <= names_full and len(names_full) == 15


def test_a_fold_changes_the_protocol(tmp_path):
    import tasks

    root = tmp_path / "k400"
    _k400_annotations(root)
    from tasks.native import prepare
    from tasks.native.splits import write_splits

    prepare("k400", root, verify=False, progress=False)
    (root / "val.csv").write_text((root / "train.csv").read_text())
    fold = write_splits("k400", root, fractions=[0.1], seeds=[0])["folds"][0]
    full = tasks.build("k400", root=root).protocol()
    part = tasks.build("k400", root=root, data={"train": f"splits/{fold['name']}.csv"}).protocol()
    assert full["manifests"]["train"]["sha256"] != part["manifests"]["train"]["sha256"]
    assert part["manifests"]["train"]["videos"] == fold["written"]


@pytest.mark.parametrize("argv, message", [
    (["data", "prepare", "k400", "--root", "/no/such/folder"], "is not a folder"),
    (["data", "split", "k400", "--root", ".", "--fraction", "1.5"], "(0, 1]"),
    (["data", "check", "k4000", "--root", "."], "Did you mean: k400"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if argv[1] == "split":
        _k400_annotations(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_prepare_without_annotations_says_what_layout_it_expects(tmp_path, capsys):
    assert main(["data", "prepare", "ssv2", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train.json" in err and "webm" in err


def test_split_names_parse_back():
    from tasks.errors import DataError
    from tasks.native.splits import fold_name, fold_override, parse_split

    assert parse_split("10pct:seed1") == (0.1, 1) and parse_split("0.05:2") == (0.05, 2)
    assert fold_name(*parse_split("5pct:seed0")) == "train_5pct_seed0"
    assert fold_override("50pct:seed2") == {"data": {"train": "splits/train_50pct_seed2.csv"},
                                            "train_fold": {"fraction": 0.5, "seed": 2}}
    for bad in ("10pct", "200pct:seed1", "tenpct:seed1", "10pct:seedx"):
        with pytest.raises(DataError, match="10pct:seed1"):
            parse_split(bad)
