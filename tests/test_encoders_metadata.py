"""Encoder metadata (--verbose, records) and the wrong-family hint of checkpoint errors."""
from __future__ import annotations

import pytest
import torch

import encoders
from encoders.errors import CheckpointError
from encoders.families import hint, signature
from encoders.metadata import check_metadata, cost, describe
from harness.cli import main


def test_every_entry_has_metadata_and_a_measured_cost():
    for name in encoders.names():
        cfg = encoders.compose(name)
        d = describe(cfg, measure=False)
        for key in ("paper", "weights", "licence", "pretraining_data"):
            assert d.get(key), (name, key)
    vitl = cost(encoders.compose("vjepa_vitl"))
    # ViT-L/16 on 16x224x224: 1568 tokens, ~305M parameters; about 1.19 TFLOPs counted on meta
    assert 300e6 < vitl["parameters"] < 310e6
    assert 1100 < vitl["gflops_per_clip"] < 1300 and vitl["clip"] == "16x224x224"
    tiny8, tiny16 = (cost(encoders.compose("vjepa_tiny"), frames=f)["gflops_per_clip"] for f in (8, 16))
    assert tiny16 > 1.9 * tiny8  # twice the tokens: at least twice the work


def test_verbose_listing(capsys):
    assert main(["encoders", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "vjepa_vitl (vjepa)" in out and "CC BY-NC 4.0" in out and "GFLOPs per 16x224x224" in out


def test_bad_metadata_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown metadata key.*licence"):
        check_metadata("x", {"license": "MIT"})


def test_checkpoint_of_another_entry_names_the_right_one(tmp_path):
    enc = encoders.build("vjepa_tiny", random_init=True)
    path = tmp_path / "vjepa_tiny.pth"
    torch.save({"target_encoder": {f"module.backbone.{k}": v
                                   for k, v in enc.backbone.state_dict().items()}}, path)
    assert signature(torch.load(path, weights_only=True)["target_encoder"])["family"] == "vjepa"
    with pytest.raises(CheckpointError, match="try --encoder vjepa_tiny"):
        encoders.build("ijepa_tiny", checkpoint=path)
    with pytest.raises(CheckpointError, match="try --encoder vjepa_tiny"):
        encoders.build("vjepa_small", checkpoint=path)
    assert hint({"foo": torch.zeros(2)}) == ""


def test_key_alternatives_and_release_args_namespace(tmp_path):
    import argparse

    enc = encoders.build("vjepa_tiny", random_init=True)
    state = enc.backbone.state_dict()
    # The VideoMAE releases save `args` (argparse.Namespace) beside the weights: it loads under
    # weights_only, and "a|b" picks the first entry present.
    path = tmp_path / "release.pth"
    torch.save({"module": state, "args": argparse.Namespace(model="vit", lr=1e-3), "epoch": 3}, path)
    loaded = encoders.build("vjepa_tiny", checkpoint=path, checkpoint_key="model|module")
    assert loaded.checkpoint_info["key"] == "module"
    with pytest.raises(CheckpointError, match="none of the entries"):
        encoders.build("vjepa_tiny", checkpoint=path, checkpoint_key="model|encoder")
    # anything else pickled is still refused
    torch.save({"module": state, "hook": argparse.ArgumentParser}, path)
    with pytest.raises(CheckpointError, match="trust-checkpoint"):
        encoders.build("vjepa_tiny", checkpoint=path, checkpoint_key="module")


def test_non_finite_weights_are_refused_by_name(tmp_path):
    enc = encoders.build("vjepa_tiny", random_init=True)
    state = {k: v.clone() for k, v in enc.backbone.state_dict().items()}
    state["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="NaN or infinite.*blocks.1.mlp.fc1.weight"):
        encoders.build("vjepa_tiny", checkpoint=path)


def test_a_diverging_probe_is_one_clear_error():
    # lr beyond 1 is refused when the config is read (tests/test_faults_inputs.py); a probe can
    # still diverge on tokens that overflow: one message naming the step and what to change,
    # which the CLI prints as one line.
    from torch import nn

    import probes
    from harness.cli import _is_user_error

    class Overflowing(nn.Module):
        def forward(self, video):  # (B, 3, T, H, W) -> (B, T, 8) tokens past float32's range
            return video.mean(dim=(1, 3, 4))[..., None].expand(-1, -1, 8) * 1e38 * 1e38

    clips = torch.randn(4, 1, 1, 3, 2, 4, 4)
    batch = {"video": clips, "label": torch.tensor([0, 1, 0, 1]), "failures": []}
    with pytest.raises(FloatingPointError, match="lower task.optim.lr") as info:
        probes.train_probe(Overflowing(), probes.build("linear", 8, 2), [batch], [batch],
                           {"epochs": 1, "batch_size": 4, "lr": 1e-3}, progress=False)
    assert _is_user_error(info.value)
