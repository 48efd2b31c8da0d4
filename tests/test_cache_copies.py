"""Cached augmented copies from one decode (issue 26): the K copies of a training video are drawn
from one decode (`VideoDataset.load_copies`, `tasks.items.copy_micro_batches`) and equal, tensor
for tensor and token for token, the K passes that decoded the video K times."""
from __future__ import annotations

import functools

import pytest
import torch

import tasks
from tasks import clip_reader
from tasks import items as items_module
from tasks.items import copy_micro_batches
from tasks.kinds import for_task
from tasks.loading import EpochBatches, item_seed

K = 4


class TinyEncoder(torch.nn.Module):
    """A fixed random projection of 4x4-pooled patches: tokens depend on every pixel."""

    def __init__(self, dim: int = 8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(3 * 2, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, 6, generator=g))
            self.proj.bias.zero_()

    def forward(self, video):  # (B, 3, T, H, W) -> (B, N, D)
        x = torch.nn.functional.avg_pool3d(video, (2, 8, 8))  # (B, 3, T/2, H/8, W/8)
        x = x.flatten(2).transpose(1, 2)  # (B, N, 3)
        return self.proj(torch.cat([x, x.square()], dim=-1))


def _task(root, **overrides):
    return tasks.build("digits_appearance", root=root, decoder="pyav", **overrides)


def _train_data(task, cls=EpochBatches, micro=3):
    ds = task.dataset("train", train=True, resolution=32, device_finish=True)
    kind = for_task(task)
    return cls(ds, batch_size=8, micro_batch_size=micro, seed=5, shuffle=False,
               collate_fn=kind.collate(ds), finish=kind.finisher(ds))


def _encode(data):
    encoder = TinyEncoder()

    def encode(enc, batch):
        video = data.finish(batch, "cpu")  # (B, S, V, 3, T, r, r)
        if video is None:
            return None
        return enc(video[:, 0, 0]).unsqueeze(1)  # (B, 1, N, D)

    return encoder, encode


def _count_decodes(monkeypatch) -> list:
    """Every decode of a video file (read_frames is the one entry; read_many calls it)."""
    calls = []
    real = clip_reader.read_frames

    def counting(path, indices_fn, **kw):
        calls.append(str(path))
        return real(path, indices_fn, **kw)

    monkeypatch.setattr(clip_reader, "read_frames", counting)
    monkeypatch.setattr(items_module, "read_frames", counting)
    return calls


@pytest.mark.parametrize("aug", [{}, {"train_aug": {"randaugment": "rand-m7-n2-mstd0.5-inc1",
                                                    "random_erasing": 0.25}}])
def test_copies_from_one_decode_equal_k_passes(digits_small, monkeypatch, aug):
    from probes.feature_cache import encode_copies, encode_loader, merge_copies

    task = _task(digits_small, **aug)
    calls = _count_decodes(monkeypatch)

    # Before: K passes, pass k epoch k of the loader (items seeded by (seed, k, index)).
    old = _train_data(task)
    encoder, encode = _encode(old)
    before = merge_copies([encode_loader(encoder, old, device="cpu", encode=encode, epoch=k)
                           for k in range(K)], 0.0)
    n = old.num_samples
    assert sorted(calls) == sorted(p for p, _ in old.dataset.entries for _ in range(K))

    calls.clear()
    new = _train_data(task, EpochBatches)
    encoder, encode = _encode(new)
    rng = torch.random.get_rng_state()
    after = encode_copies(encoder, new, K, seed=5, device="cpu", encode=encode)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's RNG is untouched
    assert sorted(calls) == sorted(p for p, _ in new.dataset.entries)  # 1 decode per video, not K

    assert after.tokens.shape == (n, K) + before.tokens.shape[2:]
    assert torch.equal(after.tokens, before.tokens)  # bit-identical cache
    assert torch.equal(after.labels, before.labels) and after.paths == before.paths
    assert not torch.equal(after.tokens[:, 0], after.tokens[:, 1])  # the copies do differ


def test_load_copies_equals_each_seeded_item(digits_small):
    task = _task(digits_small, train_aug={"randaugment": "rand-m9-n2-mstd0.5-inc1"})
    ds = task.dataset("train", train=True, resolution=32, device_finish=True)
    seeds = [item_seed(3, k, 1) for k in range(3)]
    copies = ds.load_copies(1, seeds)
    for seed, got in zip(seeds, copies):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            want = ds[1]
        assert got.keys() == want.keys() and got["error"] is None
        assert torch.equal(got["frames"], want["frames"])
        assert got["params"] == want["params"]
    floats = task.dataset("train", train=True, resolution=32, device_finish=False)
    got = floats.load_copies(0, seeds[:2])
    for seed, item in zip(seeds, got):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            assert torch.equal(item["video"], floats[0]["video"])


def test_an_unreadable_video_fails_every_copy_and_a_shuffled_loader_is_refused(digits_small,
                                                                                tmp_path):
    task = _task(digits_small)
    ds = task.dataset("train", train=True, resolution=32, device_finish=True)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    ds.entries[0] = (str(broken), ds.entries[0][1])
    copies = ds.load_copies(0, [1, 2])
    assert [c["error"] is not None for c in copies] == [True, True]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        assert ds[0]["error"] == copies[0]["error"]
    shuffled = EpochBatches(ds, batch_size=4, seed=0, shuffle=True)
    with pytest.raises(ValueError, match="unshuffled"):
        copy_micro_batches(shuffled, 2, functools.partial(item_seed, 0))


def test_ranks_share_the_copy_pass(digits_small):
    task = _task(digits_small)
    whole = _train_data(task, EpochBatches, micro=2)
    one = [[b["path"] for b in group] for group in whole.copy_micro_batches(2)]
    parts = []
    for rank in range(2):
        data = _train_data(task, EpochBatches, micro=2)
        data.rank, data.world_size = rank, 2
        parts.append([[b["path"] for b in group] for group in data.copy_micro_batches(2)])
    assert parts[0] == one[0::2] and parts[1] == one[1::2]
    assert all(group[0] == group[1] for group in one)  # copies line up sample by sample
