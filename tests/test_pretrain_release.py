"""Pretraining equal to the V-JEPA release: schedules, init, predictor heads, clipping rule,
mask-size stream, train steps and checkpoints that cross between the two trainers.

Every expected number comes from the release's own code (tests/fixtures/make_release_pretrain.py
ran it; its docstring has the command): schedules of configs/pretrain/vitl16.yaml, the first 100
mask-size draws, init_video_model's weights, and `app.vjepa.train.main` training a tiny model
(3 epochs of 2 steps; clipping inactive in epochs 0-1 and active in epoch 2 by its `epoch >
warmup` rule), once from scratch and once resumed from a checkpoint this repo's trainer wrote.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from encoders.jepa import load_config, resolve
from encoders.jepa.masks import MaskBatch, MaskCollator
from encoders.jepa.schedules import Schedules
from encoders.jepa.checkpoints import RELEASE_PREFIX
from encoders.jepa.trainer import JepaTrainer

FIXTURES = Path(__file__).parent / "fixtures"
RUN = json.loads((FIXTURES / "release_pretrain_run.json").read_text())
RELEASE_CKPT = FIXTURES / "release_pretrain_epoch1.pth.tar"


def _generator():
    spec = importlib.util.spec_from_file_location("make_release_pretrain", FIXTURES / "make_release_pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def close(a, b, rel=1e-5, abs_=1e-6):
    return a == pytest.approx(b, rel=rel, abs=abs_)


def test_vitl_schedules_equal_the_release():
    fx = json.loads((FIXTURES / "release_pretrain_schedules.json").read_text())
    cfg = resolve(load_config("vjepa_vitl"))
    s = Schedules.from_optim(cfg["optim"], cfg["optim"]["steps_per_epoch"])
    assert s.total_steps == 90_000 and s.schedule_steps == 112_500 and s.warmup_steps == 12_000
    for row in fx["rows"]:
        step = row["step"]
        assert s.learning_rate(step) == pytest.approx(row["lr"], rel=1e-6), row
        assert s.wd(step) == pytest.approx(row["wd"], rel=1e-6), row
        assert s.momentum(step) == pytest.approx(row["momentum"], rel=1e-6), row
    last = fx["rows"][-1]
    assert last["step"] == 89_999 and 7.4e-5 < last["lr"] < 7.6e-5  # not final_lr: 80% of the cosine
    # The tiny recipes keep their schedules ending at the last step (ipe_scale 1.0).
    tiny = resolve(load_config("vjepa_tiny"))["optim"]
    t = Schedules.from_optim(dict(tiny, total_steps=450), 96)
    assert t.learning_rate(449) == pytest.approx(1e-6) and t.momentum(450) == 1.0


def test_schedule_length_is_separate_from_the_run():
    cfg = resolve(load_config("vjepa_vitl"))["optim"]
    short = Schedules.from_optim(dict(cfg, total_steps=1000, schedule_steps=112_500), 300)
    full = Schedules.from_optim(cfg, 300)
    assert short.total_steps == 1000
    for step in (0, 500, 999):
        assert short.learning_rate(step) == full.learning_rate(step)
        assert short.momentum(step) == full.momentum(step)


@pytest.mark.parametrize("grid", ["vitl", "tiny"])
def test_shared_mask_size_stream_equals_the_release_first_100_draws(grid):
    fx = json.loads((FIXTURES / "release_pretrain_masks.json").read_text())
    g = fx["grids"][grid]
    shape = (g["num_frames"] // g["tubelet_size"], g["crop_size"] // g["patch_size"],
             g["crop_size"] // g["patch_size"])
    specs = [dict(m, type="multiblock3d") for m in fx["masks"]]
    coll = MaskCollator(specs, shape, seed=0, size_stream="shared")
    drawn = [[] for _ in specs]
    for j, gen in enumerate(coll.generators):
        original = gen.block_size

        def spy(generator, _orig=original, _j=j):
            size = _orig(generator)
            drawn[_j].append(list(size))
            return size
        gen.block_size = spy
    for i in range(100):
        batches = coll(2, iteration=i)
        assert len(batches) == 2
    assert drawn == g["sizes"]
    # the two configs' sizes are correlated (same uniforms), and sizes vary across iterations
    assert len({tuple(s) for s in drawn[0]}) > 1
    # the independent stream (the tiny recipes) draws other sizes
    ind = MaskCollator(specs, shape, seed=0, size_stream="independent")
    assert [ind.generators[0].block_size(ind.rng) for _ in range(20)] != [tuple(s) for s in drawn[0][:20]]


def test_tiny_initial_weights_equal_init_video_model():
    fx = json.loads((FIXTURES / "release_pretrain_init.json").read_text())["tiny"]
    trainer = JepaTrainer(GEN.our_config(), steps_per_epoch=2, out_dir="/nonexistent", progress=False)
    for ours, theirs in ((trainer.online.encoder, fx["encoder"]), (trainer.online.predictor, fx["predictor"])):
        mine = GEN.digest(ours.state_dict())
        theirs = {k.removeprefix("backbone."): v for k, v in theirs.items()}
        assert mine.keys() == theirs.keys()
        for k, v in theirs.items():
            assert mine[k]["shape"] == v["shape"], k
            assert mine[k]["sum"] == pytest.approx(v["sum"], rel=1e-6, abs=1e-9), k
            assert mine[k]["sumsq"] == pytest.approx(v["sumsq"], rel=1e-6, abs=1e-9), k
            assert mine[k]["first"] == pytest.approx(v["first"], rel=1e-6, abs=1e-9), k


def test_vitl_recipe_init_statistics_and_heads_equal_the_release():
    fx = json.loads((FIXTURES / "release_pretrain_init.json").read_text())
    stats, heads = fx["vitl"], fx["vitl_heads"]
    cfg = load_config("vjepa_vitl")
    # Two blocks each (to build in seconds): with the re-draw every block has the same statistics,
    # so ours are compared with the release's first and last blocks (24 and 12).
    cfg.update(device="cpu", encoder_overrides={"depth": 2})
    cfg["predictor"] = dict(cfg["predictor"], depth=2)
    trainer = JepaTrainer(cfg, steps_per_epoch=300, out_dir="/nonexistent", progress=False)
    assert trainer.predictor_heads == heads["predictor"] == heads["encoder"] == 16
    assert trainer.online.predictor.predictor_blocks[0].attn.num_heads == 16
    checked = 0
    for prefix, module, last in (("encoder.backbone.", trainer.online.encoder, 23),
                                 ("predictor.backbone.", trainer.online.predictor, 11)):
        for name, value in module.state_dict().items():
            x = value.double()
            names = [name]
            if ".1." in name:
                names.append(name.replace(".1.", f".{last}.", 1))
            for ref_name in names:
                ref = stats[prefix + ref_name]
                assert list(value.shape) == ref["shape"], name
                assert float(x.mean()) == pytest.approx(ref["mean"], abs=2e-4), ref_name
                std = float(x.std()) if x.numel() > 1 else 0.0
                # trunc-normal draws of >= 1e4 values: std within a few percent; fixed tables exact
                assert std == pytest.approx(ref["std"], rel=0.05, abs=1e-7), ref_name
                checked += 1
    # the release's re-draw: attn.proj of the last block at 0.02, not 0.02 / sqrt(48) = 0.0029
    assert stats["encoder.backbone.blocks.23.attn.proj.weight"]["std"] == pytest.approx(0.02, rel=0.01)
    assert float(trainer.online.encoder.blocks[1].attn.proj.weight.detach().std()) == pytest.approx(0.02, rel=0.01)
    assert checked > 40


class Replay:
    """The release's masks, step by step, in place of our mask generator (rng kept for saving)."""

    def __init__(self, masks, start=0):
        self.masks, self.i = masks, start
        self.rng = torch.Generator()

    def __call__(self, batch_size, iteration=None):
        m = self.masks[self.i]
        self.i += 1
        return [MaskBatch(torch.tensor(c), [torch.tensor(t)]) for c, t in zip(m["context"], m["target"])]

    def state_dict(self):
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state):
        pass


