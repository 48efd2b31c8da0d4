"""Checkpoint reading and strict loading, on checkpoints the tests write in the release's layout."""

import argparse

import pytest
import torch
from safetensors.torch import save_file

import encoders
from encoders import CheckpointError
from encoders.checkpoint import load_encoder_state, strip_prefixes

X = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model():
    return encoders.build("vjepa_tiny", random_init=True, depth=2, seed=1)


def release_layout(state, prefix="module.backbone."):
    """A checkpoint as the V-JEPA release's pretraining writes it."""
    wrapped = {prefix + k: v for k, v in state.items()}
    return {
        "encoder": wrapped,  # the same tensors, stored once by torch.save
        "predictor": {"module.backbone.predictor_embed.weight": torch.zeros(4, 96)},
        "target_encoder": wrapped,
        "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "scaler": None,
        "epoch": 12,
        "loss": 0.25,
        "batch_size": 24,
        "world_size": 1,
        "lr": 6.25e-4,
    }


def save(tmp_path, obj, name="ckpt.pth.tar"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_release_layout_loads_with_same_outputs(tmp_path, model):
    path = save(tmp_path, release_layout(model.backbone.state_dict()))
    loaded = encoders.build("vjepa_tiny", checkpoint=path, depth=2)
    assert torch.equal(loaded(X), model(X))
    info = loaded.checkpoint_info
    assert info["key"] == "target_encoder" and info["epoch"] == 12 and info["random_init"] is False
    assert len(info["sha256"]) == 64 and info["path"].endswith("ckpt.pth.tar")
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not any(t.is_meta for t in loaded.backbone.state_dict().values())


def test_checkpoint_key_chooses_the_entry(tmp_path, model):
    ck = release_layout(model.backbone.state_dict())
    ck["encoder"] = {k: v + 1 if v.is_floating_point() and "pos_embed" not in k else v for k, v in ck["encoder"].items()}
    path = save(tmp_path, ck)
    target = encoders.build("vjepa_tiny", checkpoint=path, depth=2)
    context = encoders.build("vjepa_tiny", checkpoint=path, depth=2, checkpoint_key="encoder")
    assert context.checkpoint_info["key"] == "encoder"
    assert torch.equal(target(X), model(X)) and not torch.allclose(context(X), model(X))


def test_missing_top_level_key_lists_available_keys(tmp_path, model):
    path = save(tmp_path, release_layout(model.backbone.state_dict()))
    with pytest.raises(CheckpointError) as err:
        encoders.build("vjepa_tiny", checkpoint=path, depth=2, checkpoint_key="ema_encoder")
    msg = str(err.value)
    assert "ema_encoder" in msg and "target_encoder" in msg and "predictor" in msg and "--checkpoint-key" in msg


def test_flat_state_dict_is_accepted(tmp_path, model):
    path = save(tmp_path, {"backbone." + k: v for k, v in model.backbone.state_dict().items()}, "flat.pt")
    loaded = encoders.build("vjepa_tiny", checkpoint=path, depth=2)
    assert loaded.checkpoint_info["key"] is None
    assert torch.equal(loaded(X), model(X))


def test_renamed_key_is_named_as_missing_and_unexpected(tmp_path, model):
    state = dict(model.backbone.state_dict())
    state["blocks.1.attn.qkv_renamed.weight"] = state.pop("blocks.1.attn.qkv.weight")
    path = save(tmp_path, release_layout(state))
    with pytest.raises(CheckpointError) as err:
        encoders.build("vjepa_tiny", checkpoint=path, depth=2)
    msg = str(err.value)
    assert "1 missing keys: blocks.1.attn.qkv.weight" in msg
    assert "1 unexpected keys: blocks.1.attn.qkv_renamed.weight" in msg
    assert str(path) in msg


def test_wrong_shape_is_named(tmp_path, model):
    state = dict(model.backbone.state_dict())
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(200, 96)
    path = save(tmp_path, release_layout(state))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint \(200, 96\) vs model \(384, 96\)"):
        encoders.build("vjepa_tiny", checkpoint=path, depth=2)


def test_deeper_checkpoint_is_not_loaded_partially(tmp_path):
    deeper = encoders.build("vjepa_tiny", random_init=True, depth=3)
    path = save(tmp_path, release_layout(deeper.backbone.state_dict()))
    with pytest.raises(CheckpointError, match=r"12 unexpected keys: blocks\.2\."):
        encoders.build("vjepa_tiny", checkpoint=path, depth=2)


def test_many_missing_keys_are_listed_with_a_count(tmp_path, model):
    state = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("blocks.")}
    path = save(tmp_path, release_layout(state))
    with pytest.raises(CheckpointError, match=r"24 missing keys: .*\.\.\. \(24 in all\)"):
        encoders.build("vjepa_tiny", checkpoint=path, depth=2)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_truncated_file_is_an_error_naming_it(tmp_path, model, fmt):
    full = tmp_path / f"full.{fmt}"
    if fmt == "pth":
        torch.save(release_layout(model.backbone.state_dict()), full)
    else:
        save_file(dict(model.backbone.state_dict()), full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        encoders.build("vjepa_tiny", checkpoint=cut, depth=2)
    assert str(cut) in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        encoders.build("vjepa_tiny", checkpoint=tmp_path / "nope.pth", depth=2)


def test_pickled_objects_need_trust(tmp_path, model):
    import pathlib

    ck = release_layout(model.backbone.state_dict())
    # The releases' `args` (argparse.Namespace of plain values) is allowed; other objects are not.
    ck["args"] = argparse.Namespace(model_name="vit_tiny", lr=1e-3)
    ck["log_dir"] = pathlib.PurePosixPath("/logs")  # needs real unpickling
    path = save(tmp_path, ck)
    with pytest.raises(CheckpointError) as err:
        encoders.build("vjepa_tiny", checkpoint=path, depth=2)
    msg = str(err.value)
    assert "pickled" in msg and "--trust-checkpoint" in msg and "PurePosixPath" in msg and str(path) in msg
    trusted = encoders.build("vjepa_tiny", checkpoint=path, depth=2, trust_checkpoint=True)
    assert torch.equal(trusted(X), model(X))


def test_safetensors_checkpoint(tmp_path, model):
    path = tmp_path / "enc.safetensors"
    save_file({"module." + k: v.contiguous() for k, v in model.backbone.state_dict().items()}, path,
              metadata={"epoch": "7"})
    loaded = encoders.build("vjepa_tiny", checkpoint=path, depth=2)
    assert torch.equal(loaded(X), model(X))
    assert loaded.checkpoint_info["format"] == "safetensors" and loaded.checkpoint_info["epoch"] == 7


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_integer_or_bool_tensors_where_floats_belong_are_named(tmp_path, model, fmt):
    state = {k: v.clone().contiguous() for k, v in model.backbone.state_dict().items()}
    state["pos_embed"] = state["pos_embed"].round().to(torch.int64)
    state["blocks.1.norm1.weight"] = state["blocks.1.norm1.weight"] > 0
    path = tmp_path / f"enc.{fmt}"
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"2 non-float tensor\(s\) where the model has float "
                                              r"weights: blocks\.1\.norm1\.weight \(bool\), "
                                              r"pos_embed \(int64\)"):
        encoders.build("vjepa_tiny", checkpoint=path, depth=2)


