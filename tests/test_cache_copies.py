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
    # `start` skips a rank's first micro-batches (a resumed store entry), as micro_batches does.
    def paths(groups):
        return [[b["path"] for b in group] for group in groups]

    assert paths(whole.copy_micro_batches(2, start=2)) == one[2:]
    assert paths(data.copy_micro_batches(2, start=1)) == parts[1][1:]  # data: rank 1
    assert all(group[0] == group[1] for group in one)  # copies line up sample by sample


# -- the on-disk store: `cached_copies` fills its K entries from one decode of each video

STORE_AUG = {"train_aug": {"randaugment": "rand-m7-n2-mstd0.5-inc1", "random_erasing": 0.25}}


def _store_key() -> str:
    from probes.feature_store import feature_key

    return feature_key(encoder_digest="tiny", fields={"copies": K, "seed": 5, **STORE_AUG},
                       manifest_hash="d" * 64)


def _store_encode(data, calls: list, die_at: int | None = None):
    """encode(batch) for the store; counts its calls and raises (an interrupted run) when
    `die_at` calls are done."""
    encoder, encode = _encode(data)

    def store_encode(batch):
        if len(calls) == die_at:
            raise KeyboardInterrupt
        calls.append(batch["path"])
        return encode(encoder, batch)

    return store_encode


def _pass_by_pass(store, data, encode, **kw):
    """What cached_copies did before it decoded once: pass k into entry k, the torch RNG
    seeded by (seed, k). Entries it leaves must be hit or resumed by the new code."""
    from probes.feature_store import cached_tokens
    from probes.feature_store.keys import copy_key

    for k in range(K):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5 * 1_000_003 + k)
            cached_tokens(store, copy_key(_store_key(), k), encode, data, epoch=k,
                          describe={"copy": k, "of": _store_key()}, **kw)


def _entry_bytes(store) -> list:
    from probes.feature_store.keys import copy_key

    return [[(store.path(copy_key(_store_key(), k)) / name).read_bytes()
             for name in ("tokens.f16", "labels.i64", "paths.txt")] for k in range(K)]


def _stored_tokens(store) -> torch.Tensor:
    from probes.feature_cache import merge_copies
    from probes.feature_store.keys import copy_key

    return merge_copies([store.get(copy_key(_store_key(), k)) for k in range(K)], 0.0).tokens


def _micro_videos(data, start: int) -> list:
    """The videos of micro-batches `start`.. of one pass (what a resume from there decodes)."""
    return sorted(p for p, _ in data.dataset.entries[start * data.micro_batch_size:])


def test_store_copies_from_one_decode_equal_the_pass_by_pass_entries(digits_small, monkeypatch,
                                                                     tmp_path):
    from probes.feature_cache import encode_copies
    from probes.feature_store import FeatureStore, cached_copies

    task = _task(digits_small, **STORE_AUG)
    data = _train_data(task)
    broken = tmp_path / "broken.mp4"  # an unreadable video: stored as a failure in every copy
    broken.write_bytes(b"\x00" * 64)
    data.dataset.entries[4] = (str(broken), data.dataset.entries[4][1])
    decodes, calls = _count_decodes(monkeypatch), []
    encode = _store_encode(data, calls)
    old = FeatureStore(tmp_path / "old")
    _pass_by_pass(old, data, encode)
    videos = _micro_videos(data, 0)
    n, micro = len(videos) - 1, data.num_micro_batches()
    assert sorted(decodes) == sorted(videos * K)

    decodes.clear()
    calls.clear()
    new, seen = FeatureStore(tmp_path / "new"), []
    rng = torch.random.get_rng_state()
    got = cached_copies(new, _store_key(), encode, data, K, seed=5,
                        on_batch=lambda rows, failures: seen.append((rows, len(failures))))
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's RNG is untouched
    assert sorted(decodes) == videos  # one decode per video, not K
    assert len(calls) == K * micro
    assert len(seen) == micro and sum(r for r, _ in seen) == n and sum(f for _, f in seen) == 1
    assert _entry_bytes(new) == _entry_bytes(old)  # the K entries' files, byte for byte
    assert got.tokens.shape[:2] == (n, K) and len(got.failures) == 1
    assert not torch.equal(got.tokens[:, 0], got.tokens[:, 1])  # the copies do differ

    encoder, enc = _encode(data)
    in_memory = encode_copies(encoder, data, K, seed=5, device="cpu", encode=enc)
    assert torch.equal(got.tokens, in_memory.tokens.half())
    assert torch.equal(got.labels, in_memory.labels) and got.paths == in_memory.paths

    # A second call, on either store, is a pure hit: nothing decoded or encoded; every sample
    # reported once.
    for store in (new, old):
        for seen_so_far in (decodes, calls, seen):
            seen_so_far.clear()
        again = cached_copies(store, _store_key(), encode, data, K, seed=5,
                              on_batch=lambda rows, failures: seen.append((rows, len(failures))))
        assert decodes == [] and calls == [] and seen == [(n, 1)]
        assert torch.equal(again.tokens, got.tokens) and again.paths == got.paths


