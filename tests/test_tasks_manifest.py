"""The release manifest format: `path label`, label after the last space, no header."""

import pytest

from tasks import DataError
from tasks.manifest import (label_map_sha256, manifest_sha256, read_label_map, read_manifest,
                            write_manifest)


def write(p, text):
    p.write_text(text, encoding="utf-8")
    return p


def test_paths_with_spaces_and_relative_resolution(tmp_path):
    m = write(tmp_path / "train.csv",
              "passing American football (in game)/abc 001.mp4 3\n"
              "\n"
              "/abs/path/x.mp4 0\r\n"
              "move left/000001.mp4   1\n")
    entries = read_manifest(m, num_classes=4)
    assert entries == [
        (str(tmp_path / "passing American football (in game)/abc 001.mp4"), 3),
        ("/abs/path/x.mp4", 0),
        (str(tmp_path / "move left/000001.mp4"), 1),
    ]


@pytest.mark.parametrize("line, what", [
    ("nospace.mp4", "separated by a space"),
    ("video.mp4 three", "not an integer"),
    ("video.mp4 1.5", "not an integer"),
    ("video.mp4 9", "out of range"),
    ("video.mp4 -1", "out of range"),
    (" 3", "separated by a space"),
    ("video.mp4 ", "separated by a space"),
])
def test_malformed_line_names_file_line_and_problem(tmp_path, line, what):
    m = write(tmp_path / "val.csv", "good/a.mp4 0\n\n" + line + "\n")
    with pytest.raises(DataError) as e:
        read_manifest(m, num_classes=4)
    assert f"{m}:3" in str(e.value)
    assert what in str(e.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_write_read_roundtrip(tmp_path):
    entries = [("a b/c d.mp4", 2), ("x.mp4", 0)]
    write_manifest(tmp_path / "m.csv", entries)
    assert read_manifest(tmp_path / "m.csv") == [(str(tmp_path / p), l) for p, l in entries]


def test_manifest_hash_ignores_order_and_mount_point_but_not_labels():
    a = [("/data/k400/train/abseiling/x.mp4", 0), ("/data/k400/train/zumba/y.mp4", 399)]
    moved = [("/mnt/other/k400/train/zumba/y.mp4", 399), ("/mnt/other/k400/train/abseiling/x.mp4", 0)]
    relabelled = [("/data/k400/train/abseiling/x.mp4", 1), ("/data/k400/train/zumba/y.mp4", 399)]
    assert manifest_sha256(a) == manifest_sha256(moved)
    assert manifest_sha256(a) != manifest_sha256(relabelled)
    assert manifest_sha256(a) != manifest_sha256(a[:1])


def test_label_map(tmp_path):
    p = write(tmp_path / "classes.txt", "move left\nmove right\n\n")
    assert read_label_map(p) == ["move left", "move right"]
    assert label_map_sha256(["a", "b"]) != label_map_sha256(["b", "a"])
    with pytest.raises(DataError, match="blank class name"):
        read_label_map(write(tmp_path / "c2.txt", "a\n\nb\n"))
    with pytest.raises(DataError, match="duplicate"):
        read_label_map(write(tmp_path / "c3.txt", "a\nb\na\n"))


def test_manifest_hash_relative_to_base_keeps_split_folders(tmp_path):
    val = [(str(tmp_path / "d/val/move left/000000.mp4"), 0)]
    test = [(str(tmp_path / "d/test/move left/000000.mp4"), 0)]
    assert manifest_sha256(val, tmp_path / "d") != manifest_sha256(test, tmp_path / "d")
    moved = [(str(tmp_path / "e/val/move left/000000.mp4"), 0)]
    assert manifest_sha256(val, tmp_path / "d") == manifest_sha256(moved, tmp_path / "e")
    # entries outside base fall back to their common folder
    assert manifest_sha256(val, tmp_path / "elsewhere") == manifest_sha256(val)


def test_byte_order_marks_and_trailing_blanks_change_nothing(tmp_path):
    from tasks.manifest import label_map_sha256, read_label_map, read_manifest

    (tmp_path / "a.mp4").write_bytes(b"x")
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text("a.mp4 0\n", encoding="utf-8")
    bom.write_text("\ufeffa.mp4 0\n", encoding="utf-8")
    assert read_manifest(bom) == read_manifest(plain)
    (tmp_path / "c1.txt").write_text("riding a bike\nabseiling\n", encoding="utf-8")
    (tmp_path / "c2.txt").write_text("\ufeffriding a bike  \nabseiling\t\n", encoding="utf-8")
    a, b = read_label_map(tmp_path / "c1.txt"), read_label_map(tmp_path / "c2.txt")
    assert a == b == ["riding a bike", "abseiling"]
    assert label_map_sha256(a) == label_map_sha256(b)
