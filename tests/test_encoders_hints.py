"""Wrong-family hints: an entry (or set of overrides) is offered only after the file was tried
against it on the meta device, so following a hint loads, and hints never point at each other."""
from __future__ import annotations

import re

import pytest
import torch

import encoders
from encoders.backbone import build_backbone
from encoders.errors import CheckpointError
from encoders.families import fits, hint


def _meta_state(name: str, **overrides) -> dict:
    """An entry's state dict in its own names, as meta tensors (full size costs nothing)."""
    return dict(build_backbone(encoders.compose(name, **overrides), device="meta").state_dict())


def _follow(message: str, state: dict) -> bool:
    """Does the state fit what the hint says to run?"""
    found = re.search(r"--encoder (\w+)((?: --checkpoint-key \S+)?)((?: encoder\.arch\.\w+=[\w.+-]+)*)", message)
    assert found, message
    overrides = {}
    for item in found.group(3).split():
        key, _, value = item.removeprefix("encoder.arch.").rstrip(".").partition("=")
        overrides[key] = (value == "true") if value in ("true", "false") \
            else (float(value) if "." in value or "e" in value else int(value))
    return fits(encoders.compose(found.group(1), arch=overrides), state)


def test_a_mean_pooled_videomae_file_is_not_sent_between_the_two_vits_entries():
    # The issue: a VideoMAE ViT-S without `norm.*` (transformers' default use_mean_pooling=True)
    # failed under videomae_vits with "try videomaev2_vits", and under videomaev2_vits the reverse.
    state = {k: v for k, v in _meta_state("videomae_vits").items() if not k.startswith("norm.")}
    for failed in ("videomae_vits", "videomaev2_vits"):
        message = hint(state, exclude=failed, requested=encoders.compose(failed))
        other = {"videomae_vits": "videomaev2_vits", "videomaev2_vits": "videomae_vits"}[failed]
        assert f"try --encoder {other}" not in message, message
        assert "encoder.arch.final_norm=false" in message, message
        assert _follow(message, state)


def test_an_entry_that_fits_is_named_and_following_it_loads():
    state = _meta_state("videomae_vitl")
    message = hint(state, exclude="vjepa_vitl")
    assert message.endswith("try --encoder videomae_vitl or --encoder videomaev2_vitl.") or \
        "try --encoder videomae_vitl" in message, message
    assert _follow(message, state)
    # V-JEPA 2 ViT-g given to a V-JEPA 2 ViT-L entry: the entry of its size, not an override list.
    state = _meta_state("vjepa2_vitg")
    message = hint(state, exclude="vjepa2_vitl", requested=encoders.compose("vjepa2_vitl"))
    assert "--encoder vjepa2_vitg" in message and _follow(message, state)


def test_hints_never_loop():
    """For every entry a file fails under, the hint's suggestion is tried and fits; following it
    therefore never leads to another failure (and so never back)."""
    cases = {"videomae_vits": {}, "vjepa_tiny": {}, "ijepa_tiny": {}, "vjepa2_vitl": {"depth": 3}}
    for source, over in cases.items():
        state = _meta_state(source, **over)
        for failed in ("videomae_vits", "videomaev2_vitb", "vjepa_tiny", "vjepa_small", "ijepa_tiny",
                       "vjepa2_vitl", "vjepa2_vith"):
            requested = encoders.compose(failed)
            if fits(requested, state):
                continue
            message = hint(state, exclude=failed, requested=requested)
            if message and "no registry entry matches." not in message:
                assert _follow(message, state), (source, failed, message)


def test_an_unmatched_size_gets_the_overrides_read_off_the_state_dict(tmp_path):
    """A V-JEPA 2 file of no entry's size: the encoder.arch.* overrides that load it."""
    transformers = pytest.importorskip("transformers")
    config = transformers.VJEPA2Config(crop_size=32, patch_size=8, frames_per_clip=4, tubelet_size=2,
                                       hidden_size=96, num_attention_heads=4, num_hidden_layers=2,
                                       mlp_ratio=4.0, pred_hidden_size=32, pred_num_attention_heads=2,
                                       pred_num_hidden_layers=1, pred_num_mask_tokens=2)
    transformers.VJEPA2Model(config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as err:
        encoders.build("vjepa2_vitl", checkpoint=tmp_path / "model.safetensors")  # the file, not the folder
    message = str(err.value)
    for flag in ("encoder.arch.embed_dim=96", "encoder.arch.depth=2", "encoder.arch.patch_size=8"):
        assert flag in message, message
    assert "num_heads" in message and "no weight records it" in message
    suggestion = message[message.index("It looks like"):]
    from safetensors.torch import load_file

    state = encoders.checkpoint.strip_prefixes(load_file(str(tmp_path / "model.safetensors")))
    assert _follow(suggestion, state)
    # The folder itself needs no hint: its config.json says all of it.
    assert encoders.build("vjepa2_vitl", checkpoint=tmp_path).spec.embed_dim == 96


def test_a_file_of_another_family_gets_its_key_in_the_suggestion(tmp_path):
    enc = encoders.build("vjepa_tiny", random_init=True)
    path = tmp_path / "release.pth"
    torch.save({"model": {f"module.{k}": v for k, v in enc.backbone.state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match=r"try --encoder vjepa_tiny --checkpoint-key model"):
        encoders.build("ijepa_tiny", checkpoint=path, checkpoint_key="model")
    assert hint({"foo": torch.zeros(2)}) == ""
