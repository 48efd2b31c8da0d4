"""Probe trainer: segments/views, learning, data problems, resume."""
import contextlib
import logging
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import probes
from probes import DataProblemError, OptimConfig, evaluate, train_probe
from probes.forward import encode_views
from probes.kinds import Classification


def probe_views(probe, tokens):
    """tokens (B, V, L, D) -> logits (B, V, C): one probe pass per view, as the trainer runs it."""
    return Classification().forward(probe, tokens, {}, contextlib.nullcontext)


def merge_views(logits):
    """The trainer's view merge: the mean over views of the softmax."""
    return Classification().merge(logits)


C, T, H = 4, 2, 4          # classes, frames, height = width
D = 16                     # token width


class PatchEncoder(nn.Module):
    """A fixed random linear 'encoder': one token per frame, (B, 3, T, H, W) -> (B, T, D)."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(3 * H * H, D)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(D, 3 * H * H, generator=g) / 4)
            self.proj.bias.zero_()
        self.requires_grad_(False)
        self.calls = 0

    def forward(self, video):
        self.calls += 1
        b, c, t, h, w = video.shape
        return self.proj(video.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w))


class ToyClips(Dataset):
    """Class k = a fixed random pattern k plus noise; `broken` indices fail to 'decode'."""

    def __init__(self, n, *, segments=1, views=1, seed=0, broken=()):
        g = torch.Generator().manual_seed(seed)
        patterns = torch.randn(C, 3, 1, H, H, generator=torch.Generator().manual_seed(99))
        self.labels = torch.arange(n) % C
        noise = torch.randn(n, segments, views, 3, T, H, H, generator=g)
        self.videos = patterns[self.labels][:, None, None] + 0.8 * noise
        self.broken = set(broken)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if i in self.broken:
            return {"video": None, "label": int(self.labels[i]), "path": f"/data/v{i}.mp4",
                    "error": "moov atom not found"}
        return {"video": self.videos[i], "label": int(self.labels[i]), "path": f"/data/v{i}.mp4",
                "error": None}


def collate(items):
    # Same contract as tasks.collate_clips: failed items are dropped and listed.
    ok = [it for it in items if it["video"] is not None]
    return {"video": torch.stack([it["video"] for it in ok]) if ok else None,
            "label": torch.tensor([it["label"] for it in ok], dtype=torch.long),
            "failures": [(it["path"], it["error"]) for it in items if it["video"] is None]}


def loader(ds, batch_size=8, shuffle=False):
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


def optim(**kw):
    return OptimConfig(**{"epochs": 3, "batch_size": 8, "lr": 1e-2, "weight_decay": 0.01,
                          **kw})


class RecordingProbe(nn.Module):
    """Logits = a fixed linear map of the mean token; remembers the token shapes it saw."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(D, C)
        self.seen = []

    def forward(self, tokens):
        self.seen.append(tuple(tokens.shape))
        return self.head(tokens.mean(1))


def test_segments_concatenated_and_views_kept_apart():
    enc = PatchEncoder()
    video = torch.randn(2, 3, 2, 3, T, H, H)  # B=2, S=3, V=2
    tokens = encode_views(enc, video, chunk=5)
    assert tokens.shape == (2, 2, 3 * T, D)
    assert enc.calls == 3  # 12 clips in chunks of 5
    for b in range(2):
        for v in range(2):
            expect = torch.cat([enc(video[b:b + 1, s, v]) for s in range(3)], dim=1)[0]
            assert torch.allclose(tokens[b, v], expect, atol=1e-6)


def test_view_merge_is_mean_of_softmaxes():
    torch.manual_seed(0)
    enc, probe = PatchEncoder(), RecordingProbe()
    video = torch.randn(3, 2, 4, 3, T, H, H)  # B=3, S=2, V=4
    probs = merge_views(probe_views(probe, encode_views(enc, video)))
    assert probe.seen == [(3 * 4, 2 * T, D)]  # one probe pass, S*N tokens per view
    manual = torch.stack([
        torch.stack([probe(torch.cat([enc(video[b:b + 1, s, v]) for s in range(2)], 1))[0]
                     .softmax(-1) for v in range(4)]).mean(0) for b in range(3)])
    assert torch.allclose(probs, manual, atol=1e-6)