def batches_of(clip_indices, steps_per_epoch=2, offset=0):
    """Batch factory: (epoch, batch) -> the clips the release's loader gave at that step."""
    def make(epoch, start):
        for b in range(start, steps_per_epoch):
            s = epoch * steps_per_epoch + b - offset
            yield torch.stack([GEN.make_clip(i) for i in clip_indices[s]])
    return make


def _losses(out_dir):
    import csv

    with open(out_dir / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def _assert_digests(state: dict, expected: dict):
    mine = GEN.digest({k: v for k, v in state.items()})
    assert mine.keys() == expected.keys()
    for k, v in expected.items():
        assert close(mine[k]["sum"], v["sum"]) and close(mine[k]["sumsq"], v["sumsq"]), k
        assert mine[k]["first"] == pytest.approx(v["first"], rel=1e-5, abs=1e-6), k


def _train(trainer, masks, clip_indices, *, mask_start=0, offset=0):
    trainer.masks = Replay(masks, mask_start)
    steps = []
    original = trainer.train_step

    def step(clips, monitor=False, masks=None):
        out = original(clips, monitor=monitor, masks=masks)
        steps.append(out)
        return out
    trainer.train_step = step
    path = trainer.fit(batches_of(clip_indices, offset=offset), resume=False)
    return steps, torch.load(path, weights_only=True)


def test_six_steps_from_scratch_equal_the_release_train_step(tmp_path):
    ref = RUN["from_scratch"]
    trainer = JepaTrainer(GEN.our_config(), steps_per_epoch=2, out_dir=tmp_path, progress=False)
    assert trainer.total_steps == 6 and trainer.schedules.schedule_steps == 7
    steps, state = _train(trainer, ref["masks"], ref["clip_indices"])
    assert len(steps) == len(ref["steps"]) == 6
    for ours, theirs, lr, wd in zip(steps, ref["steps"], ref["lr"], ref["wd"]):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["lr"] == pytest.approx(lr, rel=1e-9) and ours["wd"] == pytest.approx(wd, rel=1e-9)
        if theirs["epoch"] <= 1:  # epoch > warmup (1) is false: the release does not clip
            assert ours["enc_grad_norm"] is None and theirs["enc_grad_norm"] == 0.0
        else:
            assert ours["enc_grad_norm"] == pytest.approx(theirs["enc_grad_norm"], rel=1e-4)
            assert ours["pred_grad_norm"] == pytest.approx(theirs["pred_grad_norm"], rel=1e-4)
            assert theirs["pred_grad_norm"] > GEN.TINY_OPT["clip_grad"]  # the clip bites
    end = ref["checkpoints"]["3"]
    for key in ("encoder", "predictor", "target_encoder"):
        _assert_digests(state[key], end[key])


def test_clipping_from_step_zero_differs_from_the_release_rule(tmp_path):
    # The deviation the tiny recipes keep (clip_grad_after_warmup: false) is visible in the numbers.
    ref = RUN["from_scratch"]
    cfg = GEN.our_config()
    cfg["optim"]["clip_grad_after_warmup"] = False
    steps, _ = _train(JepaTrainer(cfg, 2, tmp_path, progress=False), ref["masks"], ref["clip_indices"])
    assert steps[0]["enc_grad_norm"] is not None
    assert any(abs(o["loss"] - t["loss"]) > 1e-5 * t["loss"] for o, t in zip(steps[2:], ref["steps"][2:]))


def test_a_release_checkpoint_resumes_here(tmp_path):
    ref = RUN["from_scratch"]
    theirs = torch.load(RELEASE_CKPT, weights_only=True)  # the release's own file, as written
    assert theirs["epoch"] == 1 and "step" not in theirs
    trainer = JepaTrainer(GEN.our_config(), steps_per_epoch=2, out_dir=tmp_path, progress=False)
    trainer.load(RELEASE_CKPT)
    assert (trainer.step, trainer.epoch, trainer.batch_in_epoch) == (2, 1, 0)
    # bit for bit: weights and optimiser state
    for module, key in ((trainer.online.encoder, "encoder"), (trainer.online.predictor, "predictor"),
                        (trainer.target_encoder, "target_encoder")):
        for k, v in module.state_dict().items():
            assert torch.equal(v, theirs[key][RELEASE_PREFIX + k]), k
    mine = trainer.optimizer.state_dict()
    assert mine["state"].keys() == theirs["opt"]["state"].keys()
    for i, s in theirs["opt"]["state"].items():
        for n, t in s.items():
            assert torch.equal(mine["state"][i][n], t), (i, n)
    assert [g.get("lr_scale") for g in trainer.optimizer.param_groups] == [1.0] * 4
    # ... and the next steps are the release's steps 3-6
    steps, state = _train_from(trainer, ref["masks"], ref["clip_indices"], start=2)
    assert [s["loss"] for s in steps] == pytest.approx([s["loss"] for s in ref["steps"][2:]], rel=1e-5)
    for key in ("encoder", "predictor", "target_encoder"):
        _assert_digests(state[key], ref["checkpoints"]["3"][key])


def _train_from(trainer, masks, clip_indices, start):
    """Continue a loaded trainer with the release's masks and clips from global step `start`."""
    trainer.masks = Replay(masks, start)
    steps = []
    original = trainer.train_step

    def step(clips, monitor=False, masks=None):
        out = original(clips, monitor=monitor, masks=masks)
        steps.append(out)
        return out
    trainer.train_step = step
    trainer.fit(batches_of(clip_indices), resume=False)
    return steps, torch.load(trainer.checkpoint_path, weights_only=True)


def test_our_checkpoint_has_the_release_layout_and_resumes_there(tmp_path):
    ref, resumed = RUN["from_scratch"], RUN["resumed_from_ours"]
    cfg = GEN.our_config()
    cfg["optim"]["total_steps"] = 2  # stop after epoch 0; the schedules stay those of 3 epochs
    cfg["optim"]["schedule_steps"] = 7.5
    trainer = JepaTrainer(cfg, steps_per_epoch=2, out_dir=tmp_path, progress=False)
    _, ours = _train(trainer, ref["masks"], ref["clip_indices"])
    theirs = torch.load(RELEASE_CKPT, weights_only=True)
    assert set(theirs) <= set(ours)
    assert ours["epoch"] == theirs["epoch"] == 1
    for key in ("encoder", "predictor", "target_encoder"):
        assert list(ours[key]) == list(theirs[key]), key  # names and order
        for k, v in theirs[key].items():  # the same two steps: the same numbers
            assert torch.allclose(ours[key][k], v, rtol=1e-5, atol=1e-7), k
    groups = [(len(g["params"]), g.get("WD_exclude", False), g["weight_decay"] if g.get("WD_exclude") else None)
              for g in ours["opt"]["param_groups"]]
    assert groups == [(len(g["params"]), g.get("WD_exclude", False), g["weight_decay"] if g.get("WD_exclude") else None)
                      for g in theirs["opt"]["param_groups"]]
    assert ours["opt"]["state"].keys() == theirs["opt"]["state"].keys()
    # The release's trainer took it: it resumed at epoch 1 (a failed load restarts at 0) ...
    assert resumed["resumed_epoch"] == 1 and resumed["steps"][0]["epoch"] == 1
    # ... and computed from it what ours computes from it (its loader restarts at clip 0).
    again = JepaTrainer(GEN.our_config(), steps_per_epoch=2, out_dir=tmp_path, progress=False)
    again.load(tmp_path / "latest.pth.tar")
    assert again.step == 2
    again.masks = Replay(resumed["masks"], 0)
    steps = []
    original = again.train_step
    again.train_step = lambda clips, monitor=False, masks=None: steps.append(
        original(clips, monitor=monitor, masks=masks)) or steps[-1]
    again.fit(batches_of(resumed["clip_indices"], offset=2), resume=False)
    assert [s["loss"] for s in steps] == pytest.approx([s["loss"] for s in resumed["steps"]], rel=1e-5)
    end = torch.load(again.checkpoint_path, weights_only=True)
    for key in ("encoder", "predictor", "target_encoder"):
        _assert_digests(end[key], resumed["checkpoints"]["3"][key])


def test_plain_layout_and_named_fields_reach_config(tmp_path):
    cfg = GEN.our_config()
    cfg["checkpoint_layout"] = "plain"
    trainer = JepaTrainer(cfg, steps_per_epoch=2, out_dir=tmp_path, progress=False)
    state = trainer.state_dict()
    assert all(not k.startswith("module.") for k in state["encoder"]) and state["epoch"] == 0
    for key in ("ipe_scale", "schedule_steps", "clip_grad_after_warmup"):
        assert key in state["config"]["optim"]
    for key in ("reinit_linear_std", "mask_size_stream", "checkpoint_layout"):
        assert key in state["config"]
    from encoders.jepa import PretrainConfigError

    bad = GEN.our_config()
    bad["mask_size_stream"] = "shard"
    with pytest.raises(PretrainConfigError, match="did you mean shared"):
        JepaTrainer(bad, 2, tmp_path, progress=False)
    bad = GEN.our_config()
    bad["predictor"]["num_heads"] = "decoder"
    with pytest.raises(PretrainConfigError, match="num_heads"):
        JepaTrainer(bad, 2, tmp_path, progress=False)
