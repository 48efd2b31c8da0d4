"""Identity rules, one test each: encoder labels, the weights scored, one run-identity format."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.run_id import record_run_identity
from harness.cli import main
from harness.identity import arch_differences, encoder_label


def test_an_entry_at_its_own_size_is_its_name():
    import encoders

    assert encoder_label(encoders.config("videomae_vits")) == "videomae_vits"


def test_an_overridden_architecture_is_labelled_by_what_differs():
    import encoders

    cfg = encoders.config("videomae_vits")
    cfg["arch"] = {**cfg["arch"], "embed_dim": 192, "depth": 2}
    assert arch_differences(cfg) == {"depth": 2, "embed_dim": 192}
    assert encoder_label(cfg) == "videomae_vits (depth 2, embed_dim 192)"




def _tiny_checkpoint(path: Path, seed: int) -> Path:
    import torch

    import encoders

    state = encoders.build("vjepa_tiny", random_init=True, seed=seed).backbone.state_dict()
    torch.save({"target_encoder": {k: v.clone() for k, v in state.items()}}, path)
    return path


def _run_args(root, out, checkpoint):
    return ["run", "--encoder", "vjepa_tiny", "--checkpoint", str(checkpoint), "--task",
            "digits_motion", "--out", str(out), f"task.data.root={root}", "task.optim.epochs=1",
            "task.optim.batch_size=8", "--no-progress"]


def test_a_checkpoint_replaced_between_hashing_and_loading_is_never_recorded(
        digits_small, tmp_path, monkeypatch, capsys):
    import os

    from common import failpoints

    ckpt = _tiny_checkpoint(tmp_path / "latest.pth.tar", seed=1)
    other = _tiny_checkpoint(tmp_path / "next.pth.tar", seed=2)
    real_hit = failpoints.hit

    def replace_at_startup(name):  # after the run hashed the file, before it loads it
        if name == "startup":
            os.replace(other, ckpt)  # what a pretraining run's save does
        real_hit(name)

    monkeypatch.setattr(failpoints, "hit", replace_at_startup)
    out = tmp_path / "runs"
    assert main(_run_args(digits_small, out, ckpt)) == 2
    assert "changed while this run started" in capsys.readouterr().err
    assert not list((out / "records").glob("*.json"))


def test_the_recorded_sha256_is_of_the_weights_scored(digits_small, tmp_path, capsys):
    from common.digest import file_sha256

    ckpt = _tiny_checkpoint(tmp_path / "e1.pth.tar", seed=1)
    out = tmp_path / "runs"
    assert main(_run_args(digits_small, out, ckpt)) == 0
    record = json.loads(next((out / "records").glob("*.json")).read_text())
    assert record["checkpoint"]["sha256"] == file_sha256(ckpt)
    # One run-identity format: the store derives a record's identity the runner's way.
    extra = dict(record["extra"])
    written = extra.pop("run_id")
    assert record_run_identity({**record, "extra": extra}) == written


def test_a_hugging_face_folder_runs_under_its_family_labelled_by_its_size(digits_small, tmp_path,
                                                                          capsys):
    transformers = pytest.importorskip("transformers")
    import torch

    config = transformers.VideoMAEConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        image_size=32, patch_size=8, num_frames=8, tubelet_size=2, use_mean_pooling=True)
    torch.manual_seed(0)
    transformers.VideoMAEModel(config).save_pretrained(tmp_path / "hf")
    out = tmp_path / "runs"
    args = ["run", "--encoder", "videomae_vits", "--checkpoint", str(tmp_path / "hf"), "--task",
            "digits_motion", "--out", str(out), f"task.data.root={digits_small}",
            "task.optim.epochs=1", "task.optim.batch_size=8", "-q"]
    assert main(args) == 0
    record = json.loads(Path(capsys.readouterr().out.strip()).read_text())
    label = record["encoder"]["label"]
    assert label.startswith("videomae_vits (") and "depth 2" in label and "embed_dim 64" in label
    assert record["encoder"]["config"]["arch"]["embed_dim"] == 64
