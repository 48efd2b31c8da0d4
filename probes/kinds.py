"""Task kinds: the few things that differ between tasks, behind one seam of the probe trainer.

The trainer (`probes.trainer`) runs one loop for every task: encode the clips, run the probe,
accumulate a loss, merge the views, score. A kind supplies what differs:

- `target(batch)`: what the loss compares with (class indices, multi-hot rows, per-box rows);
- `probe_inputs(batch)`: what the head receives besides the tokens (boxes for detection);
- `forward(probe, tokens, inputs)`: logits per view, (B, V, [H,] C); detection gives one row per
  box, (K, 1, [H,] C);
- `loss(logits, target)`: the loss summed over its units (samples, or boxes) and grid heads, with
  the number of units, so a step's loss is the mean over the units of its whole global batch;
- `merge(logits)`: views merged (mean of softmaxes; mean of sigmoids);
- `scorer()`: the metrics of an evaluation pass, also per grid head for selection.

| kind | tasks | loss | view merge | metrics |
|---|---|---|---|---|
| classification | `video`, `image` | cross-entropy | mean softmax | top-1/top-5, mean class accuracy |
| multilabel | `multilabel` | sigmoid BCE, mean over classes | mean sigmoid | mAP over classes with positives |
| detection | `detection` (AVA) | sigmoid BCE per person box | one view | the task's evaluator (frame mAP) |
| anticipation | `anticipation` (EK100) | focal, verb + noun + action | mean sigmoid | class-mean recall@5 per output (`probes.anticipation`) |

Scores that need the whole pass (average precision) are kept per micro-batch; under DDP the
ranks' parts are gathered back into one process's order before they are scored, so every number
equals a single-process run's.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

import parallel
from probes.kind_base import Kind, Scorer, per_head

TASK_KINDS = {"video": "classification", "image": "classification",
              "multilabel": "multilabel", "detection": "detection",
              "anticipation": "anticipation"}


def for_task(task_kind: str, *, topk: Iterable[int] = (1, 5), evaluate: Callable | None = None,
             class_ids: list[int] | None = None, outputs: tuple[int, ...] | None = None) -> "Kind":
    """The kind serving a task of `task_kind` (`tasks.spec` kinds). Detection needs `evaluate`
    (detections -> metrics, the task's official evaluator) and `class_ids` (the publisher's ids
    of the probe's outputs); anticipation the sizes of its verb, noun and action `outputs`."""
    if task_kind not in TASK_KINDS:
        raise ValueError(f"task kind {task_kind!r} has no probe kind; known: {', '.join(TASK_KINDS)}")
    name = TASK_KINDS[task_kind]
    if name == "classification":
        return Classification(topk)
    if name == "multilabel":
        return MultiLabel()
    if name == "anticipation":
        if outputs is None:
            raise ValueError("an anticipation task needs its heads' sizes (verb, noun, action)")
        from probes.anticipation import Anticipation

        return Anticipation(outputs)
    if evaluate is None or class_ids is None:
        raise ValueError("a detection task needs its evaluator and class ids (tasks.ava)")
    return Detection(evaluate, class_ids)


class Classification(Kind):
    name, primary, train_metric = "classification", "top1", "train_top1"

    def __init__(self, topk: Iterable[int] = (1, 5)):
        self.topk = tuple(int(k) for k in topk)

    def target(self, batch, device):
        return torch.as_tensor(batch["label"]).long().to(device, non_blocking=True)

    def loss(self, logits, target):
        if logits.ndim == 3:  # a grid (n, H, C): the sum of the heads' own losses
            flat, repeated, _ = per_head(logits, target)
            return F.cross_entropy(flat, repeated, reduction="sum"), target.shape[0]
        return F.cross_entropy(logits, target, reduction="sum"), target.shape[0]

    def hits(self, logits, target):
        if logits.ndim == 3:
            return (logits.argmax(-1) == target[:, None]).float().sum()
        return (logits.argmax(-1) == target).float().sum()

    def merge(self, logits):
        return logits.softmax(dim=-1).mean(dim=1)  # the release's mean of softmaxes

    def scorer(self, device):
        return ClassificationScorer(self.topk, device)


class MultiLabel(Kind):
    name, primary = "multilabel", "mAP"

    def target(self, batch, device):
        return torch.as_tensor(batch["targets"]).float().to(device, non_blocking=True)

    def loss(self, logits, target):
        if logits.ndim == 3:
            flat, repeated, _ = per_head(logits, target)
        else:
            flat, repeated = logits, target
        # Mean over classes, summed over samples: a step's loss is PyTorch's default BCE mean.
        per_row = F.binary_cross_entropy_with_logits(flat, repeated, reduction="none").mean(-1)
        return per_row.sum(), target.shape[0]

    def merge(self, logits):
        return logits.sigmoid().mean(dim=1)

    def scorer(self, device):
        return MultiLabelScorer()


class Detection(MultiLabel):
    """One row per person box: `boxes` (K, 5) [sample index, x1, y1, x2, y2] normalised, and
    `targets` (K, C) multi-hot; scored by the task's evaluator on (key, box, class scores)."""

    name = "detection"

    def __init__(self, evaluate: Callable[[dict], dict], class_ids: list[int]):
        self.evaluate, self.class_ids = evaluate, list(class_ids)

    def probe_inputs(self, batch, device):
        boxes = torch.as_tensor(batch["boxes"]).float()
        if boxes.device.type == "cpu" and torch.device(device).type != "cpu":
            from probes.roi import check_boxes  # checked on the CPU, where a read stalls nothing

            check_boxes(boxes, len(batch["label"]))
        return {"boxes": boxes.to(device, non_blocking=True)}

    def forward(self, probe, tokens, inputs, autocast):
        if tokens.shape[1] != 1:
            raise ValueError(f"detection takes one spatial view per clip (boxes are in frame "
                             f"coordinates); got {tokens.shape[1]} views: set sampling.eval_views=1")
        with autocast():
            logits = probe(tokens[:, 0], **inputs)
        return logits.float().unsqueeze(1)  # (K, 1, [H,] C): one "view" per box

    def scorer(self, device):
        return DetectionScorer(self.evaluate, self.class_ids)


# --------------------------------------------------------------------------------------------
# scoring an evaluation pass


class ClassificationScorer(Scorer):
    """Top-k and mean-class accuracy from integer counts kept on the device.

    Per micro-batch: top-k hits per k, samples seen, and per class its samples, its top-1 hits
    and its top-1 predictions, all added with `index_add_` (no op whose output size depends on
    values, no read back: torchmetrics' update, used before, read values back every micro-batch,
    in its `bincount`). The numbers are torchmetrics' `MulticlassAccuracy`'s to the bit
    (`tests/test_probes_kinds.py`): top-1 is the argmax, top-k (k > 1) `torch.topk`'s indices,
    micro accuracy hits / seen, and the macro mean averages hits / samples over the classes
    that were a target or a prediction (a class only predicted scores 0), in float32 as it does.
    Counts sum over ranks exactly (`merge_ranks`)."""

    def __init__(self, topk, device):
        self.topk, self.device = topk, device
        self.ks: dict[str, int] | None = None  # metric name -> the k it uses
        self.num_classes: int | None = None

    def _build(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.ks = {}
        for k in self.topk:
            k = min(int(k), self.num_classes)  # top-k beyond the class count: name the k used
            self.ks.setdefault(f"top{k}", k)
        zeros = dict(dtype=torch.int64, device=self.device)
        self.hits = torch.zeros(len(self.ks), **zeros)
        self.seen = torch.zeros((), **zeros)
        self.per_class = torch.zeros(3, self.num_classes, **zeros)  # samples, top-1 hits, predicted

    def update(self, scores, target, batch):
        if self.ks is None:
            self._build(scores.shape[-1])
        target = target.long()
        top1 = scores.argmax(dim=-1)  # as torchmetrics: argmax for k = 1 (its tie order)
        hit1 = (top1 == target).long()
        for i, k in enumerate(self.ks.values()):
            hit = hit1 if k == 1 else (scores.topk(k, dim=-1).indices == target[:, None]).any(-1)
            self.hits[i] += hit.sum()
        self.seen += target.numel()
        ones = torch.ones_like(target)
        self.per_class[0].index_add_(0, target, ones)
        self.per_class[1].index_add_(0, target, hit1)
        self.per_class[2].index_add_(0, top1, ones)

    def progress(self):
        if self.ks is None:
            return ""
        first = next(iter(self.ks))
        return f"{first} {self._metrics()[first]:.1f}"

    def merge_ranks(self, total_micro):
        classes = [c for c in parallel.gather_objects(self.num_classes) if c is not None]
        if not classes:  # no rank read anything: the caller reports it
            return
        if self.ks is None:  # this rank owned no readable micro-batch: zero counts
            self._build(classes[0])
        for counts in (self.hits, self.seen, self.per_class):
            parallel.all_sum_(counts)  # integer counts: their sum is exact in any order

    def empty(self) -> bool:
        return self.ks is None

    def compute(self):
        return self._metrics()

    def _metrics(self) -> dict[str, float]:
        # float32 as torchmetrics divides (its `_safe_divide` after `.float()`), 0 where 0/0.
        micro = torch.where(self.seen != 0, self.hits.float() / self.seen.float(),
                            torch.zeros((), device=self.hits.device))
        samples, correct, predicted = self.per_class.float()
        score = torch.where(samples != 0, correct / samples, torch.zeros_like(samples))
        weights = ((samples + predicted - correct) != 0).float()  # tp + fp + fn == 0: unscored
        total = weights.sum(-1, keepdim=True)
        macro = torch.where(total != 0, weights * score / total, torch.zeros_like(score)).sum(-1)
        values = torch.cat([micro, macro.reshape(1)]).tolist()  # the one read back
        names = [*self.ks, "mean_class_acc"]
        return {name: 100.0 * v for name, v in zip(names, values)}

    def kept(self, scores, target, batch):
        """Paths, labels and the top 5, left on the device (`evaluate_pass` moves the pass's
        parts to the CPU once, at its end: no copy back per micro-batch)."""
        top = scores.topk(min(5, scores.shape[-1]), dim=-1)
        n = scores.shape[0]
        return (list(batch.get("path") or [""] * n), target, top.indices, top.values.float())

    @staticmethod
    def predictions(parts):
        out = {"path": [p for part in parts for p in part[0]]}
        for i, key in enumerate(("label", "topk_index", "topk_prob"), start=1):
            out[key] = torch.cat([part[i] for part in parts]).numpy()
        return out

    @staticmethod
    def head_correct(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(n, H, C) -> correct top-1 per head (H,)."""
        return (scores.argmax(-1) == target[:, None]).sum(0).double()


def average_precision(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-class average precision (area under the precision-recall steps, no interpolation:
    sum over the positives of the precision at their rank); NaN for a class without positives."""
    scores, target = np.asarray(scores, np.float64), np.asarray(target) > 0
    ap = np.full(scores.shape[1], math.nan)
    for c in range(scores.shape[1]):
        positives = int(target[:, c].sum())
        if not positives:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hit = target[order, c]
        precision_at = np.cumsum(hit) / np.arange(1, len(hit) + 1)
        ap[c] = float(precision_at[hit].sum() / positives)
    return ap


class _GatheredScorer(Scorer):
    """Keeps every micro-batch's part; metrics over the whole (gathered) pass."""

    def __init__(self):
        self.parts: list = []

    def update(self, scores, target, batch):
        self.parts.append(self.kept(scores, target, batch))

    def note_failed(self) -> None:
        self.parts.append(None)  # keeps the micro-batch order for the DDP gather

    def merge_ranks(self, total_micro):
        self.parts = parallel.unshard(parallel.gather_objects(self.parts), total_micro)

    def empty(self) -> bool:
        return not any(p is not None for p in self.parts)

    def _parts(self):
        return [p for p in self.parts if p is not None]


class MultiLabelScorer(_GatheredScorer):
    def kept(self, scores, target, batch):
        n = scores.shape[0]
        return (list(batch.get("path") or [""] * n), target.cpu().to(torch.uint8),
                scores.float().cpu())

    def compute(self):
        parts = self._parts()
        target = torch.cat([p[1] for p in parts]).numpy()
        scores = torch.cat([p[2] for p in parts]).numpy()
        ap = average_precision(scores, target)
        scored = ~np.isnan(ap)
        return {"mAP": 100.0 * float(ap[scored].mean()) if scored.any() else math.nan,
                "classes_scored": float(scored.sum())}

    @staticmethod
    def predictions(parts):
        return {"path": [p for part in parts for p in part[0]],
                "target": torch.cat([part[1] for part in parts]).numpy(),
                "scores": torch.cat([part[2] for part in parts]).numpy()}


class DetectionScorer(_GatheredScorer):
    """Per box: the frame key, the box and the class scores; the task's evaluator scores them."""

    def __init__(self, evaluate: Callable[[dict], dict], class_ids: list[int]):
        super().__init__()
        self.evaluate, self.class_ids = evaluate, np.asarray(class_ids, dtype=np.int64)

    def kept(self, scores, target, batch):
        keys = list(batch.get("key") or [])
        if len(keys) != scores.shape[0]:
            raise ValueError(f"detection batch has {len(keys)} box keys for {scores.shape[0]} boxes")
        boxes = torch.as_tensor(batch["boxes"])[:, 1:].float().cpu()
        return (keys, boxes, scores.float().cpu(), target.cpu().to(torch.uint8))

    def detections(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """key -> (boxes (n, 4), publisher class ids (n,), scores (n,)): every box once per class."""
        rows: dict[str, list] = {}
        for keys, boxes, scores, _ in self._parts():
            for key, box, s in zip(keys, boxes.numpy(), scores.numpy()):
                rows.setdefault(key, []).append((box, s))
        out = {}
        c = len(self.class_ids)
        for key, items in rows.items():
            boxes = np.repeat(np.stack([b for b, _ in items]), c, axis=0)
            scores = np.concatenate([s for _, s in items])
            out[key] = (boxes, np.tile(self.class_ids, len(items)), scores)
        return out

    def compute(self):
        result = self.evaluate(self.detections())
        return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}

    @staticmethod
    def predictions(parts):
        return {"key": [k for part in parts for k in part[0]],
                "boxes": torch.cat([part[1] for part in parts]).numpy(),
                "scores": torch.cat([part[2] for part in parts]).numpy()}


def head_scores(kind: Kind, make_scorer: Callable[[], Scorer], parts: list[tuple]) -> list[float]:
    """The primary metric of every head of a grid from kept (scores (n, H, C), target, batch)."""
    heads = parts[0][0].shape[1]
    out = []
    for h in range(heads):
        scorer = make_scorer()
        for scores, target, batch in parts:
            scorer.update(scores[:, h], target, batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(scorer.compute()[kind.primary])
    return out
