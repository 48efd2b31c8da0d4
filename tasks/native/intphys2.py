"""IntPhys 2 as published (Hugging Face `facebook/IntPhys2`, or IntPhys2.zip): one folder per
split, `ROOT/{Debug,Main,HeldOut}/metadata.csv` and `.../Videos/<name>.mp4`. A metadata row
names a video (`name`, `file_name` relative to the split folder) and, in Debug and Main, its
scene (`SceneIndex`), principle (`condition`: permanence, immutability, continuity, solidity)
and `type` (`1_Possible`, `1_Impossible`, `2_Possible`, `2_Impossible`). A scene is a
quadruplet; the pair is the possible and the impossible video of one setup (the same number
in `type`). HeldOut comes without labels: its videos are listed unpaired, scored, and written
to a submission file (`write_submission`).
"""
from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

from ..errors import DataError
from .common import Problem, annotation_file
from .voe_common import VoERead

SPLITS = {"Debug": "debug", "Main": "main", "HeldOut": "heldout"}
_TYPE = re.compile(r"^(\d+)_(possible|impossible)$", re.IGNORECASE)
# Held-out submission: one row per video, its name and a score where higher means more
# surprising (the video's max surprise).
SUBMISSION_COLUMNS = ("name", "score")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def layout() -> str:
    return ("ROOT/{Debug,Main,HeldOut}/metadata.csv (SceneIndex, name, file_name, condition, type) "
            "and ROOT/<split>/Videos/<name>.mp4 (IntPhys 2)")


def prepare(root, out, **kw) -> dict:
    from .voe_common import prepare_voe

    return prepare_voe(sys.modules[__name__], "intphys2", Path(root), Path(out), **kw)


def _video_path(folder: Path, row: dict) -> Path:
    rel = str(row.get("file_name") or "").strip()
    if rel:
        return folder / rel
    return folder / "Videos" / f"{str(row.get('name') or '').strip()}.mp4"


def read_pairs(root: Path, annotations: Path | None = None, *, progress: bool = False) -> VoERead:
    root = Path(root)
    if not any((root / d).is_dir() for d in SPLITS) and (root / "IntPhys2").is_dir():
        root = root / "IntPhys2"
    read = VoERead("intphys2", {}, source="metadata.csv `type` (k_Possible / k_Impossible)")
    found = False
    for folder_name, split in SPLITS.items():
        folder = root / folder_name
        if not folder.is_dir():
            read.notes.append(f"{split}: no {folder_name}/ under {root}")
            continue
        found = True
        meta = folder / "metadata.csv"
        if split == "heldout":
            read.videos[split] = _heldout(read, folder, meta)
            continue
        if not meta.is_file():
            raise DataError(f"intphys2: {meta} not found (it labels the {folder_name} videos); "
                            f"expected {layout()}")
        read.pairs[split] = _pairs(read, folder, meta, split)
    if not found:
        raise DataError(f"intphys2: no Debug/, Main/ or HeldOut/ under {root}; expected {layout()}")
    return read


