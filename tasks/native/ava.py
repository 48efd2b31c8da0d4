"""AVA v2.2 as published (research.google.com/ava; the layout SlowFast's DATASET.md describes).

The publisher's files, under ROOT/annotations/ or ROOT itself:

* `ava_{train,val}_v2.2.csv`: no header, `video_id,timestamp,x1,y1,x2,y2,action_id,person_id`;
  boxes normalised to [0, 1], the timestamp an integer second of the full movie (keyframes
  902..1798); one row per (person box, action), so a person doing 3 things is 3 rows, one box.
* `ava_action_list_v2.2_for_activitynet_2019.pbtxt`: the 60 evaluated classes
  (`item { name: "bend/bow (at the waist)" id: 1 }`); AVA's ids run 1..80 with gaps. Rows of
  the other 20 actions are dropped (counted). Without the pbtxt the shipped
  `ava_classes.txt` (`id<TAB>name`, the same 60) is used, so every user gets one label map.
* `ava_{train,val}_excluded_timestamps_v2.2.csv`: `video_id,timestamp` keyframes to ignore.
* person proposals from a detector, SlowFast's `ava_val_predicted_boxes.csv`:
  `video_id,timestamp,x1,y1,x2,y2,action_id (empty or -1),score` (its `parse_bboxes_file`
  reads the score from column 8 and keeps `score >= DETECTION_SCORE_THRESH`); the action column
  is not read (LFB's training proposals may label it).
* videos: the full movies `videos/{id}.{mkv,mp4,webm}` (timestamps are movie time) or the
  15-minute cuts `videos_15min/{id}.{mkv,mp4,webm}` made by `ffmpeg -ss 900 -t 901` (timestamp t
  is at t - 900 s in the file). One of the two folders; both holding videos is refused.

`prepare` writes into OUT (see `OUTPUTS`): the kept GT rows per split (the 60 classes, videos
found, excluded keyframes dropped, re-written in one normalised form), the proposals, the
excluded keyframes, `classes.txt` (60 names in id order), `label_map.txt` (`id<TAB>name`, line
number = contiguous index), `videos.csv` (video id -> path, where the file starts in movie time,
fps, duration) and `prepare_report.json`, and reports every problem line by line. Opening a
video reads its header and seek-decodes one frame (`tasks.seek`): a 15-minute or 2-hour file is
never decoded whole.

The files' parsers (`read_box_rows`, `read_keyframes`, `read_label_map_file`) and the prepared
files' names (`OUTPUTS`) are in `tasks.native.ava_files`.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from collections import defaultdict
from pathlib import Path

from common.atomic import atomic_write_text

from ..errors import DataError
from .ava_files import (FIRST_KEYFRAME, OUTPUTS, VIDEOS_HEADER, BoxRow, format_gt, format_proposal,
                        num_text, parse_row, parse_timestamp, read_box_rows, read_keyframes,
                        read_label_map_file, shipped_label_map)
from .common import (PREPARE_REPORT, Problem, as_json, first_existing, manifest_path_text,
                     problems_by_kind, write_report)
from .opening import _progress, file_key
from .stopping import holding, ignore_interrupts, verdicts_kept

# The file parsers live in ava_files (tasks.ava reads them there); their old names still work.
__all__ = ["prepare", "read", "layout", "find_videos", "probe_video", "open_videos", "OUTPUTS",
           "VIDEOS_HEADER", "BoxRow", "format_gt", "format_proposal", "parse_row", "parse_timestamp",
           "read_box_rows", "read_keyframes", "read_label_map_file", "shipped_label_map"]

SPLITS = ("train", "val")
VIDEO_EXTENSIONS = (".mkv", ".mp4", ".webm")
# Where each file starts in movie time: full movies at 0, SlowFast's cuts at 900 s.
VIDEO_FOLDERS = {"videos": 0.0, "videos_15min": 900.0}
ALL_ACTION_IDS = range(1, 81)              # AVA's 80 actions; the 60 evaluated are a subset
NUM_CLASSES = 60

GT_NAMES = {s: [f"ava_{s}_v2.2.csv"] for s in SPLITS}
EXCLUDED_NAMES = {s: [f"ava_{s}_excluded_timestamps_v2.2.csv"] for s in SPLITS}
LABEL_MAP_NAMES = ["ava_action_list_v2.2_for_activitynet_2019.pbtxt",
                   "ava_action_list_v2.2_for_activitynet_2019.pbtxt.txt"]
PROPOSAL_NAMES = {s: [f"ava_{s}_predicted_boxes.csv"] for s in SPLITS}


def layout() -> str:
    return ("ROOT/annotations/ava_{train,val}_v2.2.csv, ava_{train,val}_excluded_timestamps_v2.2.csv, "
            "ava_action_list_v2.2_for_activitynet_2019.pbtxt, ava_val_predicted_boxes.csv (also "
            "directly in ROOT), and the videos ROOT/videos/{video_id}.{mkv,mp4,webm} (full movies) "
            "or ROOT/videos_15min/{video_id}.{mkv,mp4,webm} (the 15-minute cuts from 900 s)")


# ----- videos -----------------------------------------------------------------------------------

def find_videos(root: Path) -> tuple[str, float, dict[str, str], list[Problem]]:
    """(folder name, its start in movie time, {video id: path}, duplicate problems)."""
    holding = {}
    for folder in VIDEO_FOLDERS:
        d = root / folder
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS
                           and not p.name.startswith("."))
            if files:
                holding[folder] = files
    if len(holding) > 1:
        raise DataError(f"ava: both {root}/videos (full movies, timestamps are movie time) and "
                        f"{root}/videos_15min (cuts from 900 s) hold videos, so which timeline a "
                        "video is on would be a guess; keep one of the two folders (or point --root "
                        "at a folder holding only one)")
    if not holding:
        raise DataError(f"ava: no videos under {root}/videos or {root}/videos_15min; expected "
                        f"{layout()}")
    folder, files = next(iter(holding.items()))
    found: dict[str, str] = {}
    problems = []
    # The publisher's ids are file stems; a stem twice (x.mkv and x.mp4): the first extension in
    # VIDEO_EXTENSIONS order is used, and the other reported.
    for f in sorted(files, key=lambda p: (p.stem, VIDEO_EXTENSIONS.index(p.suffix.lower()))):
        if f.stem in found:
            problems.append(Problem("duplicate", str(f), f"video {f.stem} exists twice; using "
                                    f"{Path(found[f.stem]).name}", path=str(f)))
            continue
        found[f.stem] = str(f)
    return folder, VIDEO_FOLDERS[folder], found, problems


def probe_video(path: str, time_s: float) -> dict:
    """`{"ok", "fps", "frames", "duration_s", "error"}`: the header, plus one frame decoded by
    seeking to `time_s` (file time), so a file that opens but does not decode is found."""
    from ..seek import frame_at, read_at, stream_info  # torch: only when videos are opened
    try:
        info = stream_info(path)
        index = min(frame_at(max(time_s, 0.0), info.fps), info.num_frames - 1)
        read_at(path, [index], backend="pyav", info=info)
        return {"ok": True, "fps": info.fps, "frames": info.num_frames,
                "duration_s": info.duration_s, "error": None}
    except Exception as e:  # the verdict on this file, whatever went wrong
        return {"ok": False, "fps": None, "frames": None, "duration_s": None,
                "error": f"{type(e).__name__}: {e}"[:300]}


def _probe_many(jobs: list[tuple[str, float]]) -> list[dict]:
    return [probe_video(p, t) for p, t in jobs]


def open_videos(jobs: dict[str, float], *, workers: int, cache: dict, progress: bool) -> dict[str, dict]:
    """`path -> verdict` (each probed at its file time); verdicts of unchanged files (same size
    and mtime as in the previous report) are reused. Worker processes, as `opening.open_all`:
    a decoder that crashes costs its file, not the run."""
    out, todo = {}, []
    for p, t in jobs.items():
        key, prev = file_key(p), cache.get(p)
        if key is not None and prev is not None and prev.get("key") == key and "fps" in prev:
            out[p] = prev
        else:
            todo.append((p, t))
    workers = workers or min(8, os.cpu_count() or 1)
    with _progress(progress and bool(todo), len(todo), "ava: opening videos") as advance:
        if workers <= 1 or len(todo) <= 1:
            with verdicts_kept(out):
                for p, t in todo:
                    verdict = {"key": file_key(p), **probe_video(p, t)}
                    out[p] = verdict
                    advance(1)
            return out
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                      initializer=ignore_interrupts)
        with verdicts_kept(out, pool):
            futures = {pool.submit(_probe_many, [job]): job for job in todo}
            for fut in cf.as_completed(futures):
                p, t = futures[fut]
                try:
                    verdict = fut.result()[0]
                except Exception as e:  # the worker died: a native crash on this file
                    verdict = {"ok": False, "fps": None, "frames": None, "duration_s": None,
                               "error": f"the decoder crashed on this file ({type(e).__name__})"}
                out[p] = {"key": file_key(p), **verdict}
                advance(1)
    return out


# ----- prepare ----------------------------------------------------------------------------------

def read(root: Path, annotations: Path | None = None):
    """AVA has no `path label` manifests for the generic code (e.g. label-efficiency splits)."""
    raise DataError("ava's data are boxes at keyframes, not `path label` manifests: prepare it with "
                    "`harness data prepare ava --root DIR` (tasks.native.ava.prepare)")


def prepare(root: Path, out: Path, *, annotations: Path | None = None, verify: bool = True,
            workers: int = 0, progress: bool = True, stop=None) -> dict:
    """Read AVA's native layout under `root`, write the prepared files into `out`, return (and
    write) the report; see the module doc. `stop`: as `tasks.native.prepare`'s (a signal stops
    at once, except while the prepared files are written, all or none)."""
    from . import open_files
    from .common import forget_progress

    t0 = time.time()
    root, out = Path(root), Path(out)
    ann_dirs = [Path(annotations)] if annotations else [root / "annotations", root]

    def find(names: list[str]) -> Path | None:
        for d in ann_dirs:
            p = first_existing(d, names)
            if p is not None:
                return p
        return None

    problems: list[Problem] = []
    notes: list[str] = []
    label_path = find(LABEL_MAP_NAMES)
    shipped = shipped_label_map()
    if label_path is not None:
        label_map = read_label_map_file(label_path)
        labels_source = str(label_path)
        if label_map != shipped:
            notes.append(f"the label map {label_path} differs from the canonical 60 classes shipped "
                         "in tasks/native/ava_classes.txt: numbers are comparable only with runs "
                         "on the same label map (it is part of the protocol)")
    else:
        label_map, labels_source = shipped, "shipped tasks/native/ava_classes.txt (the 60 classes " \
                                            "of ava_action_list_v2.2_for_activitynet_2019.pbtxt)"
        notes.append("no ava_action_list_v2.2_for_activitynet_2019.pbtxt found: used the shipped list")
    evaluated = {aid for aid, _ in label_map}

    folder, start_s, videos, dup = find_videos(root)
    problems += dup
    notes.append(f"videos: {folder}/ ({'full movies, timestamps are movie time' if start_s == 0 else 'the 15-minute cuts, timestamp t is at t - 900 s'}); "
                 f"{len(videos)} found")

    # Read every split's rows first; videos are opened once for all splits afterwards.
    gt: dict[str, list[BoxRow]] = {}
    excluded: dict[str, set[tuple[str, int]]] = {}
    proposals: dict[str, list[BoxRow]] = {}
    listed: dict[str, int] = {}
    first_line: dict[str, tuple[str, str]] = {}   # video id -> (split, where) of its first row
    gt_paths: dict[str, Path | None] = {}
    for split in SPLITS:
        ex_path = find(EXCLUDED_NAMES[split])
        excluded[split] = set()
        if ex_path is not None:
            rows, bad = read_keyframes(ex_path)
            problems += [Problem("malformed", f"{ex_path}:{n}", why, split=split) for n, why in bad]
            excluded[split] = {(v, t) for v, t, _ in rows}
        else:
            notes.append(f"{split}: no excluded-timestamps file ({EXCLUDED_NAMES[split][0]}); none excluded")
        gt_path = find(GT_NAMES[split])
        gt_paths[split] = gt_path
        if gt_path is None:
            notes.append(f"{split}: no {GT_NAMES[split][0]} under {', '.join(map(str, ann_dirs))}")
            continue
        rows, bad = read_box_rows(gt_path, proposals=False)
        listed[split] = len(rows) + len(bad)
        problems += [Problem("malformed", f"{gt_path}:{n}", why, split=split) for n, why in bad]
        kept, seen, outside, dropped_excluded = [], {}, defaultdict(int), 0
        for r in rows:
            where = f"{gt_path}:{r.line}"
            if r.action_id not in ALL_ACTION_IDS:
                problems.append(Problem("unknown_label", where, f"action id {r.action_id} is not "
                                        "one of AVA's 80 (1..80)", split=split))
                continue
            if r.action_id not in evaluated:
                outside[r.action_id] += 1
                continue
            key = (r.video_id, r.timestamp, r.box, r.action_id, r.person_id)
            if key in seen:
                problems.append(Problem("duplicate", where, f"repeats line {seen[key]}; kept once",
                                        split=split))
                continue
            seen[key] = r.line
            if (r.video_id, r.timestamp) in excluded[split]:
                dropped_excluded += 1
                continue
            first_line.setdefault(r.video_id, (split, where))
            kept.append(r)
        if outside:
            ids = ", ".join(str(a) for a in sorted(outside))
            notes.append(f"{split}: {sum(outside.values())} rows of actions outside the "
                         f"{len(evaluated)} evaluated classes dropped (ids {ids})")
        if dropped_excluded:
            notes.append(f"{split}: {dropped_excluded} rows at excluded timestamps dropped")
        gt[split] = kept
        prop_path = find(PROPOSAL_NAMES[split])
        if prop_path is not None:
            rows, bad = read_box_rows(prop_path, proposals=True)
            problems += [Problem("malformed", f"{prop_path}:{n}", why, split=split) for n, why in bad]
            proposals[split] = rows
        elif split == "val":
            notes.append(f"val: no person proposals ({PROPOSAL_NAMES['val'][0]}, e.g. SlowFast's "
                         "detector boxes): evaluation needs them")
    if not gt:
        raise DataError(f"ava: no annotation CSV found; expected {layout()}")

    # Missing videos: one problem per video (its first row), its rows dropped.
    usable: set[str] = set()
    for vid, (split, where) in first_line.items():
        if vid in videos:
            usable.add(vid)
        else:
            n = sum(1 for s in gt.values() for r in s if r.video_id == vid)
            problems.append(Problem("missing", where, f"video {vid} not found in {folder}/ "
                                    f"({n} rows dropped)", split=split))

    # Open each used video at its middle keyframe; keyframes past a file's end are dropped.
    verdicts: dict = {}
    too_short: dict[str, float] = {}
    if verify:
        times, rows_of = defaultdict(list), defaultdict(list)
        for split, rows in gt.items():
            for r in rows:
                if r.video_id in usable:
                    times[r.video_id].append(r.timestamp)
                    rows_of[r.video_id].append((split, r))
        jobs = {videos[v]: sorted(ts)[len(ts) // 2] - start_s for v, ts in times.items()}
        verdicts = open_files(jobs, out, stop, opener=open_videos, workers=workers,
                              progress=progress)
        for vid in sorted(times):
            v = verdicts[videos[vid]]
            split, where = first_line[vid]
            if not v["ok"]:
                problems.append(Problem("unreadable", where, v["error"], path=videos[vid], split=split))
                usable.discard(vid)
                continue
            end = start_s + v["duration_s"]
            late = [(s, r) for s, r in rows_of[vid] if r.timestamp >= end]
            if late:
                too_short[vid] = end
                s, r = min(late, key=lambda sr: (sr[1].timestamp, sr[1].line))
                hint = (" (shorter than 902 s: a 15-minute cut in videos/? cuts go in videos_15min/)"
                        if start_s == 0 and v["duration_s"] < FIRST_KEYFRAME else "")
                problems.append(Problem("too_short", f"{gt_paths[s]}:{r.line}", f"video {vid} ends at "
                                        f"{end:.2f} s of movie time; {len(late)} rows at keyframes "
                                        f"from {r.timestamp} on dropped{hint}", path=videos[vid],
                                        split=s))

    def keep(r: BoxRow) -> bool:
        return r.video_id in usable and not (r.video_id in too_short and r.timestamp >= too_short[r.video_id])

    from ..manifest import output_folder

    with holding(stop):
        output_folder(out)
        report = _write_prepared(out, gt, proposals, excluded, listed, usable, keep, label_map,
                                 videos, verdicts, start_s, notes)
        report.update({"root": str(root), "labels_source": labels_source, "verified": bool(verify),
                       "problem_counts": problems_by_kind(problems), "notes": notes,
                       "problems": as_json(problems), "seconds": round(time.time() - t0, 2),
                       "files": verdicts})
        write_report(out / PREPARE_REPORT, report)
        forget_progress(out)
    return report


def _write_prepared(out, gt, proposals, excluded, listed, usable, keep, label_map, videos,
                    verdicts, start_s, notes) -> dict:
    """The prepared files (see `OUTPUTS`), each written atomically; the report's first keys."""
    def put(name: str, text: str) -> None:
        atomic_write_text(out / name, text)

    counts = {}
    for split, rows in gt.items():
        written = [r for r in rows if keep(r)]
        put(OUTPUTS["gt"].format(split=split), "".join(format_gt(r) for r in written))
        put(OUTPUTS["excluded"].format(split=split),
            "".join(f"{v},{t:04d}\n" for v, t in sorted(excluded[split]) if v in usable))
        counts[split] = {"listed": listed[split], "written": len(written),
                         "keyframes": len({(r.video_id, r.timestamp) for r in written}),
                         "videos": len({r.video_id for r in written})}
        if split in proposals:
            props = [r for r in proposals[split] if keep(r)]
            dropped = len(proposals[split]) - len(props)
            if dropped:
                notes.append(f"{split}: {dropped} proposals of videos not prepared (missing, unreadable "
                             "or past the end) dropped")
            put(OUTPUTS["proposals"].format(split=split), "".join(format_proposal(r) for r in props))
            counts[split]["proposals"] = len(props)
    put(OUTPUTS["classes"], "".join(f"{name}\n" for _, name in label_map))
    put(OUTPUTS["label_map"], "".join(f"{aid}\t{name}\n" for aid, name in label_map))
    lines = [VIDEOS_HEADER + "\n"]
    for vid in sorted(usable):
        path = manifest_path_text(videos[vid], out)
        v = verdicts.get(videos[vid]) or {}
        fps = "" if v.get("fps") is None else num_text(v["fps"])
        dur = "" if v.get("duration_s") is None else num_text(v["duration_s"])
        lines.append(f"{vid},{path},{num_text(start_s)},{fps},{dur}\n")
    put(OUTPUTS["videos"], "".join(lines))
    return {"task": "ava", "root": None, "out": str(out), "layout": layout(), "labels_source": None,
            "num_classes": len(label_map), "splits": counts}
