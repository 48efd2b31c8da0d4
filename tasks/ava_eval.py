"""AVA frame-mAP, with the numbers of ActivityNet's official evaluator.

The official evaluator is `Evaluation/get_ava_performance.py` in activitynet/ActivityNet plus the
numpy parts of the TF object-detection API it vendors (`Evaluation/ava/`). This module is our own
compact implementation of the same arithmetic: per class, PASCAL VOC-style AP over detections
greedily matched to ground-truth boxes at IoU >= 0.5, then the mean over the classes that have
ground truth. Every rule that changes a number is mirrored and says where it comes from:

- label map: `read_labelmap` (get_ava_performance.py): one entry per `id:` / `label_id:` line,
  named by the last `name:` seen; the ids are the class whitelist.
- CSV rows `video_id,timestamp,x1,y1,x2,y2,action_id[,score]` (`read_csv`): 2 columns = a frame
  listed without boxes; a ground-truth file's 8th column is the person id, which the official
  reader takes as the "score" and only uses to order the boxes; rows of classes outside the
  whitelist are dropped. Frame key: `make_image_key`, "%s,%.6f" % (video_id, Decimal(timestamp)).
- per frame, the official reader keeps the `capacity` best-scoring rows with a heap of tuples
  (score, action_id, y1, x1, y2, x2), replacing the smallest only on a strictly higher score, then
  sorts them by descending score (stable over the heap's order); detections use capacity 50,
  ground truth no limit. `_official_order` reproduces this, ties included.
- detections on a frame that the ground truth does not list are ignored (HEAD `run_evaluation`,
  since 2020); before that commit (c070fdb) they were scored as false positives and the frames of
  an exclusions file were dropped from both sides. `detections_without_gt` picks the rule;
  `excluded` drops frames in either case.
- detections with x2 <= x1 or y2 <= y1 are dropped (`PerImageEvaluation._remove_invalid_boxes`).
- IoU without +1 (`np_box_ops.iou`); matching (`_compute_tp_fp_for_single_class`): in the frame's
  score order, each detection takes the gt box of its class with the highest IoU (first on ties);
  IoU >= threshold and that box not yet taken -> true positive, otherwise a false positive
  (a duplicate never falls back to a second-best box). AVA has no difficult / group-of boxes.
- AP (`metrics.compute_precision_recall`, `compute_average_precision`): detections of all frames
  in frame order, ordered by `np.argsort(scores)[::-1]`; precision envelope over recall with
  (0, 0) prepended and (1, 0) appended; sum of recall steps times precision. A class with ground
  truth but no detections has AP 0; a class without ground truth has AP NaN and is left out of
  the mean (`ObjectDetectionEvaluation.evaluate`, `np.nanmean`).

The mean is a fraction in [0, 1], as the official evaluator prints it (papers quote percent).
numpy only, so the trainer can import it without pulling in anything heavy.
"""

from __future__ import annotations

import csv
import decimal
import heapq
import logging
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

logger = logging.getLogger(__name__)

# The 60 classes evaluated in the ActivityNet AVA challenge (ids of
# ava_action_list_v2.1_for_activitynet_2018.pbtxt; the v2.2 2019 list has the same 60).
AVA_ACTIVITYNET_CLASS_IDS = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36,
    37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66,
    67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
)
# Per-frame detection capacity of the official evaluator (`read_csv(detections, ..., 50)`).
DETECTION_CAPACITY = 50
DETECTION_RULES = ("ignore", "false_positive")


