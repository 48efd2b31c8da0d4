"""Hugging Face folders: config.json builds the architecture for every family that reads them.

Each family's folder is written by transformers' own `save_pretrained` at a tiny size no registry
entry has; `encoders.resolve_config` gives the requested entry's config with the folder's
architecture (name unchanged), and `encoders.from_config` loads it strictly, with the tokens of
transformers' model.
"""
from __future__ import annotations

import json

import pytest
import torch

import encoders
from encoders.errors import CheckpointError

transformers = pytest.importorskip("transformers")
TOL = 2e-5


def _scrambled(model, seed: int):
    """Weights that all matter: non-zero biases, non-unit LayerNorms, ~1/sqrt(fan_in) matrices."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "norm" in n and n.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model.eval()


def _videomae(folder, use_mean_pooling: bool, cls="VideoMAEModel", **kw):
    config = transformers.VideoMAEConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
        patch_size=8, num_frames=8, tubelet_size=2, use_mean_pooling=use_mean_pooling, num_labels=3,
        attn_implementation="eager", **kw)
    torch.manual_seed(0)
    model = _scrambled(getattr(transformers, cls)(config), 1)
    model.save_pretrained(folder)
    return model


def _differs(cfg: dict) -> dict:
    """What the planner labels: the resolved arch against the registry entry's."""
    base = encoders.config(cfg["name"])["arch"]
    return {k: v for k, v in cfg["arch"].items() if base.get(k) != v}


@pytest.mark.parametrize("use_mean_pooling", [True, False])
def test_videomae_folder_builds_from_its_config_json(tmp_path, use_mean_pooling):
    hf = _videomae(tmp_path, use_mean_pooling)
    cfg = encoders.resolve_config(encoders.compose("videomae_vits"), tmp_path)
    assert cfg["name"] == "videomae_vits"
    arch = cfg["arch"]
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"], arch["patch_size"], arch["resolution"],
            arch["num_frames"], arch["mlp_ratio"]) == (64, 2, 4, 8, 32, 8, 2.0)
    # transformers' default use_mean_pooling=True: no final norm (last_hidden_state is un-normed).
    assert arch.get("final_norm", True) is (not use_mean_pooling)
    assert arch["norm_eps"] == 1e-12  # HF's default, stated in config.json
    assert {"embed_dim", "depth", "num_heads", "norm_eps"} <= set(_differs(cfg))
    assert encoders.resolve_config(cfg, tmp_path) == cfg  # idempotent
    enc = encoders.from_config(cfg, checkpoint=tmp_path)
    assert enc.spec.name == "videomae_vits" and enc.spec.embed_dim == 64
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(pixel_values=video.transpose(1, 2)).last_hidden_state
    torch.testing.assert_close(enc(video), want, atol=TOL, rtol=0)
    # build() resolves the folder itself; the case (mean pooling, no `norm.*`) loads.
    again = encoders.build("videomae_vits", checkpoint=tmp_path)
    torch.testing.assert_close(again(video), want, atol=TOL, rtol=0)


def test_videomae_classification_folder_uses_fc_norm_and_drops_the_head(tmp_path):
    hf = _videomae(tmp_path, True, cls="VideoMAEForVideoClassification")
    cfg = encoders.resolve_config(encoders.compose("videomae_vitb"), tmp_path)
    assert cfg["arch"]["final_norm_eps"] == 1e-5 and cfg["arch"].get("final_norm", True)
    enc = encoders.from_config(cfg, checkpoint=tmp_path)
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        want = hf.fc_norm(hf.videomae(pixel_values=video.transpose(1, 2)).last_hidden_state.mean(1))
    torch.testing.assert_close(enc.backbone.pooled(video), want, atol=TOL, rtol=0)


def test_a_folder_of_an_entrys_size_gives_that_entrys_arch(tmp_path):
    """config.json alone decides (weights are only listed): a ViT-S folder in the release's eps with a
    final `layernorm` resolves to videomae_vits' arch exactly, so nothing is labelled as different."""
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "videomae", "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
        "intermediate_size": 1536, "image_size": 224, "patch_size": 16, "num_frames": 16, "tubelet_size": 2,
        "layer_norm_eps": 1e-6, "qv_bias": True, "use_mean_pooling": False}))
    save_file({"layernorm.weight": torch.ones(384)}, str(tmp_path / "model.safetensors"))
    cfg = encoders.resolve_config(encoders.compose("videomae_vits"), tmp_path)
    assert cfg["arch"] == encoders.config("videomae_vits")["arch"]
    # Another family's entry: a clear error naming the entry of its size.
    with pytest.raises(CheckpointError, match=r"videomae folder .* family 'vjepa2': use --encoder videomae_vits"):
        encoders.resolve_config(encoders.compose("vjepa2_vitl"), tmp_path)
    with pytest.raises(CheckpointError, match="use --encoder videomae_vits"):
        encoders.resolve_config(encoders.compose("videomaev2_vits"), tmp_path)
    # An override that contradicts config.json is refused; an input-size override is kept.
    with pytest.raises(CheckpointError, match=r"encoder.arch.depth=4 \(config.json: 12\)"):
        encoders.resolve_config(encoders.compose("videomae_vits", depth=4), tmp_path)
    assert encoders.resolve_config(encoders.compose("videomae_vits", num_frames=8), tmp_path)["arch"]["num_frames"] == 8


