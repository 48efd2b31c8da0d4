"""UCF101 as published: the videos `UCF-101/<Class>/v_<Class>_gXX_cYY.avi` (UCF101.rar) and the
official three train/test splits `ucfTrainTestlist/` (UCF101TrainTestSplits-RecognitionTask.zip):
`classInd.txt` (`<index> <Class>`, 1-based), `trainlist0{1,2,3}.txt`
(`<Class>/v_<Class>_gXX_cYY.avi <index>`) and `testlist0{1,2,3}.txt` (`<Class>/v_...avi`, the
label given by the folder). The files have Windows line ends; a few names differ from their
folder in case (`HandstandPushups/v_HandStandPushups_g01_c01.avi`), so folders are matched
without case.

The class index is classInd's index minus 1. All three splits are written: `train{1,2,3}.csv`
and `test{1,2,3}.csv`, and split 1 restricted to MVEB's 51 audio-bearing classes
(`train1_51va.csv`, `test1_51va.csv`, the task `ucf101_51va`); the task reads split 1 (`data.train: train1.csv`, `data.test:
test1.csv`), another split is `task.data.train=train2.csv task.data.test=test2.csv` (a departure
the record names). A training line whose index and folder disagree, or a video found only in
another class's folder, is reported (mislabelled) and left out.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import DataError
from .common import Prepared, Problem, Sample, annotation_file, index_files

NUM_CLASSES = 101
SPLITS = (1, 2, 3)
LIST_FOLDER = "ucfTrainTestlist"
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")
# MVEB's UCF101VideoClassification (mteb's dataset mteb/UCF101-51VA): split 1 restricted to the
# 51 classes whose videos carry audio, in that dataset's label order (its label names, as the
# Hugging Face page of mteb/UCF101VideoAudioZeroShotClassification lists them; mteb's own
# repository does not list them). Written as train1_51va.csv / test1_51va.csv.
MVEB_51VA = (
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
    "BasketballDunk", "BlowDryHair", "BlowingCandles", "BodyWeightSquats", "Bowling",
    "BoxingPunchingBag", "BoxingSpeedBag", "BrushingTeeth", "CliffDiving", "CricketBowling",
    "CricketShot", "CuttingInKitchen", "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch",
    "FrontCrawl", "Haircut", "HammerThrow", "Hammering", "HandstandPushups", "HandstandWalking",
    "HeadMassage", "IceDancing", "Knitting", "LongJump", "MoppingFloor", "ParallelBars",
    "PlayingCello", "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingSitar", "Rafting",
    "ShavingBeard", "Shotput", "SkyDiving", "SoccerPenalty", "StillRings", "SumoWrestling",
    "Surfing", "TableTennisShot", "Typing", "UnevenBars", "WallPushups", "WritingOnBoard")


def layout() -> str:
    return ("ROOT/[UCF-101/]<Class>/v_<Class>_gXX_cYY.avi (UCF101.rar unpacked) and "
            f"ROOT/[annotations/]{LIST_FOLDER}/{{classInd.txt,trainlist0{{1,2,3}}.txt,"
            "testlist0{1,2,3}.txt}; --annotations DIR points at the lists elsewhere")


def list_folder(ann_root: Path) -> Path | None:
    for d in (ann_root / LIST_FOLDER, ann_root / "annotations" / LIST_FOLDER,
              ann_root / "annotations", ann_root):
        if (d / "classInd.txt").is_file():
            return d
    return None


def read_class_index(path: Path) -> list[str]:
    """classInd.txt -> class names in label order; the indices must be 1..N, each once."""
    by_index: dict[int, str] = {}
    with annotation_file(path, "UCF101 classInd.txt") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[0].isdigit():
                raise DataError(f"{path}:{n}: expected '<index> <Class>', got {line.strip()!r}"[:300])
            index = int(parts[0])
            if index in by_index:
                raise DataError(f"{path}:{n}: index {index} listed twice")
            by_index[index] = parts[1]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise DataError(f"{path}: class indices must run 1..{len(by_index)} without gaps")
    names = [by_index[i] for i in range(1, len(by_index) + 1)]
    if len({n.lower() for n in names}) != len(names):
        raise DataError(f"{path}: class names are not unique")
    return names


def read(root: Path, annotations: Path | None = None) -> Prepared:
    root = Path(root)
    ann_root = Path(annotations) if annotations is not None else root
    folder = list_folder(ann_root)
    if folder is None:
        raise DataError(f"ucf101: no classInd.txt under {ann_root}; expected {layout()}")
    classes = read_class_index(folder / "classInd.txt")
    notes: list[str] = []
    if len(classes) != NUM_CLASSES:
        notes.append(f"{folder / 'classInd.txt'}: {len(classes)} classes, UCF101 has "
                     f"{NUM_CLASSES}")
    index = {c.lower(): i for i, c in enumerate(classes)}
    files = index_files(root, VIDEO_EXTENSIONS, notes)
    prepared = Prepared("ucf101", classes, {}, notes=notes,
                        labels_source=f"{folder / 'classInd.txt'} (its index minus 1)")
    for k in SPLITS:
        for half, labelled in (("train", True), ("test", False)):
            path = folder / f"{half}list{k:02d}.txt"
            if not path.is_file():
                notes.append(f"split {k}: no {path.name} under {folder}; no {half}{k}.csv written")
                continue
            prepared.samples[f"{half}{k}"] = _read_list(path, f"{half}{k}", labelled, classes,
                                                        index, files, prepared.problems)
    if not prepared.samples:
        raise DataError(f"ucf101: no trainlist/testlist files under {folder}; expected {layout()}")
    _add_mveb_subset(prepared, index)
    return prepared


def _add_mveb_subset(prepared: Prepared, index: dict[str, int]) -> None:
    """train1_51va / test1_51va: split 1's samples of MVEB's 51 classes (labels stay classInd's;
    the task `ucf101_51va` probes them with `classes: present`)."""
    missing = [c for c in MVEB_51VA if c.lower() not in index]
    if missing:
        prepared.notes.append(f"MVEB's 51-class subset not written: classInd.txt lacks "
                              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return
    kept = {index[c.lower()] for c in MVEB_51VA}
    for half in ("train", "test"):
        samples = prepared.samples.get(f"{half}1")
        if samples is not None:
            prepared.samples[f"{half}1_51va"] = [replace(s, split=f"{half}1_51va")
                                                 for s in samples if s.label in kept]


def _read_list(path: Path, split: str, labelled: bool, classes: list[str], index: dict[str, int],
               files: dict[str, list[str]], problems: list[Problem]) -> list[Sample]:
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    with annotation_file(path, "UCF101 split list") as f:
        for n, line in enumerate(f, start=1):
            where = f"{path}:{n}"
            parts = line.split()
            if not parts:
                continue
            shape_ok = len(parts) == (2 if labelled else 1) and parts[0].count("/") == 1 and \
                (not labelled or parts[1].isdigit())
            if not shape_ok:
                want = "<Class>/<video>.avi <index>" if labelled else "<Class>/<video>.avi"
                problems.append(Problem("malformed", where, f"expected '{want}', got "
                                        f"{line.strip()!r}"[:200], split=split))
                continue
            folder, name = parts[0].split("/")
            where = f"{where} {parts[0]}"
            by_folder = index.get(folder.lower())
            if labelled:
                label = int(parts[1]) - 1
                if not 0 <= label < len(classes):
                    problems.append(Problem("unknown_label", where, f"index {parts[1]} outside "
                                            f"classInd's 1..{len(classes)}", split=split))
                    continue
                if by_folder is not None and by_folder != label:
                    problems.append(Problem("mislabelled", where, f"index {parts[1]} "
                                            f"({classes[label]!r}) but listed in the folder "
                                            f"{folder!r}", split=split))
                    continue
            elif by_folder is None:
                problems.append(Problem("unknown_label", where, f"folder {folder!r} is not a "
                                        "class of classInd.txt", split=split))
                continue
            else:
                label = by_folder
            if parts[0] in seen:
                problems.append(Problem("duplicate", where, f"listed again (first at "
                                        f"{seen[parts[0]]})", split=split))
                continue
            seen[parts[0]] = where
            s = Sample(split, label, where, parts[0])
            s.path, other = _find(files, name.rsplit(".", 1)[0], classes[label], index)
            if other is not None:
                problems.append(Problem("mislabelled", where, f"listed under {classes[label]!r} "
                                        f"but found only in the folder of {other!r}", split=split))
            elif s.path is None:
                problems.append(Problem("missing", where, f"{name} not found under the data root",
                                        split=split))
            samples.append(s)
    return samples


def _find(files: dict[str, list[str]], stem: str, cls: str, index: dict[str, int]):
    """(path under the class folder, any case; or None, another class's folder holding it)."""
    paths = files.get(stem, [])
    own = [p for p in paths if Path(p).parent.name.lower() == cls.lower()]
    if own:
        return own[0], None
    elsewhere = next((Path(p).parent.name for p in paths if Path(p).parent.name.lower() in index),
                     None)
    if elsewhere is None and paths:
        return paths[0], None
    return None, elsewhere
