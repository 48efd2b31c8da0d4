"""JEPA predictor, schedules, EMA, loss, checkpoints and exact resume (tiny models, CPU)."""
import copy

import pytest
import torch
from torch import nn

import encoders
from encoders.jepa import PretrainConfigError, load_config
from encoders.jepa.predictor import Predictor
from encoders.jepa.model import pixel_targets
from encoders.jepa.monitors import effective_rank
from encoders.jepa.schedules import Schedules, ema_update
from encoders.jepa.trainer import JepaTrainer


def tiny_cfg(name="vjepa_tiny", **changes):
    """A registered recipe shrunk to run in well under a second per step."""
    cfg = load_config(name)
    cfg["encoder_overrides"] = {"depth": 1}
    cfg["predictor"] = {"width": 32, "depth": 1, "num_heads": 4}
    cfg["data"]["batch_size"] = 4
    cfg["optim"].update({"total_steps": 6, "warmup_steps": 2, "lr": 1e-3})
    cfg["checkpoint_every"] = 1000
    cfg["device"] = "cpu"
    for k, v in changes.items():
        cfg[k] = v
    return cfg


def batches(n_batches=3, size=4, frames=8, seed=0):
    """A deterministic batch factory: batch b of epoch e is a fixed function of (seed, e, b)."""
    def make(epoch, start):
        for b in range(start, n_batches):
            g = torch.Generator().manual_seed(seed * 1000 + epoch * 100 + b)
            yield torch.randn(size, 3, frames, 32, 32, generator=g)
    return make


def test_predictor_shapes_and_zero_mask_tokens():
    p = Predictor((4, 4, 4), embed_dim=96, width=32, depth=2, num_heads=4, num_mask_tokens=2)
    assert all(float(t.detach().abs().sum()) == 0.0 for t in p.mask_tokens)
    ctx_idx = torch.stack([torch.arange(0, 64, 3)[:20], torch.arange(1, 64, 3)[:20]])
    tgt_idx = torch.stack([torch.arange(2, 64, 3)[:12], torch.arange(0, 64, 5)[:12]])
    out = p(torch.randn(2, 20, 96), ctx_idx, tgt_idx, mask_index=1)
    assert out.shape == (2, 12, 96)
    outs = p(torch.randn(2, 20, 96), ctx_idx, [tgt_idx, tgt_idx[:, :5]], mask_index=0)
    assert [o.shape for o in outs] == [(2, 12, 96), (2, 5, 96)]
    pix = Predictor((1, 4, 4), embed_dim=96, width=32, depth=1, num_heads=4, out_dim=192, video=False)
    assert pix(torch.randn(3, 6, 96), torch.arange(6).expand(3, 6), torch.arange(6, 16).expand(3, 10)).shape == (3, 10, 192)


def test_predictor_uses_target_positions():
    # Same context, different target positions -> different predictions (position embedding).
    torch.manual_seed(0)
    p = Predictor((4, 4, 4), embed_dim=16, width=32, depth=1, num_heads=4)
    ctx = torch.randn(1, 4, 16)
    ci = torch.tensor([[0, 1, 2, 3]])
    a = p(ctx, ci, torch.tensor([[10, 20]]))
    b = p(ctx, ci, torch.tensor([[20, 10]]))
    assert torch.allclose(a[:, 0], b[:, 1], atol=1e-5) and not torch.allclose(a[:, 0], a[:, 1])


def test_ema_update_formula():
    torch.manual_seed(0)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = {k: v.clone().double() for k, v in target.state_dict().items()}
    ema_update(target, online, 0.9)
    for k, v in target.state_dict().items():
        expected = 0.9 * before[k] + 0.1 * online.state_dict()[k].double()
        assert torch.allclose(v.double(), expected, atol=1e-7)
    ema_update(target, online, 1.0)  # momentum 1 leaves the target unchanged
    ema_update(target, online, 0.0)  # momentum 0 copies the online weights
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))


def test_effective_rank_tells_spread_from_collapsed_features():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(8, 500, 32, generator=g)
    assert effective_rank(spread) > 28  # close to the width
    three = torch.randn(8, 500, 3, generator=g) @ torch.randn(3, 32, generator=g)
    assert 2.0 < effective_rank(three) <= 3.0 + 1e-4
    collapsed = torch.randn(32, generator=g) * (1 + 0.01 * torch.randn(8, 500, 1, generator=g))
    assert effective_rank(collapsed) < 1.01
    assert effective_rank(torch.zeros(4, 10, 8)) == 0.0
    # more tokens than the cap: a strided subsample, and no random state is touched
    before = torch.random.get_rng_state()
    assert effective_rank(torch.randn(64, 200, 16, generator=g), max_tokens=1000) > 14
    assert torch.equal(before, torch.random.get_rng_state())


