"""I-JEPA entries: release-layout checkpoints against the release's own outputs, HF parity, sizes."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import encoders
from encoders import ijepa
from encoders.pos_embed import sincos_2d
from encoders.vjepa import build_vit

FIXTURES = Path(__file__).parent / "fixtures"
# Numbers from the release's own VisionTransformer; the file says which command made them.
RELEASE = json.loads((FIXTURES / "ijepa_release.json").read_text())
ENTRIES = ("ijepa_vith14", "ijepa_vith16_448", "ijepa_vitg16")


def _fixture_module():
    # The script that made the fixture also defines the perturbed weights and the inputs.
    spec = importlib.util.spec_from_file_location("make_ijepa_fixture", FIXTURES / "make_ijepa_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKE = _fixture_module()


def _tiny_cfg(rc: dict, name: str = "ijepa_test") -> dict:
    """A registry-style config (the full-size entries' keys) with the fixture config's sizes."""
    cfg = encoders.config("ijepa_vith14")
    cfg["name"] = name
    cfg["arch"].update(embed_dim=rc["embed_dim"], depth=rc["depth"], num_heads=rc["num_heads"],
                       mlp_ratio=rc["mlp_ratio"], patch_size=rc["patch_size"], resolution=rc["img_size"])
    return cfg


def _release_checkpoint(rc: dict, path: Path) -> Path:
    """A file in the release's layout (src/train.py:save_checkpoint), DDP `module.` prefixes included."""
    shapes = [(k, s) for k, s in rc["keys"]]
    pos_embed = torch.tensor(rc["pos_embed"], dtype=torch.float32).reshape(dict(shapes)["pos_embed"])
    entries = {}
    for key in ("encoder", "target_encoder"):
        state = MAKE.perturbed_state(shapes, rc["outputs"][key]["weight_seed"])
        state["pos_embed"] = pos_embed
        entries[key] = {f"module.{k}": state[k] for k, _ in shapes}  # the release's key order
    predictor = MAKE.perturbed_state([(k, s) for k, s in rc["predictor_keys"]], 99)
    torch.save({"encoder": entries["encoder"],
                "predictor": {f"module.{k}": v for k, v in predictor.items()},
                "target_encoder": entries["target_encoder"],
                "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
                "scaler": None, "epoch": 300, "loss": 0.25, "batch_size": 128, "world_size": 16,
                "lr": 1e-3}, path)
    return path


def _release_input(rc: dict) -> torch.Tensor:
    return MAKE.make_input(rc["batch"], rc["img_size"], rc["input_seed"])


@pytest.mark.parametrize("index", range(len(RELEASE["configs"])))
def test_release_layout_matches_the_release_outputs(tmp_path, index):
    rc = RELEASE["configs"][index]
    path = _release_checkpoint(rc, tmp_path / "IN1K-tiny.pth.tar")
    x = _release_input(rc).unsqueeze(2)  # (B, 3, 1, H, W): one frame
    for key in ("target_encoder", "encoder"):
        enc = encoders.from_config(_tiny_cfg(rc), checkpoint=path, checkpoint_key=None if key == "target_encoder" else key)
        assert enc.checkpoint_info["key"] == key and enc.checkpoint_info["epoch"] == 300
        want = torch.tensor(rc["outputs"][key]["tokens"], dtype=torch.float64).reshape(rc["outputs"][key]["shape"])
        got = enc(x).double()
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < 1e-5, key
    # Taps: each block's output through the final norm, as the release's modules compute it.
    enc = encoders.from_config(_tiny_cfg(rc), checkpoint=path)
    taps = enc(x[:1], out_layers=list(range(rc["depth"])))
    for i, tap in enumerate(taps):
        want = torch.tensor(rc["outputs"]["target_encoder"]["taps_sample0"][i], dtype=torch.float64)
        assert (tap.double().flatten() - want).abs().max().item() < 1e-5, i


def test_release_stores_its_pos_embed_and_we_keep_it(tmp_path):
    # The file's pos_embed is the release's sin-cos table (w coordinate first, ours h first); the
    # strict load keeps it as stored rather than recomputing it.
    rc = RELEASE["configs"][0]
    grid = rc["img_size"] // rc["patch_size"]
    table = torch.tensor(rc["pos_embed"]).reshape(grid * grid, rc["embed_dim"])
    ours = sincos_2d(rc["embed_dim"], grid, grid)
    half = rc["embed_dim"] // 2
    assert torch.allclose(table, torch.cat([ours[:, half:], ours[:, :half]], dim=1), atol=1e-6)
    enc = encoders.from_config(_tiny_cfg(rc), checkpoint=_release_checkpoint(rc, tmp_path / "c.pth.tar"))
    assert torch.equal(enc.backbone.pos_embed[0], table)


def test_release_cannot_run_at_other_sizes_but_we_resample(tmp_path):
    rc = RELEASE["configs"][0]
    assert "invalid for input" in rc["release_at_other_size"]["error"]  # its cls-token assumption
    path = _release_checkpoint(rc, tmp_path / "c.pth.tar")
    size = rc["release_at_other_size"]["size"]
    enc = encoders.from_config(_tiny_cfg(rc), checkpoint=path)
    out = enc(MAKE.make_input(1, size, 0).unsqueeze(2))
    assert out.shape == (1, (size // rc["patch_size"]) ** 2, rc["embed_dim"])
    # Built at that resolution instead: the table is resampled once at load, to the same tokens.
    cfg = _tiny_cfg(rc)
    cfg["arch"]["resolution"] = size
    built = encoders.from_config(cfg, checkpoint=path)
    assert built.checkpoint_info["pos_embed_interpolated"] == {"from": [4, 4], "to": [6, 6]}
    assert torch.allclose(built(MAKE.make_input(1, size, 0).unsqueeze(2)), out, atol=1e-6)


# ----- HF transformers parity -------------------------------------------------------------------
def _hf_folder(tmp_path, *, image_size=32, patch_size=8, seed=0):
    transformers = pytest.importorskip("transformers")
    config = transformers.IJepaConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=192, image_size=image_size, patch_size=patch_size,
                                      layer_norm_eps=1e-6)
    torch.manual_seed(seed)
    model = transformers.IJepaModel(config).eval()
    with torch.no_grad():  # HF initialises LayerNorms to (1, 0) and biases to 0; make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path / "hf_ijepa"
    model.save_pretrained(folder)
    return model, folder


def test_hf_ijepa_model_parity(tmp_path):
    hf, folder = _hf_folder(tmp_path)
    enc = ijepa.load_hf_folder(folder)
    assert enc.spec.embed_dim == 48 and enc.spec.resolution == 32 and enc.spec.patch_size == 8
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = hf(pixel_values=x)
    # HF's last_hidden_state is after its final `layernorm` (our `norm`); no cls token, no pooler.
    assert out.pooler_output is None
    ours = enc(x.unsqueeze(2))
    assert ours.shape == out.last_hidden_state.shape == (2, 16, 48)
    assert (ours - out.last_hidden_state).abs().max().item() < 1e-5
    # At another size: HF's interpolate_pos_encoding and our resampling are the same bicubic.
    x48 = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = hf(pixel_values=x48, interpolate_pos_encoding=True).last_hidden_state
    assert (enc(x48.unsqueeze(2)) - want).abs().max().item() < 1e-5


def test_hf_file_loads_into_a_registry_config_and_bad_configs_are_refused(tmp_path):
    hf, folder = _hf_folder(tmp_path)
    state = ijepa.checkpoint_filter(load_file(folder / "model.safetensors"))
    assert set(state) == set(build_vit(ijepa.hf_config_to_cfg(json.loads((folder / "config.json").read_text())),
                                       device="meta").state_dict())
    cfg = encoders.config("ijepa_vith14")
    cfg["arch"].update(embed_dim=48, depth=3, num_heads=4, patch_size=8, resolution=32)
    enc = encoders.from_config(cfg, checkpoint=folder / "model.safetensors")  # flat file: no key needed
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (enc(x.unsqueeze(2)) - hf(pixel_values=x).last_hidden_state).abs().max().item() < 1e-5
    # transformers 5.x's in-memory names (q_proj, o_proj, layers.N) map the same way as the file's.
    in_memory = ijepa.checkpoint_filter(hf.state_dict())
    assert set(in_memory) == set(state) and all(torch.equal(in_memory[k], state[k]) for k in state)
    raw = json.loads((folder / "config.json").read_text())
    assert int(1408 * ijepa.hf_config_to_cfg({**raw, "hidden_size": 1408, "intermediate_size": 6144,
                                              "num_attention_heads": 16})["arch"]["mlp_ratio"]) == 6144
    with pytest.raises(ValueError, match="layer_norm_eps"):
        ijepa.hf_config_to_cfg({**raw, "layer_norm_eps": 1e-12})
    with pytest.raises(encoders.CheckpointError, match="no counterpart"):
        ijepa.hf_state_to_ours({"embeddings.position_embeddings": torch.zeros(1), "encoder.layer.0.extra.weight": torch.zeros(1)})


# ----- registry entries -------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [("ijepa_vith14", 630_762_240), ("ijepa_vith16_448", 631_668_480),
                                          ("ijepa_vitg16", 1_011_368_576)])
