"""What the VoE preparers (IntPhys, GRASP, InfLevel-lab, IntPhys 2) share: open every video
they found, keep out the pairs with an unreadable or too-short video, and write one VoE
manifest per split (`tasks.voe`) plus `prepare_report.json`, the way `tasks.native.prepare`
does for the classification tasks (atomic files, stop handling, verdicts reused on a re-run).

A preparer's `read_pairs(root, annotations)` returns a `VoERead`: per split the pairs (and
unpaired held-out videos) it could form, and every problem met with the file and line it came
from: `missing` (a listed video not on disk), `unmatched` (a video whose twin is absent, or a
group whose labels do not make possible/impossible pairs), `malformed` (a line that cannot be
read), `duplicate`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import PREPARE_REPORT, Problem, as_json, forget_progress, write_report

# Report order of the problem kinds a VoE preparer meets.
VOE_PROBLEM_KINDS = ("malformed", "duplicate", "missing", "unmatched", "unreadable", "too_short")


@dataclass
class VoERead:
    task: str
    pairs: dict  # split -> [tasks.voe.VoEPair]
    videos: dict = field(default_factory=dict)  # split -> [tasks.voe.VoEItem] (unlabelled)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""


def counts_by_kind(problems: list[Problem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return {k: counts[k] for k in VOE_PROBLEM_KINDS if k in counts}


def _paths(read: VoERead) -> list[str]:
    out = []
    for pairs in read.pairs.values():
        for p in pairs:
            out += [p.possible.path, p.impossible.path]
    for videos in read.videos.values():
        out += [v.path for v in videos]
    return list(dict.fromkeys(out))


def _bad(item, verdicts: dict) -> tuple[str, str] | None:
    """(kind, detail) when the opened video cannot be scored: unreadable, or no frame after its cut."""
    v = verdicts.get(item.path)
    if v is None:
        return None
    if not v["ok"]:
        return "unreadable", v["error"]
    if v["frames"] is not None and v["frames"] <= item.start:
        return "too_short", f"{v['frames']} frames, none left after cutting the first {item.start}"
    return None


def prepare_voe(module, task: str, root: Path, out: Path, *, annotations=None, verify: bool = True,
                workers: int = 0, progress: bool = True, stop=None) -> dict:
    """`harness data prepare TASK` for a VoE task: read, open, write `{split}.json` + report."""
    from ..manifest import output_folder
    from ..voe import VoESet, write_voe_manifest
    from . import open_files
    from .stopping import holding

    t0 = time.time()
    read = module.read_pairs(root, Path(annotations) if annotations else None, progress=progress)
    problems = list(read.problems)
    verdicts: dict = {}
    if verify:
        verdicts = open_files(_paths(read), out, stop, workers=workers, progress=progress,
                              label=f"{task}: opening videos")
    kept: dict = {}
    for split, pairs in read.pairs.items():
        keep = []
        for p in pairs:
            bad = [(v, _bad(v, verdicts)) for v in (p.possible, p.impossible)]
            bad = [(v, b) for v, b in bad if b is not None]
            for v, (kind, detail) in bad:
                problems.append(Problem(kind, f"pair {p.pair_id}", f"{detail}; the pair is left out",
                                        path=v.path, split=split))
            if not bad:
                keep.append(p)
        kept[split] = keep
    videos: dict = {}
    for split, items in read.videos.items():
        videos[split] = []
        for v in items:
            b = _bad(v, verdicts)
            if b is not None:
                problems.append(Problem(b[0], f"video {v.name or v.path}", b[1], path=v.path, split=split))
            else:
                videos[split].append(v)
    with holding(stop):
        output_folder(out)
        splits = {}
        for split in sorted(set(kept) | set(videos)):
            path = write_voe_manifest(VoESet(task, split, kept.get(split, []), videos.get(split, [])),
                                      out / f"{split}.json")
            splits[split] = {"manifest": str(path),
                             "pairs_listed": len(read.pairs.get(split, [])),
                             "pairs_written": len(kept.get(split, [])),
                             "videos_written": len(videos.get(split, []))}
        report = {"task": task, "root": str(root), "out": str(out), "layout": module.layout(),
                  "labels_source": read.source, "num_classes": 2, "splits": splits,
                  "verified": bool(verify), "problem_counts": counts_by_kind(problems),
                  "notes": read.notes, "problems": as_json(problems),
                  "seconds": round(time.time() - t0, 2), "files": verdicts}
        write_report(out / PREPARE_REPORT, report)
        forget_progress(out)
    return report
