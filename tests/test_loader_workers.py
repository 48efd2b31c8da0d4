"""Loader workers sized to the machine (its share under torchrun) and the dry run's loader line:
the loader's measured CPU cost, the workers, the clips/s they supply against the encoder's."""
from __future__ import annotations

import math

import pytest

from harness import plan as plan_mod
from harness.dryrun import feed


@pytest.fixture
def cpus16(monkeypatch):
    monkeypatch.setattr(plan_mod.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("requested, want", [("auto", 16), (None, 16), (8, 8), (40, 16), (0, 0)])
def test_workers_default_to_the_cpus_available(cpus16, requested, want):
    assert plan_mod.loader_workers(requested) == want


@pytest.mark.parametrize("env, requested, want", [
    ({"LOCAL_WORLD_SIZE": "4"}, "auto", 4),          # 16 CPUs shared by 4 ranks
    ({"LOCAL_WORLD_SIZE": "4"}, 8, 4),               # never past the rank's share
    ({"LOCAL_WORLD_SIZE": "4"}, 2, 2),
    ({"LOCAL_WORLD_SIZE": "3"}, "auto", 5),
    ({"LOCAL_WORLD_SIZE": "32"}, "auto", 1),         # more ranks than CPUs: one each
    ({"LOCAL_WORLD_SIZE": "many"}, "auto", 16),      # not a count: ignored
    ({"LOCAL_WORLD_SIZE": "0"}, "auto", 16),
    ({"SLURM_NTASKS_PER_NODE": "8"}, "auto", 16),    # srun: each task's own mask is the share
    ({"LOCAL_WORLD_SIZE": "2", "SLURM_NTASKS_PER_NODE": "8"}, "auto", 8),  # torchrun under srun
])
def test_workers_take_this_process_share_under_a_launcher(cpus16, env, requested, want):
    for k, v in env.items():
        cpus16.setenv(k, v)
    assert plan_mod.loader_workers(requested) == want


def test_workers_follow_the_affinity_mask_not_the_machine(monkeypatch):
    monkeypatch.setattr(plan_mod.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    assert plan_mod.loader_workers("auto") == 1


def test_feed_names_the_side_that_bounds():
    # 0.088 CPU-s per clip (the K400 loader) and 16 workers: ~182 clips/s against ViT-L's 330.
    e = feed(0.088, 16, 330.0)
    assert e["bound"] == "loader"
    assert e["loader_clips_per_s"] == pytest.approx(16 / 0.088)
    assert e["cores_to_feed_encoder"] == pytest.approx(29.04)
    assert e["encoder_busy_fraction"] == pytest.approx(16 / 0.088 / 330)
    e = feed(0.02, 16, 330.0)
    assert e["bound"] == "encoder" and e["encoder_busy_fraction"] == 1.0
    assert feed(0.0, 0, 5.0)["loader_clips_per_s"] == math.inf


def _plan(root, *extra):
    from harness.config import compose_run
    from harness.plan import plan_run

    cfg = compose_run(["encoder=vjepa_tiny", "task=digits_motion", "random_init=true",
                       f"task.data.root={root}", "progress=false", *extra])
    return plan_run(cfg, estimate_only=True)


def test_a_planned_run_uses_the_worker_default(digits_small, cpus16):
    cpus16.setenv("LOCAL_WORLD_SIZE", "2")
    plan = _plan(digits_small, "task.optim.num_workers=auto")
    assert plan.train_data.num_workers == plan.eval_data.num_workers == 8


def test_dry_run_measures_the_loader_and_says_which_side_bounds(digits_small):
    import torch

    from harness.dryrun import estimate

    threads = torch.get_num_threads()
    lines: list[str] = []
    e = estimate(_plan(digits_small, "task.optim.num_workers=0"), say=lines.append)
    assert torch.get_num_threads() == threads  # the one-thread measurement is undone
    assert e["loader_workers"] == 0
    assert e["loader_cpu_s_per_train_sample"] > 0 and e["loader_cpu_s_per_eval_sample"] > 0
    assert e["loader_cpu_s_per_train_clip"] == pytest.approx(e["loader_cpu_s_per_train_sample"])
    assert e["encoder_rate_source"] == "measured"
    assert e["encoder_clips_per_s"] == pytest.approx(1 / e["seconds_per_clip"])
    assert e["bound"] in ("loader", "encoder")
    assert e["cores_to_feed_encoder"] == pytest.approx(
        e["encoder_clips_per_s"] * e["loader_cpu_s_per_train_clip"])
    # Loading in-process alternates with the encoder: the times add.
    assert e["estimated_seconds"] == pytest.approx(e["encoder_seconds"] + e["loading_seconds"])
    text = "\n".join(lines)
    assert "CPU-s per training sample" in text and "0 worker(s) (in-process)" in text
    assert f"{e['bound']}-bound" in text and "clips/s" in text


def test_dry_run_for_a_gpu_this_machine_lacks_estimates_the_encoder_from_flops(digits_small):
    import torch

    from harness.dryrun import ASSUMED_CUDA_FLOPS, estimate

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the rate is measured there")
    lines: list[str] = []
    e = estimate(_plan(digits_small, "device=cuda", "task.optim.num_workers=1"),
                 say=lines.append)
    assert e["encoder_rate_source"].startswith("estimated")
    assert e["encoder_clips_per_s"] == pytest.approx(
        ASSUMED_CUDA_FLOPS / (e["encoder_gflops_per_clip"] * 1e9))
    assert e["loader_workers"] == 1
    assert "estimated" in "\n".join(lines)
