"""V-JEPA 2.1 encoders and predictors: parity with the authors' 2.1 code, the interleaved RoPE
layout against V-JEPA 2's code with its documented PR #15 change, full-size entries on meta,
layer taps, the image branch, and the errors for a file of the other version.

The authors' numbers come from tests/fixtures/vjepa2_1/{release,pr15}.json, written by
tests/fixtures/vjepa2_1/make_fixture.py (its README says how the reference trees were made);
weights and inputs are regenerated here by the same seeded helpers.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import encoders
from encoders.errors import CheckpointError
from encoders.families import signature
from encoders.hf import resolve_config
from encoders.vjepa2 import Rotary3D, VJEPA2VisionTransformer, checkpoint_filter as v2_filter, grid_positions
from encoders.vjepa2_1 import (VJEPA21VisionTransformer, build_vjepa2_1, checkpoint_filter as v21_filter,
                               rope_positions)
from encoders.vjepa2_1_predictor import VJEPA21Predictor, predictor_arch

FIXTURES = Path(__file__).parent / "fixtures" / "vjepa2_1"
ENTRIES = ("vjepa2_1_vitb_384", "vjepa2_1_vitl_384", "vjepa2_1_vitg_384", "vjepa2_1_vitgigantic_384")
TOL = 1e-5


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_vjepa2_1_fixture", FIXTURES / "make_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _fixture_module()


@pytest.fixture(scope="module")
def release():
    return json.loads((FIXTURES / "release.json").read_text())


@pytest.fixture(scope="module")
def pr15():
    return json.loads((FIXTURES / "pr15.json").read_text())


def tiny_cfg(c: dict, entry: str = "vjepa2_1_vitl_384") -> dict:
    """A registered entry shrunk to a fixture config (same builder, filter and checkpoint key)."""
    return encoders.compose(entry, embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                            mlp_ratio=c["mlp_ratio"], patch_size=c["patch_size"], tubelet_size=c["tubelet_size"],
                            resolution=c["img_size"], num_frames=c["num_frames"],
                            arch={"interpolate_rope": c["interpolate_rope"]})


def max_diff(ours: torch.Tensor, recorded: dict) -> float:
    got = FX.summarise(ours)
    assert got["shape"] == recorded["shape"]
    proj = torch.tensor(got["proj"], dtype=torch.float64)
    return (proj - torch.tensor(recorded["proj"], dtype=torch.float64)).abs().max().item()


def write_release_checkpoint(path: Path, c: dict, key: str) -> None:
    wrap = lambda state: {f"module.backbone.{k}": v for k, v in state.items()}  # noqa: E731
    torch.save({key: wrap(FX.perturbed_state(c["keys"], c["weight_seed"])),
                "predictor": wrap(FX.perturbed_state(c["predictor_keys"], c["weight_seed"] + 500)),
                "epoch": 3}, path)


# ----- the authors' 2.1 code, through a checkpoint in their layout ----------------------------
@pytest.mark.parametrize("index", [0, 1])
def test_release_checkpoint_matches_the_authors_outputs(release, tmp_path, index):
    c = release["configs"][index]
    path = tmp_path / "v21_tiny.pt"
    write_release_checkpoint(path, c, "ema_encoder")  # the ViT-L entry reads ema_encoder, as the hub
    enc = encoders.from_config(tiny_cfg(c), checkpoint=path)
    assert enc.checkpoint_info["key"] == "ema_encoder"
    ours = {k: list(v.shape) for k, v in enc.backbone.state_dict().items()}
    assert ours == dict((k, s) for k, s in c["keys"])  # the release's names and shapes, nothing else
    assert list(enc.backbone.hierarchical_layers) == c["hierarchical_layers"]
    n_out = c["n_output_distillation"]
    worst = 0.0
    for case in c["cases"]:
        x = FX.make_input(case, case["input_seed"])
        mask = FX.make_mask(case, case["tokens"], case["input_seed"])
        with torch.no_grad():
            worst = max(worst, max_diff(enc(x), case["final"]))
            worst = max(worst, max_diff(enc.backbone(x, masks=mask), case["masked"]))
            taps = enc(x, out_layers=c["hierarchical_layers"])
            for tap, rec in zip(taps, case["taps"], strict=True):
                worst = max(worst, max_diff(tap, rec))
            hier = torch.cat(taps[-n_out:], dim=-1)  # the release's training=True output
            worst = max(worst, max_diff(hier, case["hier"]))
    assert worst < TOL, worst


@pytest.mark.parametrize("index", [0, 1])
def test_predictor_matches_the_authors_outputs(release, index):
    c = release["configs"][index]
    enc = VJEPA21VisionTransformer(img_size=c["img_size"], patch_size=c["patch_size"], num_frames=c["num_frames"],
                                   tubelet_size=c["tubelet_size"], embed_dim=c["embed_dim"], depth=c["depth"],
                                   num_heads=c["num_heads"], mlp_ratio=c["mlp_ratio"],
                                   interpolate_rope=c["interpolate_rope"])
    enc.load_state_dict(FX.perturbed_state(c["keys"], c["weight_seed"]), strict=True)
    pstate = FX.perturbed_state(c["predictor_keys"], c["weight_seed"] + 500)
    arch = predictor_arch(pstate)
    assert arch["num_inputs"] == c["n_output_distillation"] and arch["depth"] == c["predictor"]["depth"]
    pred = VJEPA21Predictor(**arch, num_heads=c["predictor"]["num_heads"], grid_size=c["img_size"] // c["patch_size"])
    assert {k: list(v.shape) for k, v in pred.state_dict().items()} == dict((k, s) for k, s in c["predictor_keys"])
    pred.load_state_dict(pstate, strict=True)
    case = c["cases"][FX.PREDICTOR_CASE]
    x = FX.make_input(case, case["input_seed"])
    mx, my = FX.predictor_masks(case["batch"], case["tokens"], case["input_seed"])
    with torch.no_grad():
        taps = enc(x, masks=mx, out_layers=list(enc.hierarchical_layers[-arch["num_inputs"]:]))
        p_out, c_out = pred(torch.cat(taps, dim=-1), mx, my)
    assert max_diff(p_out, case["predictor"]["pred"]) < TOL
    assert max_diff(c_out, case["predictor"]["context"]) < TOL


def _listing_sha(module: torch.nn.Module) -> str:
    return FX.shape_listing_sha({k: list(v.shape) for k, v in module.state_dict().items()})


@pytest.mark.parametrize("name", ENTRIES)
def test_full_size_entries_on_meta(release, name):
    rec = release["full_size"][name]
    cfg = encoders.compose(name)
    model = build_vjepa2_1(cfg, device="meta")
    assert _listing_sha(model) == rec["shape_listing_sha256"]
    assert sum(p.numel() for p in model.parameters()) == rec["parameters"]
    assert list(model.hierarchical_layers) == rec["hierarchical_layers"]
    assert cfg["checkpoint_key"] == rec["checkpoint_key"] and cfg["arch"]["resolution"] == 384
    # The hub's predictor of this entry, with the sizes predictor_arch reads off its listing.
    n, teacher, d = rec["n_output_distillation"], rec["predictor"]["teacher_embed_dim"], cfg["arch"]["embed_dim"]
    pred = VJEPA21Predictor(embed_dim=d, num_inputs=n, width=384, depth=rec["predictor"]["depth"], num_heads=12,
                            num_mask_tokens=8, out_dim=teacher or n * d, device="meta")
    assert _listing_sha(pred) == rec["predictor"]["shape_listing_sha256"]
    assert sum(p.numel() for p in pred.parameters()) == rec["predictor"]["parameters"]
    assert predictor_arch(pred.state_dict())["num_inputs"] == n


# ----- the interleaved layout against V-JEPA 2's code with PR #15's documented change ----------
@pytest.mark.parametrize("index", [0, 1])
def test_interleaved_layout_matches_vjepa2_with_the_pr15_change(pr15, index):
    c = pr15["configs"][index]
    kw = dict(img_size=c["img_size"], patch_size=c["patch_size"], num_frames=c["num_frames"], tubelet_size=2,
              embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"], mlp_ratio=c["mlp_ratio"])
    fixed = VJEPA2VisionTransformer(**kw, rope_interleave=True)
    kept = VJEPA2VisionTransformer(**kw)  # the default: V-JEPA 2's released layout
    state = FX.perturbed_state(c["keys"], c["weight_seed"])
    fixed.load_state_dict(state, strict=True)
    kept.load_state_dict(state, strict=True)
    for case in c["cases"]:
        x = FX.make_input(case, case["input_seed"])
        mask = FX.make_mask(case, case["tokens"], case["input_seed"])
        with torch.no_grad():
            assert max_diff(fixed(x), case["final"]) < TOL
            assert max_diff(fixed(x, masks=mask), case["masked"]) < TOL
            assert max_diff(kept(x), case["final"]) > 1e-3  # the fixture tells the two layouts apart


def test_interleaved_rotation_keeps_each_pair_on_one_angle():
    """Interleaved: channels (2i, 2i+1) turn by one angle, so each pair's norm is kept; the
    default (V-JEPA 2) layout gives a pair two angles, which does not keep it."""
    pos = grid_positions((2, 3, 3))
    x = torch.randn(1, 2, 18, 12, generator=torch.Generator().manual_seed(0))
    pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731
    inter = Rotary3D(pos, 4, interleave=True).rotate(x)
    torch.testing.assert_close(pair_norm(inter), pair_norm(x))
    old = Rotary3D(pos, 4).rotate(x)
    assert not torch.allclose(pair_norm(old), pair_norm(x), atol=1e-4)
    # the default table is the release's repeat: channel c of a block uses frequency c mod s/2
    cos, _ = Rotary3D(pos, 4).tables(torch.float32)[2]
    omega = 1.0 / 10000 ** (torch.arange(2) / 2.0)
    torch.testing.assert_close(cos, torch.cos(pos[2].float().unsqueeze(-1) * omega.repeat(2)))


def test_rope_positions_interpolate_rows_and_columns():
    f, r, c = rope_positions((2, 24, 24), None, "cpu", 16)
    assert r.max().item() == pytest.approx(15.0) and c.max().item() == pytest.approx(15.0)
    assert f.max().item() == 1.0  # frames are not rescaled
    assert r[24].item() == pytest.approx(15 / 23)
    with pytest.raises(ValueError, match="at least 2 patches"):
        rope_positions((1, 1, 4), None, "cpu", 16)


# ----- taps, image branch, builder ------------------------------------------------------------
def _tiny(**kw) -> VJEPA21VisionTransformer:
    torch.manual_seed(0)
    return VJEPA21VisionTransformer(img_size=48, patch_size=16, num_frames=4, embed_dim=48, depth=12,
                                    num_heads=4, **kw).eval()


def test_layer_taps_are_the_hierarchical_layers():
    m = _tiny()
    x = torch.randn(1, 3, 4, 48, 48)
    with torch.no_grad():
        a, b = m(x, out_layers=[-1, 2])
        torch.testing.assert_close(a, m(x))  # the last tap is the output
        assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"hierarchical layers \[2, 5, 8, 11\]"):
        m(x, out_layers=[3])
    with pytest.raises(ValueError, match="out of range"):
        m(x, out_layers=[12])


def test_one_frame_goes_through_the_image_branch():
    m = _tiny()
    x = torch.randn(2, 3, 1, 48, 64)
    with torch.no_grad():
        out = m(x)
        assert out.shape == (2, 12, 48)
        m.patch_embed_img.proj.weight.mul_(2)  # the image patch embedding is the one used
        assert not torch.allclose(out, m(x))
    no_img = _tiny(image_patch_embed=False)
    assert "patch_embed_img.proj.weight" not in no_img.state_dict()
    with pytest.raises(ValueError, match="tubelet size 2"):
        no_img(x)


def test_builder_refuses_settings_it_does_not_use():
    cfg = encoders.compose("vjepa2_1_vitb_384")
    with pytest.raises(ValueError, match="does not use final_norm"):
        build_vjepa2_1({**cfg, "arch": {**cfg["arch"], "final_norm": False}}, device="meta")
    with pytest.raises(ValueError, match="patch sizes"):
        build_vjepa2_1({**cfg, "arch": {**cfg["arch"], "patch_size": 8}}, device="meta")
    with pytest.raises(ValueError, match="depths"):
        build_vjepa2_1({**cfg, "arch": {**cfg["arch"], "depth": 10}}, device="meta")


def test_random_init_is_seeded_and_real():
    cfg = encoders.compose("vjepa2_1_vitb_384", embed_dim=48, depth=12, num_heads=4, resolution=48, num_frames=4)
    a = encoders.from_config(cfg, random_init=True, seed=3)
    b = encoders.from_config(cfg, random_init=True, seed=3)
    torch.testing.assert_close(a.backbone.video_mod_embed, b.backbone.video_mod_embed)
    assert 0 < a.backbone.video_mod_embed.abs().max().item() < 1e-4  # N(0, 1e-6), as the release
    out = a(torch.randn(1, 3, 4, 48, 48))
    assert out.shape == (1, 18, 48) and torch.isfinite(out).all()


def test_entries_are_listed():
    assert set(ENTRIES) <= set(encoders.names())
    for name in ENTRIES:
        assert encoders.config(name)["family"] == "vjepa2_1"
    # no two entries differ only in case (they would collide on macOS and Windows file systems)
    lowered = [n.lower() for n in encoders.names()]
    assert len(lowered) == len(set(lowered))


# ----- a file of the other version ------------------------------------------------------------
def _v2_state(width: int = 1024) -> dict:
    return {"patch_embed.proj.weight": torch.zeros(width, 3, 2, 16, 16), "norm.weight": torch.ones(width),
            "norm.bias": torch.zeros(width), "blocks.0.norm1.weight": torch.ones(width)}


def _v21_state(width: int = 1024) -> dict:
    return {"patch_embed.proj.weight": torch.zeros(width, 3, 2, 16, 16), "video_mod_embed": torch.zeros(1, 1, width),
            "norms_block.0.weight": torch.ones(width), "blocks.0.norm1.weight": torch.ones(width)}


def test_a_vjepa2_file_given_to_a_2_1_entry_names_the_entry():
    with pytest.raises(CheckpointError, match="V-JEPA 2 encoder.*--encoder vjepa2_vitl,"):
        v21_filter(_v2_state(1024))
    with pytest.raises(CheckpointError, match="--encoder vjepa2_vitg or vjepa2_vitg384"):
        v21_filter(_v2_state(1408))
    assert signature(_v2_state())["family"] == "vjepa2"


def test_a_2_1_file_given_to_a_vjepa2_entry_names_the_entry():
    with pytest.raises(CheckpointError, match="V-JEPA 2.1 encoder.*--encoder vjepa2_1_vitl_384,"):
        v2_filter(_v21_state(1024))
    with pytest.raises(CheckpointError, match="--encoder vjepa2_1_vitgigantic_384"):
        v2_filter(_v21_state(1664))
    assert signature(_v21_state())["family"] == "vjepa2_1"


def test_wrong_version_through_the_loader(release, tmp_path):
    """End to end: a tiny 2.1 file given to a V-JEPA 2 entry is refused before any weight is used."""
    c = release["configs"][0]
    path = tmp_path / "v21_tiny.pt"
    write_release_checkpoint(path, c, "target_encoder")
    cfg = encoders.compose("vjepa2_vitl", embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                           patch_size=16, resolution=48, num_frames=4)
    with pytest.raises(CheckpointError, match="V-JEPA 2.1 encoder"):
        encoders.from_config(cfg, checkpoint=path)


def _hf_folder(path: Path, **extra) -> Path:
    path.mkdir()
    cfg = {"model_type": "vjepa2", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
           "mlp_ratio": 4.0, "patch_size": 16, "tubelet_size": 2, "crop_size": 384, **extra}
    (path / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import save_file

    save_file({"encoder.layernorm.weight": torch.ones(4)}, str(path / "model.safetensors"))
    return path


def test_hugging_face_folders_are_told_apart_by_use_rope_interleave(tmp_path):
    v21 = _hf_folder(tmp_path / "v21", use_rope_interleave=True, use_modality_embeddings=True, interpolate_rope=True)
    with pytest.raises(CheckpointError, match="vjepa2_1 folder.*use --encoder vjepa2_1_vitl_384"):
        resolve_config(encoders.compose("vjepa2_vitl"), v21)
    v2 = _hf_folder(tmp_path / "v2", crop_size=256)
    with pytest.raises(CheckpointError, match="vjepa2 folder.*use --encoder vjepa2_vitl"):
        resolve_config(encoders.compose("vjepa2_1_vitl_384"), v2)
    # a 2.1 folder is accepted by a 2.1 entry's config resolution; its weights are refused by the filter
    assert resolve_config(encoders.compose("vjepa2_1_vitl_384"), v21)["arch"]["embed_dim"] == 1024
    with pytest.raises(CheckpointError, match="Hugging Face VJEPA2Model layout.*PR #45497"):
        v21_filter({"encoder.layer.0.attention.query.weight": torch.zeros(2, 2)})

