"""Declarative task specs, built from `tasks/configs/task/<name>.yaml` (no torch here)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.fields import bounded
from common.names import did_you_mean

from .errors import DataError

# Task kinds (`probes.kinds` holds what each changes in the probe trainer): single-label video
# and image classification, multi-label classification, person-box detection (AVA) and action
# anticipation (EPIC-KITCHENS-100: verb, noun and action of a clip ending before the action).
KINDS = ("video", "image", "multilabel", "detection", "anticipation")
METRICS = ("top1", "top5", "mAP", "recall5")
# The metric each kind reports (a task may pick top5 over top1, never a metric of another kind).
# recall5: class-mean recall@5 of the action (verb and noun beside it), V-JEPA 2's EK100 score.
KIND_METRICS = {"video": ("top1", "top5"), "image": ("top1", "top5"), "multilabel": ("mAP",),
                "detection": ("mAP",), "anticipation": ("recall5",)}
# Clip placements (tasks.sampling, which holds the same tuples; kept here so specs load without
# numpy). WHOLE_VIDEO: one clip spread over the whole video (MVEB's), so one segment.
PLACEMENTS = ("random", "start", "center", "mveb")
WHOLE_VIDEO = ("mveb",)
# `decoder`: who decodes the videos (not protocol: it changes no number beyond colour-conversion
# rounding, and the record says which ran); `auto` takes the first usable of decord, torchcodec,
# PyAV (tasks.clip_reader; the same names as tasks.backends.CHOICES).
DECODERS = ("auto", "decord", "torchcodec", "pyav")
# `classes`: `all` probes the label map's classes; `present` only those the training manifest
# uses, renumbered (tasks.classes; in the protocol).
CLASS_CHOICES = ("all", "present")


# A task's name becomes part of file names (training state, its lock, records, feature caches)
# and of Hydra overrides (`task=NAME`): letters, digits and `_ . + -`, at most 100 characters.
MAX_NAME_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def name_problem(name: Any) -> str | None:
    """Why `name` cannot name a task (None: it can)."""
    if not isinstance(name, str):
        return f"a task name is text, got {type(name).__name__} {name!r}"[:200]
    if len(name) > MAX_NAME_LENGTH:
        return (f"a task name has at most {MAX_NAME_LENGTH} characters, this one "
                f"{len(name)} ({name[:40]!r}...)")
    if name in (".", ".."):
        return f"a task name is a name, not a path: got {name!r}"
    if any(c in name for c in "/\\"):
        return (f"a task name is a name, not a path: {name!r} holds a path separator "
                f"(give a YAML file by its path with --task path/to/file.yaml; its `name:` is "
                f"the file name without .yaml)")
    if not _NAME.fullmatch(name):
        return (f"a task name is letters, digits and _ . + - (starting with a letter or a "
                f"digit), got {name!r}")
    return None


def _check_keys(where: str, given: Mapping, allowed: set[str], required: set[str] = frozenset()) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise DataError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(given))
    if missing:
        raise DataError(f"{where}: missing required key(s) {', '.join(missing)}")


def _plain(value: Any) -> Any:
    """OmegaConf containers and tuples -> plain dicts/lists, so specs stay JSON-able."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _choice(where: str, key: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        raise DataError(f"{where}: {key} {value!r} is not one of {', '.join(choices)}.{hint}")
    return value


def _train_fold(where: str, fold) -> dict | None:
    if fold is None:
        return None
    ok = isinstance(fold, Mapping) and set(fold) == {"fraction", "seed"}
    frac, seed = (fold.get("fraction"), fold.get("seed")) if ok else (None, None)
    if not ok or isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1 \
            or isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"{where}: train_fold must be {{fraction: (0, 1], seed: int >= 0}} (set by "
                        f"`harness run --split 10pct:seed1`), got {fold!r}")
    return {"fraction": float(frac), "seed": int(seed)}


