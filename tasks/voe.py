"""Violation-of-expectation (VoE) data: pairs of a possible and an impossible video, identical
until the violation, and the per-video frames the surprise evaluation scores.

A VoE manifest (`{split}.json`, written by the native preparers in `tasks/native/` and by
`tasks.physics_synth.make_physics`) is one JSON object:

    {"format": "harness-voe", "version": 1, "task": "intphys", "split": "dev",
     "pairs": [{"pair_id", "property", "possible": VIDEO, "impossible": VIDEO,
                "diverge_frame", "violation_frame", "align_end", "meta"}, ...],
     "videos": [VIDEO, ...]}          # unpaired videos with no label (a held-out split)

    VIDEO = {"path", "name", "possible": true|false|null, "start"}

`path` is a video file or a folder of numbered frames, relative to the manifest's folder where
it lies under it. `start` is the number of frames cut from the front (InfLevel's priming
segment). `align_end`: the two videos are cut to the same length by dropping frames from the
front of the longer (InfLevel's loader does this after the cut). `diverge_frame`: the first
frame (after the cut) where the two videos differ, when known; `violation_frame`: the frame of
the violation when the maker knows it (the synthetic set), which for an exactly rendered pair
is the same frame.

Reading a video (`load_video`, `load_pair`) gives uint8 frames `(T, H, W, 3)` (the project's
decoding: `tasks.clip_reader` for files, `tasks.native.frames` for frame folders), every
`frame_step`-th frame from the cut on; `max_frames` keeps only the first (max_frames //
frame_step) * frame_step frames before the step is taken (the authors' IntPhys loader reads the
first 99 // step * step of its 100 frames).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

FORMAT = "harness-voe"
VERSION = 1


@dataclass(frozen=True)
class VoEItem:
    """One video of a VoE set. `possible`: None where the label is withheld (held-out splits)."""

    path: str
    name: str = ""
    possible: bool | None = None
    start: int = 0

    def __post_init__(self):
        if not isinstance(self.start, int) or isinstance(self.start, bool) or self.start < 0:
            raise DataError(f"VoE video {self.path}: start must be an integer >= 0, got {self.start!r}")


@dataclass(frozen=True)
class VoEPair:
    """A possible and an impossible video that tell the same story until the violation."""

    pair_id: str
    property: str
    possible: VoEItem
    impossible: VoEItem
    diverge_frame: int | None = None
    violation_frame: int | None = None
    align_end: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.possible.possible is False or self.impossible.possible is True:
            raise DataError(f"VoE pair {self.pair_id}: its possible video is labelled impossible "
                            f"or the other way round")


@dataclass
class VoESet:
    """One split of a VoE task: its pairs and any unpaired (unlabelled) videos."""

    task: str
    split: str
    pairs: list[VoEPair]
    videos: list[VoEItem] = field(default_factory=list)

    def properties(self) -> list[str]:
        return sorted({p.property for p in self.pairs})


# -- the manifest ---------------------------------------------------------------------------

def _item_json(item: VoEItem, out: Path) -> dict:
    from .native.common import manifest_path_text

    d = asdict(item)
    d["path"] = manifest_path_text(item.path, out)
    return d


def write_voe_manifest(voe: VoESet, path: str | os.PathLike) -> Path:
    """Write `voe` as a VoE manifest (atomically); video paths relative to its folder where
    they lie under it."""
    import json

    from common.atomic import atomic_write_text

    path = Path(path)
    out = path.parent
    pairs = []
    for p in voe.pairs:
        d = {"pair_id": p.pair_id, "property": p.property,
             "possible": _item_json(p.possible, out), "impossible": _item_json(p.impossible, out),
             "diverge_frame": p.diverge_frame, "violation_frame": p.violation_frame,
             "align_end": p.align_end, "meta": p.meta}
        pairs.append(d)
    doc = {"format": FORMAT, "version": VERSION, "task": voe.task, "split": voe.split,
           "pairs": pairs, "videos": [_item_json(v, out) for v in voe.videos]}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def _opt_int(where: str, key: str, value) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataError(f"{where}: {key} must be an integer >= 0 or null, got {value!r}")
    return value


def _item(where: str, d, base: Path) -> VoEItem:
    if not isinstance(d, dict) or not isinstance(d.get("path"), str) or not d["path"]:
        raise DataError(f"{where}: a video is {{path, name, possible, start}}, got {d!r}"[:300])
    unknown = sorted(set(d) - {"path", "name", "possible", "start"})
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)} in a video entry")
    possible = d.get("possible")
    if possible not in (True, False, None):
        raise DataError(f"{where}: possible must be true, false or null, got {possible!r}")
    path = d["path"]
    if not os.path.isabs(path):
        path = str(base / path)
    return VoEItem(path, str(d.get("name") or ""), possible, _opt_int(where, "start", d.get("start", 0)) or 0)


def read_voe_manifest(path: str | os.PathLike) -> VoESet:
    """A VoE manifest, checked: every field has its type, every pair one possible and one
    impossible video, pair ids unique. Relative paths resolve against the manifest's folder."""
    from common.bounded import BoundedInputError, load_json

    path = Path(path)
    if not path.is_file():
        raise DataError(f"VoE manifest not found: {path}")
    try:
        doc = load_json(path, max_depth=16)
    except BoundedInputError as e:
        raise DataError(str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a VoE manifest (no \"format\": \"{FORMAT}\"); make it with "
                        f"`harness data prepare TASK` or `harness data make physics`")
    if doc.get("version") != VERSION:
        raise DataError(f"{path}: VoE manifest version {doc.get('version')!r}; this harness reads "
                        f"version {VERSION}")
    base = path.parent
    pairs, seen = [], set()
    for i, d in enumerate(doc.get("pairs") or []):
        where = f"{path} pair {i}"
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected an object, got {type(d).__name__}")
        pid, prop = d.get("pair_id"), d.get("property")
        if not isinstance(pid, str) or not pid or not isinstance(prop, str) or not prop:
            raise DataError(f"{where}: pair_id and property must be non-empty text")
        if pid in seen:
            raise DataError(f"{where}: pair_id {pid!r} repeats an earlier pair")
        seen.add(pid)
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise DataError(f"{where}: meta must be an object")
        pairs.append(VoEPair(pid, prop, _item(where, d.get("possible"), base),
                             _item(where, d.get("impossible"), base),
                             _opt_int(where, "diverge_frame", d.get("diverge_frame")),
                             _opt_int(where, "violation_frame", d.get("violation_frame")),
                             bool(d.get("align_end", False)), meta))
    videos = [_item(f"{path} video {i}", d, base) for i, d in enumerate(doc.get("videos") or [])]
    return VoESet(str(doc.get("task") or ""), str(doc.get("split") or ""), pairs, videos)


# -- frames ---------------------------------------------------------------------------------

def frame_indices(num_frames: int, *, start: int = 0, frame_step: int = 1,
                  max_frames: int | None = None, drop: int = 0) -> list[int]:
    """Indices of the frames read from a `num_frames`-frame video: from `start + drop` on, every
    `frame_step`-th, within the first `max_frames // frame_step * frame_step` frames after the cut
    (all of them when `max_frames` is None)."""
    if frame_step < 1:
        raise DataError(f"frame_step must be >= 1, got {frame_step}")
    first = start + drop
    end = num_frames
    if max_frames is not None:
        end = min(end, first + (max_frames // frame_step) * frame_step)
    if first >= end:
        raise DataError(f"no frames left: {num_frames} frames, cut {first}"
                        + (f", max_frames {max_frames}" if max_frames is not None else ""))
    return list(range(first, end, frame_step))


def _decode(path: str, indices_fn, backend: str):
    if os.path.isdir(path):
        from .native.frames import read_frame_folder

        return read_frame_folder(path, indices_fn)
    from .clip_reader import read_frames

    return read_frames(path, indices_fn, backend=backend)


def count_frames(item: VoEItem, backend: str = "auto") -> int:
    """Frames of the video as the reader sees them (one frame decoded)."""
    return int(_decode(item.path, lambda n: [0], backend).num_frames)


def load_video(item: VoEItem, *, frame_step: int = 1, max_frames: int | None = None,
               drop: int = 0, backend: str = "auto") -> np.ndarray:
    """uint8 frames `(T, H, W, 3)`: every `frame_step`-th frame after the cut (`item.start`)
    and `drop` more (`load_pair`'s end alignment)."""
    decoded = _decode(item.path, lambda n: frame_indices(n, start=item.start, frame_step=frame_step,
                                                         max_frames=max_frames, drop=drop), backend)
    frames = decoded.frames
    return frames.numpy() if hasattr(frames, "numpy") else np.asarray(frames)


def load_pair(pair: VoEPair, *, frame_step: int = 1, max_frames: int | None = None,
              backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(possible, impossible) frames. With `pair.align_end`, the longer video (after its cut)
    first loses frames at its front until both have as many (InfLevel's loader)."""
    drops = (0, 0)
    if pair.align_end:
        left = [count_frames(v, backend) - v.start for v in (pair.possible, pair.impossible)]
        diff = left[0] - left[1]
        drops = (max(diff, 0), max(-diff, 0))
    return tuple(load_video(v, frame_step=frame_step, max_frames=max_frames, drop=d, backend=backend)
                 for v, d in zip((pair.possible, pair.impossible), drops))


def first_difference(a: np.ndarray, b: np.ndarray) -> int:
    """The first frame index where two frame stacks differ (the shorter length where one is a
    prefix of the other, their common length where they are identical)."""
    n = min(len(a), len(b))
    if n and a.shape[1:] != b.shape[1:]:
        return 0
    differs = np.flatnonzero((a[:n] != b[:n]).reshape(n, -1).any(axis=1))
    return int(differs[0]) if len(differs) else n


# -- the task config ------------------------------------------------------------------------

# Keys a `kind: voe` task YAML may hold (tasks.spec.TaskSpec reads the other kinds).
VOE_KEYS = {"name", "kind", "description", "data", "sampling", "resolution", "properties",
            "metric", "decoder", "max_failure_fraction"}
SAMPLING_KEYS = {"frame_step", "max_frames", "frames_per_clip", "stride", "context_frames"}


@dataclass(frozen=True)
class VoESampling:
    """How a video becomes windows: every `frame_step`-th frame (within `max_frames`), windows of
    `frames_per_clip` frames every `stride` frames, each scored with each context length."""

    frame_step: int
    frames_per_clip: int
    stride: int
    context_frames: tuple[int, ...]
    max_frames: int | None = None


@dataclass(frozen=True)
class VoETaskSpec:
    name: str
    data: dict
    sampling: VoESampling
    properties: tuple[str, ...] = ()
    resolution: int | None = None
    description: str = ""
    decoder: str = "auto"

    @property
    def eval_split(self) -> str:
        return self.data["eval_split"]

    def manifest_path(self, split: str | None = None, root: str | os.PathLike | None = None) -> Path:
        split = split or self.eval_split
        if not isinstance(self.data.get(split), str):
            raise DataError(f"task {self.name!r} has no {split!r} split; splits: "
                            f"{', '.join(k for k in self.data if k not in ('root', 'eval_split'))}")
        base = Path(os.path.expanduser(str(root if root is not None else self.data.get("root", "."))))
        return base / self.data[split]


def _positive(where: str, key: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise DataError(f"{where}: {key} must be a positive integer, got {v!r}")
    return v


def voe_spec(cfg: dict) -> VoETaskSpec:
    """Check a `kind: voe` task config (the dict `tasks.config(name)` returns)."""
    name = cfg.get("name", "<unnamed>")
    where = f"task {name!r}"
    if cfg.get("kind") != "voe":
        raise DataError(f"{where}: not a VoE task (kind {cfg.get('kind')!r})")
    unknown = sorted(set(cfg) - VOE_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys are "
                        f"{', '.join(sorted(VOE_KEYS))}")
    data = cfg.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("eval_split"), str) \
            or not isinstance(data.get(data["eval_split"]), str):
        raise DataError(f"{where}: data must name eval_split and that split's manifest")
    s = cfg.get("sampling") or {}
    if not isinstance(s, dict) or set(s) - SAMPLING_KEYS:
        raise DataError(f"{where}: sampling keys are {', '.join(sorted(SAMPLING_KEYS))}")
    ctx = s.get("context_frames")
    if not isinstance(ctx, list) or not ctx:
        raise DataError(f"{where}: sampling.context_frames must be a non-empty list")
    fpc = _positive(where, "sampling.frames_per_clip", s.get("frames_per_clip"))
    ctx = tuple(_positive(where, "sampling.context_frames[]", c) for c in ctx)
    if max(ctx) >= fpc:
        raise DataError(f"{where}: every context length must leave frames to predict "
                        f"(< frames_per_clip {fpc}), got {list(ctx)}")
    max_frames = s.get("max_frames")
    sampling = VoESampling(_positive(where, "sampling.frame_step", s.get("frame_step")), fpc,
                           _positive(where, "sampling.stride", s.get("stride")), ctx,
                           None if max_frames is None else _positive(where, "sampling.max_frames", max_frames))
    resolution = cfg.get("resolution")
    if resolution is not None:
        _positive(where, "resolution", resolution)
    props = cfg.get("properties") or []
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise DataError(f"{where}: properties must be a list of names")
    return VoETaskSpec(name, dict(data), sampling, tuple(props), resolution,
                       str(cfg.get("description") or ""), str(cfg.get("decoder") or "auto"))


def load_task(name: str, root: str | os.PathLike | None = None,
              split: str | None = None) -> tuple[VoETaskSpec, VoESet]:
    """A built-in (or user) VoE task's spec and its split's pairs."""
    from .registry import config

    spec = voe_spec(config(name))
    return spec, read_voe_manifest(spec.manifest_path(split, root))
