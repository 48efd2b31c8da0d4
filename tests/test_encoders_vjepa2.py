"""V-JEPA 2 encoders: parity with transformers' VJEPA2Model and with the release's own ViT, full-size
entries on meta, layer taps, checkpoint conversion.

The release numbers come from tests/fixtures/vjepa2_release.json (written by
tests/fixtures/make_vjepa2_fixture.py, which ran the authors' code on the weights and inputs that
its seeded helpers regenerate here).
"""
from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import pytest
import torch

import encoders
from encoders.errors import CheckpointError
from encoders.vjepa2 import (Rotary3D, VJEPA2VisionTransformer, build_vjepa2, checkpoint_filter, grid_positions,
                             load_hf_folder, rope_split)

FIXTURES = Path(__file__).parent / "fixtures"
ENTRIES = ("vjepa2_vitl", "vjepa2_vith", "vjepa2_vitg", "vjepa2_vitg384")
TOL = 1e-5


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_vjepa2_fixture", FIXTURES / "make_vjepa2_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _fixture_module()


@pytest.fixture(scope="module")
def release():
    return json.loads((FIXTURES / "vjepa2_release.json").read_text())


def tiny_cfg(c: dict, entry: str = "vjepa2_vitl") -> dict:
    """A registered entry shrunk to a fixture config (same builder, filter and checkpoint key)."""
    return encoders.compose(entry, embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                            mlp_ratio=c["mlp_ratio"], patch_size=c["patch_size"], tubelet_size=c["tubelet_size"],
                            resolution=c["img_size"], num_frames=c["num_frames"])


def max_diff(ours: torch.Tensor, recorded: dict) -> float:
    got = FX.summarise(ours)
    assert got["shape"] == recorded["shape"]
    proj = torch.tensor(got["proj"], dtype=torch.float64)
    return (proj - torch.tensor(recorded["proj"], dtype=torch.float64)).abs().max().item()


# ----- (2) the authors' code, through a checkpoint in their layout ----------------------------
def write_release_checkpoint(path: Path, c: dict) -> None:
    keys = [(k, s) for k, s in c["keys"]]
    wrap = lambda state: {f"module.backbone.{k}": v for k, v in state.items()}  # noqa: E731
    torch.save({
        "encoder": wrap(FX.perturbed_state(keys, c["weight_seed"] + 1)),
        "target_encoder": wrap(FX.perturbed_state(keys, c["weight_seed"])),
        "predictor": {"module.backbone.predictor_embed.weight": torch.randn(8, c["embed_dim"]),
                      "module.backbone.mask_tokens.0": torch.zeros(1, 1, 8)},
        "epoch": 7, "loss": 0.25, "batch_size": 4, "lr": 1e-4,
    }, path)


@pytest.mark.parametrize("index", [0, 1])
def test_release_checkpoint_matches_the_authors_outputs(release, tmp_path, index):
    c = release["configs"][index]
    path = tmp_path / "vitl_tiny.pt"
    write_release_checkpoint(path, c)
    enc = encoders.from_config(tiny_cfg(c), checkpoint=path)
    assert enc.checkpoint_info["key"] == "target_encoder" and enc.checkpoint_info["epoch"] == 7
    ours = {k: list(v.shape) for k, v in enc.backbone.state_dict().items()}
    assert ours == dict((k, s) for k, s in c["keys"])  # the release's names and shapes, nothing else
    assert not any("pos_embed" in k for k in ours)

    worst = 0.0
    for case in c["cases"]:
        x = FX.make_input(case, case["input_seed"])
        worst = max(worst, max_diff(enc(x), case["final"]))
        mask = FX.make_mask(case, case["tokens"], case["input_seed"])
        worst = max(worst, max_diff(enc.backbone(x, masks=mask), case["masked"]))
        taps = enc(x, out_layers=list(range(c["depth"])))
        for tap, recorded in zip(taps, case["taps"], strict=True):
            worst = max(worst, max_diff(tap, recorded))
        out = enc(x).double()
        assert out.sum().item() == pytest.approx(case["final"]["sum"], abs=1e-3)
        assert (out * out).sum().item() == pytest.approx(case["final"]["sumsq"], rel=1e-5)
    assert worst < TOL, worst

    # The online encoder is another set of weights: the key decides what is evaluated.
    online = encoders.from_config(tiny_cfg(c), checkpoint=path, checkpoint_key="encoder")
    x = FX.make_input(c["cases"][0], 0)
    assert not torch.allclose(online(x), enc(x), atol=1e-3)