def _rows(meta: Path):
    with annotation_file(meta, "IntPhys 2 metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        yield reader.fieldnames or []
        yield from enumerate(reader, start=2)


def _pairs(read: VoERead, folder: Path, meta: Path, split: str) -> list:
    from ..voe import VoEItem, VoEPair

    rows = _rows(meta)
    columns = next(rows)
    need = [c for c in ("SceneIndex", "name", "condition", "type") if c not in columns]
    if need:
        raise DataError(f"{meta}: missing column(s) {', '.join(need)}; is this IntPhys 2's metadata.csv?")
    groups: dict[tuple[str, str], dict[bool, tuple]] = {}
    seen: dict[str, str] = {}
    for lineno, row in rows:
        where = f"{meta}:{lineno}"
        m = _TYPE.match(str(row.get("type") or "").strip())
        name = str(row.get("name") or "").strip()
        if m is None or not name:
            read.problems.append(Problem("malformed", where, f"type {row.get('type')!r} is not "
                                         f"k_Possible / k_Impossible, or no name", split=split))
            continue
        if name in seen:
            read.problems.append(Problem("duplicate", where, f"{name} listed again (first at "
                                         f"{seen[name]})", split=split))
            continue
        seen[name] = where
        key = (str(row.get("SceneIndex")).strip(), m.group(1))
        possible = m.group(2).lower() == "possible"
        group = groups.setdefault(key, {})
        if possible in group:
            read.problems.append(Problem("unmatched", where, f"scene {key[0]} setup {key[1]} has two "
                                         f"{m.group(2).lower()} videos; {name} left out", split=split))
            continue
        group[possible] = (name, _video_path(folder, row), str(row.get("condition") or "").strip(),
                           where, row)
    pairs = []
    for (scene, setup), group in groups.items():
        if len(group) != 2:
            (name, path, _, where, _) = next(iter(group.values()))
            read.problems.append(Problem("unmatched", where, f"scene {scene} setup {setup}: no twin "
                                         f"for {name}; left out", path=str(path), split=split))
            continue
        (pn, pp, prop, pw, prow), (inn, ip, iprop, iw, _) = group[True], group[False]
        absent = [(p, w) for p, w in ((pp, pw), (ip, iw)) if not p.is_file()]
        for p, w in absent:
            read.problems.append(Problem("missing", w, "video not found; the pair is left out",
                                         path=str(p), split=split))
        if absent:
            continue
        if prop != iprop:
            read.problems.append(Problem("unmatched", iw, f"condition {iprop!r} differs from its "
                                         f"twin's {prop!r}; the pair is left out", split=split))
            continue
        extra = {k: prow[k] for k in ("Difficulty", "Camera", "game_name", "env") if prow.get(k)}
        pairs.append(VoEPair(f"{scene}/{setup}", prop or "unknown", VoEItem(str(pp), pn, True),
                             VoEItem(str(ip), inn, False), meta={"scene": scene, **extra}))
    return pairs


def _heldout(read: VoERead, folder: Path, meta: Path) -> list:
    """The held-out videos, unlabelled: metadata.csv's rows where it has one, else Videos/*.mp4."""
    from ..voe import VoEItem

    items = []
    if meta.is_file():
        rows = _rows(meta)
        columns = next(rows)
        if "name" not in columns and "file_name" not in columns:
            raise DataError(f"{meta}: neither a name nor a file_name column")
        for lineno, row in rows:
            path = _video_path(folder, row)
            name = str(row.get("name") or "").strip() or path.stem
            if not path.is_file():
                read.problems.append(Problem("missing", f"{meta}:{lineno}", "video not found",
                                             path=str(path), split="heldout"))
                continue
            items.append(VoEItem(str(path), name))
    else:
        videos = folder / "Videos"
        names = sorted(os.listdir(videos)) if videos.is_dir() else []
        items = [VoEItem(str(videos / n), Path(n).stem) for n in names if n.lower().endswith(".mp4")]
        read.notes.append(f"heldout: no metadata.csv; listed the {len(items)} videos of {videos}")
    return items


def write_submission(scores: dict[str, float], names: list[str], path: str | os.PathLike) -> Path:
    """Write the held-out submission: `name,score` per video in `names` order (every held-out
    video must have a finite score). Names are checked to be plain ids: the file is opened in
    spreadsheets, so nothing in it may read as a formula."""
    import math

    from common.atomic import atomic_write_text

    lines = [",".join(SUBMISSION_COLUMNS)]
    absent = [n for n in names if n not in scores]
    if absent:
        raise DataError(f"no score for {len(absent)} held-out video(s), e.g. {absent[:3]}")
    for n in names:
        if not _SAFE_NAME.match(n):
            raise DataError(f"held-out video name {n!r} is not a plain id; refusing to write it")
        s = float(scores[n])
        if not math.isfinite(s):
            raise DataError(f"held-out video {n}: score {s} is not finite")
        lines.append(f"{n},{s:.9g}")
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")
