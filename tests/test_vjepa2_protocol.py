"""V-JEPA 2's probe protocol exactly: `attentive_v2` with `optim_groups: release` steps as the
release's eval.py optimiser, and the Diving-48 / Jester recipe is the release configs'.

The release's numbers (tests/fixtures/attentive_v2_release/release_steps.json) were made by its
own code; README.md there gives the command."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import encoders
import probes
import tasks
from probes import OptimConfig
from probes.attentive_v2 import AttentiveProbeV2
from probes.forward import probe_layers
from probes.grid import ProbeGrid, grid_param_groups, grid_points, release_order
from probes.optim import ProbeOptimiser, param_groups

HERE = Path(__file__).parent / "fixtures" / "attentive_v2_release"
RELEASE = json.loads((HERE / "release_steps.json").read_text())


def _script():
    spec = importlib.util.spec_from_file_location("make_release_steps",
                                                  HERE / "make_release_steps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKE = _script()


def _train(name: str, optim_groups: str) -> dict:
    """Our grid over the scenario's steps: per step each head's lr, weight decay and loss, and
    each head's final state."""
    spec = RELEASE["scenarios"][name]
    heads = spec["heads"]
    lrs = list(dict.fromkeys(h["lr"] for h in heads))
    wds = list(dict.fromkeys(h["weight_decay"] for h in heads))
    taps = spec["taps"]
    p = RELEASE["probe"]

    def make():
        return AttentiveProbeV2(p["embed_dim"], p["num_classes"], num_heads=p["num_heads"],
                                depth=p["depth"], activation_checkpointing=True,
                                out_layers=list(range(taps)) if taps > 1 else None,
                                optim_groups=optim_groups)

    torch.manual_seed(spec["seed"])
    grid = ProbeGrid(make, grid_points({"lr": lrs, "weight_decay": wds}))
    optim = OptimConfig(epochs=spec["epochs"], batch_size=p["batch"], lr=lrs[0], final_lr=0.0,
                        warmup_epochs=heads[0]["warmup"], weight_decay=wds[0],
                        final_weight_decay=heads[0]["final_weight_decay"], clip_grad_norm=None,
                        bf16=False)
    opt = ProbeOptimiser(grid, optim, spec["ipe"], groups=grid_param_groups(grid))
    grid.train()
    steps = []
    for step in range(spec["ipe"] * spec["epochs"]):
        opt.begin(step)
        parts, labels = MAKE.batch(name, step, taps)
        logits = grid(torch.cat(parts, dim=-1))  # the trainer's taps: on the channel axis
        losses = [F.cross_entropy(logits[:, h], labels) for h in range(len(grid))]
        sum(losses).backward()
        opt.update(p["batch"], p["batch"])
        by_head = {g["head"]: g for g in opt.opt.param_groups}
        steps.append({"lr": [by_head[h]["lr"] for h in range(len(grid))],
                      "wd": [by_head[h]["weight_decay"] for h in range(len(grid))],
                      "loss": [loss.item() for loss in losses]})
    return {"points": grid.points, "steps": steps,
            "final": [MAKE.summarise(h.state_dict()) for h in grid.heads]}


def _worst(ours: dict, release: dict) -> float:
    """The largest difference between our final states and the release's, over every recorded
    statistic of every parameter of every head."""
    worst = 0.0
    for got_head, ref_head in zip(ours["final"], release["final"], strict=True):
        assert list(got_head) == list(ref_head)  # the same keys, in the same order
        for key, ref in ref_head.items():
            got = got_head[key]
            assert got["shape"] == ref["shape"], key
            for stat in ("sum", "sumsq", "dot"):
                worst = max(worst, abs(got[stat] - ref[stat]) / max(1.0, abs(ref[stat])))
            worst = max(worst, max(abs(a - b) for a, b in zip(got["first"], ref["first"])))
    return worst


