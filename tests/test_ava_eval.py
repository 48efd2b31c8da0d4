"""AVA frame-mAP: hand-computed cases and parity with ActivityNet's official evaluator.

Official numbers (the OFFICIAL_* constants) were printed by activitynet/ActivityNet's
`Evaluation/get_ava_performance.py`, on the CSV / pbtxt texts below written to files, with
python 3.11 and numpy 1.23.5 (the official code needs numpy < 1.24 for `np.bool` / `np.float`):

    git --git-dir=<mirror>/activitynet+ActivityNet/repo archive 82304fa Evaluation | tar -x -C /tmp/anet
    git --git-dir=<mirror>/activitynet+ActivityNet/repo archive eba0ec9 Evaluation | tar -x -C /tmp/anet2018
    cd /tmp/anet/Evaluation && PYTHONPATH=ava python get_ava_performance.py -l labels.pbtxt -g gt.csv -d det.csv
    cd /tmp/anet2018/Evaluation && PYTHONPATH=ava python get_ava_performance.py -l labels.pbtxt -g gt.csv -d det.csv [-e excluded.csv]

82304fa is HEAD (detections on frames the ground truth does not list are ignored, no exclusions
file); eba0ec9 is the last commit before c070fdb, the version with `-e` (such detections count as
false positives). Numbers are fractions, as the official prints them.
"""

import math
import re

import numpy as np
import pytest

from tasks import DataError
from tasks.ava_eval import (AVA_ACTIVITYNET_CLASS_IDS, FrameBoxes, average_precision, box_iou,
                            evaluate_csv, frame_key, frame_map, read_boxes_csv, read_excluded,
                            read_label_map)

# Ids 1, 2, 3, 5 are evaluated; 4 is not (it lies inside 1..5, so dropping it is what keeps it out).
LABELS = """\
item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "crouch/kneel"
  id: 2
}
item {
  name: "dance"
  id: 3
}
item {
  name: "fall down"
  id: 5
}
"""

# Ground truth: video_id,timestamp,x1,y1,x2,y2,action_id,person_id.
GT = """\
vidA,0902,0.1,0.1,0.4,0.4,1,0
vidA,0902,0.5,0.5,0.9,0.9,1,1
vidA,0902,0.5,0.5,0.9,0.9,2,1
vidA,0902,0.1,0.1,0.4,0.4,4,0
vidA,0903,0.2,0.2,0.6,0.6,1,0
vidA,0904,0.3,0.3,0.7,0.7,1,0
"""
# Detections: ...,action_id,score.
DET = """\
vidA,0902,0.1,0.1,0.4,0.4,1,0.9
vidA,0902,0.1,0.1,0.4,0.4,1,0.8
vidA,0902,0.0,0.0,0.05,0.05,1,0.7
vidA,0903,0.22,0.2,0.62,0.6,1,0.6
vidA,0903,0.6,0.2,0.2,0.6,1,0.65
vidA,0902,0.1,0.1,0.4,0.4,3,0.5
vidA,0902,0.1,0.1,0.4,0.4,4,0.99
vidA,0904,0.3,0.3,0.7,0.7,1,0.95
vidA,0904,0.0,0.0,0.1,0.1,1,0.75
vidB,0902,0.1,0.1,0.4,0.4,1,0.85
"""
EXCLUDED = "vidA,0904\n"
# What each row of DET is, class 1 (gt boxes G1 (0902), G2 (0902, never found), G3 (0903), G5 (0904)):
#   0.9 on G1: TP | 0.8 on G1 again: duplicate -> FP | 0.7 IoU 0: FP | 0.6 IoU 0.905 with G3: TP
#   0.65 has x2 < x1: invalid, dropped before matching | 0.95 on G5 (excluded frame): TP
#   0.75 IoU 0 on the excluded frame: FP | 0.85 on vidB, a frame without ground truth.
# Class 2: one gt box, no detection -> AP 0. Class 3: a detection, no gt -> NaN, not in the mean.
# Class 5: nothing -> NaN. Class 4: not evaluated (its 0.99 hit on its own gt box would give AP 1).
#
# (a) HEAD, no exclusions: vidB ignored; class 1 has 4 gt.
#   score  .95 .9  .8  .75 .7  .6
#   tp/fp  T   T   F   F   F   T
#   prec   1   1   2/3 1/2 2/5 1/2
#   rec   .25 .5  .5  .5  .5  .75   envelope at the recall steps: 1, 1, 1/2
#   AP = .25*1 + .25*1 + .25*(1/2) = 0.625;  mAP = (0.625 + 0) / 2 = 0.3125
# (b) vidA,0904 excluded, vidB ignored: class 1 has 3 gt.
#   score  .9  .8  .7  .6 | prec 1 1/2 1/3 1/2 | rec 1/3 1/3 1/3 2/3
#   AP = 1/3*1 + 1/3*(1/2) = 0.5;  mAP = 0.25
# (c) excluded, vidB a false positive (the 2018 rules): class 1 has 3 gt.
#   score  .9  .85 .8  .7  .6 | prec 1 1/2 1/3 1/4 2/5 | rec 1/3 1/3 1/3 1/3 2/3
#   AP = 1/3*1 + 1/3*(2/5) = 7/15;  mAP = 7/30
# (d) nothing excluded, vidB a false positive: class 1 has 4 gt.
#   score .95 .9 .85 .8 .75 .7 .6 | prec 1 1 2/3 1/2 2/5 1/3 3/7 | rec .25 .5 .5 .5 .5 .5 .75
#   AP = .25 + .25 + .25*(3/7) = 17/28;  mAP = 17/56
HAND = {"a": (0.625, 0.3125), "b": (0.5, 0.25), "c": (7 / 15, 7 / 30), "d": (17 / 28, 17 / 56)}