@dataclass(frozen=True)
class FrameBoxes:
    """The boxes of one keyframe: x1, y1, x2, y2 normalised to [0, 1], one label and score each.

    For ground truth the scores only order the boxes (the official reader reads the person id
    column as a score); 1.0 when absent.
    """

    boxes: np.ndarray  # (n, 4) float64
    labels: np.ndarray  # (n,) int64
    scores: np.ndarray  # (n,) float64

    @classmethod
    def of(cls, boxes, labels, scores=None) -> FrameBoxes:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        scores = np.ones(len(labels)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(
                f"a frame needs one box, label and score per row; got {len(boxes)} boxes, "
                f"{len(labels)} labels, {len(scores)} scores"
            )
        return cls(boxes, labels, scores)

    def __len__(self) -> int:
        return len(self.labels)


Frames = dict[str, FrameBoxes]


def frame_key(video_id: str, timestamp) -> str:
    """The official key of a keyframe (`make_image_key`): "video_id,902.000000".

    Timestamps "0902", "902" and 902 name the same frame; microsecond timestamps stay distinct.
    """
    try:
        return "%s,%.6f" % (video_id, decimal.Decimal(str(timestamp).strip()))
    except decimal.InvalidOperation:
        raise DataError(f"timestamp {timestamp!r} of video {video_id!r} is not a number") from None


# A `name:`, `id:` or `label_id:` field; `\b` keeps `display_name:` from counting as `name:`.
_LABEL_MAP_FIELD = re.compile(r'\b(name|label_id|id)\s*:\s*(?:"([^"]*)"|([^\s}]+))')


def read_label_map(path: str | Path) -> list[dict]:
    """[{"id": int, "name": str}] in file order, from an AVA label-map .pbtxt.

    As the official `read_labelmap`: an entry per `id:` (or `label_id:`) field, named by the last
    `name:` before it. Unlike it, fields need not sit on their own line indented by two spaces.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise DataError(f"cannot read the AVA label map {path}: {error.strerror}") from None
    entries, name = [], ""
    for number, line in enumerate(text.splitlines(), start=1):
        for field, quoted, bare in _LABEL_MAP_FIELD.findall(line.split("#", 1)[0]):
            value = quoted if quoted or bare == "" else bare
            if field == "name":
                name = value
                continue
            try:
                entries.append({"id": int(value), "name": name})
            except ValueError:
                raise DataError(f"{path}:{number}: class id {value!r} is not an integer") from None
    if not entries:
        raise DataError(f"{path} has no 'id:' or 'label_id:' fields: is it an AVA label map (.pbtxt)?")
    return entries


def _read_rows(path: Path) -> Iterable[tuple[int, list[str]]]:
    try:
        with open(path, newline="") as handle:
            yield from enumerate(csv.reader(handle), start=1)
    except OSError as error:
        raise DataError(f"cannot read the AVA CSV {path}: {error.strerror}") from None


def read_boxes_csv(path: str | Path, class_ids: Collection[int] | None = None) -> Frames:
    """The frames of an AVA box CSV, rows in file order, rows of classes outside `class_ids` dropped.

    Rows: `video_id,timestamp,x1,y1,x2,y2,action_id[,score or person_id]`, no header; a row of just
    `video_id,timestamp` lists a frame without boxes. Frames that end up with no box are kept
    (empty) so the evaluator knows the ground truth lists them. Frames are ordered by their first
    kept row, empty ones last, as the official reader orders them; the per-frame capacity and
    score sorting are applied by `frame_map`. Pass the same `class_ids` as to `frame_map`
    (otherwise the frame order, which only breaks score ties, can differ from the official one).
    """
    path = Path(path)
    whitelist = set(class_ids) if class_ids else None
    rows: dict[str, list[tuple]] = {}
    listed: dict[str, None] = {}
    for number, row in _read_rows(path):
        if not row:  # a blank line (the official reader would stop on it); nothing to count
            continue
        if len(row) not in (2, 7, 8):
            raise DataError(
                f"{path}:{number}: expected 2, 7 or 8 comma-separated columns "
                f"(video_id,timestamp[,x1,y1,x2,y2,action_id[,score]], no header), got {len(row)}"
            )
        try:
            key = frame_key(row[0], row[1])
            listed.setdefault(key)
            if len(row) == 2:
                continue
            box = [float(value) for value in row[2:6]]
            label = int(row[6])
            score = float(row[7]) if len(row) == 8 else 1.0
        except (ValueError, DataError) as error:
            raise DataError(f"{path}:{number}: {error} (AVA CSVs have no header row)") from None
        if whitelist and label not in whitelist:
            continue
        rows.setdefault(key, []).append((box, label, score))
    frames = {}
    for key, kept in rows.items():
        boxes, labels, scores = zip(*kept)
        frames[key] = FrameBoxes.of(boxes, labels, scores)
    for key in listed:
        if key not in frames:
            frames[key] = FrameBoxes.of(np.zeros((0, 4)), [], [])
    return frames


def read_excluded(path: str | Path) -> set[str]:
    """Frame keys of an AVA excluded-timestamps CSV (`video_id,timestamp` rows)."""
    path = Path(path)
    keys = set()
    for number, row in _read_rows(path):
        if not row:
            continue
        if len(row) != 2:
            raise DataError(f"{path}:{number}: expected 2 columns (video_id,timestamp), got {len(row)}")
        try:
            keys.add(frame_key(row[0], row[1]))
        except DataError as error:
            raise DataError(f"{path}:{number}: {error}") from None
    return keys


def _as_frame(key: str, value) -> FrameBoxes:
    if isinstance(value, FrameBoxes):
        return value
    try:
        return FrameBoxes.of(*value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"frame {key!r}: give FrameBoxes or (boxes, labels[, scores]): {error}") from None


def _official_order(frame: FrameBoxes, whitelist: set[int], capacity: int):
    """Whitelisted rows of one frame as the official `read_csv` keeps and orders them.

    Returns (boxes (n, 4) x1 y1 x2 y2, labels (n,), scores (n,)).
    """
    heap: list[tuple] = []
    for (x1, y1, x2, y2), label, score in zip(frame.boxes.tolist(), frame.labels.tolist(), frame.scores.tolist()):
        if label not in whitelist:
            continue
        # The official tuple order (y before x) decides which of equal scores the heap drops.
        item = (score, label, y1, x1, y2, x2)
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, item)
        elif score > heap[0][0]:
            heapq.heapreplace(heap, item)
    ordered = sorted(heap, key=lambda item: -item[0])
    boxes = np.array([[x1, y1, x2, y2] for _, _, y1, x1, y2, x2 in ordered], dtype=np.float64).reshape(-1, 4)
    labels = np.array([item[1] for item in ordered], dtype=np.int64)
    scores = np.array([item[0] for item in ordered], dtype=np.float64)
    return boxes, labels, scores


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU (n, m) of x1 y1 x2 y2 boxes, areas without +1 (`np_box_ops.iou`)."""
    x1a, y1a, x2a, y2a = np.split(boxes1, 4, axis=1)
    x1b, y1b, x2b, y2b = np.split(boxes2, 4, axis=1)
    heights = np.maximum(0.0, np.minimum(y2a, y2b.T) - np.maximum(y1a, y1b.T))
    widths = np.maximum(0.0, np.minimum(x2a, x2b.T) - np.maximum(x1a, x1b.T))
    intersection = heights * widths
    area1 = (y2a - y1a)[:, 0] * (x2a - x1a)[:, 0]
    area2 = (y2b - y1b)[:, 0] * (x2b - x1b)[:, 0]
    return intersection / (area1[:, None] + area2[None, :] - intersection)


def _true_positives(detected: np.ndarray, truth: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy matching of one class in one frame; detections already in descending score order."""
    hits = np.zeros(len(detected), dtype=bool)
    if len(truth) == 0:
        return hits
    iou = box_iou(detected, truth)
    best = np.argmax(iou, axis=1)
    taken = np.zeros(len(truth), dtype=bool)
    for i, gt in enumerate(best):
        # A duplicate of a taken box is a false positive even if another box would fit.
        if iou[i, gt] >= iou_threshold and not taken[gt]:
            hits[i] = taken[gt] = True
    return hits


def average_precision(scores: np.ndarray, hits: np.ndarray, num_gt: int) -> float:
    """PASCAL VOC AP of one class (`metrics.compute_precision_recall` + `compute_average_precision`)."""
    if num_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(scores)[::-1]  # the official call: default sort kind, then reversed
    true_positives = np.cumsum(hits[order].astype(int))
    false_positives = np.cumsum(1 - hits[order].astype(int))
    precision = true_positives.astype(float) / (true_positives + false_positives)
    recall = true_positives.astype(float) / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # envelope: best precision to the right
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def frame_map(
    groundtruth: Mapping[str, FrameBoxes | tuple],
    detections: Mapping[str, FrameBoxes | tuple],
    class_ids: Collection[int],
    excluded: Collection[str] = (),
    iou_threshold: float = 0.5,
    capacity: int = DETECTION_CAPACITY,
    detections_without_gt: str = "ignore",
) -> dict:
    """Frame-level AVA mAP at `iou_threshold`, as ActivityNet's `get_ava_performance.py` computes it.

    `groundtruth` / `detections` map `frame_key(video_id, timestamp)` to FrameBoxes or
    (boxes (n, 4) x1 y1 x2 y2 normalised, labels (n,)[, scores (n,)]), e.g. from `read_boxes_csv`
    or straight from a model. Only `class_ids` (the label map's ids) are evaluated. Per frame the
    `capacity` best detections count (0: all). `excluded` frame keys are dropped from both sides.
    Detections on frames the ground truth does not list: "ignore" (official since 2020) or
    "false_positive" (official before, and SlowFast's copy).

    Returns {"mAP": fraction in [0, 1] (NaN when no class has ground truth),
    "per_class": {id: AP, NaN without ground truth}, "num_gt_boxes": {id: int},
    "classes_without_gt": [id], "num_frames": ground-truth frames evaluated,
    "num_detection_frames": frames whose detections were scored,
    "num_ignored_detection_frames", "num_excluded_frames", and the settings}.
    """
    class_ids = [int(i) for i in class_ids]
    if not class_ids:
        raise ValueError("class_ids is empty: pass the label map's ids (read_label_map)")
    if min(class_ids) < 1:
        raise ValueError(f"AVA class ids start at 1; got {min(class_ids)}")
    if detections_without_gt not in DETECTION_RULES:
        raise ValueError(f"detections_without_gt must be one of {DETECTION_RULES}, got {detections_without_gt!r}")
    whitelist = set(class_ids)
    excluded = set(excluded)

    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    num_gt = dict.fromkeys(sorted(whitelist), 0)
    dropped = set()
    for key, value in groundtruth.items():
        if key in excluded:
            dropped.add(key)
            continue
        boxes, labels, _ = _official_order(_as_frame(key, value), whitelist, capacity=0)
        truth[key] = (boxes, labels)
        for label in labels.tolist():
            num_gt[label] += 1

    class_scores: dict[int, list[np.ndarray]] = {c: [] for c in whitelist}
    class_hits: dict[int, list[np.ndarray]] = {c: [] for c in whitelist}
    scored = ignored = 0
    empty = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    for key, value in detections.items():
        if key in excluded:
            dropped.add(key)
            continue
        if key not in truth and detections_without_gt == "ignore":
            ignored += 1
            continue
        boxes, labels, scores = _official_order(_as_frame(key, value), whitelist, capacity)
        valid = (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
        boxes, labels, scores = boxes[valid], labels[valid], scores[valid]
        gt_boxes, gt_labels = truth.get(key, empty)
        scored += 1
        for label in np.unique(labels).tolist():
            mine = labels == label
            class_scores[label].append(scores[mine])
            class_hits[label].append(_true_positives(boxes[mine], gt_boxes[gt_labels == label], iou_threshold))
    if ignored:
        logger.info("%d frames with detections are not in the ground truth; they are ignored.", ignored)

    # As the official: one slot per id up to the largest, NaN where a class has no ground truth.
    ap = np.full(max(whitelist), np.nan)
    for label in whitelist:
        if num_gt[label]:
            scores = np.concatenate(class_scores[label]) if class_scores[label] else np.zeros(0)
            hits = np.concatenate(class_hits[label]) if class_hits[label] else np.zeros(0, dtype=bool)
            ap[label - 1] = average_precision(scores, hits, num_gt[label])
    without_gt = [c for c in class_ids if num_gt[c] == 0]
    if without_gt:
        logger.info("classes without ground truth (AP NaN, left out of the mean): %s", without_gt)
    with np.errstate(all="ignore"):
        mean = float(np.nanmean(ap)) if len(without_gt) < len(whitelist) else float("nan")
    return {
        "mAP": mean,
        "per_class": {c: float(ap[c - 1]) for c in class_ids},
        "num_gt_boxes": {c: num_gt[c] for c in class_ids},
        "classes_without_gt": without_gt,
        "num_frames": len(truth),
        "num_detection_frames": scored,
        "num_ignored_detection_frames": ignored,
        "num_excluded_frames": len(dropped),
        "iou_threshold": iou_threshold,
        "capacity": capacity,
        "detections_without_gt": detections_without_gt,
    }


def evaluate_csv(
    label_map: str | Path,
    groundtruth: str | Path,
    detections: str | Path,
    excluded: str | Path | None = None,
    detections_without_gt: str = "ignore",
) -> dict:
    """`get_ava_performance.py -l label_map -g groundtruth -d detections [-e excluded]` as a dict.

    The result of `frame_map`, plus "names" {id: class name} from the label map.
    """
    categories = read_label_map(label_map)
    class_ids = list(dict.fromkeys(entry["id"] for entry in categories))
    result = frame_map(
        read_boxes_csv(groundtruth, class_ids),
        read_boxes_csv(detections, class_ids),
        class_ids,
        excluded=read_excluded(excluded) if excluded else (),
        detections_without_gt=detections_without_gt,
    )
    result["names"] = {entry["id"]: entry["name"] for entry in categories}
    return result
