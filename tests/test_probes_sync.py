"""No host sync inside a training step or an evaluation micro-batch: the trainer reads its
counters once per step, the evaluation scorer its counts once per pass.

A host sync is any read of a tensor's value into Python (`.item()`, `bool(t)`, `float(t)`,
`.tolist()`, `.numpy()`) or an op whose output size depends on values (`nonzero`). On a GPU
each stalls the CPU until the device has caught up; counted here on the CPU by watching the
dispatcher and the reading methods while a real training run goes through uint8 clips, device
finishing, the encoder, the probe and the optimiser.
"""
import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import Dataset

import probes
import tasks
from probes import OptimConfig, train_probe
from probes.kinds import Classification
from tasks.loading import ClipFinisher, EpochBatches
from tasks.transforms import TrainTransform

_VALUE_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "masked_select", "_unique",
              "_unique2", "unique_dim", "unique_consecutive", "bincount"}


class HostReads(TorchDispatchMode):
    """Counts host reads of tensor values while active (and while `active` is set)."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.active = True
        self._patched = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.active and func.overloadpacket.__name__ in _VALUE_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in ("tolist", "numpy"):  # these read the data directly, not through an op
            original = getattr(torch.Tensor, name)
            self._patched[name] = original

            def reading(t, *a, _original=original, **k):
                if self.active:
                    self.count += 1
                return _original(t, *a, **k)

            setattr(torch.Tensor, name, reading)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._patched.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)


R, T, C = 8, 2, 3


class TinyVideo(Dataset):
    """Device-finishing items as `tasks.items.VideoDataset` makes them: uint8 frames of two
    segments, each with its drawn crop / flip / erase params."""

    def __init__(self, n=16):
        self.transform = TrainTransform(R, random_resized_crop={"scale": [0.3, 1.0]},
                                        random_erasing=0.5, horizontal_flip=True)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        label = i % C
        frames = torch.randint(0, 100, (2, T, 12, 14, 3), dtype=torch.uint8, generator=g) + 40 * label
        drawn = [self.transform.draw(f, 7 * i + s) for s, f in enumerate(frames)]
        return {"frames": torch.stack([f for f, _ in drawn]), "params": [p for _, p in drawn],
                "label": label, "path": f"v{i}.mp4", "error": None}


class TinyEncoder(nn.Module):
    """(B, 3, T, R, R) -> (B, 4, 16) tokens from 4x4 patches of the first frame."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 16, 16)
        self.requires_grad_(False)

    def forward(self, video):
        x = video[:, :, 0].unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 3, 2, 2, 4, 4)
        return self.proj(x.permute(0, 2, 3, 1, 4, 5).reshape(video.shape[0], 4, 48))


class Watched:
    """Training data whose steps switch the counter on while the trainer is inside a step's
    micro-batch loop: from the first micro-batch handed out until the step has none left."""

    def __init__(self, data, reads: HostReads):
        self.data, self.reads = data, reads

    def __getattr__(self, name):
        return getattr(self.data, name)

    def __len__(self):
        return len(self.data)

    def steps(self, epoch, start_step=0):
        for step in self.data.steps(epoch, start_step):
            yield dataclasses.replace(step, micro_batches=self._watch(step.micro_batches))

    def _watch(self, micro_batches):
        for batch in micro_batches:
            self.reads.active = True
            yield batch
        self.reads.active = False


class WatchedPasses:
    """Evaluation data whose passes switch the counter on while the evaluation is inside its
    micro-batch loop: from the first micro-batch handed out until the pass has none left."""

    def __init__(self, data, reads: HostReads):
        self.data, self.reads = data, reads
        self.passes = 0

    def __getattr__(self, name):
        return getattr(self.data, name)

    def __len__(self):
        return len(self.data)

    def micro_batches(self, *args, **kwargs):
        self.passes += 1
        for batch in self.data.micro_batches(*args, **kwargs):
            self.reads.active = True
            yield batch
        self.reads.active = False


def _run(micro, reads, watch_eval=False, eval_micro=8, topk=(1, 5)):
    torch.manual_seed(0)
    data = TinyVideo()
    finish = ClipFinisher(data.transform)
    train = EpochBatches(data, batch_size=8, micro_batch_size=micro, seed=3,
                         collate_fn=tasks.collate_clips, finish=finish)
    evaluation = EpochBatches(TinyVideo(12), batch_size=eval_micro, seed=3, shuffle=False,
                              collate_fn=tasks.collate_clips, finish=finish)
    probe = probes.build("attentive", 16, C, num_heads=2)
    optim = OptimConfig(epochs=2, batch_size=8, lr=1e-2, weight_decay=0.01, warmup_epochs=0.0)
    reads.active = False
    train = train if watch_eval else Watched(train, reads)
    if watch_eval:
        evaluation = WatchedPasses(evaluation, reads)
    return train_probe(TinyEncoder(), probe, train, evaluation, optim,
                       kind=Classification(topk)), evaluation


@pytest.mark.parametrize("micro", [1, 3, 8])
def test_no_host_read_inside_a_steps_micro_batch_loop(micro):
    # uint8 clips finished on the device (crop, resize, flip, erase), encoded, the attentive
    # probe's forward and backward, the float64 gradient sum: nothing reads a value until the
    # step's micro-batches are all in.
    with HostReads() as reads:
        result, _ = _run(micro, reads)
    assert reads.count == 0
    assert len(result.history) == 2 and all(math.isfinite(h["loss"]) for h in result.history)


def test_the_counters_read_once_per_step_are_the_numbers_read_one_by_one():
    # The step's loss sums and hits are read together; the history equals a run whose
    # micro-batches are one global batch each.
    with HostReads() as reads:
        one, _ = _run(1, reads)
        whole, _ = _run(8, reads)
    for a, b in zip(one.history, whole.history):
        assert a["samples"] == b["samples"] == 16
        assert a["train_top1"] == b["train_top1"]
        assert abs(a["loss"] - b["loss"]) < 1e-5


@pytest.mark.parametrize("eval_micro", [1, 5])
def test_no_host_read_inside_an_evaluation_micro_batch_loop(eval_micro):
    # Clips finished on the device, encoded, the probe, the views merged, the scorer's counts
    # (top-1, top-5 and per class) and the kept top 5 of the predictions: nothing reads a
    # value until the pass's micro-batches are all in; the metrics are read once, after.
    with HostReads() as reads:
        result, evaluation = _run(eval_micro, reads, watch_eval=True, eval_micro=eval_micro)
    assert evaluation.passes >= 1 and result.num_evaluated == 12
    assert reads.count == 0
    assert set(result.metrics) >= {"top1", "top3", "mean_class_acc"}  # top-5 of 3 classes: top3
    with HostReads() as reads:
        again, _ = _run(eval_micro, reads, watch_eval=True, eval_micro=12)
    assert again.metrics == result.metrics  # the counts do not depend on the micro-batches


def test_counter_sees_each_kind_of_host_read():
    t = torch.ones(3)
    with HostReads() as reads:
        t.sum().item()
        bool(t[0] > 0)
        float(t[1])
        t.tolist()
        t.numpy()
        t.nonzero()
    assert reads.count == 6
    from torchmetrics.classification import MulticlassAccuracy

    macro = MulticlassAccuracy(num_classes=3, average="macro")
    with HostReads() as reads:  # what the evaluation scorer used to do per micro-batch
        macro.update(torch.eye(3), torch.arange(3))
    assert reads.count >= 1  # its bincount (more on a GPU)
