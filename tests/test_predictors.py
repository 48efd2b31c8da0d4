"""Predictors as registry objects: parity with the authors' predictors, loading, key checks, hints.

The authors' numbers come from tests/fixtures/predictors/predictors.json (written by
tests/fixtures/predictors/make_predictors_fixture.py, which ran their code on the weights and
inputs its seeded helpers regenerate here; see the README beside it).
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
from pathlib import Path

import pytest
import torch

from encoders.errors import CheckpointError
from encoders.jepa.predictor import Predictor
from encoders.predictors import FrozenPredictor, build_predictor

FIXTURES = Path(__file__).parent / "fixtures" / "predictors"
TOL = 1e-5


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_predictors_fixture", FIXTURES / "make_predictors_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _fixture_module()
DATA = json.loads((FIXTURES / "predictors.json").read_text())
V1, V2 = DATA["intphys"], DATA["vjepa2"]


def wrap(state: dict) -> dict:
    return {f"module.backbone.{k}": v for k, v in state.items()}


def v1_overrides() -> dict:
    c = V1["config"]
    return dict(embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"], patch_size=c["patch_size"],
                tubelet_size=c["tubelet_size"], resolution=c["img_size"], num_frames=c["frames_per_clip"],
                uniform_power=c["uniform_power"])


def v2_overrides() -> dict:
    c = V2["config"]
    return dict(embed_dim=c["embed_dim"], depth=2, num_heads=4, patch_size=c["patch_size"],
                tubelet_size=c["tubelet_size"], resolution=c["img_size"], num_frames=c["num_frames"])


def write_v1_checkpoint(path: Path) -> Path:
    """A V-JEPA release-layout file with the fixture's seeded weights (as the generator wrote it)."""
    c = V1["config"]
    torch.save({"encoder": wrap(FX.seeded_state(V1["encoder_keys"], c["weight_seed"] + 1)),
                "target_encoder": wrap(FX.seeded_state(V1["encoder_keys"], c["weight_seed"])),
                "predictor": wrap(FX.seeded_state(V1["predictor_keys"], c["weight_seed"] + 2)), "epoch": 3}, path)
    return path


def v2_state(with_table: bool = True) -> dict:
    state = FX.seeded_state(V2["keys"], V2["config"]["weight_seed"])
    if with_table:  # the release's files carry one, which its hub loader ignores
        state["predictor_pos_embed"] = torch.zeros(1, 64, V2["config"]["width"])
    return state


def write_v2_checkpoint(path: Path, **extra) -> Path:
    torch.save({"predictor": wrap(v2_state()), "epoch": 5, **extra}, path)
    return path


def max_diff(out: torch.Tensor, recorded) -> float:
    return (torch.tensor(FX.projected(out)) - torch.tensor(recorded)).abs().max().item()


# ----- parity ---------------------------------------------------------------------------------
def test_vjepa_release_predictor_matches_the_authors(tmp_path):
    pred = build_predictor("vjepa_tiny", write_v1_checkpoint(tmp_path / "ck.pth.tar"), **v1_overrides())
    assert isinstance(pred, FrozenPredictor)
    c, d = V1["config"], V1["predictor_direct"]
    assert (pred.spec.width, pred.spec.depth, pred.spec.num_heads, pred.spec.num_mask_tokens) == (
        c["pred_width"], c["pred_depth"], c["num_heads"], c["num_mask_tokens"])
    assert pred.checkpoint_info["epoch"] == 3 and len(pred.checkpoint_info["sha256"]) == 64
    grid = pred.spec.grid
    tokens = FX.make_tokens(2, d["keep"], c["embed_dim"], d["tokens_seed"])
    ctx, tgt = FX.index_sets(grid[0] * grid[1] * grid[2], d["keep"], 2, d["index_seed"])
    assert max_diff(pred.predict(tokens, ctx, tgt, grid), d["out"]) < TOL


