"""The V-JEPA 2.1 predictor as a registry object: parity with the authors' 2.1 predictor through a
release-layout file, the multi-layer context surprise asks for, the hub's defaults, and the
errors for a predictor of the other version.

The authors' numbers come from tests/fixtures/vjepa2_1/release.json (make_fixture.py beside it ran
their 2.1 predictor on `training=True` context, i.e. the encoder's last n hierarchical taps
concatenated, with its default mask token 1); weights and inputs are regenerated here by the
same seeded helpers.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import encoders
from encoders.errors import CheckpointError
from encoders.predictors import FAMILY_DEFAULTS, RopePredictor, build_predictor, predictor_summary
from encoders.surprise import SurpriseProtocol, encoder_tokens, load_models, surprise_curves
from encoders.vjepa2_1_predictor import VJEPA21Predictor

FIXTURES = Path(__file__).parent / "fixtures" / "vjepa2_1"
RELEASE = json.loads((FIXTURES / "release.json").read_text())
ENTRIES = ("vjepa2_1_vitb_384", "vjepa2_1_vitl_384", "vjepa2_1_vitg_384", "vjepa2_1_vitgigantic_384")
TOL = 1e-5


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_vjepa2_1_fixture", FIXTURES / "make_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _fixture_module()


def tiny(c: dict) -> dict:
    """Encoder overrides that shrink the ViT-B entry to a fixture config."""
    return dict(embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"], mlp_ratio=c["mlp_ratio"],
                patch_size=c["patch_size"], tubelet_size=c["tubelet_size"], resolution=c["img_size"],
                num_frames=c["num_frames"], arch={"interpolate_rope": c["interpolate_rope"]})


def wrap(state: dict) -> dict:
    return {f"module.backbone.{k}": v for k, v in state.items()}


def write_release_file(path: Path, c: dict) -> Path:
    """A 2.1 training file's layout: `encoder`, `target_encoder`, `predictor` (and the hub's
    `ema_encoder` key for the ViT-B entry)."""
    enc = wrap(FX.perturbed_state(c["keys"], c["weight_seed"]))
    torch.save({"encoder": enc, "ema_encoder": enc,
                "target_encoder": wrap(FX.perturbed_state(c["keys"], c["weight_seed"] + 1)),
                "predictor": wrap(FX.perturbed_state(c["predictor_keys"], c["weight_seed"] + 500)), "epoch": 7}, path)
    return path


def projection_diff(out: torch.Tensor, recorded: dict) -> float:
    got = FX.summarise(out)
    assert got["shape"] == recorded["shape"]
    return (torch.tensor(got["proj"], dtype=torch.float64)
            - torch.tensor(recorded["proj"], dtype=torch.float64)).abs().max().item()


# ----- parity with the authors' 2.1 predictor ---------------------------------------------------
@pytest.mark.parametrize("index", [0, 1])
def test_release_predictor_matches_the_authors(tmp_path, index):
    c = RELEASE["configs"][index]
    path = write_release_file(tmp_path / "v21.pt", c)
    pred = build_predictor("vjepa2_1_vitb_384", path, predictor_overrides={"num_heads": c["predictor"]["num_heads"]},
                           **tiny(c))
    n = c["n_output_distillation"]
    s = pred.spec
    assert (s.family, s.rope, s.num_inputs, s.depth, s.width, s.num_mask_tokens, s.mask_index) == (
        "vjepa2_1", True, n, c["predictor"]["depth"], c["predictor"]["width"], 8, 1)
    assert s.input_layers == tuple(c["hierarchical_layers"][-n:])
    # Config a reads four layers and predicts them (self-supervised); b is distilled (teacher 64 wide).
    assert s.target == ("latent" if c["teacher_embed_dim"] is None else "teacher")
    assert pred.checkpoint_info["epoch"] == 7 and pred.checkpoint_info["key"] == "predictor"
    enc = encoders.build("vjepa2_1_vitb_384", path, checkpoint_key="encoder", **tiny(c))
    case = c["cases"][FX.PREDICTOR_CASE]
    x = FX.make_input(case, case["input_seed"])
    mx, my = FX.predictor_masks(case["batch"], case["tokens"], case["input_seed"])
    with torch.no_grad():
        context = encoder_tokens(enc, x, mx, s.input_layers, normalize=False)  # what surprise passes
        assert context.shape[-1] == n * c["embed_dim"]
        out = pred.predict(context, mx, my, s.grid)  # the default mask token: 1, the release's
        assert projection_diff(out, case["predictor"]["pred"]) < TOL
        assert projection_diff(pred.predict(context, mx, my, s.grid, mask_index=0), case["predictor"]["pred"]) > 1e-3
        _, ctx_out = pred.module(context, mx, my)
        assert projection_diff(ctx_out, case["predictor"]["context"]) < TOL
        with pytest.raises(ValueError, match=rf"takes {n * c['embed_dim']}-wide tokens"):
            pred.predict(enc.backbone(x, masks=mx)[..., :7], mx, my, s.grid)


def test_positions_follow_the_input_grid():
    """RoPE is relative, so moving every token one frame later leaves the prediction unchanged
    only when indices are read on the input's grid (4 x 4 x 3 here); the release's nominal
    3 x 3 rows would move them by a frame and a third."""
    c = RELEASE["configs"][0]
    pred = build_predictor("vjepa2_1_vitb_384", random_init=True, seed=3,
                           predictor_overrides={"depth": 2, "width": 48, "num_heads": 4, "num_inputs": 4}, **tiny(c))
    grid = (4, 4, 3)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, 6, 4 * c["embed_dim"], generator=g)
    ctx = torch.tensor([[0, 2, 5, 7, 9, 11], [1, 3, 4, 6, 8, 10]])
    tgt = torch.tensor([[12, 14, 17], [13, 16, 23]])
    here = pred.predict(tokens, ctx, tgt, grid)
    later = pred.predict(tokens, ctx + 12, tgt + 12, grid)
    assert (here - later).abs().max() < 1e-5
    nominal = pred.module(tokens, ctx + 12, tgt + 12, mask_index=1)[0]  # rows of 3 on 1 x 3 x 3 frames
    assert (here - nominal).abs().max() > 1e-3


# ----- the hub's defaults -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ENTRIES)
def test_defaults_build_the_hubs_predictor(name):
    """FAMILY_DEFAULTS give each entry the predictor its hub builds (the fixture's key:shape
    listing and parameter count of the authors' model); the distilled ViT-B/L project to their
    1664-wide teacher, which a random init is told with out_dim."""
    rec = RELEASE["full_size"][name]
    teacher = rec["predictor"]["teacher_embed_dim"]
    with torch.device("meta"):
        pred = build_predictor(name, random_init=True, predictor_overrides={"out_dim": teacher} if teacher else None)
    s = pred.spec
    hub = (384, rec["predictor"]["depth"], 12, 8, 1)
    assert (s.width, s.depth, s.num_heads, s.num_mask_tokens, s.mask_index) == hub
    assert s.num_inputs == rec["n_output_distillation"]
    assert list(s.input_layers) == rec["hierarchical_layers"][-s.num_inputs:]
    assert s.target == ("teacher" if teacher else "latent")
    listing = {k: list(v.shape) for k, v in pred.module.state_dict().items()}
    assert FX.shape_listing_sha(listing) == rec["predictor"]["shape_listing_sha256"]
    assert sum(p.numel() for p in pred.module.parameters()) == rec["predictor"]["parameters"]


def test_listing_line_says_which_entries_have_a_predictor():
    assert "encoder blocks [9, 19, 29, 39] concatenated" in predictor_summary(encoders.compose("vjepa2_1_vitg_384"))
    assert "8 mask tokens, token 1" in predictor_summary(encoders.compose("vjepa2_1_vitb_384"))
    assert "10 mask tokens, token 0" in predictor_summary(encoders.compose("vjepa2_vitl"))
    assert predictor_summary(encoders.compose("videomaev2_vitb")).startswith("none")
    assert "VideoMAE decoder" in predictor_summary(encoders.compose("videomae_vits"))
    assert set(FAMILY_DEFAULTS) == {"vjepa", "ijepa", "vjepa2", "vjepa2_1"}


# ----- surprise with a 2.1 model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def v21_models(tmp_path_factory):
    c = RELEASE["configs"][0]
    path = write_release_file(tmp_path_factory.mktemp("v21") / "v21.pt", c)
    models, target = load_models("vjepa2_1_vitb_384", path, predictor_overrides={"num_heads": 4}, **tiny(c))
    assert target == "latent"
    return models


def test_surprise_runs_at_any_batch_size(v21_models):
    videos = torch.randn(2, 3, 8, 48, 48, generator=torch.Generator().manual_seed(11))
    prot = SurpriseProtocol(frames_per_window=4, stride=2, context_frames=(2,), frame_step=1)
    one = surprise_curves(v21_models, videos, prot, batch_size=1)
    three = surprise_curves(v21_models, videos, prot, batch_size=3)
    assert one.shape == three.shape == (2, 1, 3) and torch.isfinite(one).all()
    assert (one - three).abs().max() < 1e-5
    # Mask token 0 is another protocol, and it changes the numbers.
    assert (surprise_curves(v21_models, videos, dataclasses.replace(prot, mask_index=0), batch_size=3)
            - one).abs().max() > 1e-4


def test_surprise_predicts_the_target_encoders_layers_each_normed(v21_models):
    """One window by hand: context = the context encoder's four taps at the first frames,
    targets = the target encoder's four taps, each layer-normed alone (2.1's forward_target)."""
    m = v21_models
    clip = torch.randn(1, 3, 4, 48, 48, generator=torch.Generator().manual_seed(12))
    layers = list(m.predictor.spec.input_layers)
    assert len(layers) == 4
    ctx, tgt = torch.arange(9)[None], torch.arange(9, 18)[None]
    with torch.no_grad():
        z = torch.cat(m.context_encoder.backbone(clip, masks=ctx, out_layers=layers), dim=-1)
        taps = m.target_encoder.backbone(clip, out_layers=layers)
        h = torch.cat([F.layer_norm(t, (t.size(-1),)) for t in taps], dim=-1)
        p, _ = m.predictor.module(z, ctx, tgt, mask_index=1)
        want = (p - h[:, 9:]).abs().mean()
    prot = SurpriseProtocol(frames_per_window=4, stride=2, context_frames=(2,), frame_step=1)
    got = surprise_curves(m, clip, prot)[0, 0, 0]
    assert abs(float(got) - float(want)) < 1e-6
    raw = torch.cat(taps, dim=-1)
    whole = F.layer_norm(raw, (raw.size(-1),))  # one norm over the concatenation is not the release's
    assert abs(float(got) - float((p - whole[:, 9:]).abs().mean())) > 1e-4


def test_distilled_predictor_is_refused_for_surprise(tmp_path):
    c = RELEASE["configs"][1]  # distilled: 64-wide teacher outputs from an 80-wide encoder
    path = write_release_file(tmp_path / "dist.pt", c)
    with pytest.raises(CheckpointError, match="distilled.*64-wide features of the teacher"):
        load_models("vjepa2_1_vitb_384", path, predictor_overrides={"num_heads": 3}, **tiny(c))


# ----- a predictor of the other version -------------------------------------------------------
def _v21_state(embed_dim: int) -> dict:
    """A small 2.1-layout predictor (released layout: modality embeddings, context projection)."""
    torch.manual_seed(0)
    return VJEPA21Predictor(embed_dim=embed_dim, width=24, depth=1, num_heads=1, num_mask_tokens=8).state_dict()


def _v2_state(embed_dim: int) -> dict:
    torch.manual_seed(0)
    return RopePredictor(embed_dim, width=24, depth=1, num_heads=1, mlp_ratio=4.0, num_mask_tokens=10,
                         out_dim=embed_dim).state_dict()


@pytest.mark.parametrize("entry", ["vjepa2_vitl", "vjepa_vitl"])
def test_a_2_1_predictor_on_another_entry_names_the_2_1_entry(tmp_path, entry):
    torch.save({"predictor": wrap(_v21_state(1024))}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match=r"V-JEPA 2\.1 predictor .*--encoder vjepa2_1_vitl_384"):
        build_predictor(entry, tmp_path / "p.pt")


def test_a_vjepa2_predictor_on_a_2_1_entry_names_the_vjepa2_entry(tmp_path):
    # Its keys would load into a 2.1 module built without the optional parts: the keys decide.
    torch.save({"predictor": wrap(_v2_state(1024))}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match=r"V-JEPA 2 predictor; use --encoder vjepa2_vitl, not a V-JEPA 2\.1"):
        build_predictor("vjepa2_1_vitl_384", tmp_path / "p.pt")
    state = _v2_state(1024)
    state["predictor_pos_embed"] = torch.zeros(1, 8, 24)  # the V-JEPA release's table and 2 tokens
    for i in range(2, 10):
        del state[f"mask_tokens.{i}"]
    torch.save({"predictor": wrap(state)}, tmp_path / "v1.pt")
    with pytest.raises(CheckpointError, match=r"a V-JEPA predictor; use --encoder vjepa_vitl"):
        build_predictor("vjepa2_1_vitl_384", tmp_path / "v1.pt")


def test_protocol_mask_index():
    assert SurpriseProtocol().mask_index is None and SurpriseProtocol().to_dict()["mask_index"] is None
    with pytest.raises(ValueError, match="mask_index"):
        SurpriseProtocol(mask_index=-1)
    with pytest.raises(ValueError, match="num_inputs 1"):
        build_predictor("vjepa2_vitl", random_init=True, predictor_overrides={"num_inputs": 2})
    with pytest.raises(ValueError, match="1 to 4"):
        build_predictor("vjepa2_1_vitb_384", random_init=True, predictor_overrides={"num_inputs": 5, "depth": 1},
                        embed_dim=48, num_heads=4)