# get_ava_performance.py printed (PascalBoxes_Precision/mAP@0.5IOU, AP of class 1, AP of class 2):
OFFICIAL_MIXED = {
    "a": (0.3125, 0.625, 0.0),  # HEAD: -l labels.pbtxt -g gt.csv -d det.csv
    "c": (0.23333333333333334, 0.4666666666666667, 0.0),  # eba0ec9: ... -e excluded.csv
    "d": (0.30357142857142855, 0.6071428571428571, 0.0),  # eba0ec9: without -e
}

# Capacity: 49 false positives at 0.9, then a true positive and a false positive tied at 0.5.
# The official heap keeps 50 rows and replaces its smallest only on a strictly higher score, so
# of the tied pair the earlier row survives: here the true positive, ranked 50th ->
# prec 1/50 at recall 1 -> AP = 0.02. Rows in the other order keep the false positive -> AP 0.
CAPACITY_GT = "vidC,1000,0.1,0.1,0.3,0.3,1,0\n"
CAPACITY_DET = (
    "vidC,1000,0.7,0.7,0.9,0.9,1,0.9\n" * 49
    + "vidC,1000,0.1,0.1,0.3,0.3,1,0.5\n"
    + "vidC,1000,0.7,0.7,0.9,0.9,1,0.5\n"
)
OFFICIAL_CAPACITY = 0.02  # HEAD: -l labels.pbtxt -g capacity_gt.csv -d capacity_det.csv

# HEAD lists a frame without boxes as `video_id,timestamp`: its detections are scored (all false
# positives); detections on a frame not listed at all are ignored.
#   score .8 (vidE,0903, listed, no boxes): FP | .4 on the gt box: TP | .9 on vidE,0904: ignored
#   prec 0 1/2 | rec 0 1 -> AP = 1 * 1/2 = 0.5
LISTED_GT = "vidE,0902,0.1,0.1,0.5,0.5,1,0\nvidE,0903\n"
LISTED_DET = (
    "vidE,0902,0.1,0.1,0.5,0.5,1,0.4\n"
    "vidE,0903,0.1,0.1,0.5,0.5,1,0.8\n"
    "vidE,0904,0.1,0.1,0.5,0.5,1,0.9\n"
)
OFFICIAL_LISTED = 0.5  # HEAD: -l labels.pbtxt -g listed_gt.csv -d listed_det.csv

CLASS_IDS = [1, 2, 3, 5]


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path):
    return {name: write(tmp_path / f"{name}.csv", text) for name, text in
            [("gt", GT), ("det", DET), ("excluded", EXCLUDED), ("capacity_gt", CAPACITY_GT),
             ("capacity_det", CAPACITY_DET), ("listed_gt", LISTED_GT), ("listed_det", LISTED_DET)]
            } | {"labels": write(tmp_path / "labels.pbtxt", LABELS)}