def test_release_checkpoint_of_another_width_is_refused(release, tmp_path):
    c = release["configs"][0]
    path = tmp_path / "ckpt.pt"
    write_release_checkpoint(path, c)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        encoders.from_config(tiny_cfg({**c, "embed_dim": 96}), checkpoint=path)


# ----- (1) transformers' VJEPA2Model ----------------------------------------------------------
def make_hf_folder(path: Path, frames_per_clip: int = 4):
    transformers = pytest.importorskip("transformers")
    config = transformers.VJEPA2Config(
        crop_size=16, patch_size=4, frames_per_clip=frames_per_clip, tubelet_size=2, hidden_size=64,
        num_attention_heads=4, num_hidden_layers=2, mlp_ratio=4.0, pred_hidden_size=32,
        pred_num_attention_heads=2, pred_num_hidden_layers=1, pred_num_mask_tokens=2)
    torch.manual_seed(0)
    model = transformers.VJEPA2Model(config).eval()
    state = model.state_dict()
    # Well-scaled weights instead of the 0.02 init, so every layer matters to the output.
    encoder_keys = [(k, list(v.shape)) for k, v in state.items() if k.startswith("encoder.")]
    model.load_state_dict({**state, **FX.perturbed_state(encoder_keys, 21)}, strict=True)
    model.save_pretrained(path)
    return model


def test_transformers_vjepa2_parity(tmp_path):
    hf = make_hf_folder(tmp_path / "hf")
    ours = load_hf_folder(tmp_path / "hf")
    assert isinstance(ours, VJEPA2VisionTransformer) and ours.depth == 2
    worst = 0.0
    for frames in (4, 8):  # Hugging Face's frame ids follow the input too
        x = torch.randn(2, 3, frames, 16, 16, generator=torch.Generator().manual_seed(frames))
        with torch.no_grad():
            out = hf(pixel_values_videos=x.transpose(1, 2), skip_predictor=True, output_hidden_states=True)
            mine = ours(x)
            taps = ours(x, out_layers=[0, 1])
        # HF's last_hidden_state is after encoder.layernorm (its forward applies it), like ours.
        worst = max(worst, (mine - out.last_hidden_state).abs().max().item())
        # hidden_states: embeddings, then each layer's output before the final norm.
        assert len(out.hidden_states) == 3
        for i in range(2):
            normed = hf.encoder.layernorm(out.hidden_states[i + 1])
            worst = max(worst, (taps[i] - normed).abs().max().item())
        assert not torch.allclose(mine, hf.encoder.layernorm(out.hidden_states[1]), atol=1e-3)
    assert worst < TOL, worst

    # The same file through the registry: checkpoint_filter converts the HF layout.
    cfg = tiny_cfg({"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 4.0, "patch_size": 4,
                    "tubelet_size": 2, "img_size": 16, "num_frames": 4})
    enc = encoders.from_config(cfg, checkpoint=tmp_path / "hf" / "model.safetensors")
    x = torch.randn(1, 3, 4, 16, 16)
    torch.testing.assert_close(enc(x), ours(x), atol=0, rtol=0)


def test_hf_folder_must_be_vjepa2(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "videomae"}))
    with pytest.raises(ValueError, match="expected 'vjepa2'"):
        load_hf_folder(tmp_path)


