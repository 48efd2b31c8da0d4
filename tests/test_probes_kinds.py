"""Task kinds behind the trainer's one loop: multi-label and detection next to classification."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from probes import OptimConfig, train_probe
from probes.grid import ProbeGrid
from probes.kinds import (Classification, Detection, MultiLabel, average_precision, for_task)
from probes.linear import LinearProbe
from probes.roi import RoIProbe

D, C = 8, 3


def test_average_precision_by_hand():
    # class 0: ranks of positives 1 and 3 -> (1/1 + 2/3) / 2; class 1: positive ranked 2nd -> 1/2;
    # class 2: no positive -> NaN (left out of the mean, never counted as 0).
    scores = np.array([[0.9, 0.2, 0.1], [0.8, 0.7, 0.3], [0.4, 0.9, 0.2], [0.1, 0.1, 0.0]])
    target = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    ap = average_precision(scores, target)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2, abs=1e-12)
    assert ap[1] == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(ap[2])
    scorer = MultiLabel().scorer("cpu")
    scorer.update(torch.tensor(scores), torch.tensor(target), {"path": list("abcd")})
    out = scorer.compute()
    assert out["mAP"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 2, abs=1e-9)
    assert out["classes_scored"] == 2


def test_for_task_maps_every_task_kind():
    assert isinstance(for_task("video"), Classification)
    assert isinstance(for_task("image"), Classification)
    assert isinstance(for_task("multilabel"), MultiLabel)
    with pytest.raises(ValueError, match="evaluator"):
        for_task("detection")
    with pytest.raises(ValueError, match="no probe kind"):
        for_task("segmentation")


class Steps:
    """Steps of given micro-batches (a plain steps object, as tasks.loading.EpochBatches gives)."""

    mid_epoch_resume = False

    def __init__(self, steps):
        self._steps = steps  # list of lists of micro-batch dicts

    def __len__(self):
        return len(self._steps)

    def steps(self, epoch, start_step=0):
        for i, micro in enumerate(self._steps):
            size = sum(len(m["label"]) for m in micro)
            yield SimpleNamespace(index=i, size=size, micro_batches=iter(micro), num_micro=len(micro))


def _multilabel_batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, C, generator=g) < 0.4).float()
    targets[targets.sum(1) == 0, 0] = 1.0
    directions = torch.randn(C, D, generator=torch.Generator().manual_seed(7))
    tokens = targets @ directions + 0.3 * torch.randn(n, D, generator=g)
    return {"tokens": tokens[:, None, None, :], "label": torch.zeros(n, dtype=torch.long),
            "targets": targets, "path": [f"v{i}" for i in range(n)], "failures": []}


def _split(batch, size):
    n = len(batch["label"])
    out = []
    for s in range(0, n, size):
        out.append({k: (v[s:s + size] if k != "failures" else []) for k, v in batch.items()})
    return out


def test_multilabel_probe_learns_and_scores_map():
    torch.manual_seed(0)
    train = _split(_multilabel_batches(64, 1), 16)
    evaluation = _split(_multilabel_batches(32, 2), 8)
    probe = LinearProbe(D, C)
    optim = OptimConfig(epochs=30, batch_size=16, lr=0.05, bf16=False, clip_grad_norm=None)
    result = train_probe(nn.Identity(), probe, Steps([[b] for b in train]), evaluation, optim,
                         progress=False, kind=MultiLabel())
    assert set(result.metrics) == {"mAP", "classes_scored"}
    assert result.metrics["mAP"] > 90  # linearly separable by construction
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert "train_top1" not in result.history[0]  # no single-label accuracy for multi-label
    assert result.predictions["scores"].shape == (32, C)
    assert result.predictions["target"].shape == (32, C)


def test_multilabel_grid_selects_on_map():
    torch.manual_seed(0)
    train = _split(_multilabel_batches(48, 3), 16)
    select = _split(_multilabel_batches(24, 4), 8)
    grid = ProbeGrid(lambda: LinearProbe(D, C), [{"lr": 1e-6, "weight_decay": 0.0},
                                                 {"lr": 0.05, "weight_decay": 0.0}])
    optim = OptimConfig(epochs=10, batch_size=16, lr=0.05, bf16=False)
    result = train_probe(nn.Identity(), grid, Steps([[b] for b in train]), select, optim,
                         progress=False, kind=MultiLabel(), selection="val", selection_data=select)
    assert [sorted(h) for h in result.heads] == [["lr", "val_mAP", "weight_decay"]] * 2
    assert result.chosen_head == 1  # the head that learnt
    assert result.heads[1]["val_mAP"] > result.heads[0]["val_mAP"]


GRID = (1, 2, 2)


def _detection_batch(boxes_per_sample, seed):
    """Samples of 1 x 2 x 2 tokens; box class = which half of the frame it covers (left: 0,
    right: 1), the left half's tokens carry +1 on channel 0, the right half's on channel 1."""
    g = torch.Generator().manual_seed(seed)
    b = len(boxes_per_sample)
    fmap = 0.1 * torch.randn(b, D, 2, 2, generator=g)
    fmap[:, 0, :, 0] += 1.0
    fmap[:, 1, :, 1] += 1.0
    tokens = fmap.flatten(2).transpose(1, 2)[:, None]  # (B, V=1, t*h*w, D)
    rows, targets, keys = [], [], []
    for i, sides in enumerate(boxes_per_sample):
        for side in sides:
            x1 = 0.0 if side == 0 else 0.5
            rows.append([i, x1, 0.0, x1 + 0.5, 1.0])
            t = torch.zeros(C)
            t[side] = 1.0
            targets.append(t)
            keys.append(f"vid{seed},{900 + i:04d}")
    return {"tokens": tokens, "label": torch.zeros(b, dtype=torch.long),
            "boxes": torch.tensor(rows, dtype=torch.float32).reshape(-1, 5),
            "targets": torch.stack(targets) if targets else torch.zeros(0, C),
            "key": keys, "path": [f"vid{seed}"] * b, "failures": []}


def test_detection_trains_per_box_and_hands_boxes_to_the_evaluator():
    torch.manual_seed(0)
    seen = {}

    def evaluate(detections):
        seen.update(detections)
        # a stand-in evaluator: fraction of boxes whose best class is the true side
        correct = total = 0
        for key, (boxes, ids, scores) in detections.items():
            for j in range(0, len(ids), C):
                side = 0 if boxes[j, 0] < 0.25 else 1
                correct += int(ids[j:j + C][np.argmax(scores[j:j + C])] == 10 + side)
                total += 1
        return {"mAP": 100.0 * correct / total, "note": "not a number"}

    kind = Detection(evaluate, class_ids=[10, 11, 12])
    train = [_detection_batch([[0], [1, 0], [1]], s) for s in range(4)]
    test = [_detection_batch([[1], [0, 1]], 9)]
    probe = RoIProbe(D, C, token_grid=GRID, out_layers=(-1,), roi_size=2, dropout=0.0)
    optim = OptimConfig(epochs=25, batch_size=3, lr=0.05, bf16=False)
    result = train_probe(nn.Identity(), probe, Steps([[b] for b in train]), test, optim,
                         progress=False, kind=kind)
    assert result.metrics == {"mAP": 100.0}  # non-numbers of the evaluator are not metrics
    # every box once per class, with the publisher's class ids
    assert sorted(seen) == ["vid9,0900", "vid9,0901"]
    boxes, ids, scores = seen["vid9,0901"]
    assert boxes.shape == (2 * C, 4) and ids.tolist() == [10, 11, 12] * 2 and scores.shape == (6,)
    assert result.predictions["boxes"].shape == (3, 4)
    assert result.predictions["key"] == ["vid9,0900", "vid9,0901", "vid9,0901"]


def test_detection_loss_is_the_mean_over_the_global_batch_boxes():
    """Micro-batches with different box counts give the gradient of the whole batch at once:
    the step's loss is the mean BCE over all its boxes (not a mean of micro-batch means, nor a
    sum over boxes per sample)."""
    whole = _detection_batch([[0], [1, 0, 1], [1]], 0)
    first, rest = _detection_batch([[0]], 0), _detection_batch([[1, 0, 1], [1]], 0)
    first["tokens"], rest["tokens"] = whole["tokens"][:1], whole["tokens"][1:]
    kind = Detection(lambda d: {"mAP": 0.0}, [1, 2, 3])
    torch.manual_seed(0)
    init = RoIProbe(D, C, token_grid=GRID, out_layers=(-1,), roi_size=2, dropout=0.0)
    logits = init(whole["tokens"][:, 0], whole["boxes"])
    expected_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, whole["targets"])
    expected_grad, = torch.autograd.grad(expected_loss, init.linear.weight)
    for steps in ([[whole]], [[first, rest]]):
        probe = RoIProbe(D, C, token_grid=GRID, out_layers=(-1,), roi_size=2, dropout=0.0)
        probe.load_state_dict(init.state_dict())
        grads = []
        optim = OptimConfig(epochs=1, batch_size=3, lr=0.1, bf16=False, clip_grad_norm=None)
        result = train_probe(nn.Identity(), probe, Steps(steps), [whole], optim, progress=False,
                             kind=kind, on_step_end=lambda e, s: grads.append(
                                 probe.linear.weight.grad.clone()))
        torch.testing.assert_close(grads[0], expected_grad, rtol=1e-5, atol=1e-7)
        assert result.history[0]["loss"] == pytest.approx(expected_loss.item(), rel=1e-6)


def test_detection_refuses_several_views_and_cached_features():
    kind = Detection(lambda d: {"mAP": 0.0}, [1, 2, 3])
    batch = _detection_batch([[0]], 0)
    batch["tokens"] = batch["tokens"].repeat(1, 3, 1, 1)
    probe = RoIProbe(D, C, token_grid=GRID, out_layers=(-1,), roi_size=2)
    with pytest.raises(ValueError, match="one spatial view"):
        kind.forward(probe, batch["tokens"], kind.probe_inputs(batch, "cpu"),
                     lambda: torch.autocast("cpu", enabled=False))
    optim = OptimConfig(epochs=1, batch_size=1, lr=0.1, bf16=False)
    with pytest.raises(ValueError, match="cached features"):
        train_probe(nn.Identity(), probe, Steps([[batch]]), [batch], optim, progress=False,
                    kind=kind, cache_features=True)


@pytest.mark.parametrize("num_classes, topk", [(7, (1, 5)), (3, (1, 5)), (10, (1, 2, 5))])
def test_classification_counts_equal_torchmetrics_to_the_bit(num_classes, topk):
    # Our device counts against torchmetrics' MulticlassAccuracy (what the scorer used before):
    # scores with ties (quantised), a class never a target, one only ever predicted, uneven
    # micro-batches; every number equal as a float, not approximately.
    from torchmetrics.classification import MulticlassAccuracy

    from probes.kinds import ClassificationScorer

    g = torch.Generator().manual_seed(num_classes)
    scorer = ClassificationScorer(topk, "cpu")
    ref = {}
    for k in topk:
        k = min(k, num_classes)
        ref.setdefault(f"top{k}", MulticlassAccuracy(num_classes=num_classes, top_k=k,
                                                     average="micro"))
    ref["mean_class_acc"] = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="macro")
    for n in (5, 1, 13, 8):
        scores = (torch.rand(n, num_classes, generator=g) * 4).round() / 4  # many ties
        scores[:, num_classes - 1] -= 1.0  # rarely predicted
        target = torch.randint(0, num_classes - 1, (n,), generator=g)  # the last: never a target
        if n == 13:
            scores[0, num_classes - 1] = 10.0  # ... but predicted once (scores 0 in the mean)
        scorer.update(scores.softmax(-1), target, {})
        for m in ref.values():
            m.update(scores.softmax(-1), target)
    want = {name: 100.0 * m.compute().item() for name, m in ref.items()}
    assert scorer.compute() == want
    assert scorer.progress() == f"top1 {want['top1']:.1f}"