@pytest.mark.parametrize("case, excluded, rule", [
    ("a", False, "ignore"), ("b", True, "ignore"), ("c", True, "false_positive"),
    ("d", False, "false_positive"),
])
def test_mixed_case_matches_hand_computed_ap(files, case, excluded, rule):
    result = frame_map(read_boxes_csv(files["gt"], CLASS_IDS), read_boxes_csv(files["det"], CLASS_IDS),
                       CLASS_IDS, excluded=read_excluded(files["excluded"]) if excluded else (),
                       detections_without_gt=rule)
    ap1, mean = HAND[case]
    assert result["per_class"][1] == pytest.approx(ap1, abs=1e-9)
    assert result["per_class"][2] == 0.0  # gt, no detections
    assert math.isnan(result["per_class"][3]) and math.isnan(result["per_class"][5])
    assert result["classes_without_gt"] == [3, 5]
    assert result["mAP"] == pytest.approx(mean, abs=1e-9)
    assert result["num_gt_boxes"] == {1: 3 if excluded else 4, 2: 1, 3: 0, 5: 0}
    assert result["num_excluded_frames"] == (1 if excluded else 0)
    assert result["num_ignored_detection_frames"] == (1 if rule == "ignore" else 0)


@pytest.mark.parametrize("case, excluded, rule", [
    ("a", None, "ignore"), ("c", "excluded", "false_positive"), ("d", None, "false_positive"),
])
def test_mixed_case_matches_the_official_evaluator(files, case, excluded, rule):
    result = evaluate_csv(files["labels"], files["gt"], files["det"],
                          excluded=files[excluded] if excluded else None, detections_without_gt=rule)
    mean, ap1, ap2 = OFFICIAL_MIXED[case]
    assert result["mAP"] == pytest.approx(mean, abs=1e-12)
    assert result["per_class"][1] == pytest.approx(ap1, abs=1e-12)
    assert result["per_class"][2] == ap2
    assert result["names"][5] == "fall down"


def test_capacity_keeps_the_earlier_of_tied_rows(files):
    result = evaluate_csv(files["labels"], files["capacity_gt"], files["capacity_det"])
    assert result["mAP"] == pytest.approx(OFFICIAL_CAPACITY, abs=1e-12)
    assert result["mAP"] == pytest.approx(1 / 50, abs=1e-12)

    frames = read_boxes_csv(files["capacity_det"], CLASS_IDS)
    truth = read_boxes_csv(files["capacity_gt"], CLASS_IDS)
    swapped = {key: FrameBoxes(f.boxes[[*range(49), 50, 49]], f.labels, f.scores) for key, f in frames.items()}
    assert frame_map(truth, swapped, CLASS_IDS)["mAP"] == 0.0  # the tied false positive survives
    # The true positive ranked last (0.4, below all 50 others): capacity 50 drops it -> AP 0;
    # capacity 0 keeps all 51 -> prec 1/51 at recall 1 -> AP = 1/51.
    last = {key: FrameBoxes(f.boxes, f.labels, np.r_[f.scores[:49], 0.4, 0.5]) for key, f in frames.items()}
    assert frame_map(truth, last, CLASS_IDS)["mAP"] == 0.0
    assert frame_map(truth, last, CLASS_IDS, capacity=0)["mAP"] == pytest.approx(1 / 51, abs=1e-12)


def test_heap_drops_the_smallest_tuple_score_label_then_y1():
    # Capacity 2: A (TP) and B (FP) tie at 0.5, then C (0.9) replaces the heap's smallest tuple.
    # The official tuple is (score, label, y1, x1, ...): B has the smaller y1, so B goes, A stays.
    # Kept: C .9 F, A .5 T -> prec 0, 1/2 at rec 0, 1 -> AP = 1/2 (AP 0 had A been dropped).
    # The official read_csv(det, {1}, capacity=2) fed to PascalDetectionEvaluator also gives 0.5.
    a, b, c = [0.1, 0.6, 0.3, 0.9], [0.6, 0.1, 0.9, 0.3], [0.0, 0.0, 0.05, 0.05]
    truth = {"f": ([a], [1])}
    detections = {"f": ([a, b, c], [1, 1, 1], [0.5, 0.5, 0.9])}
    assert frame_map(truth, detections, [1], capacity=2)["mAP"] == 0.5


