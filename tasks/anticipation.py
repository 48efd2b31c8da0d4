"""Action anticipation clips (EPIC-KITCHENS-100) as V-JEPA 2 samples them, and their manifests.

The release (facebookresearch/vjepa2, `evals/action_anticipation_frozen/epickitchens.py`,
`decode_videos_to_clips.run`) takes, for an annotated action with frames [sf, ef] of a video
decoded at `vfps` frames per second:

    fstp    = int(vfps / fps)                        # frame step: fps=8 gives 7 at 59.94/60 fps
    nframes = frames_per_clip * fstp
    aframes = int(at * vfps)                         # at: the anticipation time, seconds
    af      = int(sf * ap + (1 - ap) * ef - aframes) # ap: the anticipation point
    indices = arange(af - nframes, af, fstp), negative ones set to 0 (first frame repeated)

so the clip's last frame is `fstp` frames before `af`. `ap` = 1 anchors the clip to the action's
**start** (anticipation as the EPIC-KITCHENS challenge defines it); `ap` = 0 to its **end**. The
release's evaluation uses `val_anticipation_point` = [0, 0] unless a config sets it (none does):
its published EK100 numbers end each clip one second before the action's *end*
(facebookresearch/vjepa2 issue #173). Both are here, as the named protocol field
`anticipation_point: action_start | release_default`; it is in the protocol, so the two get
different protocol ids. Training draws `at` ~ U(train_anticipation_time_s) and
`ap` ~ U(train_anticipation_point) per clip (release: U(0.25, 1.75) s and U(0, 0.25)).

Equal to the release's indices on fixtures made by running its code (tests/fixtures/ek100/).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

# name -> the release's anticipation point `ap` (weight of the start frame)
ANTICIPATION_POINTS = {"action_start": 1.0, "release_default": 0.0}
MANIFEST_COLUMNS = ("path", "video_id", "narration_id", "start_frame", "stop_frame", "video_fps",
                    "verb_class", "noun_class", "verb", "noun", "action")


def _pair(where: str, name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {name} must be a pair [low, high], got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise DataError(f"{where}: {name} must be finite with low <= high, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class AnticipationSampling:
    """The clip-sampling half of an anticipation protocol (what `protocol()` hashes)."""

    frames_per_clip: int = 32
    fps: float = 8.0
    anticipation_time_s: float = 1.0
    anticipation_point: str = "action_start"
    train_anticipation_time_s: tuple[float, float] = (0.25, 1.75)
    train_anticipation_point: tuple[float, float] = (0.0, 0.25)
    # The head's input, protocol beside the clips: True, the encoder's tokens followed by the
    # frozen predictor's tokens of the frames ahead (the release's `vit_encoder_predictor_concat_ar`,
    # `probes.predicted_future`); False, the encoder's tokens alone.
    predictor: bool = False

    @classmethod
    def from_dict(cls, cfg: dict, where: str = "anticipation") -> AnticipationSampling:
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(sorted(allowed))}")
        point = cfg.get("anticipation_point", cls.anticipation_point)
        if point not in ANTICIPATION_POINTS:
            raise DataError(f"{where}: anticipation_point must be one of "
                            f"{', '.join(ANTICIPATION_POINTS)}, got {point!r}")
        fpc = cfg.get("frames_per_clip", cls.frames_per_clip)
        if not isinstance(fpc, int) or isinstance(fpc, bool) or fpc < 1:
            raise DataError(f"{where}: frames_per_clip must be a positive integer, got {fpc!r}")
        fps, at = cfg.get("fps", cls.fps), cfg.get("anticipation_time_s", cls.anticipation_time_s)
        for name, v, low in (("fps", fps, 0.0), ("anticipation_time_s", at, -1.0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= low:
                raise DataError(f"{where}: {name} must be a number above {low:g}, got {v!r}")
        if at < 0:
            raise DataError(f"{where}: anticipation_time_s must be >= 0, got {at!r}")
        predictor = cfg.get("predictor", cls.predictor)
        if not isinstance(predictor, bool):
            raise DataError(f"{where}: predictor must be true or false, got {predictor!r}")
        return cls(frames_per_clip=fpc, fps=float(fps), anticipation_time_s=float(at),
                   anticipation_point=point,
                   train_anticipation_time_s=_pair(where, "train_anticipation_time_s",
                                                   cfg.get("train_anticipation_time_s",
                                                           cls.train_anticipation_time_s)),
                   train_anticipation_point=_pair(where, "train_anticipation_point",
                                                  cfg.get("train_anticipation_point",
                                                          cls.train_anticipation_point)),
                   predictor=predictor)

    def protocol(self) -> dict:
        d = dataclasses.asdict(self)
        d["train_anticipation_time_s"] = list(self.train_anticipation_time_s)
        d["train_anticipation_point"] = list(self.train_anticipation_point)
        return d

    def eval_draw(self) -> tuple[float, float]:
        """(anticipation time, anticipation point) of every evaluation clip."""
        return self.anticipation_time_s, ANTICIPATION_POINTS[self.anticipation_point]

    def train_draw(self, u_time: float, u_point: float) -> tuple[float, float]:
        """A training clip's (at, ap) from two uniforms in [0, 1): `a + (b - a) * u`, the formula of
        Python's `random.uniform` that the release calls."""
        (t0, t1), (p0, p1) = self.train_anticipation_time_s, self.train_anticipation_point
        return t0 + (t1 - t0) * u_time, p0 + (p1 - p0) * u_point