@dataclass(frozen=True)
class SamplingSpec:
    """How clips are cut from a video: S segments of `frames_per_clip` frames `frame_step` apart."""

    frames_per_clip: int
    frame_step: int
    train_segments: int = 1
    eval_segments: int = 1
    eval_views: int = 1
    # Where a clip sits in its partition (tasks.sampling.ClipSampler): "random" is the release's
    # behaviour in training *and* evaluation; "center" (deterministic) or "start" are deviations
    # that get their own protocol id; "mveb" is MVEB's one clip of frames_per_clip frames spread
    # over the whole video (one segment).
    train_placement: str = "random"
    eval_placement: str = "random"

    def __post_init__(self):
        for name in ("train_placement", "eval_placement"):
            if getattr(self, name) not in PLACEMENTS:
                raise DataError(f"sampling.{name} must be one of {', '.join(PLACEMENTS)}, "
                                f"got {getattr(self, name)!r}")
        for place, segments in (("train_placement", "train_segments"),
                                ("eval_placement", "eval_segments")):
            if getattr(self, place) in WHOLE_VIDEO and getattr(self, segments) != 1:
                raise DataError(f"sampling.{place} {getattr(self, place)} takes one clip spread "
                                f"over the whole video: sampling.{segments} must be 1, got "
                                f"{getattr(self, segments)!r}")
        for f in dataclasses.fields(self):
            if f.name.endswith("_placement"):
                continue
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise DataError(f"sampling.{f.name} must be a positive integer, got {v!r}")

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "sampling") -> "SamplingSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        _check_keys(where, d, names, {"frames_per_clip", "frame_step"})
        return cls(**dict(d))

    @property
    def span(self) -> int:
        """Frames covered by one clip in the source video."""
        return self.frames_per_clip * self.frame_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    num_classes: int | None  # None for an anticipation task (sizes from its label files)
    metric: str
    data: dict
    sampling: SamplingSpec
    resolution: int | None = None
    train_aug: dict = field(default_factory=dict)
    eval_transform: dict = field(default_factory=dict)
    max_failure_fraction: float = bounded(0.05, low=0, high=1, why="a fraction")
    # How videos are decoded (not protocol: they change no number). "subprocess" decodes in a
    # child process that a native crash or hang cannot take down (tasks.clip_reader.read_frames);
    # off by default: the container header check already refuses the known crafted files, and
    # the child costs 25-50% of decoding speed (benchmarks/decode.py).
    # A temporal probe derived from the manifests' videos (tasks/temporal.py): arrow_of_time or
    # frame_order; the source labels are not used, the task has the probe's 2 classes.
    temporal_probe: str | None = None
    decode_isolation: str = "none"
    decode_timeout_s: float | None = 60.0
    # Which backend decodes (DECODERS); not protocol. A named backend that is not installed is an
    # error when the datasets are made (tasks.backends.require), saying what to install.
    decoder: str = "auto"
    # Probe every class of the label map (`all`), or only the classes the training manifest uses
    # (`present`: renumbered in label-map order, evaluation samples of other classes dropped and
    # counted; all of it in the protocol). Not for detection or temporal probes.
    classes: str = "all"
    optim: dict = field(default_factory=dict)
    description: str = ""
    # A detection task's own block (files of boxes, proposals, excluded frames; `tasks.ava`
    # validates it); None for other kinds.
    detection: dict | None = None
    # The probe of the task's published protocol when the run names none (AVA: roi_linear, the
    # paper's linear classifier on RoIAligned layer taps); null: the run config's (attentive).
    default_probe: str | None = None
    # A label-efficiency fold as the training split (`harness run --split 10pct:seed1`):
    # {fraction, seed}, in the protocol beside the fold manifest's hash, so the paper's low-shot
    # table can put the 3 seeds of a fraction side by side.
    train_fold: dict | None = None
    # Train the probe on cached frozen features (fixed centred clips, no augmentation) unless the
    # run says otherwise: right for small splits, where decoding every epoch dominates the cost.
    cache_features: bool = False
    # With cached features: how many augmented copies of each training video to encode (the
    # task's training augmentation and random clip position); each epoch the probe trains on one
    # copy per video drawn at random. 0: one fixed centred clip per video, no augmentation, on
    # which a probe can memorise a small train split instead of learning the task.
    cached_train_copies: int = 0
    # An anticipation task's own block: `tasks.anticipation.AnticipationSampling`'s fields (the
    # clips and whether the head reads the predictor's tokens), checked; None for other kinds.
    # Such a task has no `num_classes` (the heads' sizes are the row counts of its verbs.csv,
    # nouns.csv and actions.csv) and no `sampling` (its clips are cut by this block; `sampling`
    # is derived: one segment, one view of `frames_per_clip` frames, the frame step being per
    # video, int(video fps / fps)).
    anticipation: dict | None = None

    DATA_KEYS = ("root", "train", "val", "test", "labels", "eval_split")

    @classmethod
    def from_dict(cls, cfg: Mapping) -> "TaskSpec":
        cfg = _plain(cfg)
        name = cfg.get("name", "<unnamed>")
        problem = name_problem(name) if "name" in cfg else None
        if problem:
            raise DataError(f"task name: {problem}")
        where = f"task {name!r}"
        allowed = {f.name for f in dataclasses.fields(cls)}
        kind = cfg.get("kind", "video")
        if kind not in KINDS:
            raise DataError(f"{where}: kind {kind!r} is not supported here; supported: {', '.join(KINDS)}")
        anticipating = kind == "anticipation"
        _check_keys(where, cfg, allowed,
                    {"name", "data"} | (set() if anticipating else {"num_classes", "sampling"}))
        anticipation, sampling = _anticipation(where, kind, cfg)
        num_classes = cfg.get("num_classes")
        if anticipating:
            if num_classes is not None:
                raise DataError(f"{where}: an anticipation task takes its heads' sizes from the "
                                f"row counts of verbs.csv, nouns.csv and actions.csv; drop "
                                f"num_classes ({num_classes!r})")
        elif not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise DataError(f"{where}: num_classes must be a positive integer, got {num_classes!r}")
        metric = cfg.get("metric", KIND_METRICS[kind][0])
        if metric not in METRICS:
            raise DataError(f"{where}: metric {metric!r} unknown; choose one of {', '.join(METRICS)}")
        if metric not in KIND_METRICS[kind]:
            raise DataError(f"{where}: a {kind} task reports {' or '.join(KIND_METRICS[kind])}, "
                            f"not {metric!r}")
        detection = cfg.get("detection")
        if (kind == "detection") != (detection is not None):
            raise DataError(f"{where}: a detection block goes with kind: detection (and that kind "
                            f"needs one: its boxes, proposals and excluded frames)")
        if detection is not None and not isinstance(detection, dict):
            raise DataError(f"{where}: detection must be a mapping, got {type(detection).__name__}")

        data = cfg["data"]
        if not isinstance(data, dict):
            raise DataError(f"{where}: data must be a mapping, got {type(data).__name__}")
        _check_keys(f"{where} data", data, set(cls.DATA_KEYS), {"train", "eval_split"})
        if data["eval_split"] not in data or data[data["eval_split"]] is None:
            raise DataError(
                f"{where}: data.eval_split is {data['eval_split']!r} but data has no manifest for that split"
            )

        resolution = cfg.get("resolution")
        if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
            raise DataError(f"{where}: resolution must be a positive integer or null, got {resolution!r}")
        mff = float(cfg.get("max_failure_fraction", 0.05))
        problem = _field_range("max_failure_fraction").problem("max_failure_fraction", mff)
        if problem:
            raise DataError(f"{where}: max_failure_fraction={mff:g} is out of range: {problem}")

        temporal = cfg.get("temporal_probe")
        if temporal is not None:
            from .temporal import CLASSES as TEMPORAL

            if temporal not in TEMPORAL:
                raise DataError(f"{where}: temporal_probe must be one of {', '.join(TEMPORAL)} or "
                                f"null, got {temporal!r}")
            if num_classes != 2:
                raise DataError(f"{where}: a temporal probe has 2 classes, num_classes is {num_classes}")
        isolation = cfg.get("decode_isolation", "none")
        if isolation not in ("none", "subprocess"):
            raise DataError(f"{where}: decode_isolation must be 'none' or 'subprocess', got {isolation!r}")
        timeout = cfg.get("decode_timeout_s", 60.0)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0):
            raise DataError(f"{where}: decode_timeout_s must be a positive number of seconds or "
                            f"null, got {timeout!r}")

        decoder = _choice(where, "decoder", cfg.get("decoder", "auto"), DECODERS)
        classes = _choice(where, "classes", cfg.get("classes", "all"), CLASS_CHOICES)
        if classes == "present" and (kind in ("detection", "anticipation") or temporal is not None):
            what = "temporal probe" if temporal else f"{kind} task"
            raise DataError(f"{where}: classes: present picks the classes of a labelled training "
                            f"manifest; a {what} has its own fixed classes (use classes: all)")
        if anticipating and temporal is not None:
            raise DataError(f"{where}: a temporal probe derives its own 2 classes from a video "
                            f"manifest; it does not go with kind: anticipation")

        copies = cfg.get("cached_train_copies", 0)
        if not isinstance(copies, int) or isinstance(copies, bool) or copies < 0:
            raise DataError(f"{where}: cached_train_copies must be an integer >= 0, got {copies!r}")

        return cls(
            name=name,
            kind=kind,
            num_classes=num_classes,
            metric=metric,
            data=data,
            sampling=sampling or SamplingSpec.from_dict(cfg["sampling"] or {}, f"{where} sampling"),
            resolution=resolution,
            train_aug=_train_aug(cfg.get("train_aug")),
            eval_transform=dict(cfg.get("eval_transform") or {}),
            max_failure_fraction=mff,
            temporal_probe=temporal,
            decode_isolation=isolation,
            decode_timeout_s=None if timeout is None else float(timeout),
            decoder=decoder,
            classes=classes,
            optim=dict(cfg.get("optim") or {}),
            description=str(cfg.get("description", "")),
            cache_features=bool(cfg.get("cache_features", False)),
            cached_train_copies=copies,
            detection=detection,
            default_probe=cfg.get("default_probe"),
            train_fold=_train_fold(where, cfg.get("train_fold")),
            anticipation=anticipation,
        )

    @property
    def eval_split(self) -> str:
        return self.data["eval_split"]

    @property
    def splits(self) -> list[str]:
        return [s for s in ("train", "val", "test") if self.data.get(s)]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sampling"] = self.sampling.to_dict()
        return d