def test_frames_listed_without_boxes_are_scored_unlisted_ignored(files):
    result = evaluate_csv(files["labels"], files["listed_gt"], files["listed_det"])
    assert result["mAP"] == pytest.approx(OFFICIAL_LISTED, abs=1e-12)
    assert result["num_frames"] == 2 and result["num_detection_frames"] == 2
    assert result["num_ignored_detection_frames"] == 1


def test_in_memory_predictions_need_no_csv():
    # The trainer's form: key -> (boxes x1 y1 x2 y2, labels, scores), any order within a frame.
    # Class 4 is not evaluated: its perfect detection must not count.
    truth = {frame_key("v", 902): (np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]] * 2), [1, 1, 4, 4])}
    detections = {frame_key("v", "0902"): (
        np.array([[0.0, 0.0, 0.05, 0.05], [0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4], [0.1, 0.1, 0.4, 0.4]],
                 np.float32),
        np.array([1, 1, 1, 4]), np.array([0.7, 0.8, 0.2, 0.9], np.float32))}
    # score .8 T, .7 F, .2 T -> prec 1, 1/2, 2/3 at rec 1/2, 1/2, 1 -> AP = 1/2 + 1/2 * 2/3 = 5/6
    result = frame_map(truth, detections, [1, 2])
    assert result["mAP"] == pytest.approx(5 / 6, abs=1e-9)
    assert result["per_class"] == {1: pytest.approx(5 / 6, abs=1e-9), 2: pytest.approx(float("nan"), nan_ok=True)}
    assert result["num_frames"] == 1 and result["num_detection_frames"] == 1


def test_highest_iou_box_is_taken_and_duplicates_do_not_fall_back():
    # One detection overlaps both gt boxes; it takes the closer one (IoU 0.9 > 0.62).
    # A second, lower-scored detection whose best box is the taken one is a false positive
    # even though its second-best box (IoU 0.625) is free.
    truth = {"f": ([[0.0, 0.0, 0.9, 1.0], [0.0, 0.0, 0.5, 1.0]], [1, 1])}
    detections = {"f": ([[0.0, 0.0, 0.81, 1.0], [0.0, 0.0, 0.8, 1.0]], [1, 1], [0.9, 0.8])}
    assert box_iou(np.array([[0.0, 0.0, 0.8, 1.0]]), np.array(truth["f"][0])) == pytest.approx(
        np.array([[0.8 / 0.9, 0.5 / 0.8]]))
    # .9 T, .8 F -> prec 1, 1/2 at rec 1/2 -> AP = 1/2
    assert frame_map(truth, detections, [1])["mAP"] == pytest.approx(0.5, abs=1e-9)


def test_iou_has_no_plus_one_and_threshold_is_inclusive():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    b = np.array([[0.0, 0.0, 1.0, 0.5]])  # IoU exactly 0.5 (it would be 2/3 with +1 pixel areas)
    assert box_iou(a, b)[0, 0] == 0.5
    assert frame_map({"f": (b, [1])}, {"f": (a, [1], [1.0])}, [1])["mAP"] == 1.0
    assert frame_map({"f": (b, [1])}, {"f": (a, [1], [1.0])}, [1], iou_threshold=0.51)["mAP"] == 0.0


def test_average_precision_edge_cases():
    assert math.isnan(average_precision(np.zeros(0), np.zeros(0, bool), 0))
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    # .9 F, .8 T -> prec 0, 1/2 at rec 0, 1/2 -> AP = 1/2 * 1/2
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 2) == 0.25
    assert math.isnan(frame_map({}, {"f": ([[0, 0, 1, 1]], [1], [1.0])}, [1])["mAP"])