# ----- (3) full-size entries on meta ----------------------------------------------------------
@pytest.mark.parametrize("name, params, heads, res", [
    ("vjepa2_vitl", (300e6, 310e6), 16, 256), ("vjepa2_vith", (625e6, 640e6), 16, 256),
    ("vjepa2_vitg", (1.0e9, 1.02e9), 22, 256), ("vjepa2_vitg384", (1.0e9, 1.02e9), 22, 384),
])
def test_full_size_entries_on_meta(release, name, params, heads, res):
    cfg = encoders.compose(name)
    assert cfg["family"] == "vjepa2" and cfg["checkpoint_key"] == "target_encoder"
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["std"] == [0.229, 0.224, 0.225]
    model = build_vjepa2(cfg, device="meta")
    n = sum(p.numel() for p in model.parameters())
    assert params[0] < n < params[1]
    assert model.num_heads == heads and model.img_size == res and model.patch_embed.proj.kernel_size == (2, 16, 16)
    # Exactly the release's model: same parameter count and key:shape listing.
    ref = release["full_size"][name]
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert n == ref["parameters"] and len(shapes) == ref["num_keys"]
    assert FX.shape_listing_sha(shapes) == ref["shape_listing_sha256"]
    spec = encoders.EncoderSpec.from_config(cfg)
    assert spec.grid == (8, res // 16, res // 16) and spec.extra["use_rope"] is True
    if "vitg" in name:
        assert model.blocks[0].mlp.fc1.out_features == 6144 and model.embed_dim == 1408 and model.depth == 40


def test_full_size_forward_shape_on_meta():
    model = build_vjepa2(encoders.compose("vjepa2_vitg"), device="meta")
    assert model(torch.empty(1, 3, 16, 256, 256, device="meta")).shape == (1, 8 * 16 * 16, 1408)


# ----- (4) layer taps -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_cfg({"embed_dim": 48, "depth": 3, "num_heads": 2, "mlp_ratio": 4.0, "patch_size": 4,
                    "tubelet_size": 2, "img_size": 16, "num_frames": 4})
    return encoders.from_config(cfg, random_init=True, seed=3)


def test_layer_taps(tiny):
    x = torch.randn(2, 3, 4, 16, 16)
    final = tiny(x)
    taps = tiny(x, out_layers=[2, 0, -1])
    assert len(taps) == 3 and all(t.shape == final.shape for t in taps)
    torch.testing.assert_close(taps[0], final)
    torch.testing.assert_close(taps[2], final)  # -1 is the last block
    # Each tap is its block's output through the shared final norm.
    bb = tiny.backbone
    rope = Rotary3D(grid_positions((2, 4, 4)), bb.rope_split)
    h = bb.patch_embed(x)
    h = bb.blocks[0](h, rope)
    torch.testing.assert_close(taps[1], bb.norm(h))
    with pytest.raises(ValueError, match="out of range"):
        tiny(x, out_layers=[3])


# ----- RoPE facts, inputs, conversion ---------------------------------------------------------
def test_rope_split_and_positions():
    assert rope_split(64) == 20 and rope_split(80) == 26 and rope_split(16) == 4 and rope_split(24) == 8
    f, r, c = grid_positions((2, 2, 3))
    assert f.tolist() == [0] * 6 + [1] * 6
    assert r.tolist() == [0, 0, 0, 1, 1, 1] * 2 and c.tolist() == [0, 1, 2] * 4
    f, r, c = grid_positions((2, 2, 3), ids=torch.tensor([[7, 11]]))
    assert f.tolist() == [[1, 1]] and r.tolist() == [[0, 1]] and c.tolist() == [[1, 2]]
    # Angles follow the queries' dtype, as the release computes them (bf16 under autocast).
    rope = Rotary3D(grid_positions((2, 2, 2)), 4)
    assert rope.tables(torch.bfloat16)[0][0].dtype == torch.bfloat16
    q = torch.randn(1, 2, 8, 16)
    out = rope.rotate(q)
    torch.testing.assert_close(out[..., 12:], q[..., 12:], atol=0, rtol=0)  # beyond 3 * split: untouched
    torch.testing.assert_close(out[:, :, 0], q[:, :, 0])  # position (0, 0, 0): no rotation