@pytest.mark.parametrize("die_at", [3 * K, 3 * K + 2])  # in lockstep; copies 0-1 one batch ahead
def test_a_killed_one_decode_run_resumes_in_one_pass(digits_small, monkeypatch, tmp_path, die_at):
    from probes.feature_store import FeatureStore, cached_copies
    from probes.feature_store.keys import copy_key

    task = _task(digits_small, **STORE_AUG)
    data = _train_data(task)
    reference = FeatureStore(tmp_path / "ref")
    cached_copies(reference, _store_key(), _store_encode(data, []), data, K, seed=5)

    store, calls = FeatureStore(tmp_path / "s"), []
    with pytest.raises(KeyboardInterrupt):  # every micro-batch is a checkpoint (checkpoint_rows=1)
        cached_copies(store, _store_key(), _store_encode(data, calls, die_at), data, K, seed=5,
                      checkpoint_rows=1)
    assert len(calls) == die_at
    assert all(store.get(copy_key(_store_key(), k)) is None for k in range(K))

    decodes, calls, seen = _count_decodes(monkeypatch), [], []
    got = cached_copies(store, _store_key(), _store_encode(data, calls), data, K, seed=5,
                        checkpoint_rows=1, on_batch=lambda rows, failures: seen.append(rows))
    # The 3 micro-batches every entry holds are neither decoded nor encoded; a 4th that only
    # copies 0-1 hold is decoded once and encoded for copies 2-3 only.
    assert sorted(decodes) == _micro_videos(data, 3)
    assert len(calls) == K * data.num_micro_batches() - die_at
    assert sum(seen) == data.num_samples  # copy 0's stored rows once, then each new batch
    assert _entry_bytes(store) == _entry_bytes(reference)
    assert torch.equal(got.tokens, _stored_tokens(reference))


@pytest.mark.parametrize("left", ["copy 0 complete", "copy 0 partial"])
def test_entries_left_by_the_pass_by_pass_code_are_finished_to_the_same_tokens(
        digits_small, monkeypatch, tmp_path, left):
    from probes.feature_store import FeatureStore, cached_copies, cached_tokens
    from probes.feature_store.keys import copy_key

    task = _task(digits_small, **STORE_AUG)
    data = _train_data(task)
    reference = FeatureStore(tmp_path / "ref")
    _pass_by_pass(reference, data, _store_encode(data, []))

    store = FeatureStore(tmp_path / "s")
    if left == "copy 0 complete":  # the old code stopped between passes 0 and 1
        cached_tokens(store, copy_key(_store_key(), 0), _store_encode(data, []), data, epoch=0)
    else:  # the old code stopped inside pass 0, after 4 micro-batches
        with pytest.raises(KeyboardInterrupt):
            cached_tokens(store, copy_key(_store_key(), 0), _store_encode(data, [], 4), data,
                          epoch=0, checkpoint_rows=1)
    decodes, calls = _count_decodes(monkeypatch), []
    got = cached_copies(store, _store_key(), _store_encode(data, calls), data, K, seed=5)
    micro = data.num_micro_batches()
    if left == "copy 0 complete":  # mixed states: copies 1..K-1 pass by pass, K-1 decodes
        assert sorted(decodes) == sorted(_micro_videos(data, 0) * (K - 1))
        assert len(calls) == (K - 1) * micro
    else:  # all partial or fresh: one pass, copy 0 skips the 4 micro-batches it holds
        assert sorted(decodes) == _micro_videos(data, 0)
        assert len(calls) == K * micro - 4
    assert _entry_bytes(store) == _entry_bytes(reference)
    assert torch.equal(got.tokens, _stored_tokens(reference))
