"""ClipSampler: which frame indices make each clip, checked against the V-JEPA release's own output.

The golden data, `fixtures/release_frame_indices.json`, was made by running the release's
`VideoDataset.loadvideo_decord` (see `fixtures/make_release_indices.py`, which records its command
and the release commit); these tests need only the JSON.
"""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tasks.sampling import PLACEMENTS, WHOLE_VIDEO, ClipSampler

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "release_frame_indices.json").read_text())
BY_CONFIG = defaultdict(list)
for _c in GOLDEN["cases"]:
    BY_CONFIG[_c["config"]].append(_c)

REQUIRED_LENGTHS = [1, 2, 3, 5, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 300, 511, 512, 513, 520,
                    1000, 2000, 9000, 18000]
LINSPACE_OFFSETS = [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]


def _sampler(case, placement):
    return ClipSampler(case["frames_per_clip"], case["frame_step"], case["num_segments"], placement=placement)


# ---------------------------------------------------------------- golden: the release's indices


def test_golden_file_provenance_and_coverage():
    assert GOLDEN["release_commit"].startswith("51c59d5")
    assert "make_release_indices.py" in GOLDEN["command"]
    for name, segs in (("k400", 8), ("ssv2", 2), ("single", 1)):
        cfg = GOLDEN["configs"][name]
        assert (cfg["frames_per_clip"], cfg["frame_step"], cfg["num_segments"]) == (16, 4, segs)
        for n in REQUIRED_LENGTHS:
            seeds = sorted((c["seed"] is None, c["seed"]) for c in BY_CONFIG[name] if c["num_frames"] == n)
            assert seeds == [(False, 0), (False, 1), (False, 2), (True, None)], (name, n)
    assert len(GOLDEN["cases"]) == sum(map(len, BY_CONFIG.values())) > 1000


@pytest.mark.parametrize("config", sorted(GOLDEN["configs"]))
def test_start_placement_equals_release_without_random_sampling(config):
    cases = [c for c in BY_CONFIG[config] if not c["random_clip_sampling"]]
    assert cases
    for c in cases:
        s = _sampler(c, "start")
        if "error" in c:  # the release fails only on empty videos; we fail clearly
            assert c["num_frames"] == 0
            with pytest.raises(ValueError, match="0 frames"):
                s.indices(c["num_frames"])
            continue
        expected = c.get("decoded", c["clip_indices"])  # what decord reads (-1 wraps to the end)
        assert s.indices(c["num_frames"]) == expected, (config, c["num_frames"])


@pytest.mark.parametrize("config", sorted(GOLDEN["configs"]))
def test_random_placement_equals_release_under_the_same_seed(config):
    cases = [c for c in BY_CONFIG[config] if c["random_clip_sampling"]]
    assert cases
    for c in cases:
        s = _sampler(c, "random")
        rng = np.random.RandomState(c["seed"])
        if "error" in c:
            assert c["num_frames"] == 0
            with pytest.raises(ValueError, match="0 frames"):
                s.indices(c["num_frames"], rng)
            continue
        expected = c.get("decoded", c["clip_indices"])
        assert s.indices(c["num_frames"], rng) == expected, (config, c["num_frames"], c["seed"])
        # same number of draws as the release: the next draw agrees too
        assert rng.randint(2**31 - 1) == c["next_draw"], (config, c["num_frames"], c["seed"])