def test_label_map_parser(tmp_path):
    entries = read_label_map(write(tmp_path / "a.pbtxt", LABELS))
    assert entries == [{"id": 1, "name": "bend/bow (at the waist)"}, {"id": 2, "name": "crouch/kneel"},
                       {"id": 3, "name": "dance"}, {"id": 5, "name": "fall down"}]
    # The v2.2 full list's layout (`label { ... label_id: ... label_type: ... }`), one-line items,
    # and a display_name that must not be taken for the name.
    text = ('label {\n  name: "talk to (e.g., self, a person, a group)"\n  label_id: 79\n'
            '  label_type: PERSON_INTERACTION\n}\n'
            'item { name: "watch (a person)" display_name: "x" id: 80 }\n')
    assert read_label_map(write(tmp_path / "b.pbtxt", text)) == [
        {"id": 79, "name": "talk to (e.g., self, a person, a group)"}, {"id": 80, "name": "watch (a person)"}]
    with pytest.raises(DataError, match="no 'id:'"):
        read_label_map(write(tmp_path / "c.pbtxt", "nothing here\n"))
    with pytest.raises(DataError, match="c2.pbtxt:2"):
        read_label_map(write(tmp_path / "c2.pbtxt", 'item {\n  id: one\n}\n'))
    assert len(AVA_ACTIVITYNET_CLASS_IDS) == 60 and 2 not in AVA_ACTIVITYNET_CLASS_IDS


def test_csv_reader(tmp_path):
    path = write(tmp_path / "boxes.csv",
                 "v1,0902,0.1,0.2,0.3,0.4,1,0.75\n"      # score column
                 "v1,902,0.5,0.6,0.7,0.8,4,0.5\n"        # class outside the whitelist; same frame
                 "v2,0903,0.1,0.1,0.2,0.2,2\n"           # no score column: 1.0
                 "\n"
                 "v3,0904.5\n"                           # a frame listed without boxes
                 "v4,0905,0.1,0.1,0.2,0.2,4,0.5\n")      # only outside classes: listed, empty
    frames = read_boxes_csv(path, {1, 2})
    assert list(frames) == ["v1,902.000000", "v2,903.000000", "v3,904.500000", "v4,905.000000"]
    assert frames["v1,902.000000"].boxes.tolist() == [[0.1, 0.2, 0.3, 0.4]]  # x1 y1 x2 y2 kept
    assert frames["v1,902.000000"].scores.tolist() == [0.75]
    assert frames["v2,903.000000"].labels.tolist() == [2]
    assert frames["v2,903.000000"].scores.tolist() == [1.0]
    assert len(frames["v3,904.500000"]) == 0 and len(frames["v4,905.000000"]) == 0
    assert frames["v1,902.000000"].labels.dtype == np.int64
    assert len(read_boxes_csv(path)["v1,902.000000"]) == 2  # no whitelist: every class


@pytest.mark.parametrize("text, what", [
    ("video_id,timestamp,x1,y1,x2,y2,action_id\n", "no header"),
    ("v,0902,0.1,0.1,0.2\n", "expected 2, 7 or 8"),
    ("v,noon,0.1,0.1,0.2,0.2,1\n", "not a number"),
    ("v,0902,0.1,0.1,0.2,0.2,one\n", "no header"),
])
def test_csv_reader_rejects_malformed_rows_with_the_line(tmp_path, text, what):
    path = write(tmp_path / "bad.csv", "v,0901,0.1,0.1,0.2,0.2,1\n" + text)
    with pytest.raises(DataError, match="bad.csv:2") as error:
        read_boxes_csv(path)
    assert re.search(what, str(error.value))


def test_excluded_reader_and_keys(tmp_path):
    assert read_excluded(write(tmp_path / "ex.csv", "vidA,0904\nvidB,1795\n")) == {"vidA,904.000000",
                                                                                    "vidB,1795.000000"}
    with pytest.raises(DataError, match="ex2.csv:1"):
        read_excluded(write(tmp_path / "ex2.csv", "vidA,0904,1\n"))
    assert frame_key("abc", "0902") == frame_key("abc", 902) == frame_key("abc", 902.0) == "abc,902.000000"
    assert frame_key("abc", "902.000001") != frame_key("abc", 902)


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="label map"):
        frame_map({}, {}, [])
    with pytest.raises(ValueError, match="start at 1"):
        frame_map({}, {}, [0, 1])
    with pytest.raises(ValueError, match="detections_without_gt"):
        frame_map({}, {}, [1], detections_without_gt="count")
    with pytest.raises(ValueError, match="frame 'f'"):
        frame_map({"f": ([[0, 0, 1, 1]], [1, 2])}, {}, [1])