def test_evaluate_accuracy_equals_manual_view_averaged_prediction():
    torch.manual_seed(0)
    ds = ToyClips(12, segments=2, views=3, seed=1)
    enc, probe = PatchEncoder(), RecordingProbe()
    metrics, problems = evaluate(enc, probe, loader(ds, batch_size=5), topk=(1, 2))
    probs = merge_views(probe_views(probe, encode_views(enc, ds.videos)))
    top1 = (probs.argmax(-1) == ds.labels).float().mean().item() * 100
    top2 = (probs.topk(2).indices == ds.labels[:, None]).any(-1).float().mean().item() * 100
    assert metrics["top1"] == pytest.approx(top1)
    assert metrics["top2"] == pytest.approx(top2)
    assert 0 <= metrics["mean_class_acc"] <= 100
    assert problems.seen == {"eval": 12} and problems.failed == {"eval": 0}
    assert all(shape[1] == 2 * T for shape in probe.seen)


def test_topk_is_capped_at_class_count():
    metrics, _ = evaluate(PatchEncoder(), RecordingProbe(), loader(ToyClips(8)), topk=(1, 5))
    assert set(metrics) == {"top1", "top4", "mean_class_acc"}
    assert metrics["top4"] == 100.0


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_trainer_learns_a_separable_problem(kind):
    torch.manual_seed(0)
    probe = probes.build(kind, D, C, **({"num_heads": 2} if kind == "attentive" else {}))
    result = train_probe(PatchEncoder(), probe, loader(ToyClips(64), shuffle=True),
                         loader(ToyClips(32, views=2, seed=5)), optim(epochs=6),
                         progress=False)
    assert result.metrics["top1"] > 80.0  # chance is 25%
    assert result.probe is probe
    assert [h["epoch"] for h in result.history] == list(range(1, 7))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["lr"] < result.history[0]["lr"]
    assert result.timings["train_s"] > 0 and result.timings["train_samples_per_s"] > 0
    assert set(result.timings) >= {"total_s", "train_s", "eval_s", "eval_samples_per_s"}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_training_with_progress_bars_and_warmup_runs():
    torch.manual_seed(0)
    # The trainer only logs (the CLI installs the handler): listen on its logger directly, as
    # `harness.output` may have turned the `probes` logger's propagation off in this process.
    handler, logger = _Lines(), logging.getLogger("probes.trainer")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        result = train_probe(PatchEncoder(), probes.build("linear", D, C), loader(ToyClips(16)),
                             loader(ToyClips(8)), optim(epochs=2, warmup_epochs=1),
                             progress=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = handler.lines
    # The release steps its schedulers before each update: update k uses the value at k + 1,
    # so the second update of the 2-step warmup already runs at the full rate.
    assert result.history[0]["lr"] == pytest.approx(1e-2)
    assert any("epoch 2/2" in line for line in lines)
    assert any(line.startswith("epoch 1/2: loss ") and ", lr " in line for line in lines)
    assert lines[-1].startswith("evaluation: top1 ")


def test_failures_above_threshold_stop_with_a_clear_message():
    ds = ToyClips(20, broken={3})  # 5% per epoch is not above 5%...
    train_probe(PatchEncoder(), probes.build("linear", D, C), loader(ds), loader(ToyClips(8)),
                optim(epochs=1), progress=False)
    ds = ToyClips(20, broken={3, 11})  # ...10% is
    with pytest.raises(DataProblemError) as err:
        train_probe(PatchEncoder(), probes.build("linear", D, C), loader(ds),
                    loader(ToyClips(8)), optim(epochs=1), progress=False)
    msg = str(err.value)
    assert "2 of 20 samples (10.0%) in training epoch 1" in msg
    assert "/data/v3.mp4: moov atom not found" in msg and "max_failure_fraction=0.05" in msg
    assert err.value.problems.failed == {"train": 2}


def test_failures_below_threshold_are_counted_not_replaced():
    train_ds, eval_ds = ToyClips(20, broken={0, 1}), ToyClips(10, broken={9})
    result = train_probe(PatchEncoder(), probes.build("linear", D, C), loader(train_ds),
                         loader(eval_ds), optim(epochs=2), progress=False,
                         max_failure_fraction=0.2)
    p = result.data_problems
    assert p.seen == {"train": 40, "eval": 10}
    assert p.failed == {"train": 4, "eval": 1}
    assert p.failures == [("/data/v0.mp4", "moov atom not found"),
                          ("/data/v1.mp4", "moov atom not found"),
                          ("/data/v9.mp4", "moov atom not found")]
    assert result.history[0]["samples"] == 18
    assert p.to_dict()["failures"][2] == {"path": "/data/v9.mp4", "error": "moov atom not found"}


def test_evaluation_failures_checked_and_all_failed_stops_early():
    with pytest.raises(DataProblemError, match="in evaluation"):
        evaluate(PatchEncoder(), RecordingProbe(), loader(ToyClips(10, broken={0, 5})))
    seen = []

    class CountingLoader:
        def __init__(self, inner):
            self.inner, self.dataset = inner, inner.dataset

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            for batch in self.inner:
                seen.append(batch)
                yield batch

    dead = ToyClips(64, broken=set(range(64)))  # e.g. a wrong data root
    with pytest.raises(DataProblemError, match="of 64 samples"):
        evaluate(PatchEncoder(), RecordingProbe(), CountingLoader(loader(dead)))
    assert len(seen) == 1  # 8 failures > 5% of 64: stopped after the first batch


def test_optim_config_from_dict():
    cfg = OptimConfig.from_dict({"epochs": 2, "batch_size": 4, "lr": 1e-3, "bf16": False})
    assert cfg.weight_decay == 0.01 and cfg.bf16 is False
    with pytest.raises(ValueError, match="unknown optimisation keys \\['lr_scale'\\]"):
        OptimConfig.from_dict({"epochs": 2, "batch_size": 4, "lr": 1e-3, "lr_scale": 2})
    with pytest.raises(ValueError, match="required keys \\['lr'\\]"):
        OptimConfig.from_dict({"epochs": 2, "batch_size": 4})


class Preempted(Exception):
    """Stands for a job killed by its scheduler between two epochs."""


def test_resume_after_interruption_reaches_the_same_weights(tmp_path):
    def run(state, on_epoch_end=None, seed=0):
        torch.manual_seed(seed)
        probe = probes.build("attentive", D, C, num_heads=2)
        return train_probe(PatchEncoder(), probe, loader(ToyClips(24), shuffle=True),
                           loader(ToyClips(8)), optim(epochs=3), progress=False,
                           state_path=state, on_epoch_end=on_epoch_end)

    full = run(tmp_path / "a" / "state.pt")

    def stop_after_first(epoch, stats):
        if epoch == 0:
            raise Preempted

    state = tmp_path / "b" / "state.pt"
    with pytest.raises(Preempted):
        run(state, stop_after_first)
    assert torch.load(state, weights_only=True)["epoch"] == 1
    assert [p.name for p in state.parent.iterdir()] == ["state.pt"]  # no temp files left
    # Different seed in the new process: the probe weights, optimiser state and the RNG that
    # drives the shuffling loader all come from the saved state.
    resumed = run(state, seed=123)
    assert resumed.timings["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for (name, a), b in zip(full.probe.state_dict().items(), resumed.probe.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.metrics == full.metrics
    # A finished state only re-runs the evaluation (e.g. a job killed while writing its record).
    again = run(state, seed=7)
    assert again.timings["resumed_from_epoch"] == 3 and again.timings["train_s"] == 0
    assert again.metrics == full.metrics


def test_resume_refuses_state_of_a_different_run(tmp_path):
    state = tmp_path / "state.pt"
    train_probe(PatchEncoder(), probes.build("linear", D, C), loader(ToyClips(8)),
                loader(ToyClips(8)), optim(epochs=1), progress=False, state_path=state)
    with pytest.raises(ValueError, match="different run.*optim.*delete it"):
        train_probe(PatchEncoder(), probes.build("linear", D, C), loader(ToyClips(8)),
                    loader(ToyClips(8)), optim(epochs=1, lr=0.5), progress=False,
                    state_path=state)


class AugmentedClips(ToyClips):
    """ToyClips whose every read adds fresh noise from torch's global RNG (an augmentation)."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if item["video"] is not None:
            item = {**item, "video": item["video"] + 0.5 * torch.randn(item["video"].shape)}
        return item


def test_augmented_copies_are_cached_once_and_drawn_per_sample():
    from probes.feature_cache import TokenBatches, encode_copies

    encoder = PatchEncoder()
    data = loader(AugmentedClips(12), batch_size=5)

    def encode(enc, batch):
        return encode_views(enc, batch["video"][:, :, :1])

    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    cache = encode_copies(encoder, data, 3, seed=7, device="cpu", encode=encode)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    assert cache.tokens.shape == (12, 3, T, D) and encoder.calls == 3 * 3
    assert torch.equal(cache.labels, torch.arange(12) % C)
    assert not torch.allclose(cache.tokens[:, 0], cache.tokens[:, 1])  # copies differ
    same = encode_copies(encoder, data, 3, seed=7, device="cpu", encode=encode)
    assert torch.equal(same.tokens, cache.tokens)  # same seed, same cache (resume rebuilds it)

    torch.manual_seed(1)
    batches = list(TokenBatches(cache, 4, shuffle=True, pick_copy=True))
    assert [b["tokens"].shape for b in batches] == [(4, 1, T, D)] * 3
    for b in batches:  # every token row is one of that sample's copies
        for tokens, label in zip(b["tokens"][:, 0], b["label"]):
            candidates = cache.tokens[cache.labels == label].reshape(-1, T, D)
            assert any(torch.equal(tokens, c) for c in candidates)

    shuffled = DataLoader(AugmentedClips(12), batch_size=5, shuffle=True, collate_fn=collate)
    with pytest.raises(RuntimeError, match="must not shuffle"):
        encode_copies(encoder, shuffled, 2, seed=7, device="cpu", encode=encode)


def test_trainer_with_augmented_copies_learns_and_resumes_identically(tmp_path):
    def run(state, on_epoch_end=None):
        torch.manual_seed(0)
        probe = probes.build("attentive", D, C, num_heads=2)
        encoder = PatchEncoder()
        result = train_probe(encoder, probe, loader(AugmentedClips(24)), loader(ToyClips(16)),
                             optim(epochs=12), progress=False, state_path=state,
                             cache_features=True, cache_copies=3, on_epoch_end=on_epoch_end)
        return result, encoder.calls

    full, calls = run(tmp_path / "a" / "state.pt")
    assert calls == 3 * 3 + 2  # 3 copies x 3 train batches, then 2 eval batches; no per-epoch encoding
    assert full.timings["feature_cache"]["copies"] == 3
    assert full.metrics["top1"] > 60.0

    def stop_after_first(epoch, stats):
        if epoch == 0:
            raise Preempted

    state = tmp_path / "b" / "state.pt"
    with pytest.raises(Preempted):
        run(state, stop_after_first)
    resumed, _ = run(state)
    assert resumed.timings["resumed_from_epoch"] == 1
    for (name, a), b in zip(full.probe.state_dict().items(), resumed.probe.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.metrics == full.metrics


# --------------------------------------------------------------------------------------------
# global batch in micro-batches; exact resume on the online-augmentation path


def epochs_of(ds, batch_size=8, micro=None, seed=0, shuffle=True):
    from tasks.loading import EpochBatches

    return EpochBatches(ds, batch_size=batch_size, micro_batch_size=micro, seed=seed,
                        shuffle=shuffle, collate_fn=collate)


def test_micro_batches_accumulate_to_the_global_batch():
    # Same global batch, same order and augmentation draws: micro-batches of 1, 3 or 8 give the
    # same update (float summation order aside), with a broken sample in the data too.
    results = []
    for micro in (8, 3, 1):
        torch.manual_seed(0)
        probe = probes.build("attentive", D, C, num_heads=2)
        r = train_probe(PatchEncoder(), probe, epochs_of(AugmentedClips(20, broken={5}), micro=micro),
                        epochs_of(ToyClips(8), shuffle=False), optim(epochs=2), progress=False)
        results.append(r)
    ref = results[0].probe.state_dict()
    for r in results[1:]:
        for name, value in r.probe.state_dict().items():
            if name.endswith("xattn.kv.bias"):
                # The key bias has no true gradient (softmax ignores a constant shift), so Adam
                # amplifies float round-off there; its value bears on nothing. Values only.
                value, want = value[D:], ref[name][D:]
            else:
                want = ref[name]
            assert torch.allclose(value, want, atol=1e-5), name
        assert r.metrics == pytest.approx(results[0].metrics)
        assert r.history[0]["samples"] == 19 and r.history[0]["failed"] == 1


def test_killed_mid_epoch_and_resumed_gives_identical_metrics(tmp_path):
    # The online path: every epoch re-draws each sample's augmentation (torch's RNG, seeded per
    # sample by tasks.loading.SeededItems). Killed at step 2 of epoch 2 (state saved at every
    # step here), resumed in a "new process" with another global seed: bit-identical result.
    def run(state, kill_at=None, seed=0, save_every_s=0.0):
        torch.manual_seed(seed)
        probe = probes.build("attentive", D, C, num_heads=2)

        def hook(epoch, step):
            if (epoch, step) == kill_at:
                raise Preempted

        return train_probe(PatchEncoder(), probe, epochs_of(AugmentedClips(24), batch_size=6, micro=4),
                           epochs_of(ToyClips(8), shuffle=False), optim(epochs=3, batch_size=6),
                           progress=False, state_path=state, save_every_s=save_every_s,
                           on_step_end=hook)

    torch.manual_seed(0)
    full = run(tmp_path / "a.pt")
    state = tmp_path / "b.pt"
    with pytest.raises(Preempted):
        run(state, kill_at=(1, 2))
    saved = torch.load(state, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 2)
    resumed = run(state, seed=123)
    assert (resumed.timings["resumed_from_epoch"], resumed.timings["resumed_from_step"]) == (1, 2)
    for (name, a), b in zip(full.probe.state_dict().items(), resumed.probe.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.metrics == full.metrics
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_state_is_saved_after_every_epoch(tmp_path):
    # A kill right after an epoch (before any time-based save) loses nothing of that epoch.
    state = tmp_path / "s.pt"

    def stop(epoch, stats):
        if epoch == 1:
            raise Preempted

    with pytest.raises(Preempted):
        train_probe(PatchEncoder(), probes.build("linear", D, C), epochs_of(ToyClips(16)),
                    epochs_of(ToyClips(8), shuffle=False), optim(epochs=4), progress=False,
                    state_path=state, save_every_s=1e9, on_epoch_end=stop)
    assert torch.load(state, weights_only=True)["epoch"] == 2


def test_epoch_batches_order_and_draws_do_not_depend_on_micro_size():
    ds = AugmentedClips(10)
    seen = {}
    for micro in (10, 4, 1):
        data = epochs_of(ds, batch_size=4, micro=micro)
        assert len(data) == 3
        steps = list(data.steps(epoch=1))
        sizes = [s.size for s in steps]
        videos = [torch.cat([mb["video"] for mb in s.micro_batches]) for s in steps]
        seen[micro] = (sizes, torch.cat(videos))
    assert seen[10][0] == seen[4][0] == seen[1][0] == [4, 4, 2]
    assert torch.equal(seen[10][1], seen[4][1]) and torch.equal(seen[1][1], seen[4][1])
    # another epoch: another order and other draws; a later start step skips exactly
    data = epochs_of(ds, batch_size=4, micro=3)
    e2 = torch.cat([mb["video"] for s in data.steps(epoch=2) for mb in s.micro_batches])
    assert not torch.equal(e2, seen[4][1])
    tail = torch.cat([mb["video"] for s in data.steps(epoch=2, start_step=1) for mb in s.micro_batches])
    assert torch.equal(tail, e2[4:])


def test_optim_config_rejects_bad_values_with_clear_errors():
    for bad in ({"epochs": "abc"}, {"epochs": 2.5}, {"lr": float("nan")}, {"micro_batch_size": 0},
                {"batch_size": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            OptimConfig(**{"epochs": 1, "batch_size": 4, "lr": 1e-3, **bad})
    cfg = OptimConfig(epochs=1, batch_size=256, lr=1e-3, micro_batch_size=4)
    assert "micro_batch_size" not in cfg.protocol() and "bf16" not in cfg.protocol()
    assert cfg.protocol()["batch_size"] == 256


def test_bf16_path_casts_the_encoder_once_and_keeps_tokens_bf16(monkeypatch):
    # The CUDA bf16 path, exercised on the CPU (slow there, so only CUDA picks it for real):
    # encoder weights cast once, tokens stay bf16, probe trained with fp32 weights under autocast.
    import probes.trainer as trainer

    monkeypatch.setattr(trainer, "resolve_precision", lambda device, bf16: "bf16" if bf16 else "fp32")
    enc = PatchEncoder()
    seen = []
    enc.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    torch.manual_seed(0)
    probe = probes.build("attentive", D, C, num_heads=2)
    result = train_probe(enc, probe, epochs_of(ToyClips(32)), epochs_of(ToyClips(16), shuffle=False),
                         optim(epochs=4), progress=False)
    assert result.precision == "bf16"
    assert enc.proj.weight.dtype == torch.bfloat16
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)}
    assert all(p.dtype == torch.float32 for p in probe.parameters())
    assert result.metrics["top1"] > 50 and all(math.isfinite(h["loss"]) for h in result.history)


# --------------------------------------------------------------------------------------------
# a grid of heads on one encoder pass; honest selection


POINTS = [{"lr": 1e-2, "weight_decay": 0.01}, {"lr": 3e-3, "weight_decay": 0.1},
          {"lr": 1e-3, "weight_decay": 0.01}]


def test_each_grid_head_equals_its_own_separate_run():
    from probes.grid import ProbeGrid

    def make():
        return probes.build("attentive", D, C, num_heads=2)

    torch.manual_seed(0)
    grid = ProbeGrid(make, POINTS)
    enc = PatchEncoder()
    r = train_probe(enc, grid, epochs_of(AugmentedClips(24)), epochs_of(ToyClips(8), shuffle=False),
                    optim(epochs=2), progress=False, selection="eval_max")
    calls_grid = enc.calls
    torch.manual_seed(0)
    singles = [make() for _ in POINTS]  # the same init draws, in the same order
    for h, (single, point) in enumerate(zip(singles, POINTS)):
        enc = PatchEncoder()
        train_probe(enc, single, epochs_of(AugmentedClips(24)), epochs_of(ToyClips(8), shuffle=False),
                    optim(epochs=2, lr=point["lr"], weight_decay=point["weight_decay"]), progress=False)
        for name, value in single.state_dict().items():
            if name.endswith("xattn.kv.bias"):  # the key bias has no true gradient: values only
                value, want = value[D:], grid.heads[h].state_dict()[name][D:]
            else:
                want = grid.heads[h].state_dict()[name]
            assert torch.allclose(value, want, atol=1e-5), (h, name)
    assert calls_grid < 2 * enc.calls  # one encoder pass fed all three heads
    assert [hd["lr"] for hd in r.heads] == [p["lr"] for p in POINTS] and r.chosen_head is not None


class Recorded:
    """An EpochBatches whose passes are logged, to see which split is read when."""

    def __init__(self, data, name, log):
        self.data, self.name, self.log = data, name, log
        self.finish = data.finish
        self.num_samples = data.num_samples

    def micro_batches(self, *a):
        self.log.append(self.name)
        return self.data.micro_batches(*a)

    def num_micro_batches(self):
        return self.data.num_micro_batches()


@pytest.mark.parametrize("selection", ["val", "eval_max"])
def test_honest_selection_reads_the_evaluation_split_only_after_choosing(selection):
    from probes.grid import ProbeGrid

    torch.manual_seed(0)
    grid = ProbeGrid(lambda: probes.build("linear", D, C), POINTS)
    log = []
    val = Recorded(epochs_of(ToyClips(12, seed=5), shuffle=False), "val", log)
    test = Recorded(epochs_of(ToyClips(8, seed=6), shuffle=False), "test", log)
    r = train_probe(PatchEncoder(), grid, epochs_of(ToyClips(24)), test, optim(epochs=2),
                    progress=False, selection=selection,
                    selection_data=val if selection == "val" else None)
    if selection == "val":
        assert log == ["val", "test"]  # chosen on val; the test split is read once, after
        assert all("val_top1" in h for h in r.heads)
    else:
        assert log == ["test", "test"] and all("eval_max_top1" in h for h in r.heads)
    best = max(range(len(r.heads)), key=lambda h: r.heads[h][f"{selection}_top1"])
    assert r.chosen_head == best
    with pytest.raises(ValueError, match="selection_data"):
        train_probe(PatchEncoder(), grid, epochs_of(ToyClips(8)), test, optim(epochs=1),
                    progress=False, selection="val")


def test_a_stop_request_saves_at_that_step_and_resumes_identically(tmp_path):
    from probes.trainer import Preempted as Stopped

    def run(state, stop=None, seed=0):
        torch.manual_seed(seed)
        probe = probes.build("attentive", D, C, num_heads=2)
        return train_probe(PatchEncoder(), probe, epochs_of(AugmentedClips(24), batch_size=6),
                           epochs_of(ToyClips(8), shuffle=False), optim(epochs=2, batch_size=6),
                           progress=False, state_path=state, save_every_s=1e9, stop=stop)

    full = run(tmp_path / "a.pt")
    calls = {"n": 0}

    def stop():  # a SIGTERM arriving during step 3 of epoch 1
        calls["n"] += 1
        return calls["n"] >= 3

    with pytest.raises(Stopped, match="epoch 0, step 3"):
        run(tmp_path / "b.pt", stop=stop)
    resumed = run(tmp_path / "b.pt", seed=9)
    assert resumed.timings["resumed_from_step"] == 3 and resumed.metrics == full.metrics
