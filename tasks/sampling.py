"""Which frames make a clip: pure Python/numpy, release-exact, tested against the release's output.

The V-JEPA release picks frames in `VideoDataset.loadvideo_decord`
(`src/datasets/video_dataset.py`, facebookresearch/jepa @ 51c59d5). Its frozen evaluation uses
`allow_clip_overlap=True` and `random_clip_sampling=True` for training *and* evaluation, with
`num_clips` = segments (K400 8, SSv2 2), `frames_per_clip` 16, `frame_step` 4. With
`clip_len = frames_per_clip * frame_step` (64) and `partition_len = num_frames // num_clips`,
segment `i` takes:

* **Partition branch** (`partition_len > clip_len`): a window ending at `end`, where
  `end = clip_len` (`random_clip_sampling=False`) or `end = np.random.randint(clip_len,
  partition_len)` (one draw per segment, in segment order, from numpy's *global legacy* RNG);
  indices `np.linspace(end - clip_len, end, frames_per_clip)`, clipped to `end - 1`, cast to
  int64, plus `i * partition_len`. Note the `linspace`: it puts 16 points on the 65 integers
  0..64 *inclusive*, 64/15 = 4.27 apart, so the offsets are 0, 4, 8, 12, 17, 21, 25, 29, 34, 38,
  42, 46, 51, 55, 59, 64 -> clipped to 63; not `arange(16) * 4` = 0, 4, ..., 60. The clip covers
  the whole 64-frame window, first to last frame, with uneven gaps of 4 and 5.
* **Overlap branch** (otherwise; most K400 videos at 8 segments: 300 frames / 8 = 37 < 64):
  `sample_len = min(clip_len, num_frames) - 1`; `np.linspace(0, sample_len, sample_len //
  frame_step)` padded with `sample_len` to `frames_per_clip` entries, clipped to `sample_len - 1`,
  cast to int64, plus `i * clip_step`, `clip_step = (num_frames - clip_len) // (num_clips - 1)`
  when `num_frames > clip_len`, else 0 (every segment is then the same clip). For a long enough
  video the offsets are 0, 4, 9, 13, 18, ..., 58, 62, 62: only 15 points spread over 0..63, the
  last clipped to 62 and repeated. No random draw is made in this branch.

Quirks of the release, reproduced (the golden tests pin them):

* The release never divides by zero: with one segment the overlap branch is reached only when
  `num_frames <= clip_len`, where `clip_step` is 0.
* A one-frame window (`sample_len == 0`, i.e. a 1-frame video, or `clip_len == 1` with fewer
  than two frames per segment) clips to `[0, -1]`, giving index -1, which decord reads as the
  *last* frame. We return what decord decodes: negative indices wrapped by `num_frames`
  (so segment 0 of a `clip_len == 1` clip on such a short video is the video's last frame).
* Zero frames: the release raises inside numpy (`Number of samples, -1`); we raise ValueError.

Placements: `"random"` is the release (train and eval; draws `rng.randint(clip_len,
partition_len)` on a `np.random.RandomState`, so `RandomState(s)` gives the release's indices
after `np.random.seed(s)`); `"start"` is the release with `random_clip_sampling=False` (window at
the start of its partition); `"center"` is ours, a deliberate deviation for deterministic
evaluation and cacheable features: the window ends at `clip_len + (partition_len - clip_len)//2`,
otherwise as the release (same overlap branch).

`"mveb"` is MVEB's (mteb 2.x, `mteb/models/modality_collators.py` `FramesCollator` in its
fixed-sample mode, which its VideoMAE and V-JEPA 2 wrappers use with the encoder's frame count
F = `frames_per_clip`): one clip of F frames spread over the whole video, every (n // F)-th frame
from the first, `range(0, n, max(1, n // F))[:F]`; a video shorter than F frames is looped,
`(range(n) * (F // n + 1))[:F]` (0, 1, ..., n-1, 0, 1, ...). `frame_step` plays no part and there
is one segment (MVEB encodes one clip per video). n is the frame count the reader settles on
(`tasks.clip_reader`: the header's, corrected to the frames that decode, where mteb drops
undecodable trailing frames one at a time: the same n when only trailing frames fail).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLACEMENTS = ("random", "start", "center", "mveb")
# Placements that take one clip per video, spread over all of it (no partitions, no frame_step).
WHOLE_VIDEO = ("mveb",)


def _positive_int(name: str, v) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"ClipSampler.{name} must be a positive integer, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class ClipSampler:
    """`num_segments` clips of `frames_per_clip` frames, `frame_step` apart, as the release picks them.

    placement: "random": the release (train and eval); "start": the release with
    random_clip_sampling=False (window at the partition start); "center": deterministic, window
    centred in its partition (a deliberate deviation, ours); "mveb": MVEB's, `frames_per_clip`
    frames spread evenly over the whole video (one segment; `frame_step` unused).
    """

    frames_per_clip: int
    frame_step: int
    num_segments: int = 1
    placement: str = "random"

    def __post_init__(self):
        for name in ("frames_per_clip", "frame_step", "num_segments"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"ClipSampler.placement must be one of {', '.join(map(repr, PLACEMENTS))}; "
                f"got {self.placement!r}")
        if self.placement in WHOLE_VIDEO and self.num_segments != 1:
            raise ValueError(f"ClipSampler placement {self.placement!r} takes one clip spread over "
                             f"the whole video: num_segments must be 1, got {self.num_segments}")

    @property
    def span(self) -> int:
        """Frames of the source video one clip covers: frames_per_clip * frame_step (the release's clip_len)."""
        return self.frames_per_clip * self.frame_step

    def indices(self, num_frames: int, rng: "np.random.RandomState | None" = None) -> list[list[int]]:
        """Frame indices, one list of `frames_per_clip` ints per segment, all in [0, num_frames).

        `rng` is required for placement "random" and must be a legacy `np.random.RandomState`
        (the release's RNG); it is drawn from only for partitions longer than a clip, one
        `randint` per segment. "start", "center" and "mveb" ignore it.
        """
        if isinstance(num_frames, (bool, np.bool_)) or not isinstance(num_frames, (int, np.integer)):
            raise ValueError(f"num_frames must be an integer, got {num_frames!r}")
        n = int(num_frames)
        if n < 1:
            raise ValueError(f"cannot sample a clip from a video with {n} frames")
        if self.placement == "random":
            if rng is None:
                raise ValueError("ClipSampler(placement='random').indices needs rng="
                                 "np.random.RandomState(seed): seeded, for reproducibility")
            if not isinstance(rng, np.random.RandomState):
                raise TypeError(f"rng must be a np.random.RandomState (the release's legacy RNG), "
                                f"got {type(rng).__name__}")

        if self.placement == "mveb":
            return [mveb_indices(n, self.frames_per_clip)]

        fpc, step, S = self.frames_per_clip, self.frame_step, self.num_segments
        clip_len = self.span
        partition_len = n // S
        out = []
        for i in range(S):
            if partition_len > clip_len:
                if self.placement == "random":
                    end = rng.randint(clip_len, partition_len)
                elif self.placement == "start":
                    end = clip_len
                else:
                    end = clip_len + (partition_len - clip_len) // 2
                start = end - clip_len
                idx = np.linspace(start, end, num=fpc)
                idx = np.clip(idx, start, end - 1).astype(np.int64) + i * partition_len
            else:
                sample_len = min(clip_len, n) - 1
                k = sample_len // step  # <= fpc - 1, since sample_len < clip_len
                idx = np.concatenate((np.linspace(0, sample_len, num=k), np.full(fpc - k, float(sample_len))))
                idx = np.clip(idx, 0, sample_len - 1).astype(np.int64)
                clip_step = (n - clip_len) // (S - 1) if n > clip_len else 0  # S > 1 here
                idx = idx + i * clip_step
                idx[idx < 0] += n  # what decord reads for the release's -1 (one-frame window)
            out.append(idx.tolist())
        return out


def mveb_indices(num_frames: int, frames: int) -> list[int]:
    """MVEB's `frames` indices of an n-frame video (mteb's `FramesCollator`, fixed-sample mode):
    every (n // frames)-th frame from the first, or the video looped when it is shorter."""
    n = int(num_frames)
    if n < frames:
        return (list(range(n)) * (frames // n + 1))[:frames]
    return list(range(0, n, max(1, n // frames)))[:frames]