@pytest.fixture
def one_thread():
    """The release's numbers were made with one intra-op thread (fixture README): summing a
    parameter's statistics with another thread count reorders float32 sums by ~1e-5."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(RELEASE["scenarios"]))
def test_release_optimiser_steps_equal_the_releases(name, one_thread):
    release = RELEASE["scenarios"][name]
    ours = _train(name, "release")
    # heads in the release's multihead_kwargs order: weight decay outer, lr inner
    assert ours["points"] == [{"lr": h["lr"], "weight_decay": h["weight_decay"]}
                              for h in release["heads"]]
    for step, (got, ref) in enumerate(zip(ours["steps"], release["steps"], strict=True)):
        assert got["lr"] == pytest.approx(ref["lr"], rel=1e-12, abs=1e-15), step
        assert got["wd"] == pytest.approx(ref["wd"], rel=1e-12, abs=1e-15), step
        assert got["loss"] == pytest.approx(ref["loss"], abs=1e-5), step
    assert _worst(ours, release) < 1e-5


@pytest.mark.parametrize("name", list(RELEASE["scenarios"]))
def test_split_groups_depart_from_the_release(name):
    # the harness's default (biases and norms not decayed, lr-outer grid) is measurably another
    # protocol: the parity above can fail
    release = RELEASE["scenarios"][name]
    ours = _train(name, "split")
    assert _worst(ours, release) > 1e-4


def test_release_groups_decay_every_parameter_in_one_group():
    probe = AttentiveProbeV2(32, 5, optim_groups="release")
    (group,) = param_groups(probe, 0.8)
    assert group["weight_decay"] == 0.8 and group["decay"]
    assert len(group["params"]) == len(list(probe.parameters())) == 51
    split = param_groups(AttentiveProbeV2(32, 5), 0.8)
    assert [g["weight_decay"] for g in split] == [0.8, 0.0]
    assert sum(len(g["params"]) for g in split) == 51
    for release in RELEASE["scenarios"].values():  # the release: one group of all 51
        assert release["groups_per_head"] == [[51]] * len(release["heads"])
    with pytest.raises(ValueError, match="optim_groups must be one of"):
        AttentiveProbeV2(32, 5, optim_groups="decay_all")


def test_release_order_is_weight_decay_outer_lr_inner():
    points = grid_points({"lr": [5e-3, 1e-3, 3e-4], "weight_decay": [0.01, 0.8]})
    assert [p["lr"] for p in points[:2]] == [5e-3, 5e-3]  # ours: lr outer
    assert release_order(points) == [{"lr": lr, "weight_decay": wd}
                                     for wd in (0.01, 0.8) for lr in (5e-3, 1e-3, 3e-4)]
    grid = ProbeGrid(lambda: AttentiveProbeV2(16, 3, num_heads=2, depth=1), points)
    assert grid.points == points


def test_multi_level_taps_are_tokens_as_the_releases_wrapper():
    # (B, N, L*D) on the channel axis -> the same logits as the release's (B, L*N, D)
    torch.manual_seed(0)
    one = AttentiveProbeV2(16, 3, num_heads=2, depth=2).eval()
    four = AttentiveProbeV2(16, 3, num_heads=2, depth=2, out_layers=[17, 19, 21, 23]).eval()
    four.load_state_dict(one.state_dict())
    taps = [torch.randn(2, 5, 16) for _ in range(4)]
    with torch.no_grad():
        torch.testing.assert_close(four(torch.cat(taps, -1)), one(torch.cat(taps, 1)),
                                   atol=1e-5, rtol=1e-5)
    assert probe_layers(ProbeGrid(lambda: four, [{"lr": 1e-3,
                                                                 "weight_decay": 0.8}])) == (
        17, 19, 21, 23)
    with pytest.raises(ValueError, match=r"\(B, N, 64\) \(4 taps of width 16"):
        four(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="distinct block indices"):
        AttentiveProbeV2(16, 3, num_heads=2, out_layers=[3, 3])


# ----------------------------------------------------------------- Diving-48 / Jester recipe

# The probe overrides of the release's recipe (the task YAMLs' comments give the same line).
GRID = "probe.grid={lr: [1.0e-3, 3.0e-4, 1.0e-4], weight_decay: [0.8]}"
RECIPE = [GRID, "probe.selection=eval_max", "+probe.optim_groups=release"]
OUT_LAYERS = {"vitl": ("vjepa2_vitl", [17, 19, 21, 23]), "vitg-384": ("vjepa2_vitg384",
                                                                     [24, 29, 34, 39])}


def _configs():
    return [pytest.param(key, cfg, id=key) for key, cfg in RELEASE["configs"].items()]


@pytest.mark.parametrize("key,release", _configs())
def test_task_config_is_the_release_configs(key, release):
    model, task_name = key.split("/")
    cfg = tasks.config(task_name)
    data, opt = release["data"], release["optimization"]
    head = opt["multihead_kwargs"][0]
    assert cfg["num_classes"] == data["num_classes"]
    s = cfg["sampling"]
    assert (s["frames_per_clip"], s["frame_step"]) == (data["frames_per_clip"], data["frame_step"])
    assert s["train_segments"] == s["eval_segments"] == data["num_segments"] == 4
    assert s["eval_views"] == data["num_views_per_segment"] == 3
    o = cfg["optim"]
    assert o["epochs"] == opt["num_epochs"] == 100
    assert o["batch_size"] == opt["batch_size"] * release["gpus"]  # the global batch
    assert o["micro_batch_size"] == opt["batch_size"]
    assert (o["lr"], o["final_lr"], o["warmup_epochs"]) == (head["lr"], head["final_lr"],
                                                            head["warmup"])
    assert (o["weight_decay"], o["final_weight_decay"]) == (head["weight_decay"],
                                                            head["final_weight_decay"])
    assert o["clip_grad_norm"] is None  # eval.py never clips
    # resolution: null is the encoder's, which is the release config's
    encoder, _ = OUT_LAYERS[model]
    assert cfg["resolution"] is None
    assert encoders.config(encoder)["arch"]["resolution"] == data["resolution"]


@pytest.mark.parametrize("key,release", _configs())
def test_probe_recipe_is_the_release_configs(key, release):
    from harness.config import compose_run
    from probes.registry import probe_type

    model, task_name = key.split("/")
    encoder, out_layers = OUT_LAYERS[model]
    assert release["wrapper_kwargs"]["out_layers"] == out_layers
    assert release["module_name"].endswith("vit_encoder_multiclip_multilevel")
    overrides = [f"encoder={encoder}", f"task={task_name}", "probe=attentive_v2", *RECIPE,
                 f"+probe.out_layers=[{','.join(map(str, out_layers))}]"]
    cfg = compose_run(overrides)
    probe_cfg = OmegaConf.to_container(cfg.probe, resolve=True)
    kind = probe_type("attentive_v2")
    kw = kind.build_kwargs(probe_cfg, num_heads=None)
    arch = encoders.config(encoder)["arch"]
    grid = ProbeGrid(lambda: probes.build("attentive_v2", arch["embed_dim"], 2, **kw),
                     grid_points(dict(probe_cfg["grid"])))
    assert grid.points == [{"lr": h["lr"], "weight_decay": h["weight_decay"]}
                           for h in release["optimization"]["multihead_kwargs"]]
    head = grid.heads[0]
    assert head.pooler.cross_attention_block.xattn.num_heads == release["classifier"]["num_heads"]
    assert len(head.pooler.blocks) + 1 == release["classifier"]["num_probe_blocks"]
    assert head.out_layers == tuple(out_layers) and head.optim_groups == "release"
    assert max(out_layers) == arch["depth"] - 1  # the last block and three below it
    protocol = kind.protocol(probe_cfg)
    assert protocol["optim_groups"] == "release" and protocol["selection"] == "eval_max"
    assert protocol["out_layers"] == out_layers
    # the task YAML documents the same recipe
    text = (Path(tasks.__file__).parent / "configs" / "task" / f"{task_name}.yaml").read_text()
    key, value = GRID.split("=", 1)
    documented = [f"{key}='{value}'", *RECIPE[1:], "+probe.out_layers=[17,19,21,23]"]
    for override in documented:
        assert override in text, override


def test_release_recipe_has_its_own_protocol_id():
    from harness.config import compose_run
    from probes.registry import probe_type
    from results.record import protocol_id

    base = ["encoder=vjepa2_vitl", "task=diving48", "probe=attentive_v2", GRID,
            "probe.selection=eval_max"]
    kind = probe_type("attentive_v2")
    ours = kind.protocol(OmegaConf.to_container(compose_run(base).probe))
    release = kind.protocol(OmegaConf.to_container(
        compose_run([*base, "+probe.optim_groups=release"]).probe))
    assert "optim_groups" not in ours  # the default keeps the existing protocol ids
    assert protocol_id(ours) != protocol_id(release)
