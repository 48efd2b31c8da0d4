"""`timm:<model_name>` encoders: config from timm without network, timm-saved weights, timm's own tokens."""
import socket

import pytest
import torch

timm = pytest.importorskip("timm")

import encoders  # noqa: E402
from encoders.registry import apply_overrides, validate_config  # noqa: E402
from encoders.timm_image import TimmTokens, checkpoint_filter, timm_config  # noqa: E402


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection (a hub download) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _reference(name, seed=0, **kwargs):
    """A timm model as timm would save it (its ImageNet head included unless num_classes=0 is given)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # make norms and biases non-trivial, so a mis-load would show
        for p_name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
        for b_name, b in model.named_buffers():
            if b_name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif b_name.endswith("running_mean"):
                b.normal_(0, 0.1)
    return model


def _save(model, path):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _images(n, size, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_config_is_read_from_timm_without_network(no_network):
    cfg = timm_config("timm:vit_tiny_patch16_224")
    assert cfg == validate_config(cfg)
    assert cfg["name"] == "timm:vit_tiny_patch16_224" and cfg["family"] == "timm" and cfg["modality"] == "image"
    assert cfg["builder"] == "encoders.timm_image:build_timm"
    assert {k: cfg["arch"][k] for k in ("embed_dim", "depth", "num_heads", "patch_size", "resolution",
                                        "num_prefix_tokens", "img_size")} == {
        "embed_dim": 192, "depth": 12, "num_heads": 3, "patch_size": 16, "resolution": 224,
        "num_prefix_tokens": 1, "img_size": 224}
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["std"] == [0.5, 0.5, 0.5]  # its augreg pretrained cfg
    # A tag picks that pretrained config's normalisation; the prefix is optional.
    clip = timm_config("vit_base_patch16_clip_224.openai")
    assert clip["name"] == "timm:vit_base_patch16_clip_224.openai"
    assert clip["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    dino = timm_config("timm:vit_small_patch14_reg4_dinov2.lvd142m")["arch"]
    assert (dino["patch_size"], dino["resolution"], dino["num_prefix_tokens"]) == (14, 518, 5)
    cnn = timm_config("timm:resnet18")
    assert cnn["arch"]["embed_dim"] == 512 and cnn["arch"]["patch_size"] == 32 and "img_size" not in cnn["arch"]
    assert cnn["arch"]["embed_dim"] % cnn["arch"]["num_heads"] == 0
    assert cnn["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_unknown_timm_name_lists_close_names():
    with pytest.raises(encoders.UnknownNameError, match="timm:vit_tiny_patch16_224"):
        timm_config("timm:vit_tiny_patch16_22")
    with pytest.raises(encoders.UnknownNameError, match="augreg_in21k_ft_in1k"):
        timm_config("timm:vit_tiny_patch16_224.nope")


def _vit_cfg(**overrides):
    return apply_overrides(timm_config("timm:vit_tiny_patch16_224"), img_size=32, resolution=32, **overrides)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_vit_weights_file_gives_timms_forward_features_tokens(tmp_path, no_network, suffix):
    ref = _reference("vit_tiny_patch16_224", img_size=32)
    assert "head.weight" in ref.state_dict()  # saved with its ImageNet head, as timm saves it
    enc = encoders.from_config(_vit_cfg(), checkpoint=_save(ref, tmp_path / f"vit{suffix}"))
    assert isinstance(enc.backbone, TimmTokens) and enc.spec.grid == (1, 2, 2)
    x = _images(3, 32)
    with torch.no_grad():
        want = ref.forward_features(x)[:, ref.num_prefix_tokens:]
    got = enc(x.unsqueeze(2))
    assert got.shape == (3, 4, 192)
    assert (got - want).abs().max().item() <= 1e-6
    # Another input size: the table is resampled per forward exactly as timm's dynamic_img_size does.
    dyn = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, dynamic_img_size=True).eval()
    dyn.load_state_dict(ref.state_dict())
    x48 = _images(1, 48, seed=2)
    with torch.no_grad():
        want48 = dyn.forward_features(x48)[:, 1:]
    assert (enc(x48.unsqueeze(2)) - want48).abs().max().item() <= 1e-6


def test_out_layers_are_timms_intermediates_in_the_order_asked(tmp_path):
    ref = _reference("vit_tiny_patch16_224", img_size=32)
    enc = encoders.from_config(_vit_cfg(), checkpoint=_save(ref, tmp_path / "vit.safetensors"))
    x = _images(2, 32)
    with torch.no_grad():
        inter = ref.forward_intermediates(x, indices=[0, 5, 11], norm=True, output_fmt="NCHW", intermediates_only=True)
    taps = enc(x.unsqueeze(2), out_layers=[11, 0, -7])
    for tap, i in zip(taps, (2, 0, 1)):
        assert (tap - inter[i].flatten(2).transpose(1, 2)).abs().max().item() <= 1e-6
    assert (taps[0] - enc(x.unsqueeze(2))).abs().max().item() <= 1e-6  # last block, normed = the output
    with pytest.raises(ValueError, match="out of range"):
        enc(x.unsqueeze(2), out_layers=[12])


def test_video_runs_frame_by_frame(tmp_path):
    ref = _reference("vit_tiny_patch16_224", img_size=32)
    enc = encoders.from_config(_vit_cfg(), checkpoint=_save(ref, tmp_path / "vit.safetensors"))
    video = torch.randn(2, 3, 3, 32, 32)
    tokens = enc(video)
    assert tokens.shape == (2, 3 * 4, 192) and enc.spec.num_tokens_for(3, 32) == 12
    with torch.no_grad():
        frame1 = ref.forward_features(video[:, :, 1])[:, 1:]
    assert (tokens[:, 4:8] - frame1).abs().max().item() <= 1e-6
    assert [t.shape for t in enc(video, out_layers=[3, -1])] == [tokens.shape] * 2


def test_cnn_feature_map_tokens_and_stage_taps(tmp_path, no_network):
    ref = _reference("resnet18")
    assert "fc.weight" in ref.state_dict()
    cfg = timm_config("timm:resnet18")
    enc = encoders.from_config(apply_overrides(cfg, resolution=64), checkpoint=_save(ref, tmp_path / "r18.pth"))
    x = _images(2, 64)
    with torch.no_grad():
        want = ref.forward_features(x).flatten(2).transpose(1, 2)
        stages = ref.forward_intermediates(x, indices=[2, 4], intermediates_only=True)
    got = enc(x.unsqueeze(2))
    assert got.shape == (2, 4, 512) and enc.spec.grid == (1, 2, 2)
    assert (got - want).abs().max().item() <= 1e-6
    taps = enc(x.unsqueeze(2), out_layers=[-1, 2])
    assert (taps[0] - want).abs().max().item() <= 1e-6
    assert (taps[1] - stages[0].flatten(2).transpose(1, 2)).abs().max().item() <= 1e-6


def test_headless_and_partly_headless_files(tmp_path):
    # ConvNeXt keeps head.norm without a classifier: only head.fc goes.
    ref = _reference("convnext_atto")
    enc = encoders.from_config(apply_overrides(timm_config("timm:convnext_atto"), resolution=64),
                               checkpoint=_save(ref, tmp_path / "cnx.safetensors"))
    assert "model.head.norm.weight" in enc.backbone.state_dict()
    x = _images(1, 64)
    with torch.no_grad():
        want = ref.forward_features(x).flatten(2).transpose(1, 2)
    assert (enc(x.unsqueeze(2)) - want).abs().max().item() <= 1e-6
    # A DINOv2-style timm file (saved headless, register tokens): the 5 prefix tokens are dropped.
    ref = _reference("vit_small_patch14_reg4_dinov2", num_classes=0, img_size=28)
    cfg = apply_overrides(timm_config("timm:vit_small_patch14_reg4_dinov2"), img_size=28, resolution=28)
    enc = encoders.from_config(cfg, checkpoint=_save(ref, tmp_path / "dinov2.safetensors"))
    x = _images(2, 28)
    with torch.no_grad():
        want = ref.forward_features(x)[:, 5:]
    got = enc(x.unsqueeze(2))
    assert got.shape == (2, 4, 384) and (got - want).abs().max().item() <= 1e-6


def test_model_aware_filter_agrees_and_mismatches_are_named(tmp_path):
    ref = _reference("vit_tiny_patch16_224", img_size=32)
    state = ref.state_dict()
    backbone = encoders.timm_image.build_timm(_vit_cfg(), device="meta")
    generic, exact = checkpoint_filter(state), checkpoint_filter(state, model=backbone)
    assert set(generic) == set(exact) == set(backbone.state_dict())
    assert all(torch.equal(generic[k], exact[k]) for k in generic)
    assert checkpoint_filter(exact) == exact  # already ours
    # The loader passes the built model, so timm's own filter resamples a position table made
    # for another input size at load (as timm does)...
    other = _save(_reference("vit_tiny_patch16_224", img_size=48), tmp_path / "vit48.safetensors")
    cfg = _vit_cfg()
    cfg["arch"]["img_size"] = 64
    enc = encoders.from_config(cfg, checkpoint=other)
    assert enc(torch.randn(1, 3, 1, 64, 64)).shape == (1, 16, 192)
    # ...while another architecture's file is refused with the keys named, never partly loaded.
    wider = _save(_reference("vit_small_patch16_224", img_size=32), tmp_path / "vits.safetensors")
    with pytest.raises(encoders.CheckpointError, match="model.blocks"):
        encoders.from_config(_vit_cfg(), checkpoint=wider)


def test_random_init_builds_on_cpu():
    enc = encoders.from_config(_vit_cfg(), random_init=True, seed=3)
    assert enc(torch.randn(1, 3, 1, 32, 32)).shape == (1, 4, 192)
    assert not any(p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("name, prefix", [("eva02_tiny_patch14_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_computed_buffers_and_subclassed_vits(tmp_path, name, prefix):
    # EVA-02's RoPE tables are non-persistent buffers, in no checkpoint: a meta-built model would
    # keep them empty, so it is built on the CPU. The distilled DeiT takes img_size through **kwargs
    # and has two prefix tokens (cls + distillation).
    cfg = timm_config(f"timm:{name}")
    assert cfg["arch"]["num_prefix_tokens"] == prefix and "img_size" in cfg["arch"]
    size = 2 * cfg["arch"]["patch_size"]
    ref = _reference(name, img_size=size)
    enc = encoders.from_config(apply_overrides(cfg, img_size=size, resolution=size),
                               checkpoint=_save(ref, tmp_path / "w.safetensors"))
    assert not [n for n, b in enc.named_buffers() if b.is_meta]
    x = _images(2, size)
    with torch.no_grad():
        want = ref.forward_features(x)[:, prefix:]
    got = enc(x.unsqueeze(2))
    assert got.shape == (2, 4, 192) and (got - want).abs().max().item() <= 1e-6


def test_model_aware_filter_converts_a_release_layout_with_timms_filter(tmp_path):
    # The filter given the built model (what the loader can pass once it builds before filtering)
    # runs timm's own checkpoint_filter_fn: here DINOv2's original layout (register_tokens,
    # mask_token, pos_embed with a cls position) becomes timm's, exactly as timm would load it.
    ref = _reference("vit_small_patch14_reg4_dinov2", num_classes=0, img_size=28)
    timm_state = ref.state_dict()
    pos0 = 0.1 * torch.randn(1, 1, 384)
    release = {k: v for k, v in timm_state.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    release.update(register_tokens=timm_state["reg_token"], cls_token=timm_state["cls_token"] - pos0,
                   pos_embed=torch.cat([pos0, timm_state["pos_embed"]], dim=1), mask_token=torch.zeros(1, 384))
    cfg = apply_overrides(timm_config("timm:vit_small_patch14_reg4_dinov2"), img_size=28, resolution=28)
    backbone = encoders.timm_image.build_timm(cfg, device="meta")
    converted = checkpoint_filter(release, model=backbone)
    assert set(converted) == set(backbone.state_dict())
    assert all(torch.allclose(converted["model." + k], v, atol=1e-6) for k, v in timm_state.items())
    # Through the loader (which passes the built model) the original file loads, and the tokens
    # equal timm's on its own converted weights.
    from safetensors.torch import save_file

    save_file(release, str(tmp_path / "dinov2_release.safetensors"))
    enc = encoders.from_config(cfg, checkpoint=tmp_path / "dinov2_release.safetensors")
    x = _images(2, 28)
    with torch.no_grad():
        want = ref.forward_features(x)[:, cfg["arch"]["num_prefix_tokens"]:]
    assert (enc(x.unsqueeze(2)) - want).abs().max().item() <= 1e-5
