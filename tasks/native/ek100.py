"""EPIC-KITCHENS-100 action anticipation as published, read the way V-JEPA 2's release reads it.

The publisher's files (github.com/epic-kitchens/epic-kitchens-100-annotations), under
ROOT/annotations/, ROOT/epic-kitchens-100-annotations/ or ROOT (or `--annotations DIR`):

* `EPIC_100_train.csv`, `EPIC_100_validation.csv`: a header, one row per action segment
  (`narration_id, participant_id, video_id, narration_timestamp, start_timestamp,
  stop_timestamp, start_frame, stop_frame, narration, verb, verb_class, noun, noun_class,
  all_nouns, all_noun_classes`). Read here: `video_id`, `narration_id`, `start_frame`,
  `stop_frame`, `verb_class`, `noun_class` (and `verb`/`noun` for names). Frames count in the
  video's own frame rate (mostly 59.94 or 50 fps).
* optional `EPIC_100_verb_classes.csv` / `EPIC_100_noun_classes.csv` (`id,key,...`): class names.
* videos: `ROOT/<participant>/videos/<video_id>.MP4` (the publisher's download script; the
  release's `file_format: 0`, which its EK100 configs set) or `ROOT/<participant>/<video_id>.MP4`
  (`file_format: 1`); the participant is the part of the video id before `_`.

As the release's `filter_annotations` (`evals/action_anticipation_frozen/epickitchens.py`):
the vocabulary is the training CSV's: verbs, nouns and actions (verb, noun pairs) that occur in
it, every row counted, video found or not; validation rows whose action never occurs in
training are dropped (reported `unknown_label`); a video not on disk drops its rows (reported
`missing`, once per video). The release numbers classes in Python-set order; we number them in
sorted order (verb_class; noun_class; (verb_class, noun_class)): recall@5 is a mean over classes
and does not depend on the numbering. Rows are kept in the release's order (videos in order of
first appearance, rows by start frame).

`prepare` writes into OUT: `train.csv` / `val.csv` (`tasks.anticipation.MANIFEST_COLUMNS`: the
video path, ids, frames, the video's frame rate from its header, the publisher's verb/noun ids
and our verb, noun and action indices), `verbs.csv`, `nouns.csv`, `actions.csv` (`index,...`)
and `prepare_report.json`.
"""
from __future__ import annotations

import csv
import io
import os
import time
from collections import defaultdict
from pathlib import Path

from common.atomic import atomic_write_text

from ..anticipation import MANIFEST_COLUMNS, Segment, write_manifest_rows
from ..errors import DataError
from .common import (
    PREPARE_REPORT,
    Problem,
    annotation_file,
    as_json,
    first_existing,
    problems_by_kind,
    write_report,
)
from .stopping import holding

ANNOTATIONS = {"train": "EPIC_100_train.csv", "val": "EPIC_100_validation.csv"}
CLASS_FILES = {"verb": "EPIC_100_verb_classes.csv", "noun": "EPIC_100_noun_classes.csv"}
ANNOTATION_DIRS = ("annotations", "epic-kitchens-100-annotations", ".")
REQUIRED = ("video_id", "narration_id", "start_frame", "stop_frame", "verb_class", "noun_class")
OUTPUTS = ("train.csv", "val.csv", "verbs.csv", "nouns.csv", "actions.csv", PREPARE_REPORT)


def layout() -> str:
    return ("ROOT/[annotations/]EPIC_100_{train,validation}.csv (optional EPIC_100_{verb,noun}_"
            "classes.csv) and the videos ROOT/<participant>/videos/<video_id>.MP4 (or "
            "ROOT/<participant>/<video_id>.MP4)")


def _annotation_dirs(root: Path, annotations: Path | None) -> list[Path]:
    return [Path(annotations)] if annotations else [root / d for d in ANNOTATION_DIRS]


def _find(dirs: list[Path], name: str) -> Path | None:
    return next((p for p in (first_existing(d, [name]) for d in dirs) if p is not None), None)