def _vjepa2_config(**kw):
    return transformers.VJEPA2Config(
        crop_size=32, patch_size=8, frames_per_clip=4, tubelet_size=2, hidden_size=48, num_attention_heads=4,
        num_hidden_layers=2, mlp_ratio=4.0, pred_hidden_size=32, pred_num_attention_heads=2,
        pred_num_hidden_layers=1, pred_num_mask_tokens=2, num_labels=3, **kw)


def test_vjepa2_folder_builds_from_its_config_json(tmp_path):
    torch.manual_seed(0)
    hf = _scrambled(transformers.VJEPA2Model(_vjepa2_config()), 3)
    hf.save_pretrained(tmp_path)
    cfg = encoders.resolve_config(encoders.compose("vjepa2_vitl"), tmp_path)
    arch = cfg["arch"]
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"], arch["patch_size"], arch["resolution"]) \
        == (48, 2, 4, 8, 32)
    assert arch["num_frames"] == 16  # frames_per_clip is the pretraining clip; the entry's probe clip stays
    enc = encoders.from_config(cfg, checkpoint=tmp_path)
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = hf(pixel_values_videos=x.transpose(1, 2), skip_predictor=True).last_hidden_state
    torch.testing.assert_close(enc(x), want, atol=TOL, rtol=0)
    assert enc.checkpoint_info["format"] == "huggingface"
    with pytest.raises(CheckpointError, match="vjepa2 folder .* use --encoder vjepa2_vitl"):
        encoders.resolve_config(encoders.compose("ijepa_vith14"), tmp_path)


def test_vjepa2_classification_folder_loads_its_encoder(tmp_path):
    torch.manual_seed(0)
    hf = _scrambled(transformers.VJEPA2ForVideoClassification(_vjepa2_config()), 4)
    hf.save_pretrained(tmp_path)
    enc = encoders.build("vjepa2_vith", checkpoint=tmp_path)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        want = hf.vjepa2(pixel_values_videos=x.transpose(1, 2), skip_predictor=True).last_hidden_state
    torch.testing.assert_close(enc(x), want, atol=TOL, rtol=0)


def test_ijepa_folder_builds_from_its_config_json(tmp_path):
    config = transformers.IJepaConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=192, image_size=32, patch_size=8, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = _scrambled(transformers.IJepaModel(config), 6)
    hf.save_pretrained(tmp_path)
    cfg = encoders.resolve_config(encoders.compose("ijepa_vith14"), tmp_path)
    assert cfg["name"] == "ijepa_vith14"
    assert {k: cfg["arch"][k] for k in ("embed_dim", "depth", "num_heads", "patch_size", "resolution")} \
        == {"embed_dim": 48, "depth": 3, "num_heads": 4, "patch_size": 8, "resolution": 32}
    enc = encoders.from_config(cfg, checkpoint=tmp_path)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = hf(pixel_values=x).last_hidden_state
    torch.testing.assert_close(enc(x.unsqueeze(2)), want, atol=TOL, rtol=0)
    # The caller's resolution wins (the stored table is resampled at load), the folder's width cannot.
    # (As Hydra composes it: the override is checked against the folder's patch, not the entry's 14.)
    requested = encoders.config("ijepa_vith14")
    requested["arch"]["resolution"] = 48
    bigger = encoders.resolve_config(requested, tmp_path)
    assert bigger["arch"]["resolution"] == 48
    assert encoders.from_config(bigger, checkpoint=tmp_path).checkpoint_info["pos_embed_interpolated"] \
        == {"from": [4, 4], "to": [6, 6]}
    with pytest.raises(CheckpointError, match="embed_dim=96"):
        encoders.resolve_config(encoders.compose("ijepa_vith14", embed_dim=96, num_heads=4), tmp_path)
    with pytest.raises(CheckpointError, match="ijepa folder .* use --encoder ijepa_"):
        encoders.resolve_config(encoders.compose("vjepa_vitl"), tmp_path)


def test_files_and_other_folders_are_left_alone(tmp_path):
    cfg = encoders.compose("vjepa_tiny")
    assert encoders.resolve_config(cfg, None) == cfg
    assert encoders.resolve_config(cfg, tmp_path / "weights.pth") == cfg
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert'.*videomae"):
        encoders.resolve_config(cfg, tmp_path)
