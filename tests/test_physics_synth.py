"""The synthetic violation-of-expectation set: pairs identical until the recorded violation,
each violation what its property says, reproducible to the pixel in another process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.physics_synth import PROPERTIES, make_pair, make_physics
from tasks.voe import first_difference, load_pair, load_task, read_voe_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def physics(tmp_path_factory) -> dict:
    return make_physics(tmp_path_factory.mktemp("physics"), seed=3, pairs_per_property=6)


def _object_mask(frame: np.ndarray) -> np.ndarray:
    """Pixels of the (saturated) object: background and occluder are grey or dark brown."""
    f = frame.astype(int)
    return (f.max(-1) - f.min(-1)) > 100


def _centre_x(frame: np.ndarray) -> float | None:
    xs = np.nonzero(_object_mask(frame))[1]
    return float(xs.mean()) if len(xs) else None


def test_pairs_are_identical_until_the_recorded_violation(physics):
    voe = read_voe_manifest(physics["manifest"])
    assert len(voe.pairs) == 6 * len(PROPERTIES) and voe.properties() == sorted(PROPERTIES)
    for p in voe.pairs:
        good, bad = load_pair(p)
        v = p.violation_frame
        assert good.shape == bad.shape == (32, 64, 64, 3) and good.dtype == np.uint8
        assert v == p.diverge_frame and 2 <= v < 32
        assert np.array_equal(good[:v], bad[:v]) and not np.array_equal(good[v], bad[v])
        assert first_difference(good, bad) == v
        # the object is seen before the violation (the context shows what is expected), except
        # in the permanence pairs where none exists until one appears
        assert _object_mask(good[0]).any() == (p.meta.get("variant") != "appear")
    for prop, expected in (("constancy", {"colour", "shape"}), ("permanence", {"vanish", "appear"})):
        assert {p.meta.get("variant") for p in voe.pairs if p.property == prop} == expected


def test_each_violation_is_what_its_property_says(physics):
    voe = read_voe_manifest(physics["manifest"])
    for p in voe.pairs:
        good, bad = load_pair(p)
        v = p.violation_frame
        if p.property == "permanence" and p.meta["variant"] == "vanish":
            # possible: the object is back in view (its edge first); impossible: never again
            assert any(_object_mask(f).any() for f in good[v:v + 3])
            assert not any(_object_mask(f).any() for f in bad[v:])
        elif p.property == "permanence":
            # appear: no object until one comes out from behind the occluder
            assert not any(_object_mask(f).any() for f in good)
            assert not any(_object_mask(f).any() for f in bad[:v])
            assert any(_object_mask(f).any() for f in bad[v:v + 3])
        elif p.property == "continuity":
            # possible: a step of under 3 px per frame; impossible: a jump past the occluder
            step_good = abs(_centre_x(good[v]) - _centre_x(good[v - 1]))
            step_bad = abs(_centre_x(bad[v]) - _centre_x(bad[v - 1]))
            assert step_good < 3 and step_bad > 10
        else:
            before = good[0]  # the object in view, as it went in
            after_good, after_bad = good[-1], bad[-1]
            m_good, m_bad = _object_mask(after_good), _object_mask(after_bad)
            assert m_good.any() and m_bad.any()
            def colour(f, m):
                return tuple(np.median(f[m], axis=0).astype(int))
            if p.meta["variant"] == "colour":
                assert colour(after_good, m_good) == colour(before, _object_mask(before))
                assert colour(after_bad, m_bad) != colour(after_good, m_good)
            else:
                assert colour(after_bad, m_bad) == colour(after_good, m_good)
                assert not np.array_equal(m_good, m_bad)  # same place, another outline


def test_same_seed_same_pixels_other_seed_other_pixels(physics, tmp_path):
    again = make_physics(tmp_path / "again", seed=3, pairs_per_property=6)
    assert again["pixels_sha256"] == physics["pixels_sha256"]
    other = make_physics(tmp_path / "other", seed=4, pairs_per_property=2)
    # a re-run in the same folder replaces the videos whole and leaves no staging folder
    rerun = make_physics(tmp_path / "other", seed=3, pairs_per_property=2)
    assert other["pixels_sha256"] != rerun["pixels_sha256"]
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["test.json", "videos"]
    assert len(list((tmp_path / "other" / "videos" / "permanence").iterdir())) == 2


def test_two_processes_make_identical_decoded_pixels(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli = subprocess.run([sys.executable, "-m", "harness", "data", "make", "physics", "--out", str(a),
                          "--seed", "1", "--pairs", "2", "--no-progress"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr
    assert "physics_synth" in cli.stdout and "pixels sha256" in cli.stdout
    code = ("from tasks.physics_synth import make_physics; "
            f"make_physics({str(b)!r}, seed=1, pairs_per_property=2)")
    lib = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=False)
    assert lib.returncode == 0, lib.stderr
    pa, pb = read_voe_manifest(a / "test.json"), read_voe_manifest(b / "test.json")
    assert [p.pair_id for p in pa.pairs] == [p.pair_id for p in pb.pairs]
    assert [p.violation_frame for p in pa.pairs] == [p.violation_frame for p in pb.pairs]
    for x, y in zip(pa.pairs, pb.pairs):
        for fx, fy in zip(load_pair(x), load_pair(y)):
            assert np.array_equal(fx, fy)


def test_the_task_config_reads_the_made_set(physics):
    spec, voe = load_task("physics_synth", root=Path(physics["manifest"]).parent)
    assert spec.sampling.frames_per_clip == 8 and spec.eval_split == "test"
    assert set(spec.properties) == set(PROPERTIES) and len(voe.pairs) == 18


def test_a_pair_is_a_pure_function_of_seed_property_and_index():
    g1, b1, v1, m1 = make_pair("continuity", 5, 0, 32, 64)
    g2, b2, v2, m2 = make_pair("continuity", 5, 0, 32, 64)
    assert np.array_equal(g1, g2) and np.array_equal(b1, b2) and (v1, m1) == (v2, m2)
    assert v1 == m1["event_frame"]
