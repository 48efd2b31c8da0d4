"""The synthetic digits tasks: real mp4 files, release layout, determinism, disjoint splits."""

import numpy as np
import pytest

import tasks
from tasks import digits as D
from tasks.backends import problem as backend_problem
from tasks.clip_reader import count_frames, read_frames
from tasks.manifest import read_label_map, read_manifest

TINY = dict(per_class_train=2, per_class_val=1, per_class_test=1, num_frames=10, size=32, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return out, tasks.make_digits(out, seed=0, **TINY)


def test_layout_and_manifests(tiny):
    out, summary = tiny
    assert summary["codec"] in ("libx264", "mpeg4")
    for task, classes in D.TASKS.items():
        assert read_label_map(out / task / "classes.txt") == classes
        for split, per_class in zip(D.SPLITS, (2, 1, 1)):
            manifest = out / task / f"{split}.csv"
            lines = manifest.read_text().splitlines()
            assert len(lines) == per_class * len(classes) == summary["tasks"][task]["splits"][split]["videos"]
            entries = read_manifest(manifest, len(classes))
            for (path, label), line in zip(entries, lines):
                assert line.startswith(f"{split}/{classes[label]}/")  # relative, class folder name
                assert path.endswith(".mp4")
    assert " " in D.MOTIONS[0] and " " in D.DIGIT_CLASSES[0]  # folder names with spaces, like Kinetics


@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=pytest.mark.skipif(
    backend_problem("decord") is not None, reason="decord not installed"))])
def test_videos_decode_with_the_right_frame_count(tiny, backend):
    out, _ = tiny
    for task in D.TASKS:
        for path, _ in read_manifest(out / task / "test.csv")[:4]:
            assert count_frames(path, backend=backend) == TINY["num_frames"]
            frames, n = read_frames(path, lambda n: list(range(n)), backend=backend)
            assert n == TINY["num_frames"]
            assert frames.shape == (10, 32, 32, 3)
            f = frames.float()
            # grayscale replicated to RGB (up to yuv420p rounding), with a bright digit on a dim background
            assert (f[..., 0] - f[..., 1]).abs().mean() < 3
            assert f.max() > 150 and np.median(f.numpy()) < 80


def test_same_seed_same_files_and_hash(tiny, tmp_path):
    out, summary = tiny
    again = tasks.make_digits(tmp_path, seed=0, **TINY)
    for task in D.TASKS:
        for split in D.SPLITS:
            assert again["tasks"][task]["splits"][split]["sha256"] == summary["tasks"][task]["splits"][split]["sha256"]
    for path in sorted(out.rglob("*.mp4")):  # byte for byte: x264 runs its C code (asm=0)
        assert path.read_bytes() == (tmp_path / path.relative_to(out)).read_bytes(), path


_ENCODE = """
import sys
import numpy as np
from tasks.digits import write_mp4
frames = np.load(sys.argv[1])
for i, video in enumerate(frames):
    write_mp4(f"{sys.argv[2]}/{i}.mp4", video, fps=8)
"""


def test_same_frames_same_bytes_in_other_processes(tmp_path):
    # With x264's assembly, on a CPU with AVX-512 most of these videos came out different in
    # every process (decoded up to 28 grey levels apart); decoding one file was always the same.
    import subprocess
    import sys
    from pathlib import Path

    if D.pick_codec() != "libx264":
        pytest.skip("libx264 not available")
    images, _ = D._source_pools(0)
    videos = []
    for j in range(8):
        rng = np.random.default_rng([0, j])
        params = D.motion_params(D.MOTIONS[j], rng, 64)
        videos.append(D.render_video(images[j], params, rng, num_frames=24, size=64))
    np.save(tmp_path / "frames.npy", np.stack(videos))
    root = Path(__file__).resolve().parent.parent
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        subprocess.run([sys.executable, "-c", _ENCODE, str(tmp_path / "frames.npy"),
                        str(tmp_path / side)], check=True, cwd=root)
    for i in range(len(videos)):
        assert (tmp_path / "a" / f"{i}.mp4").read_bytes() == (tmp_path / "b" / f"{i}.mp4").read_bytes(), i


