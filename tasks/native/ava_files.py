"""AVA v2.2's files, as the publisher ships them and as `harness data prepare ava` writes them:
small parsers for box rows (`video_id,timestamp,x1,y1,x2,y2,action_id,person_id`; proposals
with a score instead of the person id), keyframe lists (`video_id,timestamp`) and label maps (the
publisher's pbtxt or the prepared `id<TAB>name`), and the names of the prepared files.

`tasks.native.ava` (the preparer) and `tasks.ava` (the dataset and evaluator) both read them
here; the evaluator's own parsers (`tasks/ava_eval.py`) may replace them later.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .common import CLASS_LIST_DIR, annotation_file

FIRST_KEYFRAME, LAST_KEYFRAME = 902, 1798  # AVA's annotated seconds (SlowFast's AVA_VALID_FRAMES)

# What `prepare` writes (names relative to OUT); tasks/ava.py's AvaConfig defaults to these.
OUTPUTS = {
    "gt": "ava_{split}_gt.csv", "excluded": "ava_{split}_excluded.csv",
    "proposals": "ava_{split}_proposals.csv", "classes": "classes.txt",
    "label_map": "label_map.txt", "videos": "videos.csv",
}
VIDEOS_HEADER = "video_id,path,start_s,fps,duration_s"


# ----- label map --------------------------------------------------------------------------------

def shipped_label_map() -> list[tuple[int, str]]:
    """The 60 evaluated classes as `(publisher's id, name)` in id order (`ava_classes.txt`)."""
    return read_label_map_file(CLASS_LIST_DIR / "ava_classes.txt")


_PBTXT_ITEM = re.compile(r"\b(?:item|label)\s*\{(.*?)\}", re.S)  # `label {` in the 80-class list


def read_label_map_file(path: str | os.PathLike) -> list[tuple[int, str]]:
    """`(id, name)` pairs of a pbtxt (`item { name: "..." id: N }`) or an `id<TAB>name` file,
    in file order; ids must be distinct integers."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"label map {path} cannot be read: {e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"label map {path}: not UTF-8 text ({e.reason}); re-download it") from None
    pairs: list[tuple[int, str]] = []
    if "{" in text:
        for n, block in enumerate(_PBTXT_ITEM.findall(text), start=1):
            name = re.search(r'name:\s*"([^"]*)"', block)
            # `id:` (the ActivityNet lists) or `label_id:` (the 80-class v2.2 list)
            aid = re.search(r"\b(?:label_)?id:\s*(\d+)", block)
            if not (name and aid):
                raise DataError(f"{path}: item {n} has no `name: \"...\"` and `id: N`: {block.strip()!r}")
            pairs.append((int(aid.group(1)), name.group(1)))
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            aid, sep, name = line.partition("\t")
            if not sep or not aid.strip().isdigit() or not name.strip():
                raise DataError(f"{path}:{lineno}: expected `id<TAB>name`, got {line!r}")
            pairs.append((int(aid), name.strip()))
    ids = [a for a, _ in pairs]
    if not pairs or len(set(ids)) != len(ids):
        raise DataError(f"{path}: a label map needs distinct ids, got {len(pairs)} items, "
                        f"{len(ids) - len(set(ids))} repeated")
    return pairs


# ----- rows -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoxRow:
    video_id: str
    timestamp: int
    box: tuple[float, float, float, float]
    action_id: int | None    # None: a proposal (empty or -1 in the file)
    person_id: int | None    # GT rows
    score: float | None      # proposals
    line: int


def num_text(v: float) -> str:
    return format(v, ".6g")


def format_gt(r: BoxRow) -> str:
    return (f"{r.video_id},{r.timestamp:04d},{','.join(num_text(v) for v in r.box)},{r.action_id},"
            f"{'' if r.person_id is None else r.person_id}\n")


def format_proposal(r: BoxRow) -> str:
    return f"{r.video_id},{r.timestamp:04d},{','.join(num_text(v) for v in r.box)},,{num_text(r.score)}\n"


def parse_timestamp(text: str) -> int | str:
    """An integer second in AVA's annotated range, or the reason it is not one."""
    t = text.strip()
    if not t.isdigit():
        return f"timestamp {text!r} is not an integer second"
    ts = int(t)
    if not FIRST_KEYFRAME <= ts <= LAST_KEYFRAME:
        return f"timestamp {ts} is outside AVA's annotated seconds {FIRST_KEYFRAME}..{LAST_KEYFRAME}"
    return ts


def parse_row(fields: list[str], line: int, *, proposals: bool) -> BoxRow | str:
    """One CSV row as a BoxRow, or the reason it is malformed."""
    want = "video_id,timestamp,x1,y1,x2,y2," + ("action_id,score" if proposals else "action_id,person_id")
    if len(fields) not in (7, 8):
        return f"expected 8 columns {want}, got {len(fields)}"
    vid = fields[0].strip()
    if not vid:
        return "empty video id"
    ts = parse_timestamp(fields[1])
    if isinstance(ts, str):
        return ts
    try:
        box = tuple(float(v) for v in fields[2:6])
    except ValueError:
        return f"box {','.join(fields[2:6])!r} is not four numbers"
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in box):
        return f"box {','.join(fields[2:6])} is not normalised to [0, 1]"
    if not (box[2] > box[0] and box[3] > box[1]):
        return f"box {','.join(fields[2:6])} has x2 <= x1 or y2 <= y1"
    if proposals:
        # 8 columns: SlowFast's (action empty or -1, score); 7: the score right after the box.
        # The action column is not read: LFB's training proposals may carry a label there (it
        # parses `-1 if empty else int`), and a proposal's boxes, not its label, are used.
        score_text = fields[-1].strip()
        try:
            score = float(score_text)
        except ValueError:
            return f"score {score_text!r} is not a number"
        if not math.isfinite(score):
            return f"score {score_text!r} is not finite"
        return BoxRow(vid, ts, box, None, None, score, line)
    action = fields[6].strip()
    if not action.lstrip("-").isdigit():
        return f"action id {fields[6]!r} is not an integer"
    person = fields[7].strip() if len(fields) == 8 else ""
    if person and not person.lstrip("-").isdigit():
        return f"person id {person!r} is not an integer"
    return BoxRow(vid, ts, box, int(action), int(person) if person else None, None, line)


def read_box_rows(path: str | os.PathLike, *, proposals: bool) -> tuple[list[BoxRow], list[tuple[int, str]]]:
    """Every row of an AVA box CSV: (rows, [(line, reason) of the malformed ones])."""
    rows, bad = [], []
    with annotation_file(path, "AVA CSV") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            got = parse_row(line.rstrip("\r\n").split(","), lineno, proposals=proposals)
            (bad.append((lineno, got)) if isinstance(got, str) else rows.append(got))
    return rows, bad


def read_keyframes(path: str | os.PathLike) -> tuple[list[tuple[str, int, int]], list[tuple[int, str]]]:
    """`video_id,timestamp` rows (excluded timestamps): ([(video, ts, line)], [(line, reason)])."""
    rows, bad = [], []
    with annotation_file(path, "AVA CSV") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split(",")
            if len(fields) != 2 or not fields[0].strip():
                bad.append((lineno, f"expected video_id,timestamp, got {line.strip()!r}"))
                continue
            t = fields[1].strip()
            if not t.isdigit():  # out-of-range seconds are harmless here: they match no row
                bad.append((lineno, f"timestamp {fields[1]!r} is not an integer second"))
                continue
            rows.append((fields[0].strip(), int(t), lineno))
    return rows, bad
