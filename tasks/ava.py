"""AVA v2.2 action detection: keyframe clips with person boxes, for a probe that pools per box.

Reads what `harness data prepare ava` writes (`tasks/native/ava.py`): per split the GT rows
(`video_id,timestamp,x1,y1,x2,y2,action_id,person_id`), the excluded keyframes, the detector's
proposals for the evaluation split, `label_map.txt` (`id<TAB>name`; the line number is the
contiguous class index) and `videos.csv` (video id -> file and where it starts in movie time).

One item per keyframe (video, second). Training: keyframes with at least one GT box; a person's
rows (same person id and box at that keyframe: one row per action) merge into one box with a
multi-hot target. Evaluation split: every keyframe of the GT file that is not excluded and whose
video is present, with the proposals scoring >= `proposal_score_threshold` as boxes (none is an
item with zero boxes: its GT still counts as missed by the metric).

The clip: `frames_per_clip` frames `frame_step` apart centred on the keyframe's frame (offsets
`-(T * step) // 2 + i * step`, SlowFast's `get_sequence`), clamped to the video, read by seeking
(`tasks.seek`). The whole frame is resized to (r, r), no crop, so normalised boxes stay valid on
the clip; bilinear with antialiasing (frames are downscaled, and no reference fixes the resize).
Training may flip horizontally with the boxes (`train_horizontal_flip`, off by default: the
V-JEPA release flips nothing in its frozen evaluations, and AVA has no left/right classes, so
it is a choice left to the user, not the protocol's default).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .native.ava_files import (OUTPUTS, VIDEOS_HEADER, read_box_rows, read_keyframes,
                               read_label_map_file, shipped_label_map)

log = logging.getLogger(__name__)

EVAL_BOXES = ("proposals", "gt")


@dataclass(frozen=True)
class AvaConfig:
    """The task YAML's `detection:` block. File names are relative to `data.root`."""

    videos: str = OUTPUTS["videos"]
    label_map: str = OUTPUTS["label_map"]
    excluded: dict = field(default_factory=lambda: {s: OUTPUTS["excluded"].format(split=s)
                                                    for s in ("train", "val")})
    proposals: dict = field(default_factory=lambda: {"val": OUTPUTS["proposals"].format(split="val")})
    # Kept when score >= it (SlowFast's parse_bboxes_file). 0.8: SlowFast's AVA configs'
    # DETECTION_SCORE_THRESH (SLOWFAST_32x2_R50_SHORT, the c2 SlowFast ones); its defaults.py and
    # the SLOW_8x8 configs say 0.9, LFB 0.85: the value is in the protocol.
    proposal_score_threshold: float = 0.8
    # Boxes of the evaluation split: the detector's proposals (the protocol), or the GT boxes
    # (an oracle-box ablation, which gets its own protocol id through this field).
    eval_boxes: str = "proposals"
    train_horizontal_flip: bool = False
    # The official evaluator's rules (tasks/ava_eval.py): the best `eval_capacity` detections per
    # frame count (50, as its CSV reader keeps); detections on frames the ground truth does not
    # list are ignored (its rule since 2020; "false_positive" was the rule before, and SlowFast's).
    eval_capacity: int = 50
    detections_without_gt: str = "ignore"

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "AvaConfig":
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DataError(f"task ava detection: unknown key(s) {', '.join(unknown)}; allowed keys "
                            f"are {', '.join(sorted(names))}")
        for key in ("videos", "label_map"):
            if key in d and not (isinstance(d[key], str) and d[key]):
                raise DataError(f"detection.{key} must be a file name, got {d[key]!r}")
        for key in ("excluded", "proposals"):
            if key in d:
                value = d[key] or {}
                if not isinstance(value, Mapping) or not all(
                        isinstance(v, str) or v is None for v in value.values()):
                    raise DataError(f"detection.{key} maps a split to a file name (e.g. "
                                    f"{{val: ava_val_{key}.csv}}), got {d[key]!r}")
                d[key] = {str(k): v for k, v in value.items()}
        t = d.get("proposal_score_threshold", 0.8)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise DataError(f"detection.proposal_score_threshold must be a number in [0, 1], got {t!r}")
        d["proposal_score_threshold"] = float(t)
        if d.get("eval_boxes", "proposals") not in EVAL_BOXES:
            raise DataError(f"detection.eval_boxes must be one of {', '.join(EVAL_BOXES)}, got "
                            f"{d['eval_boxes']!r}")
        cap = d.get("eval_capacity", 50)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise DataError(f"detection.eval_capacity must be an integer >= 0 (0: every detection), "
                            f"got {cap!r}")
        from .ava_eval import DETECTION_RULES

        if d.get("detections_without_gt", "ignore") not in DETECTION_RULES:
            raise DataError(f"detection.detections_without_gt must be one of "
                            f"{', '.join(DETECTION_RULES)}, got {d['detections_without_gt']!r}")
        flip = d.get("train_horizontal_flip", False)
        if not isinstance(flip, bool):
            raise DataError(f"detection.train_horizontal_flip must be true or false, got {flip!r}")
        return cls(**d)


