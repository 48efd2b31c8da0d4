"""The violation-of-expectation benchmarks from miniature replicas of their publishers' layouts:
IntPhys dev, GRASP level 2, InfLevel-lab (pairs from the authors' CSVs, priming cut), IntPhys 2
(Debug / Main pairs, HeldOut into a submission file). Every replica is built here."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from tasks.errors import DataError
from tasks.native import prepare
from tasks.voe import (
    VoEItem,
    first_difference,
    frame_indices,
    load_pair,
    load_video,
    read_voe_manifest,
    voe_spec,
)


def _flat(level: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), level, np.uint8)


def _mp4(path: Path, levels: list[int], size: int = 16) -> None:
    from tasks.digits import write_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, np.stack([_flat(v, size) for v in levels]), fps=8)


def _levels(frames: np.ndarray) -> list[int]:
    """Which flat frame each decoded frame is (levels are multiples of 8)."""
    return [round(float(f.mean()) / 8) for f in frames]


# -- IntPhys dev --------------------------------------------------------------------------

def _movie(folder: Path, frames: list[np.ndarray], possible: bool | None) -> None:
    (folder / "scene").mkdir(parents=True)
    for i, f in enumerate(frames, start=1):
        Image.fromarray(f).save(folder / "scene" / f"scene_{i:03d}.png")
    if possible is not None:
        (folder / "status.json").write_text(json.dumps({"header": {"is_possible": possible}}))


def _quadruplet(root: Path, block: str, scene: str, labels, *, a_break=6, b_break=4, n=10):
    """Movies 1 and 3 equal until `a_break`; 2 and 4 equal until `b_break`; 1 and 2 differ from
    frame 2 on (another setup)."""
    base = [_flat(2 * i) for i in range(n)]
    other = [_flat(2 * i) if i < 2 else _flat(2 * i + 1) for i in range(n)]
    m1 = base
    m3 = [f if i < a_break else _flat(250) for i, f in enumerate(base)]
    m2 = other
    m4 = [f if i < b_break else _flat(5) for i, f in enumerate(other)]
    for k, (frames, label) in enumerate(zip((m1, m2, m3, m4), labels), start=1):
        _movie(root / block / scene / str(k), frames, label)


@pytest.fixture(scope="module")
def intphys_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("intphys") / "dev"
    _quadruplet(root, "O1", "0001", [True, False, False, True])
    _quadruplet(root, "O2", "0002", [True, False, True, False])   # matched pairs share a label
    _quadruplet(root, "O3", "0003", [True, False, None, True])    # movie 3 has no status.json
    return root


def test_intphys_pairs_match_where_frames_diverge(intphys_root, tmp_path):
    out = tmp_path / "out"
    report = prepare("intphys", intphys_root.parent, out, workers=1, progress=False)
    voe = read_voe_manifest(out / "dev.json")
    assert [(p.pair_id, p.property, p.diverge_frame) for p in voe.pairs] == [
        ("O1/0001/1-3", "O1", 6), ("O1/0001/4-2", "O1", 4)]
    p = voe.pairs[0]
    assert (p.possible.possible, p.impossible.possible) == (True, False)
    good, bad = load_pair(p)
    assert good.shape == (10, 16, 16, 3) and first_difference(good, bad) == 6
    counts = report["problem_counts"]
    assert counts == {"missing": 1, "unmatched": 2}, report["problems"]
    unmatched = [q for q in report["problems"] if q["kind"] == "unmatched"]
    assert {q["where"] for q in unmatched} == {"O2/0002/1+3", "O2/0002/2+4"}
    assert "both are possible" in unmatched[0]["detail"] or "both are possible" in unmatched[1]["detail"]
    assert report["splits"]["dev"]["pairs_written"] == 2
    assert json.loads((out / "prepare_report.json").read_text())["task"] == "intphys"


def test_intphys_partner_is_the_movie_that_stays_equal_longest():
    from tasks.native.intphys import match

    a = np.stack([_flat(10 * i) for i in range(8)])
    late = a.copy(); late[5:] = 1
    early = a.copy(); early[1:] = 2
    early2 = early.copy(); early2[3:] = 3
    # movie 0's partner is movie 3 (equal until frame 5); movies 1 and 2 pair at frame 3
    assert match([a, early, early2, late]) == [(0, 3, 5), (1, 2, 3)]
    # a tie goes to the first (numpy's argmax, as the authors' get_matches)
    assert match([a, late, late.copy(), early]) == [(0, 1, 5), (2, 3, 1)]


def test_intphys_frames_as_the_authors_read_them():
    # 100 frames, every 2nd of the first 99 // 2 * 2 = 98: frames 0, 2, ..., 96 (49)
    assert frame_indices(100, frame_step=2, max_frames=99) == list(range(0, 98, 2))
    assert frame_indices(100, frame_step=3, max_frames=99) == list(range(0, 99, 3))
    with pytest.raises(DataError):
        frame_indices(5, start=5)


# -- GRASP level 2 -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grasp_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grasp") / "level2"
    for prop in ("Gravity", "ObjectPermanence"):
        for name in ("scene_a.mp4", "scene_b.mp4"):
            _mp4(root / f"P_{prop}" / name, [8 * i for i in range(6)])
            _mp4(root / f"IP_{prop}" / name, [8 * i for i in range(3)] + [200, 200, 200])
    _mp4(root / "P_Gravity" / "lonely.mp4", [8, 16, 24])            # no IP twin
    (root / "IP_ObjectPermanence" / "scene_b.mp4").write_bytes(b"\0" * 2048)  # corrupt twin
    _mp4(root / "IP_Teleport" / "x.mp4", [8, 16, 24])               # no P_ folder
    return root


def test_grasp_pairs_from_p_and_ip_folders(grasp_root, tmp_path):
    out = tmp_path / "out"
    assert main(["data", "prepare", "grasp", "--root", str(grasp_root.parent), "--out", str(out),
                 "--no-progress", "--workers", "1"]) == 0
    voe = read_voe_manifest(out / "level2.json")
    assert [p.pair_id for p in voe.pairs] == ["Gravity/scene_a", "Gravity/scene_b",
                                               "ObjectPermanence/scene_a"]
    assert voe.properties() == ["Gravity", "ObjectPermanence"]
    good, bad = load_pair(voe.pairs[0])
    assert _levels(good) == [0, 1, 2, 3, 4, 5] and _levels(bad)[:3] == [0, 1, 2]
    report = json.loads((out / "prepare_report.json").read_text())
    kinds = {(p["kind"], Path(p["path"]).name) for p in report["problems"]}
    assert ("unmatched", "lonely.mp4") in kinds and ("unmatched", "IP_Teleport") in kinds
    assert ("unreadable", "scene_b.mp4") in kinds
    assert report["splits"]["level2"] == {"manifest": str(out / "level2.json"), "pairs_listed": 4,
                                          "pairs_written": 3, "videos_written": 0}
    # frame_step as the authors' loader: every 10th frame of the whole video
    assert len(load_video(voe.pairs[0].possible, frame_step=4)) == 2


# -- InfLevel-lab --------------------------------------------------------------------------

def _inflevel_row(v1, e1, l1, v2, e2, l2):
    return [v1, 0, 0, e1 - 14, e1, l1, v2, 0, 0, e2 - 14, e2, l2]


@pytest.fixture(scope="module")
def inflevel(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("inflevel")
    root, csvs = base / "videos", base / "aux"
    _mp4(root / "continuity" / "a_vv.mp4", [8 * i for i in range(20)])
    _mp4(root / "continuity" / "a_vi.mp4", [8 * i for i in range(22)])
    _mp4(root / "continuity" / "b_ii.mp4", [8 * i for i in range(12)])
    _mp4(root / "continuity" / "b_iv.mp4", [8 * i for i in range(12)])
    csvs.mkdir()
    from tasks.native.inflevel import COLUMNS

    with open(csvs / "continuity.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerow(_inflevel_row("continuity/a_vv.mp4", 5, "possible", "continuity/a_vi.mp4", 6, "impossible"))
        # impossible listed first: swapped into place
        w.writerow(_inflevel_row("continuity/b_iv.mp4", 3, "impossible", "continuity/b_ii.mp4", 3, "possible"))
        w.writerow(_inflevel_row("continuity/gone.mp4", 3, "possible", "continuity/b_ii.mp4", 3, "impossible"))
        w.writerow(["continuity/a_vv.mp4", 0, 0, 0, "x", "possible", "continuity/a_vi.mp4", 0, 0, 0, 6, "impossible"])
        w.writerow(_inflevel_row("continuity/a_vv.mp4", 5, "possible", "continuity/b_ii.mp4", 3, "possible"))
    return root, csvs


def test_inflevel_pairs_from_the_csvs_with_the_priming_cut(inflevel, tmp_path):
    root, csvs = inflevel
    out = tmp_path / "out"
    report = prepare("inflevel", root, out, annotations=csvs, workers=1, progress=False)
    lab = read_voe_manifest(out / "lab.json")
    assert [p.pair_id for p in lab.pairs] == ["continuity/a_vv", "continuity/b_ii"]
    a = lab.pairs[0]
    assert (a.possible.start, a.impossible.start, a.align_end) == (6, 7, True)
    good, bad = load_pair(a, frame_step=2)
    # the authors' loader: diff = (20 - 5) - (22 - 6) = -1, so vid2 starts one frame later:
    # vid1 frames 6, 8, ..., 18 and vid2 frames 8, 10, ..., 20
    assert _levels(good) == list(range(6, 19, 2)) and _levels(bad) == list(range(8, 21, 2))
    b = lab.pairs[1]
    assert Path(b.possible.path).name == "b_ii.mp4" and b.impossible.possible is False
    # lab_priming keeps the priming segment: ends aligned (vid2 starts at 22 - 20 = 2)
    primed = read_voe_manifest(out / "lab_priming.json").pairs[0]
    good, bad = load_pair(primed, frame_step=2)
    assert _levels(good) == list(range(0, 19, 2)) and _levels(bad) == list(range(2, 21, 2))
    assert report["problem_counts"] == {"malformed": 2, "missing": 1}
    assert any("gravity.csv" in n for n in report["notes"])  # the properties without a CSV


def test_inflevel_without_its_csvs_says_where_they_are(inflevel, tmp_path):
    root, _ = inflevel
    with pytest.raises(DataError, match="jepa-intuitive-physics"):
        prepare("inflevel", root, tmp_path / "o", workers=1, progress=False)


# -- IntPhys 2 -----------------------------------------------------------------------------

META = ["SceneIndex", "name", "file_name", "game_name", "condition", "env", "type", "occluder",
        "Difficulty", "Camera"]


def _intphys2_split(folder: Path, rows: list[tuple], *, write=True, skip=()) -> None:
    folder.mkdir(parents=True)
    with open(folder / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(META)
        for scene, name, cond, typ in rows:
            w.writerow([scene, name, f"Videos/{name}.mp4", "Game", cond, "Level", typ, "None",
                        "Easy", "Fixed"])
            if write and name not in skip:
                _mp4(folder / "Videos" / f"{name}.mp4", [8, 16, 24, 32])


@pytest.fixture(scope="module")
def intphys2_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("intphys2") / "IntPhys2"
    _intphys2_split(root / "Main", [
        (0, "aa01", "solidity", "1_Possible"), (0, "aa02", "solidity", "1_Impossible"),
        (0, "aa03", "solidity", "2_Impossible"), (0, "aa04", "solidity", "2_Possible"),
        (1, "bb01", "permanence", "1_Possible"),                       # no twin
        (2, "cc01", "continuity", "1_Possible"), (2, "cc02", "continuity", "1_Impossible"),
        (3, "dd01", "immutability", "Possible"),                      # malformed type
    ], skip=("cc02",))                                                # cc02 missing on disk
    _intphys2_split(root / "Debug", [(7, "ee01", "permanence", "1_Possible"),
                                     (7, "ee02", "permanence", "1_Impossible")])
    held = root / "HeldOut"
    held.mkdir()
    with open(held / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "file_name"])
        for name in ("ff01", "ff02"):
            w.writerow([name, f"Videos/{name}.mp4"])
            _mp4(held / "Videos" / f"{name}.mp4", [8, 16, 24])
    return root


def test_intphys2_pairs_and_heldout(intphys2_root, tmp_path):
    out = tmp_path / "out"
    report = prepare("intphys2", intphys2_root.parent, out, workers=1, progress=False)
    main_set = read_voe_manifest(out / "main.json")
    assert [(p.pair_id, p.property, p.possible.name, p.impossible.name) for p in main_set.pairs] == [
        ("0/1", "solidity", "aa01", "aa02"), ("0/2", "solidity", "aa04", "aa03")]
    assert main_set.pairs[0].meta["Difficulty"] == "Easy"
    assert [p.pair_id for p in read_voe_manifest(out / "debug.json").pairs] == ["7/1"]
    held = read_voe_manifest(out / "heldout.json")
    assert held.pairs == [] and [v.name for v in held.videos] == ["ff01", "ff02"]
    assert all(v.possible is None for v in held.videos)
    assert report["problem_counts"] == {"malformed": 1, "missing": 1, "unmatched": 1}
    assert report["splits"]["heldout"]["videos_written"] == 2


def test_intphys2_heldout_submission_file(intphys2_root, tmp_path):
    from tasks.native.intphys2 import write_submission

    names = ["ff01", "ff02"]
    path = write_submission({"ff01": 0.25, "ff02": 1.5}, names, tmp_path / "submission.csv")
    assert path.read_text() == "name,score\nff01,0.25\nff02,1.5\n"
    with pytest.raises(DataError, match="no score"):
        write_submission({"ff01": 0.25}, names, tmp_path / "s2.csv")
    with pytest.raises(DataError, match="plain id"):
        write_submission({"=cmd|x": 1.0}, ["=cmd|x"], tmp_path / "s3.csv")
    with pytest.raises(DataError, match="not finite"):
        write_submission({"ff01": float("nan"), "ff02": 1.0}, names, tmp_path / "s4.csv")


# -- the authors' loaders on the same replicas ---------------------------------------------

AUTHORS = json.loads((Path(__file__).parent / "fixtures" / "voe_loaders" / "authors_loaders.json")
                     .read_text())


def test_loaders_agree_with_the_authors(grasp_root, inflevel, tmp_path):
    # IntPhys: a 100-frame quadruplet; the same 49 frames, the same pairs
    root = tmp_path / "intphys"
    _quadruplet(root, "O1", "0001", [True, False, False, True], n=100)
    prepare("intphys", root, tmp_path / "ip", workers=1, progress=False)
    pairs = read_voe_manifest(tmp_path / "ip" / "dev.json").pairs
    ref = AUTHORS["intphys"]
    movies = sorted(sorted(int(m) - 1 for m in p.pair_id.rsplit("/", 1)[1].split("-")) for p in pairs)
    assert movies == sorted(sorted(m) for m in ref["matches"])
    frames = load_video(pairs[0].possible, frame_step=2, max_frames=99)
    assert len(frames) == ref["frames_loaded"]
    assert [round(float(f.mean()) / 2) for f in frames[:5]] == ref["first_levels"]
    # their breaking points are in frames read (every 2nd): ours in source frames
    partner = ref["matches"][0][1]
    assert pairs[0].diverge_frame == 2 * ref["breaking_points"][partner - 1]
    # GRASP: every 4th frame of both videos
    voe = read_voe_manifest(_prepared(grasp_root, "grasp", tmp_path / "g") / "level2.json")
    pair = next(p for p in voe.pairs if p.pair_id == "Gravity/scene_a")
    assert [_levels(v) for v in load_pair(pair, frame_step=4)] == AUTHORS["grasp"]["levels"]
    # InfLevel: the priming cut and the end alignment, both rows, both modes (their rows keep
    # the CSV's video order; ours put the possible video first)
    vroot, csvs = inflevel
    prepare("inflevel", vroot, tmp_path / "il", annotations=csvs, workers=1, progress=False)
    for split, key in (("lab", "inflevel"), ("lab_priming", "inflevel_priming")):
        ours = read_voe_manifest(tmp_path / "il" / f"{split}.json").pairs
        for pair, row in zip(ours, AUTHORS[key]):
            levels = [_levels(v) for v in load_pair(pair, frame_step=2)]
            if row["labels"][0] == 0.0:  # the impossible video came first in the CSV
                levels = levels[::-1]
            assert levels == row["levels"], (split, pair.pair_id)


def _prepared(root: Path, task: str, out: Path) -> Path:
    prepare(task, root, out, workers=1, progress=False)
    return out


# -- the manifest and the task configs -----------------------------------------------------

def test_voe_manifest_refuses_what_it_cannot_trust(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "harness-voe", "version": 1, "pairs": [
        {"pair_id": "x", "property": "p", "possible": {"path": "a", "possible": False},
         "impossible": {"path": "b", "possible": False}}]}))
    with pytest.raises(DataError, match="labelled impossible"):
        read_voe_manifest(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a VoE manifest"):
        read_voe_manifest(bad)
    bad.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(DataError):
        read_voe_manifest(bad)
    with pytest.raises(DataError, match="start"):
        VoEItem("a", start=-1)


def test_voe_task_configs_load_and_are_checked():
    import tasks

    for name in ("intphys", "grasp", "inflevel", "intphys2", "physics_synth"):
        spec = voe_spec(tasks.config(name))
        assert spec.eval_split in spec.data and spec.sampling.context_frames
        assert max(spec.sampling.context_frames) < spec.sampling.frames_per_clip
    cfg = tasks.config("intphys")
    assert voe_spec(cfg).sampling.max_frames == 99
    with pytest.raises(DataError, match="frames to predict"):
        voe_spec({**cfg, "sampling": {**cfg["sampling"], "context_frames": [16]}})
    with pytest.raises(DataError, match="unknown key"):
        voe_spec({**cfg, "epochs": 3})


def test_listing_shows_the_voe_layouts(capsys):
    assert main(["tasks", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    for name in ("intphys", "grasp", "inflevel", "intphys2", "physics_synth"):
        assert name in out
    assert "harness data prepare intphys2" in out
