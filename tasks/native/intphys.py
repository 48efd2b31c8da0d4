"""IntPhys (2019) dev set as published: `ROOT/{O1,O2,O3}/<scene>/{1,2,3,4}/scene/*.png` (100
numbered frames per movie; `depth/` and `masks/` beside `scene/` are not read) and
`.../{1..4}/status.json`, whose `header.is_possible` labels the movie. Each scene is a
quadruplet: two possible and two impossible movies.

Pairs are matched where the frames diverge, as the authors' evaluation does
(`get_breaking_points` / `get_matches` in facebookresearch/jepa-intuitive-physics): movie 1 is
paired with the movie whose frames stay equal to its own the longest, the other two with each
other. Each pair must then hold one possible and one impossible movie (else `unmatched`). The
frame where a pair's movies first differ is recorded (`diverge_frame`, in source frames; the
authors compare after subsampling and resizing, which can only agree with it or come later).
The block (O1, O2, O3) is the pair's property, as in the paper's per-block numbers.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .common import Problem, load_json
from .voe_common import VoERead

BLOCKS = ("O1", "O2", "O3")
MOVIES = ("1", "2", "3", "4")
SPLIT = "dev"


def layout() -> str:
    return ("ROOT/{O1,O2,O3}/<scene>/{1,2,3,4}/scene/*.png with ROOT/.../{1,2,3,4}/status.json "
            "(IntPhys dev; ROOT may also be the folder holding dev/)")


def prepare(root, out, **kw) -> dict:
    import sys

    from .voe_common import prepare_voe

    return prepare_voe(sys.modules[__name__], "intphys", Path(root), Path(out), **kw)


def _label(status: Path) -> tuple[bool | None, str | None]:
    """(is_possible, problem)."""
    if not status.is_file():
        return None, "status.json not found (it holds the movie's label)"
    try:
        doc = load_json(status, "IntPhys status.json")
        value = doc["header"]["is_possible"]
    except DataError as e:
        return None, str(e)
    except (KeyError, TypeError):
        return None, "no header.is_possible in status.json"
    if not isinstance(value, bool):
        return None, f"header.is_possible is {value!r}, not true/false"
    return value, None


def match(frames: list) -> list[tuple[int, int, int]]:
    """(a, b, first differing frame) for the two pairs of a quadruplet: movie 0 with the movie
    that stays equal to it longest (the first such, as numpy's argmax), the others together."""
    from ..voe import first_difference

    breaks = [first_difference(frames[0], frames[k]) for k in (1, 2, 3)]
    partner = 1 + max(range(3), key=lambda k: (breaks[k], -k))
    a, b = [k for k in (1, 2, 3) if k != partner]
    return [(0, partner, breaks[partner - 1]), (a, b, first_difference(frames[a], frames[b]))]


def _read_all(folder: Path):
    from ..voe import VoEItem, load_video

    return load_video(VoEItem(str(folder)))


def read_pairs(root: Path, annotations: Path | None = None, *, progress: bool = False) -> VoERead:
    from common.progress import Bar

    from ..voe import VoEItem, VoEPair

    root = Path(root)
    if not any((root / b).is_dir() for b in BLOCKS) and (root / SPLIT).is_dir():
        root = root / SPLIT
    blocks = [b for b in BLOCKS if (root / b).is_dir()]
    if not blocks:
        raise DataError(f"intphys: no O1/, O2/ or O3/ under {root}; expected {layout()}")
    read = VoERead("intphys", {SPLIT: []}, source="status.json header.is_possible of each movie")
    scenes = [(b, s) for b in blocks for s in sorted(os.listdir(root / b)) if (root / b / s).is_dir()]
    with Bar(progress) as bar:
        t = bar.add("intphys: matching quadruplets", total=len(scenes), info="")
        for block, scene in scenes:
            bar.update(t, advance=1)
            _scene(read, root, block, scene, VoEItem, VoEPair)
    return read


def _scene(read: VoERead, root: Path, block: str, scene: str, VoEItem, VoEPair) -> None:
    from ..errors import DecodeError

    where = f"{block}/{scene}"
    folders = [root / block / scene / m / "scene" for m in MOVIES]
    absent = [f for f in folders if not f.is_dir() or not os.listdir(f)]
    for f in absent:
        read.problems.append(Problem("missing", where, "frame folder not found (or empty); the "
                                     "scene's pairs are left out", path=str(f), split=SPLIT))
    if absent:
        return
    labels = []
    for m in MOVIES:
        value, problem = _label(root / block / scene / m / "status.json")
        if problem:
            read.problems.append(Problem("missing", f"{where}/{m}", problem + "; the scene's pairs "
                                         "are left out", path=str(root / block / scene / m),
                                         split=SPLIT))
        labels.append(value)
    if None in labels:
        return
    try:
        frames = [_read_all(f) for f in folders]
    except (DecodeError, DataError) as e:
        read.problems.append(Problem("unreadable", where, f"{e}; the scene's pairs are left out",
                                     split=SPLIT))
        return
    for a, b, diverge in match(frames):
        if labels[a] == labels[b]:
            read.problems.append(Problem(
                "unmatched", f"{where}/{MOVIES[a]}+{MOVIES[b]}",
                f"movies {MOVIES[a]} and {MOVIES[b]} stay identical longest (to frame {diverge}) but "
                f"both are {'possible' if labels[a] else 'impossible'}", split=SPLIT))
            continue
        good, bad = (a, b) if labels[a] else (b, a)
        good_item, bad_item = (VoEItem(str(folders[k]), f"{block}/{scene}/{MOVIES[k]}", labels[k])
                               for k in (good, bad))
        read.pairs[SPLIT].append(VoEPair(f"{block}/{scene}/{MOVIES[good]}-{MOVIES[bad]}", block,
                                         good_item, bad_item, diverge_frame=diverge,
                                         meta={"scene": scene}))