def test_integer_buffers_the_model_has_still_load(tmp_path):
    # BatchNorm's num_batches_tracked is int64 in the model and in its checkpoints: not refused.
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    state = mobilenet_v2(weights=None).state_dict()
    ints = [k for k, v in state.items() if not v.is_floating_point()]
    assert ints and all(k.endswith("num_batches_tracked") for k in ints)
    path = tmp_path / "mnv2.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    enc = encoders.build("mobilenet_v2_imagenet", checkpoint=path)
    assert enc(torch.randn(1, 3, 2, 64, 64)).shape == (1, 2 * 2 * 2, 320)


def test_probe_checkpoint_is_recognised(tmp_path):
    probe_ck = {
        "classifier": {"module.pooler.query_tokens": torch.zeros(1, 1, 96),
                       "module.linear.weight": torch.zeros(10, 96), "module.linear.bias": torch.zeros(10)},
        "opt": {}, "epoch": 20,
    }
    path = save(tmp_path, probe_ck, "probe.pth.tar")
    with pytest.raises(CheckpointError, match="probe"):
        encoders.build("vjepa_tiny", checkpoint=path, depth=2)
    with pytest.raises(CheckpointError, match="probe"):
        encoders.build("vjepa_tiny", checkpoint=path, depth=2, checkpoint_key="classifier")


