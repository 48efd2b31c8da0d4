"""Batched device finishing (tasks.finishing, ClipFinisher) equals the per-clip transforms; the
micro-batch travels as one uint8 tensor; the CPU evaluation resize is OpenCV itself."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import tasks
from tasks.eval_transform import EvalTransform, _cv2_bilinear_uint8
from tasks.finishing import _linear_taps, finish_clips, finish_train
from tasks.loading import ClipFinisher
from tasks.transforms import TrainTransform

R = 24  # finished resolution


def _train_transform(**kw):
    cfg = {"randaugment": None, "random_resized_crop": {"scale": [0.05, 1.0], "ratio": [0.5, 2.0]},
           "random_erasing": 0.8, "horizontal_flip": True, **kw}
    return TrainTransform(R, **cfg)


def _clips(n, T=3, H=30, W=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, T, H, W, 3), dtype=torch.uint8, generator=g)


def _per_clip(transform, clips, params):
    return torch.stack([transform.apply(c, p) for c, p in zip(clips, params)])


def test_linear_taps_are_atens_bilinear_weights_exactly():
    # One-hot columns through F.interpolate read back each output's source indices and weights.
    for src in list(range(5, 90, 3)) + [187, 241, 256, 300, 340]:
        for dst in (R, 224):
            eye = torch.eye(src).view(src, 1, 1, src).expand(src, 1, 2, src).contiguous()
            aten = F.interpolate(eye, (2, dst), mode="bilinear", align_corners=False)[:, 0, 0]
            i0, i1, w0, w1 = (t[0] for t in _linear_taps([src], dst))
            ours = torch.zeros(src, dst)
            ours[i0, torch.arange(dst)] += w0
            ours[i1, torch.arange(dst)] += w1
            assert torch.equal(ours, aten), (src, dst)


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("per_frame", [False, True])
def test_batched_training_finish_equals_per_clip_apply(per_frame, gather):
    # gather=True is the path a GPU takes (checked here on the CPU); False the CPU's.
    tr = _train_transform(erasing_per_frame=per_frame)
    clips = _clips(12)
    params = [tr.draw(c, 100 + k)[1] for k, c in enumerate(clips)]
    # Cover the edges: a crop already at the resolution (no resize), the whole frame, a flip.
    params[0]["crop"], params[0]["flip"] = [3, 5, R, R], False
    params[1]["crop"], params[1]["flip"] = [0, 0, 30, 40], True
    assert any(p["flip"] for p in params) and any(p["erase"] for p in params)
    ref = _per_clip(tr, clips, params)
    out = finish_train(tr, clips, params, gather=gather)
    assert out.shape == ref.shape == (12, 3, 3, R, R)
    assert (out - ref).abs().max() <= 1e-5
    if not gather:
        assert torch.equal(out, ref)
    assert torch.equal(out[0], ref[0])  # no resize: the same normalised values
    # The erase noise is each clip's own seeded draw, value for value.
    for k, p in enumerate(params):
        for t, top, left, h, w in p["erase"]:
            assert torch.equal(out[k, :, t, top:top + h, left:left + w],
                               ref[k, :, t, top:top + h, left:left + w])


def test_other_crop_interpolations_fall_back_to_per_clip_apply():
    tr = _train_transform(interpolation="bicubic")
    clips = _clips(3)
    params = [tr.draw(c, k)[1] for k, c in enumerate(clips)]
    assert torch.equal(finish_clips(tr, clips, params)[:, 0], _per_clip(tr, clips, params))


def test_device_randaugment_runs_per_clip_before_the_crop():
    # randaugment_backend tensor: the ops drawn in the loader run in the finisher, as in apply.
    tr = _train_transform(randaugment="rand-m7-n4-mstd0.5-inc1", randaugment_backend="tensor")
    clips = _clips(4)
    drawn = [tr.draw(c, k) for k, c in enumerate(clips)]
    params = [p for _, p in drawn]
    assert all(p.get("randaugment") for p in params)
    before = clips.clone()
    out = finish_train(tr, clips, params, gather=True)
    assert torch.equal(clips, before)  # the loader's frames are not changed in place
    assert (out - _per_clip(tr, clips, params)).abs().max() <= 1e-5
    plain = finish_train(tr, clips, [{**p, "randaugment": None} for p in params])
    assert (out - plain).abs().max() > 0.1  # the ops did something


def _uint8_items(transform, sizes, segments=2, T=3):
    items = []
    for k, (H, W) in enumerate(sizes):
        frames = _clips(segments, T, H, W, seed=k)
        if isinstance(transform, TrainTransform):
            drawn = [transform.draw(c, 10 * k + s) for s, c in enumerate(frames)]
            item = {"frames": torch.stack([c for c, _ in drawn]), "params": [p for _, p in drawn]}
        else:
            item = {"frames": frames, "params": None}
        items.append({**item, "label": k, "path": f"v{k}.mp4", "error": None})
    return items


def _reference(transform, batch):
    """The former ClipFinisher: every segment of every sample finished on its own."""
    out = []
    for sample, params in zip(batch["frames"], batch["params"]):
        segs = []
        for s in range(sample.shape[0]):
            views = transform.apply(sample[s]) if params is None else [transform.apply(sample[s], params[s])]
            segs.append(torch.stack(views))
        out.append(torch.stack(segs))
    return torch.stack(out)


@pytest.mark.parametrize("train", [True, False])
def test_finisher_on_one_contiguous_tensor_and_on_mixed_sizes(train):
    tr = _train_transform() if train else EvalTransform(R, views=3)
    same = tasks.collate_clips(_uint8_items(tr, [(30, 40)] * 3))
    assert isinstance(same["frames"], torch.Tensor) and same["frames"].is_contiguous()
    assert same["frames"].shape == (3, 2, 3, 30, 40, 3) and same["frames"].dtype == torch.uint8
    mixed = tasks.collate_clips(_uint8_items(tr, [(30, 40), (36, 28), (30, 40)]))
    assert isinstance(mixed["frames"], list)
    for batch in (same, mixed):
        out = ClipFinisher(tr)(batch, "cpu")
        ref = _reference(tr, batch)
        assert out.shape == ref.shape == (3, 2, 1 if train else 3, 3, 3, R, R)
        if train:
            assert (out - ref).abs().max() <= 1e-5
        else:
            assert torch.equal(out, ref)


def test_collate_keeps_failures_and_empty_batches_apart():
    tr = EvalTransform(R)
    items = _uint8_items(tr, [(30, 40)] * 2)
    items.append({"frames": None, "params": None, "label": 0, "path": "bad.mp4", "error": "x"})
    batch = tasks.collate_clips(items)
    assert batch["frames"].shape[0] == 2 and batch["failures"] == [("bad.mp4", "x")]
    assert ClipFinisher(tr)(tasks.collate_clips(items[2:]), "cpu") is None


class _Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_a_worker_sends_the_micro_batch_as_one_shared_tensor():
    tr = EvalTransform(R)
    loader = DataLoader(_Items(_uint8_items(tr, [(30, 40)] * 4)), batch_size=4, num_workers=1,
                        collate_fn=tasks.collate_clips)
    (batch,) = list(loader)
    frames = batch["frames"]
    assert isinstance(frames, torch.Tensor) and frames.is_shared() and frames.is_contiguous()
    assert torch.equal(frames, tasks.collate_clips(_uint8_items(tr, [(30, 40)] * 4))["frames"])


@pytest.mark.parametrize("size", [(30, 40), (41, 23), (256, 340), (17, 17)])
def test_cpu_resize_is_opencv_and_equals_the_device_emulation(size):
    pytest.importorskip("cv2")
    ev = EvalTransform(R, views=3)
    frames = _clips(1, 4, *size, seed=3)[0]  # (T, H, W, 3)
    for oh, ow in ((R, 31), (19, R), (size[0] * 2, size[1] + 5)):
        cpu = ev._resize(frames, oh, ow)
        emulated = _cv2_bilinear_uint8(frames.permute(0, 3, 1, 2).contiguous(), oh, ow).permute(0, 2, 3, 1)
        assert cpu.dtype == torch.uint8 and torch.equal(cpu, emulated)


def test_eval_batch_equals_clip_by_clip():
    ev = EvalTransform(R, views=3)
    clips = _clips(3, 2, 30, 40)
    out = finish_clips(ev, clips, None)
    ref = torch.stack([torch.stack(ev.apply(c)) for c in clips])
    assert torch.equal(out, ref)
