"""Checkpoint identity: the sha256 recorded is of the bytes actually loaded, for every format; the
planner's cheap hash (`encoders.checkpoint_sha256`) is the same recipe; and the registry's
overrides merge with OmegaConf."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

import encoders
import encoders.checkpoint as ckpt

X = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _two_models():
    return (encoders.build("vjepa_tiny", random_init=True, depth=1, seed=s) for s in (1, 2))


@pytest.mark.parametrize("suffix", [".pth", ".pth.tar", ".safetensors"])
def test_a_file_swapped_between_hashing_and_loading_is_recorded_as_loaded(tmp_path, monkeypatch, suffix):
    first, second = _two_models()
    path, other = tmp_path / f"ckpt{suffix}", tmp_path / f"other{suffix}"
    for model, p in ((first, path), (second, other)):
        state = {k: v.contiguous() for k, v in model.backbone.state_dict().items()}
        save_file(state, p) if suffix == ".safetensors" else torch.save({"target_encoder": state}, p)
    sha_first, sha_second = _sha(path), _sha(other)
    assert encoders.checkpoint_sha256(path) == sha_first  # what the planner hashes before loading

    real_parse = ckpt._parse

    def swap_then_parse(p, data, trust):  # another job replaces the file after it was read
        os.replace(other, path)
        return real_parse(p, data, trust)

    monkeypatch.setattr(ckpt, "_parse", swap_then_parse)
    enc = encoders.build("vjepa_tiny", checkpoint=path, depth=1)
    # The weights and the recorded hash are both the bytes that were read: the first file.
    assert enc.checkpoint_info["sha256"] == sha_first
    assert torch.equal(enc(X), first(X)) and not torch.equal(enc(X), second(X))
    # The file on disk is now the other one; the planner's comparison catches it.
    assert encoders.checkpoint_sha256(path) == sha_second != enc.checkpoint_info["sha256"]


def test_a_hugging_face_folder_is_identified_by_its_weights_bytes(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, image_size=16, patch_size=8, num_frames=4)
    model = transformers.VideoMAEModel(config).eval()
    model.save_pretrained(tmp_path / "single")
    enc = encoders.build("videomae_vits", checkpoint=tmp_path / "single")
    assert enc.checkpoint_info["sha256"] == _sha(tmp_path / "single" / "model.safetensors") \
        == encoders.checkpoint_sha256(tmp_path / "single")
    assert enc.checkpoint_info["format"] == "huggingface"
    # Sharded: one digest over the shards' names and hashes, the same before and after loading.
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    sharded = encoders.build("videomae_vits", checkpoint=tmp_path / "sharded")
    assert sharded.checkpoint_info["sha256"] == encoders.checkpoint_sha256(tmp_path / "sharded")
    assert sharded.checkpoint_info["weights_files"] == shards
    video = torch.randn(1, 3, 4, 16, 16)
    assert torch.equal(sharded(video), enc(video))


def test_overrides_merge_with_omegaconf_as_before():
    cfg = encoders.compose("vjepa_tiny", metadata={"notes": "ours"}, arch={"depth": 1}, num_frames=4)
    base = encoders.config("vjepa_tiny")
    assert cfg["metadata"]["notes"] == "ours" and cfg["metadata"]["paper"] == base["metadata"]["paper"]
    assert cfg["arch"] == {**base["arch"], "depth": 1, "num_frames": 4}
    assert encoders.compose("vjepa_tiny", mean=[0.5, 0.5, 0.5])["mean"] == [0.5, 0.5, 0.5]  # lists replace
    with pytest.raises(ValueError, match=r"unknown encoder setting 'dept'\. Did you mean: depth"):
        encoders.compose("vjepa_tiny", dept=1)
    with pytest.raises(ValueError, match="must be a mapping"):
        encoders.compose("vjepa_tiny", arch=3)
    import inspect

    import encoders.registry as registry

    assert "_deep_merge" not in inspect.getsource(registry)
