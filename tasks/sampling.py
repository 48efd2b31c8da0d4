"""Which frames make a clip: pure Python/numpy so it can be tested exhaustively.

Follows the V-JEPA release (`src/datasets/video_dataset.py`): the video is cut into
`num_segments` equal partitions and one clip of `frames_per_clip` frames, `frame_step` apart, is
taken from each. Two deliberate differences:

* Evaluation is deterministic (the release samples eval clips at random positions): each clip
  sits in the middle of its partition, so segments are evenly spaced over the video and the same
  checkpoint always sees the same frames.
* Videos shorter than a clip never fail: indices past the end repeat the last frame (as the
  release does), and partitions shorter than a clip overlap (the release's
  `allow_clip_overlap=True`, which its frozen evaluation uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipSampler:
    frames_per_clip: int
    frame_step: int
    num_segments: int = 1
    random: bool = False

    def __post_init__(self):
        for name in ("frames_per_clip", "frame_step", "num_segments"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"ClipSampler.{name} must be a positive integer, got {v!r}")

    @property
    def span(self) -> int:
        """Frames of the source video one clip covers."""
        return self.frames_per_clip * self.frame_step

    def indices(self, num_frames: int, rng: np.random.Generator | None = None) -> list[list[int]]:
        """Frame indices, one list of `frames_per_clip` ints per segment, all in [0, num_frames)."""
        if num_frames < 1:
            raise ValueError(f"cannot sample a clip from a video with {num_frames} frames")
        if self.random and rng is None:
            rng = np.random.default_rng()
        starts = self._starts(int(num_frames), rng)
        offsets = np.arange(self.frames_per_clip) * self.frame_step
        # Clamping repeats the last frame when a clip runs past the end of a short video.
        return [np.minimum(s + offsets, num_frames - 1).astype(int).tolist() for s in starts]

    def _starts(self, n: int, rng: np.random.Generator | None) -> list[int]:
        span, S = self.span, self.num_segments
        # A clip is taken to cover frames_per_clip * frame_step frames (the release's clip_len),
        # i.e. including the gap after its last frame.
        partition = n // S
        if partition >= span:
            slack = partition - span  # free room for the clip inside its partition
            if self.random:
                offs = rng.integers(0, slack + 1, size=S)
            else:
                offs = np.full(S, slack // 2)
            return [int(i * partition + o) for i, o in enumerate(offs)]
        # Partitions shorter than a clip: clips overlap, starts evenly spread over what room
        # there is (all at 0 when the video is shorter than one clip).
        room = max(n - span, 0)
        if S == 1:
            return [int(rng.integers(0, room + 1)) if self.random else room // 2]
        return [int(round(i * room / (S - 1))) for i in range(S)]