def test_pos_embed_is_interpolated_to_the_model_grid(tmp_path, model):
    path = save(tmp_path, release_layout(model.backbone.state_dict()))
    four = encoders.build("vjepa_tiny", checkpoint=path, depth=2, num_frames=4)
    assert four.checkpoint_info["pos_embed_interpolated"] == {"from": [4, 4, 4], "to": [2, 4, 4]}
    assert four.backbone.pos_embed.shape == (1, 32, 96)
    # The saved model interpolates the same way at 4 frames, so the outputs agree.
    x4 = X[:, :, :4]
    torch.testing.assert_close(four(x4), model(x4))
    big = encoders.build("vjepa_tiny", checkpoint=path, depth=2, resolution=48)
    assert big.checkpoint_info["pos_embed_interpolated"] == {"from": [4, 4, 4], "to": [4, 6, 6]}


def test_strip_prefixes_any_order():
    t = torch.zeros(1)
    out = strip_prefixes({"module.backbone.a": t, "backbone.module.b": t, "module.module.c": t, "d.module.e": t})
    assert set(out) == {"a", "b", "c", "d.module.e"}


def test_load_encoder_state_reports_provenance(tmp_path, model):
    path = save(tmp_path, release_layout(model.backbone.state_dict()))
    state, info = load_encoder_state(path, key="target_encoder")
    assert "blocks.0.attn.qkv.weight" in state and info["epoch"] == 12 and info["key"] == "target_encoder"
    with pytest.raises(CheckpointError, match="--checkpoint-key"):
        load_encoder_state(path)  # nested and no key: say which keys exist


def test_vitl_release_checkpoint_loads_with_same_outputs(tmp_path):
    """Acceptance: a V-JEPA ViT-L checkpoint in the release's layout (nested `target_encoder`,
    `module.backbone.` prefixes) loads into `vjepa_vitl` with no missing keys and the same outputs
    as the model that saved it. Full ViT-L architecture (~300M parameters, a 1.2 GB file); the
    input is 2 frames at 32x32 so the forward is cheap (position embedding interpolated)."""
    from encoders.vjepa import build_vit

    cfg = encoders.config("vjepa_vitl")
    # Fill the weights with plain Gaussian noise: the release's truncated-normal init of 300M
    # parameters takes several seconds on CPU and tests nothing here.
    saver = build_vit(cfg, device="meta").to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in saver.named_parameters():
            if name == "pos_embed":
                p.copy_(saver.sincos_table())
            else:
                p.normal_(0.0, 0.02, generator=gen)
    saver.eval()
    x = torch.randn(1, 3, 2, 32, 32, generator=gen)
    expected = saver(x)
    path = save(tmp_path, release_layout(saver.state_dict()), "vitl16.pth.tar")
    del saver

    enc = encoders.build("vjepa_vitl", checkpoint=path)
    assert enc.spec.embed_dim == 1024 and len(enc.backbone.blocks) == 24
    assert enc.checkpoint_info["key"] == "target_encoder" and "pos_embed_interpolated" not in enc.checkpoint_info
    assert torch.equal(enc(x), expected)
