"""Every task config carries the V-JEPA release's protocol values exactly.

The table is tests/fixtures/release_eval_protocols.json, written from the release's
configs/evals/*.yaml by tests/fixtures/make_release_eval_protocols.py (the command is there).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks

TABLE = json.loads((Path(__file__).parent / "fixtures" / "release_eval_protocols.json").read_text())
RELEASE_TASKS = sorted(TABLE["by_task"])


def test_the_table_covers_every_release_config():
    assert len(TABLE["configs"]) == 15  # ViT-L/16, ViT-H/16, ViT-H/16-384 x 5 tasks
    assert RELEASE_TASKS == ["in1k", "inat21", "k400", "places205", "ssv2"]
    assert TABLE["source"]["commit"]


@pytest.mark.parametrize("name", RELEASE_TASKS)
def test_task_config_has_the_release_protocol(name):
    want = TABLE["by_task"][name]
    cfg = tasks.config(name)
    s, o = cfg["sampling"], cfg["optim"]
    assert cfg["kind"] == want["kind"]
    assert cfg["num_classes"] == want["num_classes"]
    assert s["frames_per_clip"] == want["frames_per_clip"]
    if want["kind"] == "video":
        assert s["frame_step"] == want["frame_step"]
        assert s["eval_segments"] == want["segments"]
        # attend_across_segments: the probe trains on all segments' tokens too
        assert want["attend_across_segments"] is True and s["train_segments"] == want["segments"]
        assert s["eval_views"] == want["views"]
    else:  # an image is one segment, one view, repeated to frames_per_clip frames
        assert (s["frame_step"], s["train_segments"], s["eval_segments"], s["eval_views"]) == (1, 1, 1, 1)
    assert o["epochs"] == want["epochs"]
    assert o["lr"] == want["lr"] == want["start_lr"]
    assert o["final_lr"] == want["final_lr"]
    assert o["warmup_epochs"] == want["warmup"]
    assert o["weight_decay"] == want["weight_decay"]
    assert o["batch_size"] == want["global_batch_size"]
    assert o["bf16"] is want["bf16"]


@pytest.mark.parametrize("name", RELEASE_TASKS)
def test_task_config_builds(name, tmp_path):
    spec = tasks.build(name, root=tmp_path).spec
    assert spec.num_classes == TABLE["by_task"][name]["num_classes"]


V2_TASKS = sorted(TABLE["vjepa2"]["by_task"])


def test_vjepa2_table_covers_diving48_and_jester():
    assert V2_TASKS == ["diving48", "jester"] and len(TABLE["vjepa2"]["configs"]) == 4
    assert TABLE["vjepa2"]["source"]["commit"]


@pytest.mark.parametrize("name", V2_TASKS)
def test_vjepa2_task_config_has_the_release_protocol(name):
    want = TABLE["vjepa2"]["by_task"][name]
    cfg = tasks.config(name)
    s, o = cfg["sampling"], cfg["optim"]
    assert (cfg["kind"], cfg["num_classes"]) == (want["kind"], want["num_classes"])
    assert (s["frames_per_clip"], s["frame_step"]) == (want["frames_per_clip"], want["frame_step"])
    assert s["train_segments"] == s["eval_segments"] == want["segments"]
    assert s["eval_views"] == want["views"]
    assert o["epochs"] == want["epochs"] and o["batch_size"] == want["global_batch_size"]
    # the task's own lr / wd are the grid's first head; the grid is the probe group's (see the YAML)
    assert o["lr"] == want["head_lrs"][0] == want["head_start_lrs"][0]
    assert o["final_lr"] == want["head_final_lrs"][0] and o["warmup_epochs"] == want["head_warmups"][0]
    assert o["weight_decay"] == want["head_weight_decays"][0]
    assert o["final_weight_decay"] == want["head_final_weight_decays"][0]
    assert o["bf16"] is want["bf16"]
    import yaml

    text = (tasks.CONFIG_DIR / f"{name}.yaml").read_text()
    grid = yaml.safe_load(text.split("probe.grid='", 1)[1].split("'", 1)[0])
    assert grid == {"lr": want["head_lrs"], "weight_decay": sorted(set(want["head_weight_decays"]))}
