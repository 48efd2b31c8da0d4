"""Task + VideoDataset on real (tiny) digits videos: shapes, failures reported, protocol."""

import json
import shutil

import pytest
import torch

import tasks
from tasks import DataError, collate_clips


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_ds")
    tasks.make_digits(out, seed=0, per_class_train=1, per_class_val=1, per_class_test=1, num_frames=20,
                      size=48, tasks=("digits_motion",), progress=False)
    return out


def test_item_shapes_train_and_eval(root):
    t = tasks.build("digits_motion", root=root, sampling={"eval_views": 3})  # the release default
    assert t.class_names[0] == "move left" and t.num_classes == 8
    ev = t.dataset("test", resolution=32)
    item = ev[3]
    assert item["error"] is None
    assert item["video"].shape == (2, 3, 3, 8, 32, 32) and item["video"].dtype == torch.float32
    assert item["label"] == 3 and "move down" in item["path"]
    tr = t.dataset("train", resolution=32)
    assert tr[0]["video"].shape == (1, 1, 3, 8, 32, 32)
    # eval items are deterministic
    assert torch.equal(ev[3]["video"], ev[3]["video"])
    # task-fixed resolution wins over the caller's; no resolution at all is a clear error
    t48 = tasks.build("digits_motion", root=root, resolution=24)
    assert t48.dataset("val", resolution=32)[0]["video"].shape[-1] == 24
    with pytest.raises(DataError, match="resolution"):
        t.dataset("val")


def test_bad_files_are_reported_never_replaced(root, tmp_path):
    good = tasks.build("digits_motion", root=root).entries("test")
    truncated = tmp_path / "move left" / "truncated.mp4"
    truncated.parent.mkdir()
    data = open(good[0][0], "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01" * 4000)
    manifest = tmp_path / "test.csv"
    manifest.write_text(f"{good[1][0]} 1\n{tmp_path / 'missing file.mp4'} 2\nmove left/truncated.mp4 0\n"
                        f"garbage.mp4 5\n{good[4][0]} 4\n")
    t = tasks.build("digits_motion", root=root, data={"test": str(manifest)}, sampling={"eval_views": 3})
    ds = t.dataset("test", resolution=32)
    items = [ds[i] for i in range(len(ds))]
    assert [it["video"] is None for it in items] == [False, True, True, True, False]
    for it in items[1:4]:
        assert it["error"] and "DecodeError" in it["error"]
    assert "not found" in items[1]["error"]
    # the failed items keep their own path and label: nothing was substituted
    assert [it["label"] for it in items] == [1, 2, 0, 5, 4]
    batch = collate_clips(items)
    assert batch["video"].shape == (2, 2, 3, 3, 8, 32, 32)
    assert batch["label"].tolist() == [1, 4]
    assert [p for p, _ in batch["failures"]] == [items[i]["path"] for i in (1, 2, 3)]
    nothing = collate_clips(items[1:4])
    assert nothing["video"] is None and nothing["label"].numel() == 0 and len(nothing["failures"]) == 3


def test_dataloader_with_collate(root):
    t = tasks.build("digits_motion", root=root)
    loader = torch.utils.data.DataLoader(t.dataset("train", resolution=16), batch_size=4, collate_fn=collate_clips)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == 8
    assert batches[0]["video"].shape == (4, 1, 1, 3, 8, 16, 16) and batches[0]["failures"] == []


def test_protocol_is_jsonable_and_tracks_data(root, tmp_path):
    t = tasks.build("digits_motion", root=root, sampling={"eval_views": 3})
    p = t.protocol(resolution=32)
    json.dumps(p)
    assert p["task"] == "digits_motion" and p["splits"] == {"train": "train", "eval": "test"}
    assert p["resolution"] == 32 and p["sampling"]["eval_views"] == 3
    assert p["manifests"]["train"]["videos"] == 8 and len(p["manifests"]["eval"]["sha256"]) == 64
    assert t.protocol("val", resolution=32)["manifests"]["eval"] != p["manifests"]["eval"]
    # the same data somewhere else: same protocol
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert tasks.build("digits_motion", root=moved, sampling={"eval_views": 3}).protocol(resolution=32) == p
    # a different class order (the K400 bug): different protocol
    labels = moved / "digits_motion" / "classes.txt"
    names = labels.read_text().splitlines()
    labels.write_text("\n".join([names[1], names[0]] + names[2:]) + "\n")
    assert tasks.build("digits_motion", root=moved).protocol(resolution=32)["label_map_sha256"] != p["label_map_sha256"]
    # sampling is part of it
    assert tasks.build("digits_motion", root=root, sampling={"eval_views": 1}).protocol(resolution=32) != p


def test_label_map_must_match_num_classes(root, tmp_path):
    labels = tmp_path / "classes.txt"
    labels.write_text("a\nb\n")
    t = tasks.build("digits_motion", root=root, data={"labels": str(labels)})
    with pytest.raises(DataError, match="2 classes but num_classes is 8"):
        t.class_names