def clip_indices(start_frame: int, stop_frame: int, video_fps: float, *, frames_per_clip: int,
                 fps: float, anticipation_time: float, anticipation_point: float) -> list[int]:
    """The release's frame indices for one action (module docstring); `anticipation_point` is
    the number `ap` (1: the action's start, 0: its end)."""
    fstp = int(video_fps / fps)
    if fstp < 1:
        raise DataError(f"a {video_fps:g} fps video cannot be sampled at {fps:g} fps (the release's "
                        f"frame step int({video_fps:g} / {fps:g}) would be 0)")
    nframes = int(frames_per_clip * fstp)
    aframes = int(anticipation_time * video_fps)
    ap = anticipation_point
    af = int(start_frame * ap + (1 - ap) * stop_frame - aframes)
    indices = np.arange(af - nframes, af, fstp).astype(np.int64)
    indices[indices < 0] = 0
    return indices.tolist()


@dataclass(frozen=True)
class Segment:
    """One annotated action of a prepared manifest: publisher ids and our class indices."""

    path: str
    video_id: str
    narration_id: str
    start_frame: int
    stop_frame: int
    video_fps: float
    verb_class: int      # the publisher's ids (EPIC_100_verb_classes.csv / noun_classes.csv)
    noun_class: int
    verb: int            # our indices: position in the training vocabulary (verbs.csv ...)
    noun: int
    action: int

    def __iter__(self):
        """(path, action): a segment reads as the (video, label) entry that every manifest
        consumer takes (preflight's file check, hold-outs, the predictions file's index)."""
        return iter((self.path, self.action))

    def indices(self, sampling: AnticipationSampling, at: float, ap: float) -> list[int]:
        return clip_indices(self.start_frame, self.stop_frame, self.video_fps,
                            frames_per_clip=sampling.frames_per_clip, fps=sampling.fps,
                            anticipation_time=at, anticipation_point=ap)


def read_vocabulary(path: str | os.PathLike) -> list[dict]:
    """A prepared `verbs.csv` / `nouns.csv` / `actions.csv` (`harness data prepare ek100`), rows
    in index order."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if [r.get("index") for r in rows] != [str(i) for i in range(len(rows))]:
        raise DataError(f"{path}: the index column must run 0, 1, 2, ...")
    return rows


def write_manifest_rows(segments: list[Segment], out: Path) -> list[str]:
    """The lines of a manifest (header first), paths relative to `out` where they lie under it."""
    rows = [",".join(MANIFEST_COLUMNS)]
    for s in segments:
        p = os.path.abspath(s.path)
        rel = os.path.relpath(p, out)
        path = p if rel.startswith("..") else Path(rel).as_posix()
        if any(c in path for c in ',\n"'):
            raise DataError(f"video path holds a comma, quote or newline and cannot go in a manifest: "
                            f"{path!r}")
        rows.append(",".join(str(v) for v in (path, s.video_id, s.narration_id, s.start_frame,
                                               s.stop_frame, repr(float(s.video_fps)), s.verb_class,
                                               s.noun_class, s.verb, s.noun, s.action)))
    return rows


def read_manifest(path: str | os.PathLike) -> list[Segment]:
    """A manifest `tasks.native.ek100` wrote; relative paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no anticipation manifest; run `harness data prepare ek100 --root DIR`")
    base = path.parent
    segments = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if tuple(header or ()) != MANIFEST_COLUMNS:
            raise DataError(f"{path}: not an anticipation manifest (header {header!r}); expected "
                            f"{','.join(MANIFEST_COLUMNS)}")
        for row in reader:
            if not row:
                continue
            try:
                p, vid, nid, sf, ef, vfps, vc, nc, v, n, a = row
                segments.append(Segment(str(base / p) if not os.path.isabs(p) else p, vid, nid,
                                        int(sf), int(ef), float(vfps), int(vc), int(nc), int(v),
                                        int(n), int(a)))
            except ValueError:
                raise DataError(f"{path}:{reader.line_num}: malformed row {row!r}") from None
    return segments