@pytest.mark.parametrize("case", range(3))
def test_vjepa2_predictor_matches_the_authors(tmp_path, case):
    pred = build_predictor("vjepa2_vitl", write_v2_checkpoint(tmp_path / "v2.pt"),
                           predictor_overrides={"num_heads": V2["config"]["num_heads"]}, **v2_overrides())
    assert pred.spec.rope and pred.spec.num_mask_tokens == 10
    rec = V2["cases"][case]
    tokens = FX.make_tokens(2, rec["keep"], V2["config"]["embed_dim"], rec["tokens_seed"])
    if rec["index_seed"] is None:
        every = torch.arange(64)
        ctx, tgt = every[:rec["keep"]].expand(2, -1), every[rec["keep"]:].expand(2, -1)
    else:
        ctx, tgt = FX.index_sets(64, rec["keep"], 2, rec["index_seed"])
    out = pred.predict(tokens, ctx, tgt, pred.spec.grid, mask_index=rec["mask_index"])
    assert max_diff(out, rec["out"]) < TOL
    # A wrong mask token changes the answer (the index is honoured, not ignored).
    other = pred.predict(tokens, ctx, tgt, pred.spec.grid, mask_index=rec["mask_index"] + 1)
    assert max_diff(other, rec["out"]) > 1e-3


def test_batch_rows_are_independent(tmp_path):
    pred = build_predictor("vjepa_tiny", write_v1_checkpoint(tmp_path / "ck.pth.tar"), **v1_overrides())
    grid = pred.spec.grid
    tokens = FX.make_tokens(3, 50, 48, 5)
    ctx, tgt = FX.index_sets(grid[0] * grid[1] * grid[2], 50, 3, 6)
    full = pred.predict(tokens, ctx, tgt, grid)
    for i in range(3):
        one = pred.predict(tokens[i:i + 1], ctx[i:i + 1], tgt[i:i + 1], grid)
        assert (one[0] - full[i]).abs().max() < 1e-6


# ----- harness pretrain outputs -----------------------------------------------------------------
def test_harness_pretrain_file_states_its_heads(tmp_path):
    """A `latest.pth.tar` of `harness pretrain` (release layout) with a predictor of 2 heads (not
    the encoder's 4): the loader takes the count from the file's saved config."""
    torch.manual_seed(3)
    module = Predictor((4, 4, 4), 96, width=32, depth=2, num_heads=2, num_mask_tokens=2, uniform_power=True)
    torch.save({"encoder": {}, "predictor": wrap(module.state_dict()), "epoch": 1,
                "config": {"predictor": {"num_heads": 2, "width": 32}, "target": "latent"}},
               tmp_path / "latest.pth.tar")
    pred = build_predictor("vjepa_tiny", tmp_path / "latest.pth.tar")
    assert pred.spec.num_heads == 2 and pred.spec.grid == (4, 4, 4)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 16, 96, generator=g)
    ctx = torch.arange(16).expand(2, -1)
    tgt = torch.arange(16, 64).expand(2, -1)
    assert (pred.predict(tokens, ctx, tgt, (4, 4, 4)) - module(tokens, ctx, tgt)).abs().max() < 1e-6


def test_pixel_target_predictor_is_recognised(tmp_path):
    module = Predictor((4, 4, 4), 96, width=32, depth=1, num_heads=2, num_mask_tokens=1, out_dim=2 * 8 * 8 * 3)
    torch.save({"predictor": module.state_dict(), "config": {"predictor": {"num_heads": 2}}}, tmp_path / "px.pt")
    pred = build_predictor("vjepa_tiny", tmp_path / "px.pt")
    assert pred.spec.target == "pixels" and pred.spec.out_dim == 384


def test_other_grid_resamples_the_table(tmp_path):
    pred = build_predictor("vjepa_tiny", random_init=True, predictor_overrides={"depth": 1, "width": 32})
    tokens = torch.randn(1, 2 * 16, 96)
    out = pred.predict(tokens, torch.arange(32)[None], torch.arange(32, 6 * 16)[None], (6, 4, 4))
    assert out.shape == (1, 64, 96) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="outside"):
        pred.predict(tokens, torch.arange(32)[None], torch.arange(32, 200)[None], (6, 4, 4))