def test_release_quirks_pinned_by_the_golden_data():
    k400 = {c["num_frames"]: c for c in BY_CONFIG["k400"] if c["seed"] is None}
    # partition branch: linspace offsets 0, 4, 8, 12, 17, ..., 63 (not arange * 4)
    assert k400[520]["clip_indices"][0] == LINSPACE_OFFSETS
    assert k400[520]["clip_indices"][1] == [65 + o for o in LINSPACE_OFFSETS]
    # overlap branch (a typical 300-frame K400 video): 15 linspace points on 0..63, clipped to 62
    assert k400[300]["clip_indices"][0] == [0, 4, 9, 13, 18, 22, 27, 31, 36, 40, 45, 49, 54, 58, 62, 62]
    assert [seg[0] for seg in k400[300]["clip_indices"]] == [i * ((300 - 64) // 7) for i in range(8)]
    # a one-frame video: the release returns -1, which decord reads as frame 0
    assert k400[1]["clip_indices"][0] == [-1] * 16 and k400[1]["decoded"][0] == [0] * 16
    # one segment never reaches the overlap branch's division (no crash for any length > 0)
    assert all("error" not in c for c in BY_CONFIG["single"] if c["num_frames"] > 0)
    # the random draw happens only where a partition is longer than a clip
    ssv2_rand = [c for c in BY_CONFIG["ssv2"] if c["seed"] == 0 and c["num_frames"] > 0]
    assert all(c["clip_indices"] == next(d for d in BY_CONFIG["ssv2"] if d["seed"] is None
                                         and d["num_frames"] == c["num_frames"])["clip_indices"]
               for c in ssv2_rand if c["num_frames"] // 2 <= 64)


# ---------------------------------------------------------------- "random": the RNG contract


def test_random_needs_a_seeded_legacy_rng():
    s = ClipSampler(16, 4, 2)
    assert s.placement == "random"
    with pytest.raises(ValueError, match="RandomState"):
        s.indices(300)
    with pytest.raises(TypeError, match="RandomState"):
        s.indices(300, np.random.default_rng(0))
    assert s.indices(300, np.random.RandomState(7)) == s.indices(300, np.random.RandomState(7))


def test_random_draws_as_the_release_and_only_in_the_partition_branch():
    s = ClipSampler(16, 4, 2)
    rng = np.random.RandomState(3)
    ref = np.random.RandomState(3)
    idx = s.indices(1000, rng)  # partitions of 500 > 64: one draw per segment, in order
    ends = [ref.randint(64, 500) for _ in range(2)]
    assert [seg[-1] for seg in idx] == [e - 1 + i * 500 for i, e in enumerate(ends)]
    state = rng.get_state()[1].copy(), rng.get_state()[2]
    s.indices(128, rng)  # partitions of 64: overlap branch, no draw
    assert np.array_equal(rng.get_state()[1], state[0]) and rng.get_state()[2] == state[1]


def test_train_random_window_covers_its_range():
    s = ClipSampler(8, 2, num_segments=1)
    rng = np.random.RandomState(123)
    starts = [s.indices(40, rng)[0][0] for _ in range(400)]
    # end = randint(16, 40) in [16, 39]: starts 0 .. 23
    assert min(starts) == 0 and max(starts) == 40 - 16 - 1
    assert len(set(starts)) == 24


def test_train_segments_stay_in_their_partitions():
    s = ClipSampler(4, 2, num_segments=3)
    rng = np.random.RandomState(0)
    for _ in range(100):
        idx = s.indices(90, rng)
        for i, seg in enumerate(idx):
            assert 30 * i <= seg[0] and seg[-1] < 30 * (i + 1)


# ---------------------------------------------------------------- "center": ours, deterministic


def test_center_single_segment_is_centred_and_deterministic():
    s = ClipSampler(frames_per_clip=8, frame_step=2, num_segments=1, placement="center")
    idx = s.indices(100)
    # clip_len 16: end = 16 + (100 - 16)//2 = 58, window [42, 58): linspace(42, 58, 8) clipped to 57
    assert idx == [[42, 44, 46, 48, 51, 53, 55, 57]]
    assert s.indices(100) == idx
    assert ClipSampler(16, 4, 1, "center").indices(1064)[0] == [500 + o for o in LINSPACE_OFFSETS]


def test_center_segments_evenly_spaced_one_per_partition():
    s = ClipSampler(8, 2, num_segments=2, placement="center")
    idx = s.indices(100)
    # partitions of 50, end 16 + 17 = 33 -> each window starts 17 into its partition
    assert [seg[0] for seg in idx] == [17, 67]
    assert all(len(seg) == 8 for seg in idx)
    s4 = ClipSampler(4, 4, num_segments=4, placement="center")
    starts = [seg[0] for seg in s4.indices(400)]
    assert np.all(np.diff(starts) == 100)


def test_center_ignores_and_does_not_consume_the_rng():
    s = ClipSampler(16, 4, 8, placement="center")
    rng = np.random.RandomState(0)
    assert s.indices(2000, rng) == s.indices(2000)
    assert rng.randint(2**31 - 1) == np.random.RandomState(0).randint(2**31 - 1)


@pytest.mark.parametrize("fpc,step,S", [(16, 4, 8), (16, 4, 2), (16, 4, 1), (8, 2, 3), (3, 5, 4), (1, 1, 1),
                                        (1, 1, 4), (2, 1, 1)])
def test_center_properties_over_many_lengths(fpc, step, S):
    center = ClipSampler(fpc, step, S, placement="center")
    start = ClipSampler(fpc, step, S, placement="start")
    clip_len = fpc * step
    for n in list(range(1, 300)) + [511, 512, 513, 520, 1000, 2000, 9000, 18000]:
        idx = center.indices(n)
        p = n // S
        assert len(idx) == S
        for i, seg in enumerate(idx):
            assert len(seg) == fpc
            assert all(isinstance(j, int) and 0 <= j < n for j in seg)
            if p > clip_len:  # the window fits: centred in its partition, monotone, inside it
                assert all(a <= b for a, b in zip(seg, seg[1:]))
                lo = i * p + (p - clip_len) // 2
                assert seg[0] == lo and seg[-1] == lo + clip_len - 1
                assert i * p <= seg[0] and seg[-1] < (i + 1) * p
                # the same window shape as the release's, shifted
                assert [j - lo for j in seg] == [j - i * p for j in start.indices(n)[i]]
            elif clip_len > 1 or n == 1:
                assert all(a <= b for a, b in zip(seg, seg[1:]))
        if p <= clip_len:  # overlap branch: exactly the release's
            assert idx == start.indices(n)


# ---------------------------------------------------------------- all placements: invariants, errors


@pytest.mark.parametrize("placement", [p for p in PLACEMENTS if p not in WHOLE_VIDEO])
def test_invariants_over_many_lengths(placement):
    rng = np.random.RandomState(0)
    for fpc, step, S in [(8, 2, 1), (16, 4, 8), (16, 4, 2), (3, 5, 4), (1, 1, 1)]:
        s = ClipSampler(fpc, step, S, placement=placement)
        for n in range(1, 260, 7):
            idx = s.indices(n, rng)
            assert len(idx) == S
            for seg in idx:
                assert len(seg) == fpc
                assert all(isinstance(i, int) and 0 <= i < n for i in seg)
                assert all(a <= b for a, b in zip(seg, seg[1:]))
                assert seg[-1] - seg[0] < fpc * step


def test_short_partitions_overlap_evenly():
    s = ClipSampler(8, 2, num_segments=3, placement="center")
    idx = s.indices(40)  # partition 13 < 16: clip_step (40 - 16)//2 = 12 -> starts 0, 12, 24
    assert [seg[0] for seg in idx] == [0, 12, 24]
    assert max(max(seg) for seg in idx) == 38


def test_video_shorter_than_clip_repeats_a_last_frame():
    s = ClipSampler(8, 2, num_segments=1, placement="start")
    # sample_len 4: linspace(0, 4, 2) = 0, 4; padded with 4; clipped to 3
    assert s.indices(5) == [[0, 3, 3, 3, 3, 3, 3, 3]]
    assert s.indices(1) == [[0] * 8]
    s2 = ClipSampler(4, 3, num_segments=2)
    for seg in s2.indices(3, np.random.RandomState(0)):
        # sample_len 2, 2 // 3 = 0 linspace points: all padding (2), clipped to 1; frame 0 unused
        assert seg == [1, 1, 1, 1]


def test_zero_frames_is_an_error():
    for placement in PLACEMENTS:
        with pytest.raises(ValueError, match="0 frames"):
            ClipSampler(8, 2, placement=placement).indices(0, np.random.RandomState(0))


@pytest.mark.parametrize("bad", [dict(frames_per_clip=0, frame_step=1), dict(frames_per_clip=4, frame_step=0),
                                 dict(frames_per_clip=4, frame_step=1, num_segments=0),
                                 dict(frames_per_clip=4.0, frame_step=1), dict(frames_per_clip=True, frame_step=1),
                                 dict(frames_per_clip=4, frame_step=-2)])
def test_invalid_parameters_rejected(bad):
    with pytest.raises(ValueError, match="positive integer"):
        ClipSampler(**bad)


def test_unknown_placement_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'random', 'start', 'center'"):
        ClipSampler(16, 4, placement="middle")


def test_numpy_ints_accepted_and_span():
    s = ClipSampler(np.int64(16), np.int32(4), np.int64(2), placement="start")
    assert s.span == 64 and type(s.frames_per_clip) is int
    assert s.indices(np.int64(300)) == ClipSampler(16, 4, 2, placement="start").indices(300)
    with pytest.raises(ValueError):
        s.indices(3.0)


# ---------------------------------------------------------------- mveb: MVEB's frame sampling


def _mteb_indices(n_source, target):
    """mteb's rule, transcribed from `FramesCollator.resample_video._indices` (mteb @ a905523,
    fixed-sample mode): the reference the placement is checked against."""
    if n_source < target:
        return (list(range(n_source)) * ((target // n_source) + 1))[:target]
    step = max(1, n_source // target)
    return list(range(0, n_source, step))[:target]


@pytest.mark.parametrize("frames", [1, 2, 8, 16, 32, 64])
def test_mveb_placement_is_mtebs_rule(frames):
    s = ClipSampler(frames, 4, 1, placement="mveb")
    for n in [1, 2, 3, 5, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 300, 301,
              1000, 9001]:
        got = s.indices(n, np.random.RandomState(0))
        assert got == [_mteb_indices(n, frames)], (frames, n)
        assert len(got[0]) == frames and all(0 <= i < n for i in got[0])


def test_mveb_by_hand_spreads_over_the_whole_video_and_loops_short_ones():
    s = ClipSampler(4, 2, placement="mveb")
    assert s.indices(10) == [[0, 2, 4, 6]]      # 10 // 4 = 2: every 2nd frame from the first
    assert s.indices(16) == [[0, 4, 8, 12]]
    assert s.indices(19) == [[0, 4, 8, 12]]     # 19 // 4 = 4; the tail beyond is never read
    assert s.indices(4) == [[0, 1, 2, 3]]
    assert s.indices(3) == [[0, 1, 2, 0]]       # shorter than F: looped, not padded
    assert s.indices(1) == [[0, 0, 0, 0]]
    # frame_step plays no part; the rng is never drawn from
    rng = np.random.RandomState(5)
    state = rng.get_state()[1].copy()
    assert ClipSampler(4, 7, placement="mveb").indices(10, rng) == [[0, 2, 4, 6]]
    assert np.array_equal(rng.get_state()[1], state)


def test_mveb_takes_one_segment_and_is_its_own_protocol(digits_small):
    import torch

    import tasks
    from results import protocol_id
    from tasks import sampling
    from tasks import spec as spec_module

    with pytest.raises(ValueError, match="num_segments must be 1"):
        ClipSampler(16, 4, 2, placement="mveb")
    assert spec_module.PLACEMENTS == sampling.PLACEMENTS
    assert spec_module.WHOLE_VIDEO == sampling.WHOLE_VIDEO
    with pytest.raises(tasks.DataError, match="eval_segments must be 1"):
        spec_module.SamplingSpec(16, 4, eval_segments=2, eval_placement="mveb")
    for name in ("hmdb51", "ucf101", "ucf101_51va"):
        cfg = tasks.config(name)
        assert cfg["sampling"]["eval_placement"] == cfg["sampling"]["train_placement"] == "mveb"

    def task(placement):
        return tasks.build("digits_appearance", root=digits_small, decoder="pyav",
                           sampling={"eval_segments": 1, "eval_placement": placement})

    mveb, center = task("mveb"), task("center")
    assert protocol_id(mveb.protocol()) != protocol_id(center.protocol())
    # An evaluation item holds the frames at mteb's indices (the digits videos have 20 frames:
    # 8 frames, every 2nd from the first).
    item = mveb.dataset("test", train=False, resolution=32, device_finish=True)[0]
    from tasks.clip_reader import read_frames

    whole = read_frames(item["path"], lambda n: range(n), backend="pyav").frames
    assert whole.shape[0] == 20
    assert torch.equal(item["frames"][0], whole[_mteb_indices(20, 8)])
