"""Encoder registry: configs, names, overrides, errors, seeded random init."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import encoders
from encoders import UnknownNameError

REPO = Path(__file__).resolve().parents[1]


def test_names_lists_the_yaml_stems():
    names = encoders.names()
    for name in ("vjepa_vitl", "vjepa_vith", "vjepa_vith384", "vjepa_tiny", "vjepa_small", "ijepa_tiny"):
        assert name in names
    assert names == sorted(p.stem for p in (REPO / "encoders/configs/encoder").glob("*.yaml"))


@pytest.mark.parametrize("name, arch", [
    ("vjepa_vitl", dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16, tubelet_size=2, num_frames=16, resolution=224)),
    ("vjepa_vith", dict(embed_dim=1280, depth=32, num_heads=16, patch_size=16, tubelet_size=2, num_frames=16, resolution=224)),
    ("vjepa_vith384", dict(embed_dim=1280, depth=32, num_heads=16, patch_size=16, tubelet_size=2, num_frames=16, resolution=384)),
    ("vjepa_tiny", dict(embed_dim=96, depth=4, num_heads=4, patch_size=8, tubelet_size=2, num_frames=8, resolution=32)),
    ("vjepa_small", dict(embed_dim=192, depth=6, num_heads=6, patch_size=8, tubelet_size=2, num_frames=16, resolution=64)),
    ("ijepa_tiny", dict(embed_dim=96, depth=4, num_heads=4, patch_size=8, tubelet_size=1, num_frames=1, resolution=32)),
])
def test_registered_architectures(name, arch):
    cfg = encoders.config(name)
    assert cfg["name"] == name
    assert {k: cfg["arch"][k] for k in arch} == arch
    assert cfg["checkpoint_key"] == "target_encoder"
    assert cfg["modality"] == ("image" if name.startswith("ijepa") else "video")
    spec = encoders.EncoderSpec.from_config(cfg)
    assert spec.embed_dim == arch["embed_dim"] and spec.num_heads == arch["num_heads"]


def test_vitl_spec_grid_and_tokens():
    spec = encoders.EncoderSpec.from_config(encoders.config("vjepa_vitl"))
    assert spec.grid == (8, 14, 14) and spec.num_tokens == 1568
    assert spec.uniform_power and spec.mean == (0.485, 0.456, 0.406)
    assert spec.num_tokens_for(2, 32) == 4
    d = spec.to_dict()
    assert d["grid"] == [8, 14, 14] and d["name"] == "vjepa_vitl"
    image = encoders.EncoderSpec.from_config(encoders.config("ijepa_tiny"))
    assert image.grid == (1, 4, 4) and image.grid_for(3, 32) == (3, 4, 4)


def test_listing_and_config_do_not_import_torch():
    code = ("import sys, encoders; encoders.names(); encoders.config('vjepa_vitl');"
            "encoders.compose('vjepa_tiny', num_frames=4);"
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as err:
        encoders.config("vjepa_vitL")
    assert isinstance(err.value, KeyError)
    assert "vjepa_vitl" in str(err.value) and "Did you mean" in str(err.value)
    assert "vjepa_vitl" in err.value.close
    with pytest.raises(UnknownNameError, match="vjepa_vith384"):
        encoders.build("vjepa_vih384", random_init=True)


def test_flat_and_nested_overrides_merge_into_arch():
    flat = encoders.compose("vjepa_tiny", num_frames=4, depth=2)
    nested = encoders.compose("vjepa_tiny", arch={"num_frames": 4, "depth": 2})
    assert flat == nested
    assert flat["arch"]["num_frames"] == 4 and flat["arch"]["embed_dim"] == 96
    assert encoders.config("vjepa_tiny")["arch"]["num_frames"] == 8  # the registry is untouched
    top = encoders.compose("vjepa_tiny", checkpoint_key="encoder", mean=[0.5, 0.5, 0.5])
    assert top["checkpoint_key"] == "encoder" and top["mean"] == [0.5, 0.5, 0.5]


def test_misspelled_override_is_an_error_naming_close_keys():
    with pytest.raises(ValueError, match="num_frames"):
        encoders.compose("vjepa_tiny", num_frame=4)


def test_inconsistent_arch_is_rejected_up_front():
    with pytest.raises(ValueError, match="tubelet_size"):
        encoders.compose("vjepa_tiny", num_frames=5)
    with pytest.raises(ValueError, match="patch_size"):
        encoders.compose("vjepa_tiny", resolution=36)
    with pytest.raises(ValueError, match="num_heads"):
        encoders.compose("vjepa_tiny", num_heads=5)


def test_no_weights_is_an_error_that_says_what_to_pass():
    with pytest.raises(ValueError) as err:
        encoders.build("vjepa_tiny")
    assert "--checkpoint PATH" in str(err.value) and "--random-init" in str(err.value)


def test_random_init_is_seeded_and_recorded():
    state = torch.random.get_rng_state()
    a = encoders.build("vjepa_tiny", random_init=True, depth=1, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG left alone
    b = encoders.build("vjepa_tiny", random_init=True, depth=1, seed=3)
    c = encoders.build("vjepa_tiny", random_init=True, depth=1, seed=4)
    wa, wb, wc = (m.backbone.blocks[0].attn.qkv.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.checkpoint_info["random_init"] is True and a.checkpoint_info["seed"] == 3
    default = encoders.build("vjepa_tiny", random_init=True, depth=1)
    assert default.checkpoint_info["seed"] == 0


def test_from_config_accepts_a_composed_dict():
    cfg = encoders.compose("vjepa_tiny", depth=1)
    enc = encoders.from_config(cfg, random_init=True)
    assert enc.spec.depth == 1 and len(enc.backbone.blocks) == 1


def test_from_config_accepts_omegaconf():
    from omegaconf import OmegaConf

    enc = encoders.from_config(OmegaConf.create(encoders.compose("vjepa_tiny", depth=1)), random_init=True)
    assert enc.spec.name == "vjepa_tiny"


def test_encoders_package_never_imports_higher_or_sibling_packages():
    import ast

    banned = {"tasks", "probes", "harness"}
    offenders = []
    for path in (REPO / "encoders").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}: {m}" for m in mods if m.split(".")[0] in banned]
    assert not offenders, offenders