def test_any_frame_count_and_resolution(tiny):
    assert tiny(torch.randn(1, 3, 8, 16, 24)).shape == (1, 4 * 4 * 6, 48)
    with pytest.raises(ValueError, match="tubelet"):
        tiny(torch.randn(1, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="patch size"):
        tiny(torch.randn(1, 3, 4, 18, 16))


def test_random_init_is_seeded_and_real():
    cfg = tiny_cfg({"embed_dim": 48, "depth": 1, "num_heads": 2, "mlp_ratio": 4.0, "patch_size": 4,
                    "tubelet_size": 2, "img_size": 16, "num_frames": 4})
    a, b = (encoders.from_config(cfg, random_init=True, seed=5) for _ in range(2))
    for (k, va), vb in zip(a.backbone.state_dict().items(), b.backbone.state_dict().values()):
        assert not va.is_meta and torch.equal(va, vb), k


def test_checkpoint_filter():
    state = {"patch_embed.proj.weight": torch.zeros(1), "pos_embed": torch.zeros(1, 4, 8)}
    with pytest.warns(UserWarning, match="pos_embed"):
        out = checkpoint_filter(state)
    assert list(out) == ["patch_embed.proj.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(checkpoint_filter({"norm.weight": torch.ones(2)})) == ["norm.weight"]  # no warning
    hf = {"encoder.layer.0.attention.query.weight": torch.zeros(2, 2),
          "encoder.layer.0.attention.key.weight": torch.ones(2, 2)}
    with pytest.raises(CheckpointError, match="value"):
        checkpoint_filter(hf)
    hf["encoder.layer.0.attention.value.weight"] = 2 * torch.ones(2, 2)
    hf["predictor.layer.0.norm1.weight"] = torch.ones(2)
    hf["encoder.layer.0.attention.proj.bias"] = torch.ones(2)
    out = checkpoint_filter(hf)
    assert sorted(out) == ["blocks.0.attn.proj.bias", "blocks.0.attn.qkv.weight"]
    assert out["blocks.0.attn.qkv.weight"][:, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_builder_refuses_settings_it_does_not_use():
    with pytest.raises(ValueError, match="uniform_power"):
        build_vjepa2(encoders.compose("vjepa2_vitl", uniform_power=True), device="meta")
    with pytest.raises(ValueError, match="RoPE"):
        build_vjepa2(encoders.compose("vjepa2_vitl", use_rope=False), device="meta")


def test_entries_are_listed():
    assert set(ENTRIES) <= set(encoders.names())
    assert math.isclose(encoders.config("vjepa2_vitg")["arch"]["mlp_ratio"], 48 / 11)


def test_a_hugging_face_folder_is_a_checkpoint(tmp_path):
    # `--checkpoint DIR` with a save_pretrained folder: the family's filter maps the HF keys.
    import transformers

    import encoders

    cfg = transformers.VJEPA2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    crop_size=32, frames_per_clip=4, patch_size=16, tubelet_size=2,
                                    pred_hidden_size=32, pred_num_hidden_layers=1,
                                    pred_num_attention_heads=4, mlp_ratio=4.0)
    torch.manual_seed(0)
    hf = transformers.VJEPA2Model(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    enc = encoders.build("vjepa2_vitl", checkpoint=tmp_path / "hf", embed_dim=64, depth=2,
                         num_heads=4, resolution=32, num_frames=4, checkpoint_key="encoder|target_encoder")
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        want = hf(pixel_values_videos=x.transpose(1, 2)).last_hidden_state
    assert (enc(x) - want).abs().max().item() < 1e-5
