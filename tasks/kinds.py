"""The task-kind seam on the data side (`probes.kinds` is its twin on the training side).

What differs between a classification, multi-label and detection task before the probe sees a
batch: how items are collated and finished on the device, how a validation split is carved from
the training data for choosing a grid's head, how predictions are scored (a detection task's own
evaluator), and a few facts the checks need. `harness/` asks `for_task(task)` and never branches
on a kind's name.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import DataError


@dataclass(frozen=True)
class TaskKind:
    name: str
    # One class per video, which can be checked against class folders and whose evaluation
    # classes can be checked for training videos.
    single_label: bool = True
    images: bool = False      # items are images (a video encoder sees each repeated to a clip)
    boxes: bool = False       # items carry person boxes: only a probe that reads boxes fits
    # Items arrive as uint8 frames that `tasks.loading.ClipFinisher` finishes on the device;
    # False: finished float clips (AVA's keyframe clips, which carry their boxes).
    device_finish: bool = True
    # Items are annotated segments of videos (action anticipation): verb, noun and action
    # targets and the anticipation time ride along (`tasks.anticipation.collate_anticipation`),
    # and the probe has one head per output (sizes: `task.num_classes`, a tuple).
    segments: bool = False

    # ----- loading ----------------------------------------------------------------------------
    def collate(self, dataset):
        if self.boxes:
            return dataset.collate
        if self.segments:
            from .anticipation import collate_anticipation

            return collate_anticipation
        from .dataset import collate_clips

        return collate_clips

    def finisher(self, dataset):
        if not self.device_finish:
            return None
        from .loading import ClipFinisher

        return ClipFinisher(dataset.transform)

    # ----- choosing a grid's head on data the probe never trained on ---------------------------
    def holdout(self, task, split: str, fraction: float, seed: int):
        """(training entries or None for all, held-out entries, what goes in the protocol).

        The task's own val split where it has one apart from the evaluation split; else a
        stratified, seeded hold-out of the training data.
        """
        from common.digest import lines_digest

        from .splits import stratified_holdout

        if self.boxes:
            # Whole training films held out (neighbouring keyframes are near copies), scored by
            # the same frame mAP against those films' own boxes.
            from . import ava

            kept, held = ava.holdout(task, fraction, seed)
            info = {"source": "training videos held out", "fraction": fraction, "seed": seed,
                    "videos": len({kf.video_id for kf in held}), "keyframes": len(held),
                    "sha256": lines_digest(sorted(kf.key for kf in held))}
            return kept, held, info
        if "val" in task.splits and split != "val":
            held = task.entries("val")
            info, kept = {"source": "the task's val split"}, None
        else:
            kept, held = stratified_holdout(task.entries("train"), fraction, seed)
            info = {"source": "held out from train", "fraction": fraction, "seed": seed}
        if self.segments:  # every field of the held-out segments, not only (video, action)
            from .anticipation_task import segments_sha256

            info.update(segments=len(held),
                        sha256=segments_sha256(held, task.content_root("train")))
        else:
            info.update(videos=len(held), sha256=task.entries_sha256(held, "train"))
        return kept, held, info

    def predicted_future(self, task) -> dict | None:
        """Keyword arguments of `probes.predicted_future.PredictedFuture` (beside the encoder and
        its predictor) when the head reads the predictor's tokens of the frames ahead, else None."""
        if not self.segments or not (task.spec.anticipation or {}).get("predictor"):
            return None
        # The release's EK100 wrapper settings (configs/eval/*/ek100.yaml wrapper_kwargs).
        return {"fps": float(task.spec.anticipation["fps"]), "num_output_frames": 2, "num_steps": 1}

    # ----- scoring ------------------------------------------------------------------------------
    def scoring(self, task, split: str | None = None, items=None) -> dict:
        """Keyword arguments for `probes.kinds.for_task(kind, **these)`: a detection task's
        evaluator (of `split`, or of held-out `items` against their own boxes) and class ids;
        nothing for the kinds the probe trainer scores itself."""
        if self.segments:  # one head per output: (verbs, nouns, actions)
            return {"outputs": tuple(task.num_classes)}
        if not self.boxes:
            return {}
        from . import ava

        evaluate = ava.items_evaluator(task, items) if items is not None else \
            ava.evaluator(task, split)
        return {"evaluate": evaluate, "class_ids": ava.class_ids(task)}


KINDS = {
    "video": TaskKind("video"),
    "image": TaskKind("image", images=True),
    "multilabel": TaskKind("multilabel", single_label=False),
    "detection": TaskKind("detection", single_label=False, boxes=True, device_finish=False),
    "anticipation": TaskKind("anticipation", segments=True),
}


def for_task(task) -> TaskKind:
    return get(task.spec.kind)


def get(name: str) -> TaskKind:
    try:
        return KINDS[name]
    except KeyError:
        raise DataError(f"task kind {name!r} is not supported; supported: "
                        f"{', '.join(KINDS)}") from None