def read_rows(path: Path, split: str, problems: list[Problem]) -> list[dict]:
    """The well-formed rows of one annotation CSV (`where` = file:line); others are reported."""
    rows, seen = [], {}
    with annotation_file(path, "EPIC-KITCHENS-100 annotation CSV", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column(s) {', '.join(missing)}; is this the publisher's "
                            f"{ANNOTATIONS[split]}? (header {reader.fieldnames!r})"[:400])
        for r in reader:
            where = f"{path}:{reader.line_num}"
            try:
                row = {"video_id": r["video_id"].strip(), "narration_id": r["narration_id"].strip(),
                       "start_frame": int(r["start_frame"]), "stop_frame": int(r["stop_frame"]),
                       "verb_class": int(r["verb_class"]), "noun_class": int(r["noun_class"]),
                       "verb": (r.get("verb") or "").strip(), "noun": (r.get("noun") or "").strip(),
                       "where": where}
            except (TypeError, ValueError, AttributeError):
                problems.append(Problem("malformed", where, f"expected integers in {', '.join(REQUIRED[2:])}",
                                        split=split))
                continue
            if not row["video_id"] or "_" not in row["video_id"] or row["start_frame"] < 0 \
                    or row["stop_frame"] < row["start_frame"]:
                problems.append(Problem("malformed", where, f"video id {row['video_id']!r}, frames "
                                        f"{row['start_frame']}..{row['stop_frame']}", split=split))
                continue
            if row["narration_id"] in seen:
                problems.append(Problem("duplicate", where, f"narration {row['narration_id']} "
                                        f"listed again (first at {seen[row['narration_id']]})", split=split))
                continue
            seen[row["narration_id"]] = where
            rows.append(row)
    return rows


def video_path(root: Path, video_id: str) -> str | None:
    """Where the release looks for a video: file_format 0, then file_format 1."""
    pid = video_id.split("_")[0]
    for folder in (root / pid / "videos", root / pid):
        for ext in (".MP4", ".mp4"):
            p = folder / f"{video_id}{ext}"
            if p.is_file():
                return str(p)
    return None


def _class_names(dirs: list[Path], train: list[dict], what: str) -> tuple[dict[int, str], str]:
    path = _find(dirs, CLASS_FILES[what])
    names: dict[int, str] = {}
    if path is not None:
        with annotation_file(path, f"EPIC-KITCHENS-100 {what} class list", newline="") as f:
            for r in csv.DictReader(f):
                try:
                    names[int(r["id"])] = str(r["key"]).strip()
                except (KeyError, TypeError, ValueError):
                    continue
        return names, str(path)
    for r in train:  # the training CSV's own words, first occurrence
        names.setdefault(r[f"{what}_class"], r[what] or str(r[f"{what}_class"]))
    return names, "the training CSV's verb / noun columns"