def random_case(seed: int = 0, score_format: str = "%.9f"):
    """A larger AVA-like case: (label map, gt, detections, excluded) texts, the same on any numpy
    (RandomState's stream is frozen). 40 frames; gt frames of 1-4 people with 1-3 actions of ids
    1-8; per frame the people's jittered boxes plus spurious ones, scored for all 8 classes (often
    over the capacity of 50); some invalid boxes, frames without gt, and excluded frames."""
    rng = np.random.RandomState(seed)
    labels = "".join(f'item {{\n  name: "action {i}"\n  id: {i}\n}}\n' for i in (1, 2, 3, 5, 6, 8))
    gt, det, excluded = [], [], []
    for frame in range(40):
        video, second = f"vid{frame // 4:02d}", f"{902 + frame % 4:04d}"
        people = []
        if frame % 10 != 9:  # every tenth frame has no ground truth
            for person in range(rng.randint(1, 5)):
                x, y = rng.uniform(0, 0.6, size=2)
                box = (x, y, x + rng.uniform(0.1, 0.4), y + rng.uniform(0.2, 0.4))
                people.append(box)
                for action in rng.choice(np.arange(1, 9), size=rng.randint(1, 4), replace=False):
                    gt.append("%s,%s,%.3f,%.3f,%.3f,%.3f,%d,%d" % (video, second, *box, action, person))
        if frame % 7 == 3:
            excluded.append(f"{video},{second}")
        boxes = [tuple(np.clip(np.add(b, rng.normal(0, 0.03, size=4)), 0, 1)) for b in people]
        for _ in range(rng.randint(0, 6)):
            x, y = rng.uniform(0, 0.8, size=2)
            boxes.append((x, y, x + rng.uniform(-0.05, 0.3), y + rng.uniform(0.05, 0.3)))  # some invalid
        for box in boxes:
            for action in range(1, 9):
                score = score_format % rng.uniform()
                det.append("%s,%s,%.3f,%.3f,%.3f,%.3f,%d,%s" % (video, second, *box, action, score))
    rng.shuffle(det)
    return labels, "\n".join(gt) + "\n", "\n".join(det) + "\n", "\n".join(excluded) + "\n"


# get_ava_performance.py on random_case(0) written to labels.pbtxt, gt.csv, det.csv, excluded.csv
# (see the module docstring): "head" at 82304fa (-l -g -d), "2018" at eba0ec9 (-l -g -d -e).
# mAP, then the AP of classes 1, 2, 3, 5, 6, 8. The case has 7 frames over the capacity and 104
# invalid boxes. Its scores are all distinct: with tied scores the official numbers depend on
# numpy's argsort (numpy 1.23 and 2.4 differ on random_case(0, "%.1f")), and so do ours.
OFFICIAL_RANDOM = {
    "head": (0.15794529339646424, [0.10066724178146096, 0.2572255859580859, 0.11611099205552775,
                                   0.16530993512562792, 0.13589304812834224, 0.17246495732974063]),
    "2018": (0.1573751104739065, [0.11006944444444444, 0.2618949677773207, 0.10282301911261188,
                                  0.17263405178917643, 0.14931544470244118, 0.14751373501744433]),
}


@pytest.mark.parametrize("version", ["head", "2018"])
def test_random_case_matches_the_official_evaluator(tmp_path, version):
    texts = dict(zip(["labels.pbtxt", "gt.csv", "det.csv", "excluded.csv"], random_case(0)))
    scores = [row.rsplit(",", 1)[1] for row in texts["det.csv"].split()]
    assert len(set(scores)) == len(scores) == 1504  # no ties, so no sort-order dependence
    paths = {name: write(tmp_path / name, text) for name, text in texts.items()}
    result = evaluate_csv(paths["labels.pbtxt"], paths["gt.csv"], paths["det.csv"],
                          excluded=paths["excluded.csv"] if version == "2018" else None,
                          detections_without_gt="false_positive" if version == "2018" else "ignore")
    mean, per_class = OFFICIAL_RANDOM[version]
    assert result["mAP"] == pytest.approx(mean, abs=1e-12)
    assert [result["per_class"][c] for c in (1, 2, 3, 5, 6, 8)] == pytest.approx(per_class, abs=1e-12)