def test_metrics_log_the_target_rank(tmp_path):
    import csv

    trainer = JepaTrainer(tiny_cfg(log_every=1), steps_per_epoch=3, out_dir=tmp_path, progress=False)
    trainer.fit(batches())
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(0 < float(r["target_rank"]) <= 96 for r in rows)


def test_collapsing_targets_warn_once(tmp_path, caplog):
    trainer = JepaTrainer(tiny_cfg(), steps_per_epoch=3, out_dir=tmp_path, progress=False)
    g = torch.Generator().manual_seed(0)
    trainer._last_targets = torch.randn(4, 64, 96, generator=g)
    start = trainer._watch_rank()
    one_direction = torch.randn(96, generator=g) * torch.randn(4, 64, 1, generator=g)
    with caplog.at_level("WARNING", logger="encoders.jepa.monitors"):
        for _ in range(2):
            trainer._last_targets = one_direction
            assert trainer._watch_rank() < 0.25 * start
    assert len([r for r in caplog.records if "collapsing" in r.getMessage()]) == 1


def test_schedules_match_release_shapes():
    s = Schedules(total_steps=100, warmup_steps=10, start_lr=2e-4, lr=6.25e-4, final_lr=1e-6,
                  weight_decay=0.04, final_weight_decay=0.4, ema_start=0.998, ema_end=1.0)
    assert s.learning_rate(0) == pytest.approx(2e-4 + 0.1 * (6.25e-4 - 2e-4))
    assert s.learning_rate(9) == pytest.approx(6.25e-4)  # peak right after warmup
    lrs = [s.learning_rate(i) for i in range(9, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(1e-6)
    assert s.wd(-1) == pytest.approx(0.04) and s.wd(99) == pytest.approx(0.4)
    assert s.wd(49) == pytest.approx(0.22)
    assert s.momentum(0) == 0.998 and s.momentum(50) == pytest.approx(0.999) and s.momentum(100) == 1.0


def test_pixel_targets_normalised_per_tubelet():
    clips = torch.randn(2, 3, 4, 16, 16) * 5 + 3
    t = pixel_targets(clips, patch=8, tubelet=2)
    assert t.shape == (2, 2 * 2 * 2, 2 * 8 * 8 * 3)
    per = t.view(2, 8, 128, 3)
    assert torch.allclose(per.mean(dim=2), torch.zeros(2, 8, 3), atol=1e-4)
    assert torch.allclose(per.std(dim=2), torch.ones(2, 8, 3), atol=1e-3)
    # token 1 is the tubelet at (t=0, row=0, col=1): pixels [0:2, 0:8, 8:16]
    manual = clips[1, :, 0:2, 0:8, 8:16].permute(1, 2, 3, 0).reshape(128, 3)
    manual = (manual - manual.mean(0)) / (manual.std(0) + 1e-6)
    assert torch.allclose(per[1, 1], manual, atol=1e-4)


@pytest.mark.parametrize("name", ["vjepa_tiny", "vjepa_tiny_pixels", "ijepa_tiny"])
def test_steps_on_a_fixed_batch_reduce_the_loss(tmp_path, name):
    cfg = tiny_cfg(name)
    cfg["optim"].update({"total_steps": 100, "warmup_steps": 0, "start_lr": 3e-3, "lr": 3e-3,
                         "weight_decay": 0.0, "final_weight_decay": 0.0,
                         "predictor_lr_scale": 1.0})  # one lr for all: 3e-2 would diverge
    trainer = JepaTrainer(cfg, steps_per_epoch=10, out_dir=tmp_path, progress=False)
    # A smooth clip (upsampled noise), so normalised pixels are predictable from neighbours.
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(4, 3, 8, 4, 4, generator=g)
    clips = torch.nn.functional.interpolate(coarse, size=(8, 32, 32), mode="trilinear")
    # the same masks every step, so the losses are comparable
    state = trainer.masks.state_dict()
    losses = []
    for _ in range(8):
        trainer.masks.load_state_dict(state)
        losses.append(trainer.train_step(clips)["loss"])
    assert losses[-1] < losses[0] * 0.97, losses
    assert losses[-1] < min(losses[:4]), losses


def test_checkpoint_weights_only_release_layout_and_registry_load(tmp_path):
    cfg = tiny_cfg()
    trainer = JepaTrainer(cfg, steps_per_epoch=3, out_dir=tmp_path, progress=False)
    path = trainer.fit(batches(), resume=False)
    assert path == tmp_path / "latest.pth.tar"
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 6 and rows[0].startswith("step,epoch,batch,loss,lr")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss",
                "batch_size", "world_size", "lr", "step", "mask_rng", "data_position", "config", "arch"):
        assert key in state, key
    assert state["step"] == 6 and state["scaler"] is None and state["world_size"] == 1
    assert state["data_position"] == {"epoch": 1, "batch": 3}
    assert state["epoch"] == 2  # the release's convention: epochs completed
    assert isinstance(state["mask_rng"][0], torch.Tensor)
    # The EMA target differs from the online encoder after training.
    assert not torch.equal(state["target_encoder"]["module.backbone.blocks.0.attn.qkv.weight"],
                           state["encoder"]["module.backbone.blocks.0.attn.qkv.weight"])
    enc = encoders.build("vjepa_tiny", checkpoint=path, depth=1)
    assert enc.checkpoint_info["key"] == "target_encoder"
    expected = state["target_encoder"]["module.backbone.blocks.0.mlp.fc1.weight"]
    assert torch.equal(enc.backbone.state_dict()["blocks.0.mlp.fc1.weight"], expected)
    assert enc(torch.randn(1, 3, 8, 32, 32)).shape == (1, 64, 96)


def test_pixels_checkpoint_target_encoder_is_the_encoder(tmp_path):
    cfg = tiny_cfg("vjepa_tiny_pixels")
    cfg["optim"]["total_steps"] = 2
    path = JepaTrainer(cfg, 3, tmp_path, progress=False).fit(batches(), resume=False)
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(state["encoder"][k], v) for k, v in state["target_encoder"].items())
    encoders.build("vjepa_tiny", checkpoint=path, depth=1)