class AnticipationClips:
    """Map-style dataset over a manifest's segments: item i is `{"frames": uint8 (T, H, W, 3) or
    None, "verb", "noun", "action", "anticipation_time", "path", "error"}`. Evaluation clips use
    the protocol's fixed (at, ap); training clips draw them from torch's generator (seeded per
    item by the caller, as `tasks.loading.SeededItems` does). An unreadable clip returns frames
    None and the error (the release skips it).

    With a `transform` (what `Task.dataset` gives) items are those of `tasks.items.VideoDataset`
    for one segment: `device_finish=True` gives uint8 `frames` (1, T, H, W, 3) and the drawn
    `params` (None in evaluation) for `tasks.loading.ClipFinisher`; else finished float `video`
    (1, V, 3, T, H, W). `label` is the action (the class the manifests' digests and the
    predictions file index by); `verb`, `noun`, `action` and `anticipation_time` ride along."""

    def __init__(self, segments: list[Segment], sampling: AnticipationSampling, *, train: bool,
                 backend: str = "auto", transform=None, device_finish: bool = False,
                 split: str = ""):
        self.segments, self.sampling, self.train, self.backend = segments, sampling, train, backend
        self.transform, self.device_finish, self.split = transform, bool(device_finish), split
        # (path, action) per item: what the trainer's feature store and the checks read.
        self.entries = [(s.path, s.action) for s in segments]

    def __len__(self) -> int:
        return len(self.segments)

    def draw(self, generator=None) -> tuple[float, float]:
        if not self.train:
            return self.sampling.eval_draw()
        import torch

        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        return self.sampling.train_draw(u[0], u[1])

    def __getitem__(self, i: int, generator=None) -> dict:
        from .clip_reader import read_frames

        s = self.segments[i]
        at, ap = self.draw(generator)
        idx = s.indices(self.sampling, at, ap)
        item = {"frames": None, "verb": s.verb, "noun": s.noun, "action": s.action,
                "anticipation_time": at, "path": s.path, "error": None}
        try:
            decoded = read_frames(s.path, lambda n: idx, backend=self.backend)
            item["frames"] = decoded.frames
            if self.transform is not None:
                item.update(self._finish(decoded.frames, generator), backend=decoded.backend)
        except Exception as e:  # noqa: BLE001 - a bad file costs its sample, reported, never replaced
            item["frames"] = None
            item["error"] = f"{type(e).__name__}: {e}"[:300]
        if self.transform is not None:
            item["label"] = s.action
            if item["error"] is not None or "video" in item:  # collate reads `frames` if present
                item.pop("frames")
        return item

    def _finish(self, frames, generator) -> dict:
        """One segment, as `tasks.items.VideoDataset._finish` makes it (after the clip's draw, so
        the augmentation's seed follows the (at, ap) draw in torch's stream)."""
        import torch

        draw = getattr(self.transform, "draw", None)
        if self.device_finish:
            if draw is None:
                return {"frames": frames[None], "params": None}
            clip, params = draw(frames, int(torch.randint(0, 2**62, (), generator=generator).item()))
            return {"frames": clip[None], "params": [params]}
        return {"video": torch.stack(self.transform(frames))[None]}


def collate_anticipation(items: list[dict]) -> dict:
    """`tasks.items.collate_clips` plus, per readable item, `verb`, `noun`, `action` (long) and
    `anticipation_time` (float64, seconds: the predictor's target frames depend on it)."""
    import torch

    from .items import collate_clips

    out = collate_clips(items)
    good = [it for it in items if it.get("error") is None]
    for key in ("verb", "noun", "action"):
        out[key] = torch.tensor([it[key] for it in good], dtype=torch.long)
    out["anticipation_time"] = torch.tensor([it["anticipation_time"] for it in good],
                                            dtype=torch.float64)
    return out