def test_same_seed_same_frames():
    images, _ = D._source_pools(0)
    frames = [D.render_video(images[3], D.motion_params("grow", np.random.default_rng(5), 32),
                             np.random.default_rng(5), num_frames=6, size=32) for _ in range(2)]
    assert np.array_equal(frames[0], frames[1])


def test_other_seed_other_videos(tiny, tmp_path):
    out, _ = tiny
    tasks.make_digits(tmp_path, seed=1, tasks=("digits_motion",), **TINY)
    rel = "digits_motion/train/move left/000000.mp4"
    assert (out / rel).read_bytes() != (tmp_path / rel).read_bytes()
    assert not (tmp_path / "digits_appearance").exists()


def test_source_images_disjoint_across_splits():
    _, pools = D._source_pools(0)
    for d in range(10):
        sets = [set(pools[s][d].tolist()) for s in D.SPLITS]
        assert all(sets)
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def _centroid(frame):
    """Centre (x, y) and area of the ink: the background is dim (< 0.35 * 255 with its noise)."""
    ys, xs = np.nonzero(frame > 120)
    return xs.mean(), ys.mean(), len(xs)


def test_motions_move_the_way_their_names_say():
    rng = np.random.default_rng(0)
    blob = np.zeros((8, 8), np.float32)
    blob[3:5, 6:8] = 1.0  # ink on the right of the digit square, to see rotation direction
    full = np.ones((8, 8), np.float32)

    def render(image, motion):
        p = D.motion_params(motion, rng, 64)
        v = D.render_video(image, p, np.random.default_rng(1), num_frames=12, size=64)[..., 0]
        return _centroid(v[0]), _centroid(v[-1]), p

    (x0, y0, _), (x1, y1, _), _ = render(full, "move right")
    assert x1 - x0 > 10 and abs(y1 - y0) < 2
    (x0, y0, _), (x1, y1, _), _ = render(full, "move up")
    assert y0 - y1 > 10 and abs(x1 - x0) < 2
    (_, _, a0), (_, _, a1), _ = render(full, "grow")
    assert a1 > 1.5 * a0
    (_, _, a0), (_, _, a1), _ = render(full, "shrink")
    assert a0 > 1.5 * a1
    for motion, sign in [("rotate clockwise", 1), ("rotate counter-clockwise", -1)]:
        p = dict(center0=(32.0, 32.0), center1=(32.0, 32.0), size0=24.0, size1=24.0, angle0=0.0, angle1=sign * 90.0)
        v = D.render_video(blob, p, np.random.default_rng(1), num_frames=12, size=64)[..., 0]
        (x0, y0, _), (x1, y1, _) = _centroid(v[0]), _centroid(v[-1])
        assert x0 > 38 and abs(y0 - 32) < 3  # starts on the right
        assert abs(x1 - 32) < 3 and (y1 > 38 if sign > 0 else y1 < 26)  # clockwise on screen ends below
    with pytest.raises(ValueError, match="unknown motion"):
        D.motion_params("jump", rng, 64)


def test_bad_arguments(tmp_path):
    with pytest.raises(tasks.DataError, match="unknown digits task"):
        tasks.make_digits(tmp_path, tasks=("digits_colour",), progress=False)


def test_data_make_cli_takes_split_sizes(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "d"
    assert main(["data", "make", "digits", "--out", str(out), "--per-class", "1", "0", "2",
                 "--no-progress"]) == 0
    for task, classes in D.TASKS.items():
        assert len(read_manifest(out / task / "train.csv")) == len(classes)
        assert len(read_manifest(out / task / "test.csv")) == 2 * len(classes)
    assert "train 8, val 0, test 16" in capsys.readouterr().out


def test_default_test_splits_resolve_a_few_points():
    # The demo compares encoders a few points apart: the default test splits must put the
    # standard error of a top-1 near 50% (the worst case) under 2 points.
    for task, (_, _, test) in D.DEFAULT_PER_CLASS.items():
        n = test * len(D.TASKS[task])
        assert 100 * (0.25 / n) ** 0.5 < 2.0
