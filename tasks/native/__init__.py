"""Datasets in their publishers' formats -> the project's manifests (`path label`) + label map.

One small module per dataset reads the publisher's annotation files (`read(root) -> Prepared`);
`prepare` opens every file it found (in parallel workers), writes `{split}.csv`, `classes.txt`
and `prepare_report.json` into the output folder, and returns the report: every sample the
publisher lists that is missing, unreadable, too short, mislabelled or malformed, line by line.
`check` does the same for a task's existing manifests. Both are safe to re-run: files are
written atomically (`common.atomic`), and a file already opened with the same size and mtime is
not reopened.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import DataError
from ..registry import build, config
from .common import (CHECK_REPORT, DROPPING, PREPARE_PROGRESS, PREPARE_REPORT, PREPARERS, Problem,
                     as_json, forget_progress, preparer, previous_verdicts, problems_by_kind,
                     save_progress, write_prepared, write_report)
from .opening import open_all
from .stopping import StopOnSignals, Stopped, holding

__all__ = ["PREPARERS", "PREPARE_REPORT", "PREPARE_PROGRESS", "CHECK_REPORT", "prepare", "check",
           "layout", "preparer", "StopOnSignals", "Stopped"]


def layout(task: str) -> str:
    """The on-disk layout `prepare` expects for `task`, in one line."""
    return preparer(task).layout()


def _min_frames(task: str) -> int:
    """Frames one clip spans under the task's protocol (frames_per_clip x frame_step): a shorter
    video is what the release calls too short (it pads such clips by repeating frames)."""
    try:
        cfg = config(task)
    except Exception:
        return 0
    if (cfg.get("kind") or "video") != "video":
        return 0
    s = cfg.get("sampling") or {}
    return int(s.get("frames_per_clip", 0)) * int(s.get("frame_step", 1))


def prepare(task: str, root: str | os.PathLike, out: str | os.PathLike | None = None, *,
            annotations: str | os.PathLike | None = None, verify: bool = True, workers: int = 0,
            progress: bool = True, stop: StopOnSignals | None = None) -> dict:
    """Read `task`'s native layout under `root`, write manifests + label map into `out`
    (default `root`), return (and write) the report. `verify`: open every found file and keep
    unreadable ones out of the manifests. `stop` (`tasks.native.stopping.StopOnSignals`): a
    signal stops the work at once (`Stopped`), except while the manifests, label map and
    report are written (all of them, or none); verdicts of files opened before a stop are kept
    in OUT/prepare_progress.json, and a re-run opens only the others."""
    root = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not root.is_dir():
        raise DataError(f"{task}: data root {root} is not a folder; expected {layout(task)}")
    out = Path(os.path.abspath(os.path.expanduser(str(out)))) if out is not None else root
    if hasattr(preparer(task), "prepare"):  # AVA: boxes at keyframes, its own files and report
        return preparer(task).prepare(root, out, annotations=annotations, verify=verify,
                                      workers=workers, progress=progress, stop=stop)
    t0 = time.time()
    prepared = preparer(task).read(root, **({"annotations": Path(annotations)} if annotations else {}))
    problems = list(prepared.problems)
    dropped: set[tuple[str, int]] = set()
    verdicts: dict = {}
    if verify:
        found = [s.path for samples in prepared.samples.values() for s in samples if s.path]
        verdicts = open_files(found, out, stop, workers=workers, progress=progress,
                              label=f"{task}: opening files")
        problems += _verdict_problems(prepared.samples, verdicts, _min_frames(task), dropped)
    with holding(stop):
        counts = write_prepared(prepared, out, dropped)
        report = {
            "task": task, "root": str(root), "out": str(out), "layout": layout(task),
            "labels_source": prepared.labels_source, "num_classes": len(prepared.classes),
            "splits": counts, "verified": bool(verify),
            "problem_counts": problems_by_kind(problems), "notes": prepared.notes,
            "problems": as_json(problems), "seconds": round(time.time() - t0, 2), "files": verdicts,
        }
        write_report(out / PREPARE_REPORT, report)
        forget_progress(out)
    return report


def open_files(paths, out: Path, stop: StopOnSignals | None, *, opener=None, **kw) -> dict:
    """`opener(paths, cache=...)` (default `open_all`) with the verdicts of the last report
    and of an interrupted run's progress file as its cache; on a stop, the verdicts reached
    are saved to the progress file (whole, before `Stopped` goes on)."""
    opener = opener or open_all
    cache = {**previous_verdicts(out / PREPARE_REPORT), **previous_verdicts(out / PREPARE_PROGRESS)}
    try:
        return opener(paths, cache=cache, **kw)
    except Stopped as stopped:
        reached = getattr(stopped, "verdicts", None)
        if reached:
            total = len(dict.fromkeys(paths))
            with holding(stop):
                stopped.saved = save_progress(out, {**cache, **reached}, stopped,
                                              opened=len(reached), total=total)
            stopped.opened, stopped.total = len(reached), total
        raise


def _verdict_problems(samples_by_split, verdicts, min_frames: int, dropped: set) -> list[Problem]:
    problems = []
    for split, samples in samples_by_split.items():
        for i, s in enumerate(samples):
            if s.path is None:
                continue
            v = verdicts.get(s.path)
            if v is None:
                continue
            if not v["ok"]:
                problems.append(Problem("unreadable", s.where, v["error"], path=s.path, split=split))
                dropped.add((split, i))
            elif min_frames and v["frames"] is not None and v["frames"] < min_frames:
                problems.append(Problem("too_short", s.where, f"{v['frames']} frames, fewer than one "
                                        f"clip spans ({min_frames}); kept (clips repeat frames)",
                                        path=s.path, split=split))
    return problems


def check(task_name: str, root: str | os.PathLike | None = None, *, workers: int = 0,
          progress: bool = True, report_path: str | os.PathLike | None = None,
          stop: StopOnSignals | None = None, **overrides) -> dict:
    """Open every file of a task's manifests; report missing, unreadable, too-short and
    mislabelled entries and duplicate lines, and write the report (default ROOT/check_report.json)."""
    task = build(task_name, root=root, **overrides)
    if task.spec.kind == "detection":
        # Its files are box tables over long videos: `prepare` is its check (it opens every
        # video by seeking, and re-running it reopens only changed files).
        raise DataError(f"{task_name}: `harness data check` reads `path label` manifests; for a "
                        f"detection task re-run `harness data prepare {task_name} --root DIR`, "
                        f"which checks every row and opens every video")
    names = task.class_names if task.paths.get("labels") else None
    index = {n: i for i, n in enumerate(names)} if names else {}
    t0 = time.time()
    report_path = Path(report_path) if report_path else task.root / CHECK_REPORT
    problems: list[Problem] = []
    per_split = {}
    paths_by_split = {}
    notes = []
    for split in task.splits:
        if split not in ("train", task.eval_split) and not task.paths[split].is_file():
            notes.append(f"{split}: no manifest {task.paths[split]}; not checked")
            continue
        manifest = task.manifest_path(split)
        entries = task.entries(split)
        paths_by_split[split] = (manifest, entries)
    present = [p for _, entries in paths_by_split.values() for p, _ in entries if os.path.exists(p)]
    verdicts = open_all(present, workers=workers, cache=previous_verdicts(report_path),
                        progress=progress, label=f"{task_name}: opening files")
    min_frames = (task.spec.sampling.frames_per_clip * task.spec.sampling.frame_step
                  if task.spec.kind in ("video", "multilabel") else 0)
    for split, (manifest, entries) in paths_by_split.items():
        seen: dict[str, int] = {}
        bad = 0
        for n, (path, label) in enumerate(entries, start=1):
            where = f"{manifest} entry {n}"
            if path in seen:
                problems.append(Problem("duplicate", where, f"repeats entry {seen[path]}", path, split))
            seen.setdefault(path, n)
            if not os.path.exists(path):
                problems.append(Problem("missing", where, "file not found", path, split))
                bad += 1
                continue
            v = verdicts[path]
            if not v["ok"]:
                problems.append(Problem("unreadable", where, v["error"], path, split))
                bad += 1
            elif min_frames and v["frames"] is not None and v["frames"] < min_frames:
                problems.append(Problem("too_short", where, f"{v['frames']} frames, fewer than one "
                                        f"clip spans ({min_frames})", path, split))
            folder = Path(path).parent.name
            # A class folder names one class: only single-label entries can disagree with it.
            if folder in index and not isinstance(label, tuple) and index[folder] != label:
                problems.append(Problem("mislabelled", where, f"label {label} ({names[label]!r}) but "
                                        f"in the class folder {folder!r} (class {index[folder]})",
                                        path, split))
        per_split[split] = {"manifest": str(manifest), "entries": len(entries),
                            "usable": len(entries) - bad}
    report = {"task": task_name, "root": str(task.root), "splits": per_split, "notes": notes,
              "problem_counts": problems_by_kind(problems), "problems": as_json(problems),
              "seconds": round(time.time() - t0, 2), "files": verdicts}
    with holding(stop):
        write_report(report_path, report)
    report["report_path"] = str(report_path)
    return report


def dropping(kind: str) -> bool:
    return kind in DROPPING
