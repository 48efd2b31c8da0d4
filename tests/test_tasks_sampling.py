"""ClipSampler: which frame indices make each clip (train / eval, segments, short videos)."""

import numpy as np
import pytest

from tasks.sampling import ClipSampler


def test_eval_single_segment_is_centred_and_deterministic():
    s = ClipSampler(frames_per_clip=8, frame_step=2, num_segments=1, random=False)
    idx = s.indices(100)
    # span 16, slack 84 -> start 42
    assert idx == [[42, 44, 46, 48, 50, 52, 54, 56]]
    assert s.indices(100) == idx


def test_eval_segments_evenly_spaced_one_per_partition():
    s = ClipSampler(8, 2, num_segments=2, random=False)
    idx = s.indices(100)
    # partitions of 50 frames, slack 34 -> each clip starts 17 into its partition
    assert [seg[0] for seg in idx] == [17, 67]
    assert all(len(seg) == 8 for seg in idx)
    s4 = ClipSampler(4, 4, num_segments=4, random=False)
    starts = [seg[0] for seg in s4.indices(400)]
    assert np.all(np.diff(starts) == 100)


def test_short_partitions_overlap_evenly():
    s = ClipSampler(8, 2, num_segments=3, random=False)
    idx = s.indices(40)  # partition 13 < span 16: room 24 -> starts 0, 12, 24
    assert [seg[0] for seg in idx] == [0, 12, 24]
    assert max(max(seg) for seg in idx) == 38


def test_video_shorter_than_clip_repeats_last_frame():
    s = ClipSampler(8, 2, num_segments=1, random=False)
    assert s.indices(5) == [[0, 2, 4, 4, 4, 4, 4, 4]]
    assert s.indices(1) == [[0] * 8]
    s2 = ClipSampler(4, 3, num_segments=2, random=True)
    for seg in s2.indices(3, np.random.default_rng(0)):
        assert seg == [0, 2, 2, 2]


def test_zero_frames_is_an_error():
    with pytest.raises(ValueError, match="0 frames"):
        ClipSampler(8, 2).indices(0)


@pytest.mark.parametrize("bad", [dict(frames_per_clip=0, frame_step=1), dict(frames_per_clip=4, frame_step=0),
                                 dict(frames_per_clip=4, frame_step=1, num_segments=0)])
def test_invalid_parameters_rejected(bad):
    with pytest.raises(ValueError):
        ClipSampler(**bad)


def test_train_start_is_random_covers_range_and_is_reproducible():
    s = ClipSampler(8, 2, num_segments=1, random=True)
    rng = np.random.default_rng(123)
    starts = [s.indices(40, rng)[0][0] for _ in range(400)]
    assert min(starts) == 0 and max(starts) == 40 - 16  # every start in [0, n - span] reachable
    assert len(set(starts)) > 15
    a = s.indices(40, np.random.default_rng(7))
    b = s.indices(40, np.random.default_rng(7))
    assert a == b


def test_train_segments_stay_in_their_partitions():
    s = ClipSampler(4, 2, num_segments=3, random=True)
    rng = np.random.default_rng(0)
    for _ in range(100):
        idx = s.indices(90, rng)
        for i, seg in enumerate(idx):
            assert 30 * i <= seg[0] and seg[-1] < 30 * (i + 1)


@pytest.mark.parametrize("random", [False, True])
def test_invariants_over_many_lengths(random):
    rng = np.random.default_rng(0)
    for fpc, step, S in [(8, 2, 1), (16, 4, 8), (16, 4, 2), (3, 5, 4), (1, 1, 1)]:
        s = ClipSampler(fpc, step, S, random=random)
        for n in range(1, 260, 7):
            idx = s.indices(n, rng)
            assert len(idx) == S
            for seg in idx:
                assert len(seg) == fpc
                assert all(isinstance(i, int) and 0 <= i < n for i in seg)
                # consecutive frames are `step` apart, except where clamped at the last frame
                assert all(b - a == step or (b == n - 1 and 0 <= b - a < step) for a, b in zip(seg, seg[1:]))