def _anticipation(where: str, kind: str, cfg: Mapping) -> tuple[dict | None, SamplingSpec | None]:
    """(the checked `anticipation` block, the SamplingSpec derived from it) of an anticipation
    task; (None, None) for other kinds, which must not have the block."""
    block = cfg.get("anticipation")
    if kind != "anticipation":
        if block is not None:
            raise DataError(f"{where}: an anticipation block goes with kind: anticipation")
        return None, None
    if not isinstance(block, Mapping):
        raise DataError(f"{where}: kind: anticipation needs an `anticipation:` block (frames_per_clip, "
                        f"fps, anticipation_time_s, anticipation_point, ...), got {block!r}")
    if cfg.get("train_fold") is not None:
        raise DataError(f"{where}: label-efficiency folds (train_fold, --split) are not made for "
                        f"anticipation segments")
    if cfg.get("sampling") is not None:
        raise DataError(f"{where}: an anticipation task's clips are cut by its `anticipation:` block "
                        f"(frames_per_clip, fps, anticipation_time_s); drop `sampling`")
    from .anticipation import AnticipationSampling

    sampling = AnticipationSampling.from_dict(dict(block), f"{where} anticipation")
    checked = sampling.protocol()
    # The clip the encoder sees: one segment, one view (the release's evaluation is one centre
    # view); frame_step 1 stands for the per-video step int(video fps / fps), which no spec holds.
    derived = SamplingSpec(frames_per_clip=sampling.frames_per_clip, frame_step=1,
                           train_placement="start", eval_placement="start")
    return checked, derived


def _train_aug(cfg) -> dict:
    """The task's `train_aug`, with `randaugment_backend: pil` (the default, the release's PIL
    RandAugment) dropped: writing the default must not change the protocol, while `tensor` stays in
    it and gets its own protocol id."""
    aug = dict(cfg or {})
    if aug.get("randaugment_backend") == "pil":
        del aug["randaugment_backend"]
    return aug


def _field_range(name: str):
    return {f.name: f for f in dataclasses.fields(TaskSpec)}[name].metadata["range"]