def test_full_size_entries_build_on_meta_with_the_release_sizes(name, params):
    cfg = encoders.compose(name)
    assert cfg["family"] == "ijepa" and cfg["modality"] == "image" and cfg["checkpoint_key"] == "target_encoder"
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["std"] == [0.229, 0.224, 0.225]
    assert "dl.fbaipublicfiles.com/ijepa/" in cfg["description"]
    model = build_vit(cfg, device="meta")
    assert sum(p.numel() for p in model.parameters()) == params
    a = cfg["arch"]
    grid = (a["resolution"] // a["patch_size"]) ** 2
    assert model.pos_embed.shape == (1, grid, a["embed_dim"])
    hidden = {"ijepa_vitg16": 6144}.get(name, 5120)
    assert model.blocks[0].mlp.fc1.weight.shape == (hidden, a["embed_dim"])
    assert model.blocks[0].attn.qkv.bias is not None and not hasattr(model, "cls_token")


def test_full_size_key_layout_is_the_release_layout():
    # The ViT-g's keys and shapes, as the release's vit_giant names them (checked on the tiny
    # release config's keys: same names, only sizes differ).
    model = build_vit(encoders.compose("ijepa_vitg16"), device="meta")
    release_names = [k for k, _ in RELEASE["configs"][0]["keys"]]
    ours = list(model.state_dict())
    depth_re = lambda names: sorted({k if not k.startswith("blocks.") else "blocks.*." + k.split(".", 2)[2] for k in names})  # noqa: E731
    assert depth_re(ours) == depth_re(release_names)
    assert len(ours) == 3 + 12 * 40 + 2


def test_video_runs_frame_by_frame_and_taps(tmp_path):
    rc = RELEASE["configs"][0]
    enc = encoders.from_config(_tiny_cfg(rc), checkpoint=_release_checkpoint(rc, tmp_path / "c.pth.tar"))
    video = torch.randn(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = enc(video)
    assert tokens.shape == (2, 5 * 16, rc["embed_dim"])
    assert enc.spec.grid_for(5, 32) == (5, 4, 4) and enc.spec.num_tokens_for(5, 32) == 80
    # Frame-major: frame 3's tokens are that frame alone through the encoder.
    assert torch.allclose(tokens[:, 3 * 16:4 * 16], enc(video[:, :, 3:4]), atol=1e-6)
    taps = enc(video, out_layers=[-1, 0])
    assert [t.shape for t in taps] == [tokens.shape] * 2
    assert torch.allclose(taps[0], tokens, atol=1e-6)  # the last block's normed output is the output
    assert not torch.allclose(taps[1], tokens, atol=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        enc(video, out_layers=[rc["depth"]])


def test_vitg_mlp_ratio_is_48_over_11():
    assert encoders.config("ijepa_vitg16")["arch"]["mlp_ratio"] == 48 / 11
    assert int(1408 * encoders.config("ijepa_vitg16")["arch"]["mlp_ratio"]) == 6144
    assert math.isclose(RELEASE["configs"][1]["mlp_ratio"], 48 / 11)