def test_random_init_is_seeded():
    a = build_predictor("vjepa_tiny", random_init=True, seed=4, predictor_overrides={"depth": 1})
    b = build_predictor("vjepa_tiny", random_init=True, seed=4, predictor_overrides={"depth": 1})
    c = build_predictor("vjepa_tiny", random_init=True, seed=5, predictor_overrides={"depth": 1})
    w = "module.predictor_embed.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w]) and not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert a.checkpoint_info["random_init"] and a.spec.num_heads == 4  # the encoder's, as the release ties them


# ----- errors ---------------------------------------------------------------------------------
def test_key_errors_name_the_keys(tmp_path):
    state = wrap(FX.seeded_state(V1["predictor_keys"], 1))
    del state["module.backbone.predictor_norm.bias"]
    state["module.backbone.extra.weight"] = torch.zeros(3)
    state["module.backbone.predictor_proj.bias"] = torch.zeros(7)
    torch.save({"predictor": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        build_predictor("vjepa_tiny", tmp_path / "bad.pt", **v1_overrides())
    msg = str(err.value)
    assert "missing keys: predictor_norm.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "predictor_proj.bias: checkpoint (7,) vs model (48,)" in msg


def test_rope_predictor_given_to_a_vjepa_entry_hints_vjepa2(tmp_path):
    torch.save({"predictor": wrap(v2_state(with_table=False))}, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match=r"vjepa2_\*"):
        build_predictor("vjepa_tiny", tmp_path / "v2.pt", **{**v1_overrides(), "patch_size": 4, "resolution": 16})


def test_vjepa_predictor_given_to_a_vjepa2_entry_hints_vjepa(tmp_path):
    torch.save({"predictor": wrap(FX.seeded_state(V1["predictor_keys"], 1))}, tmp_path / "v1.pt")
    with pytest.raises(CheckpointError, match=r"vjepa_\*"):
        build_predictor("vjepa2_vitl", tmp_path / "v1.pt", predictor_overrides={"num_heads": 4},
                        **{**v2_overrides(), "patch_size": 32, "resolution": 224})


def test_width_mismatch_names_entries(tmp_path):
    module = Predictor((8, 14, 14), 1024, width=16, depth=1, num_heads=2, num_mask_tokens=2)
    torch.save({"predictor": module.state_dict()}, tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match="1024-wide.*vjepa_vitl"):
        build_predictor("vjepa_tiny", tmp_path / "l.pt")


def test_file_without_predictor_says_what_it_supports(tmp_path):
    torch.save({"target_encoder": {"blocks.0.norm1.weight": torch.ones(4)}, "epoch": 1}, tmp_path / "enc.pt")
    with pytest.raises(CheckpointError, match="holds no predictor.*frozen-probe evaluations .* only"):
        build_predictor("vjepa_tiny", tmp_path / "enc.pt")
    torch.save({"model": {"encoder.blocks.0.norm1.weight": torch.ones(4), "decoder.blocks.0.norm1.weight":
                          torch.ones(4), "encoder_to_decoder.weight": torch.ones(2, 4), "mask_token": torch.zeros(1)}},
               tmp_path / "mae.pth")
    with pytest.raises(CheckpointError, match="pixel surprise from its VideoMAE decoder"):
        build_predictor("vjepa_tiny", tmp_path / "mae.pth")
    with pytest.raises(CheckpointError, match="has no JEPA predictor"):
        build_predictor("videomae_vits", tmp_path / "mae.pth")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"predictor": {"predictor_embed.weight": torch.zeros(2, 2)}, "where": pathlib.PurePosixPath("/x")},
               tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="trust-checkpoint"):
        build_predictor("vjepa_tiny", tmp_path / "p.pt")


def test_unknown_predictor_setting():
    with pytest.raises(ValueError, match="Did you mean: depth"):
        build_predictor("vjepa_tiny", random_init=True, predictor_overrides={"detph": 2})