def _csv_text(header: tuple, rows: list[tuple]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _refuse_foreign(target: Path) -> None:
    """Never overwrite a file that is not a manifest of ours (e.g. a user's own train.csv)."""
    if target.is_file():
        with open(target, encoding="utf-8", errors="replace") as f:
            head = f.readline().rstrip("\n")
        if head != ",".join(MANIFEST_COLUMNS):
            raise DataError(f"{target} exists and is not an EK100 manifest of ours; pass --out DIR "
                            "to write the manifests elsewhere")


def prepare(root: Path, out: Path, *, annotations: Path | None = None, verify: bool = True,
            workers: int = 0, progress: bool = True, stop=None) -> dict:
    """Read the native layout under `root`, write the prepared files into `out`, return (and
    write) the report; see the module doc. `stop`: as `tasks.native.prepare`'s."""
    from ..backends import stream_info
    from . import open_files
    from .common import forget_progress

    t0 = time.time()
    root, out = Path(root), Path(out)
    dirs = _annotation_dirs(root, annotations)
    problems: list[Problem] = []
    notes: list[str] = []
    rows = {}
    for split, name in ANNOTATIONS.items():
        path = _find(dirs, name)
        if path is None:
            raise DataError(f"ek100: {name} not found under {', '.join(map(str, dirs))}; expected "
                            f"{layout()}")
        rows[split] = read_rows(path, split, problems)
    pairs = {(r["verb_class"], r["noun_class"]) for r in rows["train"]}
    verbs = sorted({v for v, _ in pairs})
    nouns = sorted({n for _, n in pairs})
    actions = sorted(pairs)
    if not actions:
        raise DataError("ek100: the training CSV holds no usable rows; nothing to learn from")
    index = {"verb": {v: i for i, v in enumerate(verbs)}, "noun": {n: i for i, n in enumerate(nouns)},
             "action": {a: i for i, a in enumerate(actions)}}
    kept = {"train": rows["train"], "val": []}
    for r in rows["val"]:
        if (r["verb_class"], r["noun_class"]) in pairs:
            kept["val"].append(r)
        else:
            problems.append(Problem("unknown_label", r["where"], f"action (verb {r['verb_class']}, "
                                    f"noun {r['noun_class']}) never occurs in training; dropped, as "
                                    "the release drops it", split="val"))

    # Videos: found where the release looks, frame rate from the header, then (verify) opened.
    by_video: dict[str, dict[str, list[dict]]] = {s: defaultdict(list) for s in kept}
    for split, rs in kept.items():
        for r in rs:
            by_video[split][r["video_id"]].append(r)
    paths, fps, frames = {}, {}, {}
    for split in kept:
        for vid, rs in by_video[split].items():
            if vid not in paths:
                paths[vid] = video_path(root, vid)
            if paths[vid] is None:
                problems.append(Problem("missing", f"{rs[0]['where']} {vid}", f"video not found "
                                        f"({len(rs)} action(s) dropped); looked for "
                                        f"{vid.split('_')[0]}/videos/{vid}.MP4 and "
                                        f"{vid.split('_')[0]}/{vid}.MP4", split=split))
    bad: dict[str, str] = {}
    for vid, p in paths.items():
        if p is None:
            continue
        try:
            info = stream_info(p)
            fps[vid], frames[vid] = info.fps, info.num_frames
        except Exception as e:  # noqa: BLE001 - any header failure makes the video unusable
            bad[vid] = f"{type(e).__name__}: {e}"[:300]
    verdicts: dict = {}
    if verify:
        found = [p for vid, p in paths.items() if p is not None and vid not in bad]
        verdicts = open_files(found, out, stop, workers=workers, progress=progress,
                              label="ek100: opening videos")
        for vid, p in paths.items():
            v = verdicts.get(p)
            if v is not None and not v["ok"]:
                bad[vid] = v["error"]
            elif v is not None and v["frames"] is not None:
                frames[vid] = v["frames"]
    segments: dict[str, list[Segment]] = {}
    for split in kept:
        segs = []
        for vid, rs in by_video[split].items():  # videos in order of first appearance
            if paths[vid] is None:
                continue
            if vid in bad:
                problems.append(Problem("unreadable", f"{rs[0]['where']} {vid}", f"{bad[vid]} "
                                        f"({len(rs)} action(s) dropped)", path=paths[vid], split=split))
                continue
            for r in sorted(rs, key=lambda r: r["start_frame"]):  # the release's sort_values
                if r["stop_frame"] >= frames[vid]:
                    problems.append(Problem("too_short", r["where"], f"stop frame {r['stop_frame']} "
                                            f"is past the video's {frames[vid]} frames; kept",
                                            path=paths[vid], split=split))
                pair = (r["verb_class"], r["noun_class"])
                segs.append(Segment(paths[vid], vid, r["narration_id"], r["start_frame"],
                                    r["stop_frame"], fps[vid], pair[0], pair[1],
                                    index["verb"][pair[0]], index["noun"][pair[1]],
                                    index["action"][pair]))
        segments[split] = segs

    verb_names, verb_source = _class_names(dirs, rows["train"], "verb")
    noun_names, noun_source = _class_names(dirs, rows["train"], "noun")
    with holding(stop):
        from ..manifest import output_folder

        output_folder(out)
        for split, segs in segments.items():
            target = out / f"{split}.csv"
            _refuse_foreign(target)
            atomic_write_text(target, "\n".join(write_manifest_rows(segs, out)) + "\n")
        atomic_write_text(out / "verbs.csv", _csv_text(
            ("index", "verb_class", "name"), [(i, v, verb_names.get(v, str(v))) for i, v in enumerate(verbs)]))
        atomic_write_text(out / "nouns.csv", _csv_text(
            ("index", "noun_class", "name"), [(i, n, noun_names.get(n, str(n))) for i, n in enumerate(nouns)]))
        atomic_write_text(out / "actions.csv", _csv_text(
            ("index", "verb_class", "noun_class", "name"),
            [(i, v, n, f"{verb_names.get(v, v)} {noun_names.get(n, n)}") for i, (v, n) in enumerate(actions)]))
        report = {
            "task": "ek100", "root": str(root), "out": str(out), "layout": layout(),
            "labels_source": f"verbs: {verb_source}; nouns: {noun_source}",
            "num_classes": {"verb": len(verbs), "noun": len(nouns), "action": len(actions)},
            "splits": {s: {"listed": len(rows[s]), "written": len(segments[s])} for s in segments},
            "verified": bool(verify), "problem_counts": problems_by_kind(problems), "notes": notes,
            "problems": as_json(problems), "seconds": round(time.time() - t0, 2), "files": verdicts,
        }
        write_report(out / PREPARE_REPORT, report)
        forget_progress(out)
    return report


def read_classes(path: str | os.PathLike) -> list[dict]:
    """A prepared `verbs.csv` / `nouns.csv` / `actions.csv`, rows in index order."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise DataError(f"{path}: the index column must run 0, 1, 2, ...")
    return rows
