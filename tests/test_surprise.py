"""The surprise evaluation: parity with the authors' `extract_losses`, batch independence, any
grid, protocol fields, pixel targets.

The authors' numbers come from tests/fixtures/predictors/predictors.json (see its README).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import encoders
from encoders.predictors import build_predictor
from encoders.surprise import (SurpriseModels, SurpriseProtocol, split_indices, surprise_curves, video_scores,
                               window_starts)

FIXTURES = Path(__file__).parent / "fixtures" / "predictors"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_predictors_fixture", FIXTURES / "make_predictors_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _fixture_module()
V1 = json.loads((FIXTURES / "predictors.json").read_text())["intphys"]


@pytest.fixture(scope="module")
def release_models(tmp_path_factory):
    """The fixture's release-layout checkpoint loaded as the authors' eval loads it: context
    encoder from `encoder`, targets from `target_encoder`, the predictor from `predictor`."""
    c = V1["config"]
    wrap = lambda s: {f"module.backbone.{k}": v for k, v in s.items()}  # noqa: E731
    path = tmp_path_factory.mktemp("ck") / "ck.pth.tar"
    torch.save({"encoder": wrap(FX.seeded_state(V1["encoder_keys"], c["weight_seed"] + 1)),
                "target_encoder": wrap(FX.seeded_state(V1["encoder_keys"], c["weight_seed"])),
                "predictor": wrap(FX.seeded_state(V1["predictor_keys"], c["weight_seed"] + 2)), "epoch": 3}, path)
    ov = dict(embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"], patch_size=c["patch_size"],
              tubelet_size=c["tubelet_size"], resolution=c["img_size"], num_frames=c["frames_per_clip"],
              uniform_power=c["uniform_power"])
    return SurpriseModels(context_encoder=encoders.build("vjepa_tiny", path, checkpoint_key="encoder", **ov),
                          predictor=build_predictor("vjepa_tiny", path, **ov),
                          target_encoder=encoders.build("vjepa_tiny", path, **ov))


def fixture_protocol() -> SurpriseProtocol:
    c = V1["config"]
    return SurpriseProtocol(frames_per_window=c["frames_per_clip"], stride=c["stride"],
                            context_frames=tuple(c["context_lengths"]), frame_step=1)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_equals_the_authors_extract_losses(release_models, batch_size):
    curves = surprise_curves(release_models, FX.make_pair(V1["config"]), fixture_protocol(), batch_size=batch_size)
    theirs = torch.tensor(V1["surprise"]["losses"], dtype=torch.float64)   # (videos, contexts, windows)
    assert curves.shape == theirs.shape == (2, 3, 3)
    assert (curves.double() - theirs).abs().max() < 1e-5


def test_the_pair_differs_only_after_the_divergence(release_models):
    """Windows that end before the clips diverge score the same; the others do not."""
    c = V1["config"]
    clip = FX.make_pair(c)
    prot = dataclasses.replace(fixture_protocol(), frames_per_window=4, context_frames=(2,))
    curves = surprise_curves(release_models, clip, prot, batch_size=4)
    starts = window_starts(clip.shape[2], prot)
    for j, s in enumerate(starts):
        same = torch.allclose(curves[0, 0, j], curves[1, 0, j])
        assert same == (s + prot.frames_per_window <= c["diverge_at"])


def _random_models(entry: str, **ov):
    enc = encoders.build(entry, random_init=True, seed=1, **ov)
    tgt = encoders.build(entry, random_init=True, seed=2, **ov)
    pred = build_predictor(entry, random_init=True, seed=3, predictor_overrides={"depth": 1, "width": 32,
                                                                                "num_heads": 4}, **ov)
    return SurpriseModels(enc, pred, tgt)


@pytest.mark.parametrize("entry,ov,shape", [
    ("vjepa_tiny", {}, (3, 3, 10, 32, 32)),
    ("vjepa_tiny", {}, (2, 3, 8, 16, 24)),          # another resolution, not square
    ("vjepa2_vitl", dict(embed_dim=48, depth=1, num_heads=4, patch_size=8, resolution=32), (2, 3, 10, 24, 40)),
])
def test_any_batch_size_gives_batch_one(entry, ov, shape):
    models = _random_models(entry, **ov)
    videos = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    prot = SurpriseProtocol(frames_per_window=6, stride=2, context_frames=(2, 4), frame_step=1)
    one = surprise_curves(models, videos, prot, batch_size=1)
    for bs in (2, 5, 64):
        assert (surprise_curves(models, videos, prot, batch_size=bs) - one).abs().max() < 1e-5
    assert one.shape == (shape[0], 2, len(window_starts(shape[2], prot)))


def test_l2_and_pixel_targets():
    models = _random_models("vjepa_tiny")
    videos = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(8))
    l1 = SurpriseProtocol(frames_per_window=8, context_frames=(4,))
    l2 = dataclasses.replace(l1, loss="l2")
    assert not torch.allclose(surprise_curves(models, videos, l1), surprise_curves(models, videos, l2))
    pix = build_predictor("vjepa_tiny", random_init=True, predictor_overrides={"depth": 1, "out_dim": 384})
    assert pix.spec.target == "pixels"
    px = SurpriseModels(models.context_encoder, pix)
    out = surprise_curves(px, videos, dataclasses.replace(l1, target="pixels"))
    assert out.shape == (1, 1, 1) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="does not match targets"):
        surprise_curves(SurpriseModels(models.context_encoder, pix, models.target_encoder), videos, l1)


def test_protocol_fields_and_checks():
    prot = SurpriseProtocol()
    d = prot.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(SurpriseProtocol)}
    assert d["context_frames"] == [2, 4, 6, 8, 10] and d["frames_per_window"] == 16 and d["stride"] == 2
    with pytest.raises(ValueError, match="leave nothing to predict"):
        SurpriseProtocol(frames_per_window=8, context_frames=(8,))
    with pytest.raises(ValueError, match="loss"):
        SurpriseProtocol(loss="l3")
    assert window_starts(12, SurpriseProtocol(frames_per_window=8, stride=2, context_frames=(4,))) == [0, 2, 4]
    with pytest.raises(ValueError, match="shorter than one"):
        window_starts(6, SurpriseProtocol(frames_per_window=8, context_frames=(4,)))
    ctx, tgt = split_indices((4, 2, 3), 4, 2)
    assert ctx.tolist() == list(range(12)) and tgt.tolist() == list(range(12, 24))
    with pytest.raises(ValueError, match="tubelet"):
        split_indices((4, 2, 3), 3, 2)


def test_video_scores_mean_max_and_filtered():
    curves = torch.tensor([[[1.0, 3.0, 2.0], [2.0, 1.0, 5.0]]])
    rows = video_scores(curves, SurpriseProtocol(frames_per_window=8, context_frames=(2, 4)))
    assert rows[0]["2"]["mean"] == pytest.approx(2.0) and rows[0]["2"]["max"] == 3.0
    assert rows[0]["min"]["windows"] == [1.0, 1.0, 2.0] and rows[0]["min"]["max"] == 2.0


def test_image_encoder_is_refused():
    enc = encoders.build("ijepa_tiny", random_init=True)
    pred = build_predictor("ijepa_tiny", random_init=True, predictor_overrides={"depth": 1})
    with pytest.raises(ValueError, match="image encoder"):
        surprise_curves(SurpriseModels(enc, pred, enc), torch.randn(1, 3, 4, 32, 32),
                        SurpriseProtocol(frames_per_window=4, context_frames=(2,)))


# ----- pixel surprise from a VideoMAE decoder ---------------------------------------------------
MAE = json.loads((FIXTURES / "predictors.json").read_text())["videomae"]
MAE_OV = dict(embed_dim=48, depth=2, num_heads=4, patch_size=8, tubelet_size=2, resolution=32, num_frames=16)


def write_mae_checkpoint(path: Path) -> Path:
    torch.save({"model": FX.seeded_state(MAE["keys"], MAE["config"]["weight_seed"])}, path)
    return path


@pytest.mark.parametrize("batch_size", [1, 2])
def test_videomae_pixel_surprise_equals_their_decoder(tmp_path, batch_size):
    from encoders.surprise import load_models
    from encoders.videomae_decoder import build_videomae_decoder

    path = write_mae_checkpoint(tmp_path / "mae.pth")
    c = MAE["config"]
    enc = encoders.build("videomae_vits", path, **MAE_OV)
    dec = build_videomae_decoder("videomae_vits", path, decoder_heads=c["decoder_heads"], **MAE_OV)
    assert (dec.spec.width, dec.spec.depth, dec.spec.out_dim) == (32, 2, 384)
    videos = torch.randn(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(c["clip_seed"]))
    prot = SurpriseProtocol(frames_per_window=16, context_frames=tuple(c["context_frames"]), target="pixels")
    curves = surprise_curves(SurpriseModels(enc, dec), videos, prot, batch_size=batch_size)
    theirs = torch.tensor([case["surprise"] for case in MAE["cases"]], dtype=torch.float64).T  # (videos, contexts)
    assert (curves[:, :, 0].double() - theirs).abs().max() < 1e-5
    # The decoder's own output, token by token, at context 4.
    ctx, tgt = split_indices((8, 4, 4), 4, 2)
    ctx_b, tgt_b = ctx.expand(2, -1), tgt.expand(2, -1)
    out = dec.predict(enc.backbone(videos, masks=ctx_b), ctx_b, tgt_b, (8, 4, 4))
    want = torch.tensor(MAE["cases"][0]["out"], dtype=torch.float64)
    assert (torch.tensor(FX.projected(out)) - want).abs().max() < 1e-5
    models, target = load_models("videomae_vits", path, **MAE_OV)
    assert target == "pixels" and models.target_encoder is None


def test_models_without_predictor_or_decoder_get_one_error(tmp_path):
    from encoders.errors import CheckpointError
    from encoders.surprise import load_models

    with pytest.raises(CheckpointError, match="neither a JEPA predictor nor a VideoMAE decoder.*frozen-probe"):
        load_models("ijepa_tiny", random_init=True)
    torch.save({"model": {k: v for k, v in FX.seeded_state(MAE["keys"], 1).items() if k.startswith("encoder.")}},
               tmp_path / "finetuned.pth")
    with pytest.raises(CheckpointError, match="holds no predictor.*frozen-probe evaluations .* only"):
        load_models("videomae_vits", tmp_path / "finetuned.pth", **MAE_OV)


def test_load_models_jepa_release_file(release_models, tmp_path):
    """`load_models` takes the context encoder from `encoder` and targets from `target_encoder`."""
    from encoders.surprise import load_models

    c = V1["config"]
    wrap = lambda s: {f"module.backbone.{k}": v for k, v in s.items()}  # noqa: E731
    path = tmp_path / "ck.pth.tar"
    torch.save({"encoder": wrap(FX.seeded_state(V1["encoder_keys"], c["weight_seed"] + 1)),
                "target_encoder": wrap(FX.seeded_state(V1["encoder_keys"], c["weight_seed"])),
                "predictor": wrap(FX.seeded_state(V1["predictor_keys"], c["weight_seed"] + 2)), "epoch": 3}, path)
    ov = dict(embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"], patch_size=c["patch_size"],
              tubelet_size=c["tubelet_size"], resolution=c["img_size"], num_frames=c["frames_per_clip"],
              uniform_power=c["uniform_power"])
    models, target = load_models("vjepa_tiny", path, **ov)
    assert target == "latent"
    curves = surprise_curves(models, FX.make_pair(c), fixture_protocol(), batch_size=2)
    assert (curves.double() - torch.tensor(V1["surprise"]["losses"], dtype=torch.float64)).abs().max() < 1e-5