@dataclass(frozen=True)
class VideoEntry:
    path: str
    start_s: float   # movie time at which the file starts: 0 (full movie) or 900 (15-min cut)


@dataclass
class Keyframe:
    video_id: str
    timestamp: int
    boxes: np.ndarray     # (K, 4) float32, x1 y1 x2 y2 normalised
    targets: np.ndarray   # (K, C) float32 multi-hot (zeros for proposals)
    scores: np.ndarray    # (K,) float32 (1.0 for GT)

    @property
    def key(self) -> str:
        return keyframe_key(self.video_id, self.timestamp)


def keyframe_key(video_id: str, timestamp: int) -> str:
    """The evaluator's key of a keyframe: `video_id,%04d`."""
    return f"{video_id},{int(timestamp):04d}"


# ----- the task's files -------------------------------------------------------------------------

def config(task) -> AvaConfig:
    """The task's `detection:` block (`task.spec.detection`, a plain dict) as an AvaConfig."""
    return AvaConfig.from_dict(getattr(task.spec, "detection", None))


def _missing(task, what: str, path: Path) -> DataError:
    return DataError(f"task ava: {what} not found: {path}; make the prepared files with `harness "
                     f"data prepare ava --root DIR` and point data.root at its output "
                     f"(task.data.root=...)")


def _gt_path(task, split: str) -> Path:
    name = (task.spec.data or {}).get(split)
    if not name:
        raise DataError(f"task ava defines no {split!r} split (data.{split}); splits: "
                        f"{', '.join(s for s in ('train', 'val', 'test') if task.spec.data.get(s))}")
    path = Path(task.root) / str(name)
    if not path.is_file():
        raise _missing(task, f"{split} ground truth", path)
    return path


def _optional(task, mapping: dict, split: str) -> Path | None:
    name = mapping.get(split)
    return None if not name else Path(task.root) / name


def _eval_split(task) -> str:
    return (task.spec.data or {}).get("eval_split", "val")


def read_videos_table(path: str | os.PathLike) -> dict[str, VideoEntry]:
    """`videos.csv`: video id -> file (relative paths resolve against the table's folder)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"task ava: video table not found: {path}; run `harness data prepare ava`")
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or (lineno == 1 and line == VIDEOS_HEADER):
                continue
            vid, sep, rest = line.partition(",")
            parts = rest.rsplit(",", 3)  # the path may hold commas; the last three are numbers
            try:
                if not sep or len(parts) != 4:
                    raise ValueError
                file, start = parts[0], float(parts[1])
            except ValueError:
                raise DataError(f"{path}:{lineno}: expected {VIDEOS_HEADER}, got {line!r}") from None
            out[vid] = VideoEntry(file if os.path.isabs(file) else str(path.parent / file), start)
    return out


def class_ids(task) -> list[int]:
    """Contiguous class index -> the publisher's action id (AVA's ids are 1..80 with gaps)."""
    path = Path(task.root) / config(task).label_map
    pairs = read_label_map_file(path) if path.is_file() else shipped_label_map()
    n = getattr(task.spec, "num_classes", len(pairs))
    if len(pairs) != n:
        raise DataError(f"task ava: label map {path} has {len(pairs)} classes but num_classes is {n}")
    return [aid for aid, _ in pairs]


def excluded(task, split: str) -> set[str]:
    """Keys (`video_id,%04d`) of the split's excluded keyframes (the evaluator ignores them)."""
    path = _optional(task, config(task).excluded, split)
    if path is None or not path.is_file():
        return set()
    rows, bad = read_keyframes(path)
    if bad:
        raise DataError(f"{path}:{bad[0][0]}: {bad[0][1]}")
    return {keyframe_key(v, t) for v, t, _ in rows}


