"""VideoMAE / VideoMAEv2 encoders: parity with transformers and with the authors' code, layouts, sizes, taps.

Reference numbers for the release layouts come from tests/fixtures/make_videomae_fixture.py, which
ran the authors' `modeling_finetune` / `modeling_pretrain` on weights this test regenerates.
"""
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

import encoders
from encoders import CheckpointError
from encoders.videomae import build_videomae, sinusoid_table
from encoders.videomae_checkpoint import checkpoint_filter, convert_hf_state, hf_arch, load_hf_folder

FIXTURES = Path(__file__).parent / "fixtures"
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def release():
    return json.loads((FIXTURES / "videomae_release.json").read_text())


@pytest.fixture(scope="module")
def maker():
    spec = importlib.util.spec_from_file_location("make_videomae_fixture", FIXTURES / "make_videomae_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _case(release, name):
    return next(c for c in release["cases"] if c["name"] == name)


def _cfg(case):
    return {"name": f"test_{case['name']}", "family": case["release"], "modality": "video",
            "builder": "encoders.videomae:build_videomae", "checkpoint_filter": "encoders.videomae_checkpoint:checkpoint_filter",
            "arch": dict(case["arch"]), "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "checkpoint_key": case["wrapper"]}


def _expected(case, key):
    out = case["outputs"][key]
    return torch.tensor(out["values"], dtype=torch.float32).reshape(out["shape"])


def _release_file(case, maker, tmp_path, **extra):
    """The case's weights saved the way the authors' `torch.save` does: {'model'|'module': state, ...}."""
    weights = maker.release_weights(case["layout"], case["seed"])
    path = tmp_path / f"{case['name']}.pth"
    torch.save({case["wrapper"]: weights, "epoch": 9, **extra}, path)
    return path, weights


# ----- 2. release-layout parity -------------------------------------------------------------
CASE_NAMES = ["videomae_finetune", "videomae_pretrain", "videomaev2_finetune_g", "videomaev2_cos_layerscale",
              "videomaev2_pretrain"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_release_layout_matches_authors_code(release, maker, tmp_path, name):
    case = _case(release, name)
    path, _ = _release_file(case, maker, tmp_path)
    enc = encoders.from_config(_cfg(case), checkpoint=path)
    assert enc.checkpoint_info["key"] == case["wrapper"] and enc.checkpoint_info["epoch"] == 9
    x = maker.make_input(case["input"], case["input_seed"])
    torch.testing.assert_close(enc(x), _expected(case, "tokens"), **TOL)
    # Layer taps: block 0's output through the same final norm, as the authors' modules compute it.
    torch.testing.assert_close(enc(x[:1], out_layers=[0])[0], _expected(case, "tap0"), **TOL)
    if "masked_tokens" in case["outputs"]:  # the pretraining encoder's own x[~mask] path
        visible = torch.tensor(case["visible"]).unsqueeze(0).expand(x.shape[0], -1)
        torch.testing.assert_close(enc.backbone(x, masks=visible), _expected(case, "masked_tokens"), **TOL)
    if "pooled_or_cls" in case["outputs"]:  # the release's forward_features
        got = enc.backbone.pooled(x) if case["kwargs"]["use_mean_pooling"] else enc(x)[:, 0]
        torch.testing.assert_close(got, _expected(case, "pooled_or_cls"), **TOL)


def test_other_grids_recompute_the_1d_table_as_the_release_does(release, maker, tmp_path):
    """A release model built for 8 frames at 48 px (same weights) = ours, built for 4x32, run on 8x48."""
    case = _case(release, "videomae_finetune")
    path, _ = _release_file(case, maker, tmp_path)
    enc = encoders.from_config(_cfg(case), checkpoint=path)
    og = case["other_grid"]
    x = maker.make_input(og["input"], case["input_seed"])
    torch.testing.assert_close(enc(x), _expected(case, "other_grid_tokens"), **TOL)
    torch.testing.assert_close(enc.backbone.pooled(x), _expected(case, "other_grid_pooled"), **TOL)


def test_release_layout_is_what_the_authors_save(release):
    v1 = {k for k, _ in _case(release, "videomae_pretrain")["layout"]}
    assert {"encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.q_bias", "encoder.blocks.0.attn.v_bias",
            "encoder.norm.weight", "decoder.head.weight", "encoder_to_decoder.weight", "mask_token"} <= v1
    assert not any("pos_embed" in k or "attn.qkv.bias" in k for k in v1)  # the table is not stored; no k bias
    ft = {k for k, _ in _case(release, "videomae_finetune")["layout"]}
    assert {"fc_norm.weight", "head.weight"} <= ft and "norm.weight" not in ft
    assert all(k.startswith("_orig_mod.") for k, _ in _case(release, "videomaev2_pretrain")["layout"])
    g = _case(release, "videomaev2_finetune_g")
    assert g["arch"]["mlp_hidden_dim"] == int(88 * 48 / 11) == 384


def test_filter_drops_decoder_head_and_wrappers_and_names_strangers(release, maker, tmp_path):
    case = _case(release, "videomaev2_pretrain")
    weights = maker.release_weights(case["layout"], case["seed"])
    mapped = checkpoint_filter({"module." + k: v for k, v in weights.items()})  # DDP around torch.compile
    assert not any(k.startswith(("decoder", "encoder", "_orig_mod", "mask_token")) for k in mapped)
    assert "norm.weight" in mapped and "blocks.1.attn.q_bias" in mapped
    # An unknown key is not dropped: the strict load names it.
    path = tmp_path / "extra.pth"
    torch.save({"model": {**weights, "_orig_mod.encoder.extra_token": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="extra_token"):
        encoders.from_config(_cfg(case), checkpoint=path)


def test_filter_refuses_ambiguous_or_unsupported_layouts(release, maker):
    weights = maker.release_weights(_case(release, "videomae_finetune")["layout"], 1)
    with pytest.raises(CheckpointError, match="both"):
        checkpoint_filter({**weights, "norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)})
    with pytest.raises(CheckpointError, match="learned `pos_embed`"):
        checkpoint_filter({**weights, "pos_embed": torch.zeros(1, 32, 32)})


def test_wrong_architecture_is_a_named_error(release, maker, tmp_path):
    case = _case(release, "videomaev2_cos_layerscale")
    path, _ = _release_file(case, maker, tmp_path)
    cfg = _cfg(case)
    cfg["arch"].update(cos_attn=False, init_values=0.0)
    with pytest.raises(CheckpointError, match="gamma_1|attn.scale"):
        encoders.from_config(cfg, checkpoint=path)


def test_sinusoid_table_is_the_releases():
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    for n, d in ((64, 768), (37, 44), (16, 1408)):
        assert torch.equal(sinusoid_table(n, d), get_sinusoid_encoding_table(n, d)[0])


# ----- 1. transformers parity ---------------------------------------------------------------
def _hf_model(cls_name="VideoMAEModel", use_mean_pooling=False, seed=0, **kw):
    import transformers

    config = transformers.VideoMAEConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
        patch_size=8, num_frames=8, tubelet_size=2, use_mean_pooling=use_mean_pooling, layer_norm_eps=1e-6,
        decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=64, num_labels=3, attn_implementation="eager", **kw)
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # nothing left at init values: q/v biases (all biases) explicitly non-zero,
        for n, p in model.named_parameters():  # LayerNorms non-unit, weights ~1/sqrt(fan_in) so biases matter
            if n.endswith("bias"):
                p.copy_(0.5 * torch.randn_like(p))
            elif "norm" in n and n.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.ndim >= 2:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
    biases = [p for n, p in model.named_parameters() if n.endswith(("query.bias", "value.bias"))]
    assert biases and all(b.abs().min() > 0 for b in biases)
    return model


def _video(seed=1):
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))


def _hf_tokens(model, video):
    with torch.no_grad():
        return model(pixel_values=video.transpose(1, 2)).last_hidden_state  # HF takes (B, T, C, H, W)


@pytest.mark.parametrize("use_mean_pooling", [False, True])
def test_hf_weights_convert_to_our_module(use_mean_pooling):
    hf = _hf_model(use_mean_pooling=use_mean_pooling)
    state = hf.state_dict()
    arch = hf_arch(hf.config.to_dict(), state)
    ours = build_videomae({"modality": "video", "arch": arch}, device="meta")
    from encoders.checkpoint import load_state_strict

    load_state_strict(ours, convert_hf_state(state), {"path": "in-memory"})
    video = _video()
    torch.testing.assert_close(ours(video), _hf_tokens(hf, video), **TOL)
    assert isinstance(ours.norm, torch.nn.Identity) == use_mean_pooling  # HF has no final norm then


def test_hf_folder_loads_q_and_v_biases(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    enc = load_hf_folder(tmp_path)
    video = _video()
    torch.testing.assert_close(enc(video), _hf_tokens(hf, video), **TOL)
    ours = enc.backbone.blocks[0].attn
    ref = hf.encoder.layer[0].attention.attention
    torch.testing.assert_close(ours.q_bias, ref.query.bias.detach())
    torch.testing.assert_close(ours.v_bias, ref.value.bias.detach())
    assert enc.spec.family == "videomae" and enc.checkpoint_info["format"] == "huggingface"
    # HF's own reload of the same folder keeps them too (the v5 trap would show here as zeros).
    import transformers

    again = transformers.VideoMAEModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(_hf_tokens(again, video), _hf_tokens(hf, video), **TOL)


def _rewrite(folder, fn):
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    save_file(fn(state), str(path), metadata={"format": "pt"})
    return state


def test_hf_folder_with_in_memory_bias_names_loads(tmp_path):
    hf = _hf_model(seed=3)
    hf.save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: {k.replace("attention.q_bias", "attention.query.bias")
                                  .replace("attention.v_bias", "attention.value.bias"): v for k, v in s.items()})
    video = _video(2)
    torch.testing.assert_close(load_hf_folder(tmp_path)(video), _hf_tokens(hf, video), **TOL)


def test_hf_folder_without_biases_fails_loudly(tmp_path):
    _hf_model(seed=4).save_pretrained(tmp_path)
    state = _rewrite(tmp_path, lambda s: {k: v for k, v in s.items() if not k.endswith(("q_bias", "v_bias"))})
    assert any(k.endswith("q_bias") for k in state)  # they were there before
    with pytest.raises(CheckpointError, match="q_bias"):
        load_hf_folder(tmp_path)


def test_hf_folder_with_all_zero_biases_warns(tmp_path):
    _hf_model(seed=5).save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: {k: (torch.zeros_like(v) if k.endswith(("q_bias", "v_bias")) else v)
                                  for k, v in s.items()})
    with pytest.warns(UserWarning, match="q/v bias is exactly zero"):
        load_hf_folder(tmp_path)


def test_hf_pretraining_and_classification_folders(tmp_path):
    video = _video(3)
    pre = _hf_model("VideoMAEForPreTraining", seed=6)
    pre.save_pretrained(tmp_path / "pre")
    torch.testing.assert_close(load_hf_folder(tmp_path / "pre")(video), _hf_tokens(pre.videomae, video), **TOL)
    # A fine-tuned classifier: fc_norm (nn.LayerNorm's default eps) becomes our final norm; pooled() is
    # HF's fc_norm(mean(last_hidden_state)); the classifier is dropped.
    clf = _hf_model("VideoMAEForVideoClassification", use_mean_pooling=True, seed=7)
    clf.save_pretrained(tmp_path / "clf")
    enc = load_hf_folder(tmp_path / "clf")
    with torch.no_grad():
        ref = clf.fc_norm(_hf_tokens(clf.videomae, video).mean(1))
    torch.testing.assert_close(enc.backbone.pooled(video), ref, **TOL)


def test_hf_safetensors_file_works_as_registry_checkpoint(tmp_path):
    """A hub `model.safetensors` passed as --checkpoint: the registry filter recognises the HF layout."""
    hf = _hf_model(seed=8)
    hf.save_pretrained(tmp_path)
    cfg = encoders.compose("videomae_vitb", embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, patch_size=8,
                           num_frames=8, resolution=32, norm_eps=1e-6)
    enc = encoders.from_config(cfg, checkpoint=tmp_path / "model.safetensors")
    video = _video(4)
    torch.testing.assert_close(enc(video), _hf_tokens(hf, video), **TOL)


# ----- 3. full-size registry entries --------------------------------------------------------
EXPECTED_M = {"videomae_vits": 22, "videomae_vitb": 86, "videomae_vitl": 304, "videomae_vith": 632,
              "videomaev2_vitg": 1012, "videomaev2_vits": 22, "videomaev2_vitb": 86}


@pytest.mark.parametrize("name", sorted(EXPECTED_M))
def test_full_size_entries_build_on_meta_with_release_parameter_counts(release, name):
    cfg = encoders.compose(name)
    model = build_videomae(cfg, device="meta")
    n = sum(p.numel() for p in model.parameters())
    assert n == release["param_counts"][name]  # the authors' model without its head
    assert round(n / 1e6) == EXPECTED_M[name]
    assert all(p.is_meta for p in model.parameters())
    spec = encoders.EncoderSpec.from_config(cfg)
    assert spec.num_tokens == (2048 if name == "videomaev2_vitg" else 1568)
    assert tuple(spec.mean) == (0.485, 0.456, 0.406) and spec.family in ("videomae", "videomaev2")
    assert cfg["description"] and cfg["checkpoint_filter"] == "encoders.videomae_checkpoint:checkpoint_filter"


def test_vitg_mlp_width():
    assert build_videomae(encoders.compose("videomaev2_vitg"), device="meta").blocks[0].mlp.fc1.out_features == 6144


def test_vitl_cpu_forward_at_16x224():
    """One ViT-L forward, batch 1, 16x224 (measured ~20 s on the 2-core dev machine; under the 60 s budget)."""
    cfg = encoders.compose("videomae_vitl")
    model = build_videomae(cfg, device="meta").to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # cheap weights instead of the trunc-normal init (which costs ~10 s here)
        for n, p in model.named_parameters():
            p.copy_(1 + 0.02 * torch.randn(p.shape, generator=g) if "norm" in n and n.endswith("weight")
                    else 0.02 * torch.randn(p.shape, generator=g))
        start = time.perf_counter()
        out = model(torch.randn(1, 3, 16, 224, 224, generator=g))
    assert out.shape == (1, 1568, 1024) and torch.isfinite(out).all()
    assert time.perf_counter() - start < 120, "ViT-L CPU forward far slower than measured"


# ----- 4. layer taps and the FrozenEncoder contract -----------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return encoders.build("videomae_vitb", random_init=True, embed_dim=32, depth=3, num_heads=4, patch_size=8,
                          num_frames=4, resolution=32)


def test_layer_taps_are_normed_block_outputs(tiny):
    x = torch.randn(2, 3, 4, 32, 32)
    taps = tiny(x, out_layers=[2, 0, -2])
    assert [t.shape for t in taps] == [(2, 32, 32)] * 3
    torch.testing.assert_close(taps[0], tiny(x))  # the last block is the forward
    bb = tiny.backbone
    with torch.no_grad():
        h = bb.patch_embed(x) + bb.position_table(bb.grid)
        h = bb.blocks[0](h)
        torch.testing.assert_close(taps[1], bb.norm(h))
        torch.testing.assert_close(taps[2], bb.norm(bb.blocks[1](h)))
    with pytest.raises(ValueError, match="out of range"):
        tiny(x, out_layers=[3])


def test_frozen_contract(tiny):
    assert not any(p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.backbone.training
    assert "pos_embed" not in tiny.backbone.state_dict()  # fixed table, never stored (as the release)
    assert tiny.spec.grid == (2, 4, 4)
    with pytest.raises(ValueError, match="tubelet"):
        tiny(torch.randn(1, 3, 3, 32, 32))
    q = tiny.backbone.blocks[0].attn
    assert q.qkv.bias is None and q.q_bias.shape == (32,) and q.v_bias.shape == (32,)


def test_registry_lists_the_entries():
    assert set(EXPECTED_M) <= set(encoders.names())
