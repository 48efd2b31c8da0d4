"""Parameter groups and schedules."""
import math

import pytest

import probes
from probes.optim import CosineSchedule, build_adamw, cosine_value, param_groups


def test_no_weight_decay_on_biases_and_norms():
    probe = probes.build("attentive", 16, 3, num_heads=2)
    groups = param_groups(probe, 0.01)
    names = {id(p): n for n, p in probe.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    exempt = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert all(n.endswith("bias") or "norm" in n for n in exempt)
    assert "pooler.cross_attention_block.norm1.weight" in exempt
    assert "linear.bias" in exempt
    assert "linear.weight" in decayed and "pooler.query_tokens" in decayed  # as in the release
    assert not any(n.endswith("bias") for n in decayed)
    assert len(decayed) + len(exempt) == len(names)
    opt = build_adamw(probe, 1e-3, 0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_cosine_without_warmup():
    s = CosineSchedule(base_lr=1e-3, final_lr=0.0, total_steps=100)
    assert s(0) == pytest.approx(1e-3)
    assert s(50) == pytest.approx(5e-4)
    assert s(100) == pytest.approx(0.0)
    assert s(1000) == pytest.approx(0.0)
    values = [s(i) for i in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cosine_with_warmup():
    s = CosineSchedule(base_lr=1.0, final_lr=0.1, total_steps=30, warmup_steps=10, start_lr=0.0)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)
    assert s(20) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(30) == pytest.approx(0.1)


def test_probe_optimiser_sets_every_groups_lr_and_weight_decay_per_step():
    from probes.grid import ProbeGrid, grid_param_groups
    from probes.optim import OptimConfig, ProbeOptimiser

    cfg = OptimConfig(epochs=2, batch_size=4, lr=1.0, weight_decay=0.1)
    wd = cosine_value(5, 10, 0.1, cfg.final_weight_decay)
    # update 4 of 10 runs at the schedule's value at 5 (stepped before the update): the middle
    one = ProbeOptimiser(probes.build("linear", 8, 3), cfg, steps_per_epoch=5)
    assert one.begin(4) == pytest.approx(0.5)
    assert [g["lr"] for g in one.opt.param_groups] == [pytest.approx(0.5)] * 2
    assert [g["weight_decay"] for g in one.opt.param_groups] == [pytest.approx(wd), 0.0]
    # a grid's heads: the protocol's schedule scaled to each head's own lr and weight decay
    grid = ProbeGrid(lambda: probes.build("linear", 8, 3),
                     [{"lr": 2.0, "weight_decay": 0.1}, {"lr": 0.2, "weight_decay": 0.0}])
    heads = ProbeOptimiser(grid, cfg, steps_per_epoch=5, groups=grid_param_groups(grid))
    heads.begin(4)
    assert [(g["head"], g["lr"]) for g in heads.opt.param_groups] == [
        (0, pytest.approx(1.0)), (0, pytest.approx(1.0)), (1, pytest.approx(0.1)),
        (1, pytest.approx(0.1))]
    assert [g["weight_decay"] for g in heads.opt.param_groups] == [pytest.approx(wd), 0.0, 0.0,
                                                                   0.0]


def test_cosine_value_for_weight_decay_ramps():
    assert cosine_value(0, 10, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_value(10, 10, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine_value(5, 10, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine_value(3, 0, 0.04, 0.4) == 0.4


def test_schedule_validates():
    with pytest.raises(ValueError, match="warmup_steps"):
        CosineSchedule(1.0, 0.0, total_steps=5, warmup_steps=6)
    with pytest.raises(ValueError, match="total_steps"):
        CosineSchedule(1.0, 0.0, total_steps=0)
    assert math.isclose(CosineSchedule(1.0, 0.0, 1)(0), 1.0)