def _gt_rows(task, split: str):
    path = _gt_path(task, split)
    rows, bad = read_box_rows(path, proposals=False)
    if bad:
        raise DataError(f"{path}:{bad[0][0]}: {bad[0][1]} (the prepared file should hold none: "
                        "re-run `harness data prepare ava`)")
    videos = read_videos_table(Path(task.root) / config(task).videos)
    skip = excluded(task, split)
    return [r for r in rows if r.video_id in videos and keyframe_key(r.video_id, r.timestamp) not in skip], videos


def ground_truth(task, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (GT boxes (n, 4) float32, the publisher's action ids (n,) int64), one entry per
    row (a person with 3 actions is 3 entries), for videos present and keyframes not excluded."""
    rows, _ = _gt_rows(task, split)
    grouped: dict[str, list] = {}
    for r in rows:
        grouped.setdefault(keyframe_key(r.video_id, r.timestamp), []).append(r)
    return {k: (np.array([r.box for r in rs], dtype=np.float32).reshape(-1, 4),
                np.array([r.action_id for r in rs], dtype=np.int64))
            for k, rs in grouped.items()}


def evaluator(task, split: str):
    """detections {key: (boxes (n, 4), publisher ids (n,), scores (n,))} -> {"mAP": percent,
    "classes_scored": classes with ground truth, "frames": ground-truth frames}: ActivityNet's
    frame mAP at IoU 0.5 against the split's ground truth, excluded keyframes dropped."""
    from .ava_eval import frame_map

    cfg = config(task)
    truth, skip, ids = ground_truth(task, split), excluded(task, split), class_ids(task)

    def evaluate(detections: dict) -> dict:
        result = frame_map(truth, detections, ids, excluded=skip, capacity=cfg.eval_capacity,
                           detections_without_gt=cfg.detections_without_gt)
        return {"mAP": 100.0 * result["mAP"],
                "classes_scored": len(ids) - len(result["classes_without_gt"]),
                "frames": result["num_frames"]}

    return evaluate


def holdout(task, fraction: float, seed: int) -> tuple[list[Keyframe], list[Keyframe]]:
    """(kept, held out) training keyframes for choosing a grid's head: about `fraction` of the
    training *videos* (at least one, never all), every keyframe of a held-out video with it, so
    the heads are compared on films the probe never saw (neighbouring keyframes of one film
    are near copies). Deterministic in `seed`; both lists in keyframe order."""
    import random

    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction!r}")
    items, _ = keyframes(task, "train")
    films = sorted({kf.video_id for kf in items})
    if len(films) < 2:
        raise DataError("task ava: holding out training videos for head selection needs at least "
                        "2 training videos; use probe.selection=eval_max (labelled) or one head")
    k = min(len(films) - 1, max(1, round(fraction * len(films))))
    held = set(random.Random(int(seed)).sample(films, k))
    return ([kf for kf in items if kf.video_id not in held],
            [kf for kf in items if kf.video_id in held])


def items_evaluator(task, items: Sequence[Keyframe]):
    """Like `evaluator`, against the ground-truth boxes the items carry (a held-out part of the
    training split: its own boxes are classified, so every detection has its frame's truth)."""
    from .ava_eval import frame_map

    cfg, ids = config(task), class_ids(task)
    truth = {}
    for kf in items:
        rows = [(box, ids[c]) for box, target in zip(kf.boxes, kf.targets)
                for c in np.flatnonzero(target)]
        truth[kf.key] = (np.array([b for b, _ in rows], dtype=np.float32).reshape(-1, 4),
                         np.array([a for _, a in rows], dtype=np.int64))

    def evaluate(detections: dict) -> dict:
        result = frame_map(truth, detections, ids, capacity=cfg.eval_capacity,
                           detections_without_gt=cfg.detections_without_gt)
        return {"mAP": 100.0 * result["mAP"],
                "classes_scored": len(ids) - len(result["classes_without_gt"]),
                "frames": result["num_frames"]}

    return evaluate


def entries(task, split: str) -> list[tuple[str, int]]:
    """(video path, 0) per keyframe item of the split: what generic code counts and checks."""
    items, videos = keyframes(task, split)
    return [(videos[kf.video_id].path, 0) for kf in items]


def protocol_files(task, split: str) -> list[Path]:
    """The files whose bytes define the split: its GT rows, excluded keyframes, the label map,
    and for the evaluation split the proposals (their boxes are what is classified). Not the
    video table: where the files lie changes no number."""
    cfg = config(task)
    files = [_gt_path(task, split)]
    for p in (_optional(task, cfg.excluded, split), Path(task.root) / cfg.label_map):
        if p is not None and p.is_file():
            files.append(p)
    if split == _eval_split(task) and cfg.eval_boxes == "proposals":
        files.append(_proposals_path(task, split))
    return files


def _proposals_path(task, split: str) -> Path:
    path = _optional(task, config(task).proposals, split)
    if path is None:
        raise DataError(f"task ava: no proposals file for split {split!r} (detection.proposals."
                        f"{split}); evaluation classifies the detector's person boxes")
    if not path.is_file():
        raise _missing(task, f"{split} proposals", path)
    return path


def keyframes(task, split: str) -> tuple[list[Keyframe], dict[str, VideoEntry]]:
    """The split's items (see the module doc) and the video table."""
    cfg = config(task)
    ids = class_ids(task)
    index = {aid: i for i, aid in enumerate(ids)}
    rows, videos = _gt_rows(task, split)
    path = _gt_path(task, split)
    per_key: dict[tuple[str, int], dict] = {}
    for r in rows:
        if r.action_id not in index:
            raise DataError(f"{path}:{r.line}: action id {r.action_id} is not in the label map; "
                            "re-run `harness data prepare ava`")
        persons = per_key.setdefault((r.video_id, r.timestamp), {})
        persons.setdefault((r.person_id, r.box), set()).add(index[r.action_id])
    use_proposals = split == _eval_split(task) and cfg.eval_boxes == "proposals"
    proposals: dict[tuple[str, int], list] = {}
    if use_proposals:
        prop_path = _proposals_path(task, split)
        props, bad = read_box_rows(prop_path, proposals=True)
        if bad:
            raise DataError(f"{prop_path}:{bad[0][0]}: {bad[0][1]}")
        for p in props:
            if p.score >= cfg.proposal_score_threshold:
                proposals.setdefault((p.video_id, p.timestamp), []).append(p)
    C = len(ids)
    out = []
    for (vid, ts), persons in per_key.items():
        if use_proposals:
            got = proposals.get((vid, ts), [])
            boxes = np.array([p.box for p in got], dtype=np.float32).reshape(-1, 4)
            targets = np.zeros((len(got), C), dtype=np.float32)
            scores = np.array([p.score for p in got], dtype=np.float32)
        else:
            boxes = np.array([box for _, box in persons], dtype=np.float32).reshape(-1, 4)
            targets = np.zeros((len(persons), C), dtype=np.float32)
            for k, classes in enumerate(persons.values()):
                targets[k, sorted(classes)] = 1.0
            scores = np.ones(len(persons), dtype=np.float32)
        out.append(Keyframe(vid, ts, boxes, targets, scores))
    return out, videos


# ----- the dataset ------------------------------------------------------------------------------

class AvaDataset(torch.utils.data.Dataset):
    """Items: `dict(video=(1, 1, 3, T, r, r) float32 | None, boxes=(K, 4), targets=(K, C),
    box_scores=(K,), key='video_id,%04d', label=0, path, error=None | str, backend)`.

    An unreadable video gives `video=None` and the reason in `error`; it is never replaced by
    another sample. Random draws (the flip) come from torch's global generator, which the caller
    seeds per item."""

    def __init__(self, items: Sequence[Keyframe], videos: Mapping[str, VideoEntry], *,
                 frames_per_clip: int, frame_step: int, resolution: int, mean, std,
                 train: bool = False, horizontal_flip: bool = False, backend: str = "auto",
                 num_classes: int = 60, split: str = ""):
        self.items = list(items)
        self.videos = dict(videos)
        self.frames_per_clip, self.frame_step = int(frames_per_clip), int(frame_step)
        self.resolution = int(resolution)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
        self.train, self.horizontal_flip = bool(train), bool(horizontal_flip)
        self.backend = backend
        self.num_classes = int(num_classes)
        self.split = split

    def __len__(self) -> int:
        return len(self.items)

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised (3, T, r, r): the whole frame resized, no crop."""
        x = frames.permute(0, 3, 1, 2).float()
        r = self.resolution
        x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        x = x.permute(1, 0, 2, 3) / 255.0
        return (x - self.mean) / self.std

    def __getitem__(self, index: int) -> dict:
        kf = self.items[index]
        entry = self.videos[kf.video_id]
        boxes = torch.from_numpy(kf.boxes.copy())
        item = {"video": None, "boxes": boxes, "targets": torch.from_numpy(kf.targets.copy()),
                "box_scores": torch.from_numpy(kf.scores.copy()), "key": kf.key, "label": 0,
                "path": entry.path, "error": None, "backend": None}
        try:
            from .seek import read_around

            read = read_around(entry.path, kf.timestamp - entry.start_s,
                               frames_per_clip=self.frames_per_clip, frame_step=self.frame_step,
                               backend=self.backend)
            video = self.transform(read.frames)
            if self.train and self.horizontal_flip and bool(torch.rand(()) < 0.5):
                video = video.flip(-1)
                item["boxes"] = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0],
                                             boxes[:, 3]], dim=1)
            item.update(video=video[None, None], backend=read.backend)
        except Exception as e:  # this sample's problem, reported, not hidden
            item.update(video=None, error=f"{type(e).__name__}: {e}")
            log.debug("skipping unreadable %s at %s: %s", entry.path, kf.key, item["error"])
        return item

    @staticmethod
    def collate(items: Sequence[dict]) -> dict:
        """Readable items stacked; boxes concatenated with their batch index (among the readable
        items) first: `dict(video=(B, 1, 1, 3, T, r, r) | None, boxes=(sumK, 5), targets=(sumK, C),
        box_scores=(sumK,), key=[per box], label=(B,) zeros, path=[per sample], failures)`."""
        good = [it for it in items if it.get("error") is None]
        failures = [(it["path"], it["error"]) for it in items if it.get("error") is not None]
        C = items[0]["targets"].shape[1] if items else 0
        boxes = [torch.cat([torch.full((len(it["boxes"]), 1), float(b)), it["boxes"]], dim=1)
                 for b, it in enumerate(good)]
        return {
            "video": torch.stack([it["video"] for it in good]) if good else None,
            "boxes": torch.cat(boxes) if boxes else torch.zeros(0, 5),
            "targets": torch.cat([it["targets"] for it in good]) if good else torch.zeros(0, C),
            "box_scores": torch.cat([it["box_scores"] for it in good]) if good else torch.zeros(0),
            "key": [it["key"] for it in good for _ in range(len(it["boxes"]))],
            "label": torch.zeros(len(good), dtype=torch.long),
            "path": [it["path"] for it in good],
            "failures": failures,
        }


def build_dataset(task, split: str, *, train: bool, resolution: int | None, mean, std,
                  backend: str = "auto", items: Sequence[Keyframe] | None = None) -> AvaDataset:
    """The split's keyframe dataset. `task`: a `tasks.Task` (reads `task.root`, `task.spec.data`,
    `.sampling`, `.detection`, `.resolution`, `.num_classes`). `resolution`: the encoder's, unless
    the task fixes one. `items`: a subset of the split's keyframes (`holdout`)."""
    res = task.spec.resolution if getattr(task.spec, "resolution", None) is not None else resolution
    if res is None:
        raise DataError("task ava has resolution: null (use the encoder's); pass resolution=...")
    cfg = config(task)
    all_items, videos = keyframes(task, split)
    items = all_items if items is None else list(items)
    s = task.spec.sampling
    return AvaDataset(items, videos, frames_per_clip=s.frames_per_clip, frame_step=s.frame_step,
                      resolution=int(res), mean=mean, std=std, train=train,
                      horizontal_flip=cfg.train_horizontal_flip, backend=backend,
                      num_classes=len(class_ids(task)), split=split)
