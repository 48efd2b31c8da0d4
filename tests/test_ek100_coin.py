"""EK100 action anticipation and COIN from their native formats; the anticipation metric and loss.

Parity numbers come from the V-JEPA 2 release's own code (tests/fixtures/ek100/README.md).
The native layouts are built here: the publisher's CSV / JSON files and tiny real videos.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from probes.focal import sigmoid_focal_loss
from results.anticipation import ClassMeanRecall, anticipation_scores, class_mean_recall
from results.record import protocol_id
from tasks.anticipation import (
    ANTICIPATION_POINTS,
    AnticipationClips,
    AnticipationSampling,
    clip_indices,
    read_manifest,
)
from tasks.errors import DataError
from tasks.native import ek100

FIXTURE = json.loads((Path(__file__).parent / "fixtures/ek100/anticipation_release.json").read_text())
EPIC_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
               "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
               "all_nouns,all_noun_classes")


# ---------------------------------------------------------------- videos whose frames say their index
def _stripes(i: int) -> np.ndarray:
    """A 32x48 frame whose three vertical stripes spell i in base 8 (values far apart, so the
    codec's loss cannot blur one digit into the next)."""
    digits = (i // 64 % 8, i // 8 % 8, i % 8)
    frame = np.zeros((32, 48, 3), np.uint8)
    for k, d in enumerate(digits):
        frame[:, 16 * k:16 * (k + 1)] = 16 + 32 * d
    return frame


def read_index(frame) -> int:
    f = np.asarray(frame, dtype=np.float32)
    digits = [round(float(f[8:24, 16 * k + 4:16 * k + 12].mean() - 16) / 32) for k in range(3)]
    return digits[0] * 64 + digits[1] * 8 + digits[2]


def make_video(path: Path, frames: int, fps: int = 60) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(frames):
            for packet in s.encode(av.VideoFrame.from_ndarray(_stripes(i), format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)


def _epic_row(video: str, i: int, sf: int, ef: int, verb: int, noun: int) -> str:
    return (f"{video}_{i},{video.split('_')[0]},{video},00:00:01.000,00:00:01.00,00:00:02.00,"
            f"{sf},{ef},w{verb} n{noun},w{verb},{verb},n{noun},{noun},['n{noun}'],[{noun}]")


@pytest.fixture(scope="module")
def ek_root(tmp_path_factory) -> Path:
    """The release fixture's rows in the publisher's CSVs, videos in file_format 0 (P01, P03) and
    1 (P02), plus one malformed row, one repeated narration and one video not on disk."""
    root = tmp_path_factory.mktemp("ek100")
    fa = FIXTURE["filter_annotations"]
    train = [_epic_row(*r) for r in fa["train_rows"]]
    val = [_epic_row(*r) for r in fa["val_rows"]]
    train.append("P01_01_9,P01,P01_01,x,x,x,notanint,5,x,w,1,n,2,[],[]")
    train.append(_epic_row("P01_01", 0, 1, 2, 1, 2))  # narration P01_01_0 again
    val.append(_epic_row("P09_01", 0, 10, 20, 3, 7))   # its video is not on disk
    (root / "annotations").mkdir()
    (root / "annotations/EPIC_100_train.csv").write_text("\n".join([EPIC_HEADER] + train) + "\n")
    (root / "annotations/EPIC_100_validation.csv").write_text("\n".join([EPIC_HEADER] + val) + "\n")
    make_video(root / "P01/videos/P01_01.MP4", 920)
    make_video(root / "P02/P02_03.MP4", 360)
    make_video(root / "P01/videos/P01_02.MP4", 200)
    make_video(root / "P03/videos/P03_01.MP4", 280)
    return root


@pytest.fixture(scope="module")
def ek_prepared(ek_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ek100_out")
    report = ek100.prepare(ek_root, out, verify=True, progress=False, workers=1)
    return out, report


# ---------------------------------------------------------------------------- clip sampling
def test_clip_indices_equal_the_releases_on_288_cases():
    cases = FIXTURE["clip_indices"]
    assert len(cases) == 288
    for c in cases:
        got = clip_indices(c["start_frame"], c["stop_frame"], c["video_fps"],
                           frames_per_clip=c["frames_per_clip"], fps=c["fps"],
                           anticipation_time=c["anticipation_time"],
                           anticipation_point=c["anticipation_point"])
        assert got == c["indices"], c


def test_named_points_and_training_draws_reproduce_the_releases_cases():
    s = AnticipationSampling()
    for c in FIXTURE["clip_indices"]:
        if c["protocol"] == "train":
            # random.uniform(a, b) = a + (b - a) * u: invert the recorded draw, draw it again
            u_t = (c["anticipation_time"] - 0.25) / 1.5
            u_p = c["anticipation_point"] / 0.25
            at, ap = s.train_draw(u_t, u_p)
            assert at == pytest.approx(c["anticipation_time"], abs=1e-12)
            assert ap == pytest.approx(c["anticipation_point"], abs=1e-12)
        else:
            assert ANTICIPATION_POINTS[c["protocol"]] == c["anticipation_point"]
    ends = {}
    for c in FIXTURE["clip_indices"]:
        if c["protocol"] != "train" and c["video_fps"] == 60.0 and c["frames_per_clip"] == 32:
            ends.setdefault((c["start_frame"], c["stop_frame"]), {})[c["protocol"]] = c["indices"][-1]
    # 60 fps: frame step 7, one second = 60 frames; the last frame is one step before that point
    assert ends[(1000, 1800)] == {"action_start": 1000 - 60 - 7, "release_default": 1800 - 60 - 7}


def test_the_anticipation_point_is_a_protocol_field_with_its_own_id():
    start = AnticipationSampling.from_dict({"anticipation_point": "action_start"})
    release = AnticipationSampling.from_dict({"anticipation_point": "release_default"})
    assert start.eval_draw() == (1.0, 1.0) and release.eval_draw() == (1.0, 0.0)
    assert protocol_id(start.protocol()) != protocol_id(release.protocol())
    assert protocol_id(start.protocol()) == protocol_id(AnticipationSampling().protocol())
    with pytest.raises(DataError, match="anticipation_point must be one of action_start"):
        AnticipationSampling.from_dict({"anticipation_point": "end"})
    with pytest.raises(DataError, match="unknown key"):
        AnticipationSampling.from_dict({"anticipation_time": 1.0})
    with pytest.raises(DataError, match="low <= high"):
        AnticipationSampling.from_dict({"train_anticipation_time_s": [2.0, 1.0]})


def test_the_task_yaml_holds_a_valid_anticipation_block():
    import tasks

    cfg = tasks.config("ek100")
    s = AnticipationSampling.from_dict(cfg["anticipation"])
    assert (s.frames_per_clip, s.fps, s.anticipation_time_s, s.anticipation_point) == (32, 8.0, 1.0,
                                                                                       "action_start")
    assert s.train_anticipation_time_s == (0.25, 1.75) and s.train_anticipation_point == (0.0, 0.25)


# ---------------------------------------------------------------------------- metric and loss
def test_class_mean_recall_equals_the_releases_running_values():
    for case in FIXTURE["class_mean_recall"]:
        m = ClassMeanRecall(case["num_classes"], k=5)
        for logits, labels, want in zip(case["logits"], case["labels"], case["cumulative"]):
            m.update(np.array(logits, np.float32), labels)
            got = m.result()
            # the release sums in float32 on percentages: agreement to 1e-4 percentage points
            assert got["recall"] == pytest.approx(want["recall"], abs=1e-4)
            assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-4)


def test_recall_averages_over_the_classes_present_only():
    # class 0: 2 of 2 in the top 5; class 6: 0 of 1; classes 1..5 never a label -> (1 + 0) / 2
    logits = np.zeros((3, 7), np.float32)
    logits[:, :5] = [5, 4, 3, 2, 1]
    r = class_mean_recall(logits, [0, 0, 6])
    assert r["recall"] == pytest.approx(50.0, abs=1e-5) and r["classes_scored"] == 2
    assert r["accuracy"] == pytest.approx(200 / 3)
    both = anticipation_scores({"verb": logits, "action": logits}, {"verb": [0, 0, 6], "action": [6, 6, 6]})
    assert set(both) == {"verb", "action"} and both["action"]["recall"] == 0.0
    with pytest.raises(ValueError, match="labels must lie in"):
        class_mean_recall(logits, [0, 7, 1])


def test_split_counts_merge_to_the_whole():
    case = FIXTURE["class_mean_recall"][1]
    whole, a, b = (ClassMeanRecall(case["num_classes"]) for _ in range(3))
    for i, (logits, labels) in enumerate(zip(case["logits"], case["labels"])):
        whole.update(np.array(logits, np.float32), labels)
        (a if i % 2 else b).update(np.array(logits, np.float32), labels)
    a.merge(b)
    assert a.result() == whole.result()


def test_focal_loss_equals_the_releases_values_and_gradients():
    for c in FIXTURE["focal_loss"]:
        x = torch.tensor(c["inputs"], dtype=torch.float32, requires_grad=True)
        loss = sigmoid_focal_loss(x, torch.tensor(c["targets"]), alpha=c["alpha"], gamma=c["gamma"],
                                  reduction=c["reduction"])
        loss.sum().backward()
        torch.testing.assert_close(loss.detach(), torch.tensor(c["loss"]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x.grad, torch.tensor(c["grad"]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), reduction="avg")


# ---------------------------------------------------------------------------- EK100 native layout
def test_prepare_keeps_what_the_releases_filter_keeps(ek_prepared):
    out, report = ek_prepared
    fa = FIXTURE["filter_annotations"]
    assert report["num_classes"] == {"verb": len(fa["verbs"]), "noun": len(fa["nouns"]),
                                     "action": len(fa["actions"])}
    verbs = ek100.read_classes(out / "verbs.csv")
    actions = ek100.read_classes(out / "actions.csv")
    assert [int(r["verb_class"]) for r in verbs] == fa["verbs"]
    assert [[int(r["verb_class"]), int(r["noun_class"])] for r in actions] == fa["actions"]
    for split, want in (("train", fa["train_kept"]), ("val", fa["val_kept"])):
        segs = read_manifest(out / f"{split}.csv")
        got: dict = {}
        for s in segs:
            got.setdefault(s.video_id, []).append([s.start_frame, s.stop_frame])
            a = actions[s.action]
            assert (int(a["verb_class"]), int(a["noun_class"])) == (s.verb_class, s.noun_class)
            assert int(verbs[s.verb]["verb_class"]) == s.verb_class
            assert s.video_fps == pytest.approx(60.0) and Path(s.path).is_file()
        assert got == want  # the same rows, videos in order, rows by start frame
        assert list(got) == list(want)


def test_prepare_reports_every_bad_row(ek_prepared):
    _, report = ek_prepared
    counts = report["problem_counts"]
    assert counts == {"malformed": 1, "unknown_label": 2, "duplicate": 1, "missing": 1}, report["problems"]
    by_kind = {p["kind"]: p for p in report["problems"]}
    assert "EPIC_100_train.csv:7" in by_kind["malformed"]["where"]
    assert "P09_01" in by_kind["missing"]["where"] and "P09/videos/P09_01.MP4" in by_kind["missing"]["detail"]
    assert report["splits"]["val"] == {"listed": 6, "written": 3}
    assert all(v["ok"] for v in report["files"].values()) and len(report["files"]) == 4


def test_prepare_refuses_to_overwrite_a_foreign_csv(ek_root, tmp_path):
    (tmp_path / "train.csv").write_text("path label\nx 1\n")
    with pytest.raises(DataError, match="not an EK100 manifest of ours"):
        ek100.prepare(ek_root, tmp_path, verify=False, progress=False)
    assert (tmp_path / "train.csv").read_text() == "path label\nx 1\n"


def test_a_missing_column_names_the_file(tmp_path):
    (tmp_path / "EPIC_100_train.csv").write_text("video_id,start_frame\nP01_01,3\n")
    (tmp_path / "EPIC_100_validation.csv").write_text(EPIC_HEADER + "\n")
    with pytest.raises(DataError, match="EPIC_100_train.csv: no column"):
        ek100.prepare(tmp_path, tmp_path / "out", verify=False, progress=False)


def test_clips_decode_the_frames_the_release_would_read(ek_prepared):
    out, _ = ek_prepared
    segs = read_manifest(out / "val.csv")
    seg = next(s for s in segs if s.start_frame == 200)  # P03_01 [200, 260]
    for point, anchor in (("action_start", 200), ("release_default", 260)):
        sampling = AnticipationSampling(anticipation_point=point)
        item = AnticipationClips([seg], sampling, train=False, backend="pyav")[0]
        assert item["error"] is None and item["anticipation_time"] == 1.0
        want = seg.indices(sampling, 1.0, ANTICIPATION_POINTS[point])
        assert want[-1] == anchor - 60 - 7 and want[0] == 0  # early frames clamp to the first
        assert tuple(item["frames"].shape) == (32, 32, 48, 3)
        assert [read_index(f) for f in item["frames"].numpy()] == want
    train = AnticipationClips([seg], AnticipationSampling(), train=True, backend="pyav")
    g = torch.Generator().manual_seed(3)
    first = train.__getitem__(0, generator=g)
    assert 0.25 <= first["anticipation_time"] <= 1.75 and first["error"] is None
    again = train.__getitem__(0, generator=torch.Generator().manual_seed(3))
    assert again["anticipation_time"] == first["anticipation_time"]


def test_an_unreadable_clip_is_reported_not_replaced(tmp_path):
    from tasks.anticipation import Segment

    bad = tmp_path / "P01_01.MP4"
    bad.write_bytes(b"not a video")
    seg = Segment(str(bad), "P01_01", "P01_01_0", 100, 200, 60.0, 1, 2, 0, 0, 0)
    item = AnticipationClips([seg], AnticipationSampling(), train=False)[0]
    assert item["frames"] is None and item["error"]


# ---------------------------------------------------------------------------- COIN
def _coin_entry(recipe: int, name: str, subset: str) -> dict:
    return {"recipe_type": recipe, "class": name, "subset": subset, "duration": 3.0,
            "video_url": "https://www.youtube.com/embed/x", "start": 0.5, "end": 2.5,
            "annotation": [{"id": "1", "segment": [0.5, 1.5], "label": "step"}]}


@pytest.fixture(scope="module")
def coin_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coin")
    db = {"vidA": _coin_entry(131, "ReplaceCDDriveWithSSD", "training"),
          "vidB": _coin_entry(13, "ChangeCarTire", "training"),
          "vidC": _coin_entry(13, "ChangeCarTire", "testing"),
          "vidD": _coin_entry(40, "MakeFrenchFries", "testing"),
          "vidE": _coin_entry(40, "MakeFrenchFries", "training"),   # not downloaded
          "vidF": {"class": "Broken", "subset": "training"}}          # no recipe_type
    (root / "annotations").mkdir()
    (root / "annotations/COIN.json").write_text(json.dumps({"database": db}))
    for vid, recipe in (("vidA", 131), ("vidB", 13), ("vidC", 13), ("vidD", 40)):
        make_video(root / "videos" / str(recipe) / f"{vid}.mp4", 70, fps=25)
    return root


def test_coin_prepares_manifests_from_coin_json(coin_root, tmp_path):
    from tasks import native

    report = native.prepare("coin", coin_root, tmp_path, progress=False, workers=1)
    assert (tmp_path / "classes.txt").read_text().splitlines() == ["ChangeCarTire", "MakeFrenchFries",
                                                                  "ReplaceCDDriveWithSSD"]
    rows = {s: [ln.split() for ln in (tmp_path / f"{s}.csv").read_text().splitlines()] for s in ("train", "val")}
    rel = {s: [[str(Path(p).relative_to(coin_root)), label] for p, label in r] for s, r in rows.items()}
    assert rel["train"] == [["videos/131/vidA.mp4", "2"], ["videos/13/vidB.mp4", "0"]]
    assert rel["val"] == [["videos/13/vidC.mp4", "0"], ["videos/40/vidD.mp4", "1"]]
    assert report["problem_counts"] == {"malformed": 1, "missing": 1}
    assert report["num_classes"] == 3 and report["splits"]["train"] == {"listed": 3, "written": 2}
    # 70 frames at 25 fps is longer than one 16x4 clip: not reported too short
    assert "too_short" not in report["problem_counts"]


def test_coin_task_yaml_is_v_jepa_2s_protocol():
    import tasks
    from tasks.spec import TaskSpec

    spec = TaskSpec.from_dict(tasks.config("coin"))
    s = spec.sampling
    assert (spec.num_classes, s.frames_per_clip, s.frame_step, s.eval_segments, s.eval_views) == (180, 16, 4, 8, 3)
    assert spec.optim["epochs"] == 20 and spec.optim["batch_size"] == 128 and spec.eval_split == "val"


def test_coin_refuses_an_inconsistent_file(tmp_path):
    from tasks.native import coin

    db = {"a": _coin_entry(1, "X", "training"), "b": _coin_entry(1, "Y", "testing")}
    (tmp_path / "COIN.json").write_text(json.dumps({"database": db}))
    with pytest.raises(DataError, match="recipe_type 1 is named"):
        coin.read(tmp_path)
    (tmp_path / "COIN.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="no `database` mapping"):
        coin.read(tmp_path)


def test_label_files_are_csv_with_names(ek_prepared):
    out, _ = ek_prepared
    with open(out / "nouns.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["n2", "n7"]  # the training CSV's words, no class file given


def test_prepared_coin_runs_end_to_end(coin_root, tmp_path):
    """The miniature COIN replica, prepared, runs `harness run --task coin` on the CPU (a tiny
    protocol: the task's own is 16x4 clips, 8 segments x 3 views, 180 classes)."""
    from harness.cli import main
    from tasks import native

    data = tmp_path / "coin"
    native.prepare("coin", coin_root, data, progress=False, workers=1)
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "coin", "--out",
                 str(runs), "--no-progress", f"task.data.root={data}",
                 "task.sampling.frames_per_clip=4", "task.sampling.frame_step=2",
                 "task.sampling.train_segments=1", "task.sampling.eval_segments=2",
                 "task.sampling.eval_views=1", "task.train_aug.randaugment=null",
                 "task.optim.epochs=1", "task.optim.batch_size=2", "task.optim.micro_batch_size=1",
                 "task.optim.num_workers=0",
                 "task.num_classes=3"]) == 0  # the replica's COIN.json has 3 of the 180 tasks
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    assert record["task"] == "coin" and record["protocol"]["task"]["num_classes"] == 3
    assert record["data_problems"]["seen"]["eval"] == 2