@pytest.mark.parametrize("name", ["vjepa_tiny", "ijepa_tiny"])  # image: the random frame too
def test_save_then_resume_gives_identical_next_losses(tmp_path, name):
    cfg = tiny_cfg(name)
    cfg["checkpoint_every"] = 4
    full = JepaTrainer(cfg, steps_per_epoch=3, out_dir=tmp_path / "full", progress=False)
    full.fit(batches(), resume=False)
    ref = [float(r.split(",")[3]) for r in (tmp_path / "full" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(ref) == 6

    # Interrupted run: stop after 4 steps (a checkpoint is written at step 4), mid-epoch 1.
    part_cfg = copy.deepcopy(cfg)
    first = JepaTrainer(part_cfg, steps_per_epoch=3, out_dir=tmp_path / "part", progress=False)
    calls = {"n": 0}

    def stopping(epoch, start):
        for clips in batches()(epoch, start):
            if calls["n"] == 4:
                raise KeyboardInterrupt
            calls["n"] += 1
            yield clips

    with pytest.raises(KeyboardInterrupt):
        first.fit(stopping, resume=False)
    saved = torch.load(tmp_path / "part" / "latest.pth.tar", weights_only=True)
    assert saved["step"] == 4 and saved["data_position"] == {"epoch": 1, "batch": 1}

    resumed = JepaTrainer(part_cfg, steps_per_epoch=3, out_dir=tmp_path / "part", progress=False)
    resumed.fit(batches(), resume=True)
    got = [float(r.split(",")[3]) for r in (tmp_path / "part" / "metrics.csv").read_text().splitlines()[1:]]
    assert got == ref  # bit-for-bit, including steps 5 and 6 after the resume
    end_full = torch.load(tmp_path / "full" / "latest.pth.tar", weights_only=True)
    end_part = torch.load(tmp_path / "part" / "latest.pth.tar", weights_only=True)
    for k, v in end_full["target_encoder"].items():
        assert torch.equal(v, end_part["target_encoder"][k]), k


def test_config_errors_are_clear(tmp_path):
    cfg = tiny_cfg()
    cfg["optim"]["learning_rate"] = 1.0
    with pytest.raises(PretrainConfigError, match="learning_rate"):
        JepaTrainer(cfg, 3, tmp_path, progress=False)
    cfg = tiny_cfg(modality="image")
    with pytest.raises(PretrainConfigError, match="image"):
        JepaTrainer(cfg, 3, tmp_path, progress=False)
    trainer = JepaTrainer(tiny_cfg(), 3, tmp_path, progress=False)
    with pytest.raises(ValueError, match="token grid"):
        trainer.train_step(torch.randn(2, 3, 4, 32, 32))


def test_predictor_lr_scale_applies_to_the_predictor_groups_only(tmp_path):
    cfg = tiny_cfg()
    cfg["optim"].update({"predictor_lr_scale": 10.0, "warmup_steps": 0, "start_lr": 1e-3})
    trainer = JepaTrainer(cfg, steps_per_epoch=3, out_dir=tmp_path, progress=False)
    out = trainer.train_step(next(iter(batches()(0, 0))))
    predictor_ids = {id(p) for p in trainer.online.predictor.parameters()}
    seen = set()
    for group in trainer.optimizer.param_groups:
        is_pred = {id(p) in predictor_ids for p in group["params"]}
        assert len(is_pred) == 1  # a group never mixes encoder and predictor parameters
        seen |= is_pred
        want = out["lr"] * (10.0 if is_pred.pop() else 1.0)
        assert group["lr"] == pytest.approx(want)
    assert seen == {True, False}
    cfg["optim"]["predictor_lr_scale"] = 0
    with pytest.raises(PretrainConfigError, match="predictor_lr_scale"):
        JepaTrainer(cfg, 3, tmp_path, progress=False)


def test_context_gain_is_zero_for_a_predictor_that_ignores_the_context(tmp_path):
    import csv

    trainer = JepaTrainer(tiny_cfg(log_every=2), steps_per_epoch=3, out_dir=tmp_path, progress=False)
    clips = next(iter(batches()(0, 0)))
    trainer.train_step(clips, monitor=True)
    assert trainer._last_context_gain is not None and trainer._last_context_gain == trainer._last_context_gain
    trainer.train_step(clips)  # not a logged step: nothing measured
    assert trainer._last_context_gain is None
    with torch.no_grad():  # context features now reach the predictor as zeros, like the blind pass
        trainer.online.predictor.predictor_embed.weight.zero_()
    trainer.train_step(clips, monitor=True)  # measured before this step's update
    assert trainer._last_context_gain == pytest.approx(0.0, abs=1e-6)

    trainer = JepaTrainer(tiny_cfg(log_every=1, monitor_every=4), steps_per_epoch=3,
                          out_dir=tmp_path / "run", progress=False)
    trainer.fit(batches())
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    measured = [r["step"] for r in rows if r["context_gain"]]
    assert len(rows) == 6 and measured == ["4", "6"]  # every 4th step and the last
    # a rate (clips of the step over its seconds), not an inverse time; independent of machine load
    for prev, row in zip(rows, rows[1:]):
        seconds = float(row["elapsed_s"]) - float(prev["elapsed_s"])
        assert float(row["clips_per_s"]) == pytest.approx(4 / seconds, rel=1e-6)


def test_raw_pixel_targets_keep_the_tubelets_pixels():
    clips = torch.randn(2, 3, 4, 16, 16)
    raw = pixel_targets(clips, patch=8, tubelet=2, normalize=False)
    assert raw.shape == (2, 8, 384)
    manual = clips[1, :, 0:2, 0:8, 8:16].permute(1, 2, 3, 0).reshape(-1)
    assert torch.equal(raw[1, 1], manual)


def test_resume_from_a_foreign_optimiser_layout_says_what_to_do(tmp_path):
    trainer = JepaTrainer(tiny_cfg(), steps_per_epoch=3, out_dir=tmp_path, progress=False)
    path = trainer.save()
    state = torch.load(path, weights_only=True)
    groups = state["opt"]["param_groups"]
    merged = dict(groups[0], params=[i for g in groups for i in g["params"]])
    state["opt"]["param_groups"] = [merged]  # one group, as an older trainer might have written
    torch.save(state, path)
    with pytest.raises(ValueError, match="fresh run folder"):
        JepaTrainer(tiny_cfg(), steps_per_epoch=3, out_dir=tmp_path, progress=False).load(path)
