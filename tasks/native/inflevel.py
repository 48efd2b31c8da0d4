"""InfLevel-lab, paired as the V-JEPA intuitive-physics evaluation pairs it: the videos under
`ROOT/<property>/*.mp4` and one CSV per property, `{continuity,gravity,solidity}.csv`, shipped
with facebookresearch/jepa-intuitive-physics (`evaluation_code/auxiliary_data_loading_files/
inflevel/`, CC-BY-NC: not copied here; point --annotations at that folder, or put the CSVs in
ROOT). A row is one pair: `vid1_path, vid1_start_priming_1, vid1_end_priming_1,
vid1_start_priming_2, vid1_end_priming_2, vid1_label` and the same six for vid2, paths
relative to ROOT, labels `possible` / `impossible`.

Two splits: `lab` (the paper's number) cuts each video's priming segment, keeping the frames
after `end_priming_2`; `lab_priming` keeps whole videos. In both the longer video of a pair
then loses frames at its front until the two are equally long (`align_end`), as the authors'
`InfLevelDataset` does.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from ..errors import DataError
from .common import Problem, annotation_file
from .voe_common import VoERead

PROPERTIES = ("continuity", "gravity", "solidity")
COLUMNS = tuple(f"vid{k}_{c}" for k in (1, 2) for c in (
    "path", "start_priming_1", "end_priming_1", "start_priming_2", "end_priming_2", "label"))
CSV_FOLDERS = ("", "auxiliary_data_loading_files/inflevel", "evaluation_code/auxiliary_data_loading_files/inflevel")
SPLITS = ("lab", "lab_priming")


def layout() -> str:
    return ("ROOT/<property>/*.mp4 (InfLevel-lab) and {continuity,gravity,solidity}.csv from "
            "facebookresearch/jepa-intuitive-physics (evaluation_code/auxiliary_data_loading_files/"
            "inflevel/) in ROOT or --annotations DIR")


def prepare(root, out, **kw) -> dict:
    from .voe_common import prepare_voe

    return prepare_voe(sys.modules[__name__], "inflevel", Path(root), Path(out), **kw)


def _csv(folder: Path, prop: str) -> Path | None:
    return next((folder / sub / f"{prop}.csv" for sub in CSV_FOLDERS
                 if (folder / sub / f"{prop}.csv").is_file()), None)


def _int(row: dict, key: str) -> int:
    v = int(str(row[key]).strip())
    if v < 0:
        raise ValueError(f"{key} is negative")
    return v


def read_pairs(root: Path, annotations: Path | None = None, *, progress: bool = False) -> VoERead:
    from ..voe import VoEItem, VoEPair

    root = Path(root)
    ann = Path(annotations) if annotations else root
    read = VoERead("inflevel", {s: [] for s in SPLITS},
                   source="vid1_label / vid2_label of the authors' per-property CSVs")
    found = 0
    for prop in PROPERTIES:
        path = _csv(ann, prop)
        if path is None:
            read.notes.append(f"{prop}: no {prop}.csv under {ann}; property not prepared")
            continue
        found += 1
        seen: dict[str, str] = {}
        ids: set[str] = set()
        with annotation_file(path, "InfLevel pair list", newline="") as f:
            reader = csv.DictReader(f)
            missing_cols = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing_cols:
                raise DataError(f"{path}: missing column(s) {', '.join(missing_cols)}; is this the "
                                f"authors' InfLevel pair list?")
            for lineno, row in enumerate(reader, start=2):
                where = f"{path}:{lineno}"
                try:
                    vids = [(str(row[f"vid{k}_path"]).strip(), _int(row, f"vid{k}_end_priming_2"),
                             str(row[f"vid{k}_label"]).strip().lower()) for k in (1, 2)]
                except (TypeError, ValueError) as e:
                    read.problems.append(Problem("malformed", where, f"{e}"[:200], split="lab"))
                    continue
                if sorted(v[2] for v in vids) != ["impossible", "possible"]:
                    read.problems.append(Problem("malformed", where, f"labels {vids[0][2]!r} and "
                                                 f"{vids[1][2]!r}: a pair is one possible and one "
                                                 f"impossible video", split="lab"))
                    continue
                key = f"{vids[0][0]}|{vids[1][0]}"
                if key in seen:
                    read.problems.append(Problem("duplicate", where, f"pair listed again (first at "
                                                 f"{seen[key]})", split="lab"))
                    continue
                seen[key] = where
                absent = [v[0] for v in vids if not (root / v[0]).is_file()]
                for rel in absent:
                    read.problems.append(Problem("missing", where, f"{rel} not found under the data "
                                                 f"root; the pair is left out", path=str(root / rel),
                                                 split="lab"))
                if absent:
                    continue
                good, bad = vids if vids[0][2] == "possible" else vids[::-1]
                pair_id = f"{prop}/{Path(good[0]).stem}"
                if pair_id in ids:  # one possible video in two rows: the row tells them apart
                    pair_id += f"@{lineno}"
                ids.add(pair_id)
                meta = {"csv": f"{path.name}:{lineno}", "end_priming_2": [good[1], bad[1]]}
                for split, cut in (("lab", True), ("lab_priming", False)):
                    read.pairs[split].append(VoEPair(
                        pair_id, prop,
                        VoEItem(str(root / good[0]), good[0], True, good[1] + 1 if cut else 0),
                        VoEItem(str(root / bad[0]), bad[0], False, bad[1] + 1 if cut else 0),
                        align_end=True, meta=meta))
    if not found:
        raise DataError(f"inflevel: none of {', '.join(p + '.csv' for p in PROPERTIES)} under "
                        f"{ann}; expected {layout()}")
    return read
