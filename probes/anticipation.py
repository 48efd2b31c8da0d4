"""Action anticipation (EPIC-KITCHENS-100) as a task kind: verb, noun and action heads, the
sigmoid focal loss, class-mean recall@5 per output, as V-JEPA 2's frozen evaluation runs it
(facebookresearch/vjepa2, `evals/action_anticipation_frozen/`).

The probe returns the three outputs' logits concatenated, `[verb | noun | action]` (sizes
`outputs`), so the trainer, a grid and the DDP machinery treat them as one tensor; this kind
splits them.

- Loss: `probes.focal.sigmoid_focal_loss` (alpha 0.25, gamma 2, summed over samples and
  classes) of verb + noun + action, the release's `use_focal_loss: true` loss. Units: samples,
  so a step's loss is that sum over the global batch divided by the batch size. The release
  backpropagates each rank's *sum* (2 clips per GPU), averaged over ranks by DDP: its loss is
  ours times the per-rank batch. AdamW is invariant to that constant factor (up to its eps), so
  the updates are the release's; the logged loss is per sample.
- Merge and ranking: scores are float32 sigmoids (the release ranks `sigmoid(logits)`), the mean
  over views (the release evaluates one view); the top 5 of each output by a stable descending
  sort, ties to the lower class index, as `results.anticipation.top_k`.
- Metrics (`AnticipationScorer`): per output, class-mean recall@5 over the classes present in
  the evaluated labels and top-5 accuracy, from per-class TP / FN counts kept on the device and
  summed over ranks, equal to `results.anticipation.ClassMeanRecall` (tested);
  `recall5` is the action's. Given a grid's scores (n, H, C) it also reports the release's
  number, the best head *per output* (`{output}_recall5_max_over_heads`: the verb's best head
  need not be the action's), beside the chosen head's.
"""
from __future__ import annotations

import numpy as np
import torch

import parallel
from probes.focal import sigmoid_focal_loss
from probes.kind_base import Kind, Scorer, per_head

OUTPUTS = ("verb", "noun", "action")
EPS = 1e-8  # the release's eps in TP / (TP + FN + eps)


