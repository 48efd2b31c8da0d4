"""GRASP level 2 as published: `ROOT/P_<property>/<name>.mp4` (possible) and
`ROOT/IP_<property>/<name>.mp4` (impossible), a pair being the two files of one name under the
two folders of one property (the authors' `GRASPDataset` in facebookresearch/jepa-intuitive-physics
lists `P_<property>/` and reads the twin from `IP_<property>/`). The 16 properties the paper
reports are `PROPERTIES`; a folder pair of another name is prepared too and named in the notes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import DataError
from .common import Problem
from .voe_common import VoERead

PROPERTIES = ("Collision", "Continuity", "Gravity", "GravityContinuity", "GravityInertia",
              "GravityInertia2", "GravitySupport", "Inertia", "Inertia2", "ObjectPermanence",
              "ObjectPermanence2", "ObjectPermanence3", "SolidityContinuity", "SolidityContinuity2",
              "Unchangeableness", "Unchangeableness2")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov")
SPLIT = "level2"


def layout() -> str:
    return ("ROOT/P_<property>/<name>.mp4 and ROOT/IP_<property>/<name>.mp4 (GRASP level 2; ROOT "
            "may also be the folder holding level2/)")


def prepare(root, out, **kw) -> dict:
    from .voe_common import prepare_voe

    return prepare_voe(sys.modules[__name__], "grasp", Path(root), Path(out), **kw)


def _videos(folder: Path) -> dict[str, str]:
    return {n: str(folder / n) for n in sorted(os.listdir(folder))
            if n.lower().endswith(VIDEO_EXTENSIONS) and not n.startswith(".") and (folder / n).is_file()}


def read_pairs(root: Path, annotations: Path | None = None, *, progress: bool = False) -> VoERead:
    from ..voe import VoEItem, VoEPair

    root = Path(root)
    if not any(d.startswith("P_") for d in os.listdir(root)) and (root / "level2").is_dir():
        root = root / "level2"
    props = sorted(d[2:] for d in os.listdir(root) if d.startswith("P_") and (root / d).is_dir())
    impossible_only = sorted(d[3:] for d in os.listdir(root)
                             if d.startswith("IP_") and (root / d).is_dir() and d[3:] not in props)
    if not props and not impossible_only:
        raise DataError(f"grasp: no P_<property>/ folders under {root}; expected {layout()}")
    read = VoERead("grasp", {SPLIT: []}, source="folder names: P_ possible, IP_ impossible")
    for prop in impossible_only:
        read.problems.append(Problem("unmatched", f"IP_{prop}/", "no P_ folder for this property; "
                                     "its videos are left out", path=str(root / f"IP_{prop}"), split=SPLIT))
    others = [p for p in props if p not in PROPERTIES]
    if others:
        read.notes.append(f"properties beyond the paper's 16: {', '.join(others)} (prepared too)")
    absent = [p for p in PROPERTIES if p not in props]
    if absent:
        read.notes.append(f"the paper's properties not found: {', '.join(absent)}")
    for prop in props:
        possible = _videos(root / f"P_{prop}")
        ip = root / f"IP_{prop}"
        impossible = _videos(ip) if ip.is_dir() else {}
        for name in sorted(set(possible) | set(impossible)):
            if name not in impossible or name not in possible:
                have, lack = ("P", "IP") if name in possible else ("IP", "P")
                read.problems.append(Problem("unmatched", f"{have}_{prop}/{name}",
                                             f"no twin {lack}_{prop}/{name}; left out",
                                             path=possible.get(name) or impossible.get(name), split=SPLIT))
                continue
            stem = os.path.splitext(name)[0]
            read.pairs[SPLIT].append(VoEPair(
                f"{prop}/{stem}", prop, VoEItem(possible[name], f"P_{prop}/{name}", True),
                VoEItem(impossible[name], f"IP_{prop}/{name}", False)))
    return read