def split_outputs(x: torch.Tensor, outputs: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """[verb | noun | action] on the last axis -> the three outputs' slices."""
    if x.shape[-1] != sum(outputs):
        raise ValueError(f"anticipation logits have {x.shape[-1]} columns; the heads have "
                         f"{' + '.join(map(str, outputs))} = {sum(outputs)} (verb, noun, action)")
    return x.split(list(outputs), dim=-1)


def sigmoid32(x: torch.Tensor) -> torch.Tensor:
    """float32 1 / (1 + exp(-x)): the formula `results.anticipation.top_k` ranks by."""
    x = x.float()
    return torch.reciprocal(1 + torch.exp(-x))


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(n, C) -> the k best classes per row; ties to the lower class index (stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


class Anticipation(Kind):
    name, primary = "anticipation", "recall5"
    # The scorer takes a grid's every head (with the chosen one) to report each output's best
    # head beside the chosen head's numbers; an evaluation pass that slices the chosen head
    # first gets the chosen head's numbers only.
    scores_every_head = True

    def __init__(self, outputs, alpha: float = 0.25, gamma: float = 2.0):
        outputs = tuple(int(n) for n in outputs)
        if len(outputs) != 3 or min(outputs) < 1:
            raise ValueError(f"an anticipation kind has three outputs (verb, noun, action), "
                             f"got sizes {outputs}")
        self.outputs, self.alpha, self.gamma = outputs, float(alpha), float(gamma)

    def target(self, batch, device):
        t = torch.stack([torch.as_tensor(batch[o]).long() for o in OUTPUTS], dim=1)
        return t.to(device, non_blocking=True)  # (B, 3)

    def loss(self, logits, target):
        total = logits.new_zeros(())
        for i, part in enumerate(split_outputs(logits, self.outputs)):
            t = target[:, i]
            if part.ndim == 3:  # a grid (n, H, C): the sum of the heads' own losses
                part, t, _ = per_head(part, t)
            total = total + sigmoid_focal_loss(part, t, self.alpha, self.gamma, reduction="sum")
        return total, target.shape[0]

    def merge(self, logits):
        return sigmoid32(logits).mean(dim=1)

    def scorer(self, device):
        return AnticipationScorer(self.outputs, device)


class AnticipationScorer(Scorer):
    """Per output and class, TP and FN counts on the device (`update`: (n, C) scores of one
    head, or (n, H, C) of a grid's every head, with `head` the chosen one); `compute` reads them
    once. Keeps each micro-batch's labels and top 5 for the predictions file (moved to the CPU
    at the pass's end)."""

    def __init__(self, outputs, device, k: int = 5, head: int | None = None):
        self.outputs, self.device, self.k, self.head = tuple(outputs), torch.device(device), k, head
        self.counts: list[torch.Tensor] | None = None  # per output (H, 2, C): TP, FN per head
        self.parts: list = []

    def _build(self, heads: int) -> None:
        self.counts = [torch.zeros(heads, 2, c, dtype=torch.int64, device=self.device)
                       for c in self.outputs]

    def update(self, scores, target, batch):
        scores, target = scores.to(self.device), target.to(self.device).long()
        grid = scores.ndim == 3
        if grid and self.head is None:
            raise ValueError("scoring a grid's every head needs the chosen head (scorer.head)")
        if self.counts is None:
            self._build(scores.shape[1] if grid else 1)
        per_head_scores = scores if grid else scores[:, None]
        ones = torch.ones(target.shape[0], dtype=torch.int64, device=self.device)
        tops = []
        for i, part in enumerate(split_outputs(per_head_scores, self.outputs)):
            k = min(self.k, part.shape[-1])
            labels = target[:, i]
            hits = (top_k(part, k) == labels[:, None, None]).any(-1).long()  # (n, H)
            for h in range(hits.shape[1]):
                self.counts[i][h, 0].index_add_(0, labels, hits[:, h])
                self.counts[i][h, 1].index_add_(0, labels, ones - hits[:, h])
            chosen = part[:, self.head if grid else 0]
            tops.append(top_k(chosen, k))
        self.parts.append((list(batch.get("path") or [""] * target.shape[0]), target, tops))

    def note_failed(self) -> None:
        self.parts.append(None)  # keeps the micro-batch order for the DDP gather

    def merge_ranks(self, total_micro):
        heads = [c for c in parallel.gather_objects(None if self.counts is None
                                                    else self.counts[0].shape[0]) if c]
        if not heads:
            return
        if self.counts is None:  # this rank scored nothing: zero counts
            self._build(heads[0])
        for counts in self.counts:
            parallel.all_sum_(counts)  # integer counts: exact in any order
        self.parts = parallel.unshard(parallel.gather_objects(self._cpu_parts()), total_micro)

    def _cpu_parts(self) -> list:
        return [None if p is None else (p[0], p[1].cpu(), [t.cpu() for t in p[2]])
                for p in self.parts]

    def empty(self) -> bool:
        return self.counts is None

    @staticmethod
    def _scores(tp: np.ndarray, fn: np.ndarray) -> tuple[float, float]:
        """(class-mean recall, top-k accuracy) in percent, as results.anticipation computes."""
        seen = tp + fn
        classes = int((seen > 0).sum())
        recall = 100.0 * float((tp / (seen + EPS)).sum()) / classes if classes else float("nan")
        n = int(seen.sum())
        return recall, (100.0 * float(tp.sum()) / n if n else float("nan"))

    def compute(self):
        counts = [c.cpu().numpy() for c in self.counts]  # the one read back
        out: dict[str, float] = {}
        grid = counts[0].shape[0] > 1 or self.head is not None
        chosen = self.head if grid else 0
        for o, c in zip(OUTPUTS, counts):
            # Named for k = 5 whatever the class count: the top 5 of fewer classes is all of
            # them, which is what recall@5 means there.
            recall, acc = self._scores(c[chosen, 0], c[chosen, 1])
            out[f"{o}_recall{self.k}"], out[f"{o}_top{self.k}"] = recall, acc
            if grid:  # the release's report: each output's best head
                out[f"{o}_recall{self.k}_max_over_heads"] = max(
                    self._scores(c[h, 0], c[h, 1])[0] for h in range(c.shape[0]))
        out[f"recall{self.k}"] = out[f"action_recall{self.k}"]
        return out

    def progress(self):
        return ""  # compute() reads the counts back: not per micro-batch

    def kept(self, scores, target, batch):
        return self.parts[-1] if self.parts else None

    @staticmethod
    def predictions(parts):
        parts = [(p[0], p[1].cpu(), [t.cpu() for t in p[2]]) for p in parts]
        out = {"path": [p for part in parts for p in part[0]]}
        target = torch.cat([p[1] for p in parts]).numpy()
        for i, o in enumerate(OUTPUTS):
            out[o] = target[:, i]
            out[f"{o}_top5"] = torch.cat([p[2][i] for p in parts]).numpy()
        return out
