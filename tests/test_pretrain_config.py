"""Pretraining configs through Hydra: the group `pretrain` over defaults.yaml, `key=value`
overrides, configs given by path, and checks up front (unknown keys, types, ranges)."""
import sys

import pytest

from encoders.jepa import (
    DEFAULTS_PATH,
    GROUP_DIR,
    PretrainConfigError,
    defaults,
    load_config,
    names,
    resolve,
)
from harness.pretrain_config import compose_pretrain_config


def test_recipes_are_the_group_and_compose_as_resolve_fills_them():
    assert names() == ["ijepa_tiny", "vjepa_tiny", "vjepa_tiny_pixels", "vjepa_vitl"]
    assert DEFAULTS_PATH.is_file() and GROUP_DIR.is_dir()
    keys = list(defaults())
    for name in names():
        composed = compose_pretrain_config(name)
        assert composed == resolve(load_config(name)) and composed["name"] == name
        assert list(composed) == keys  # every key, in the defaults' order
    assert compose_pretrain_config(None) == compose_pretrain_config("vjepa_tiny")
    # a recipe leaves the keys it does not name at their defaults
    assert compose_pretrain_config("vjepa_vitl")["data"]["backend"] == defaults()["data"]["backend"]


def test_overrides_use_hydra_grammar():
    cfg = compose_pretrain_config("vjepa_tiny", [
        "optim.total_steps=7", "+seed=5", "encoder_overrides.depth=1", "optim.ema=[0.9,1.0]",
        "data.manifests=[a/b.csv,c.csv]", "optim.clip_grad=null", "data.root=2024",
        "predictor={width: 32, depth: 1}"])
    assert cfg["optim"]["total_steps"] == 7 and cfg["seed"] == 5
    assert cfg["encoder_overrides"] == {"depth": 1}  # free-form: any arch key of the encoder
    assert cfg["optim"]["ema"] == [0.9, 1.0] and cfg["data"]["manifests"] == ["a/b.csv", "c.csv"]
    assert cfg["optim"]["clip_grad"] is None and cfg["data"]["root"] == "2024"
    # a mapping merges into the recipe's (num_heads 4 stays), as a dotted key would
    assert cfg["predictor"] == {"width": 32, "depth": 1, "num_heads": 4, "mlp_ratio": 4.0,
                                "zero_init_mask_tokens": True}
    # ~key drops the recipe's value: the default comes back
    assert compose_pretrain_config("vjepa_tiny", ["~mask_size_stream"])["mask_size_stream"] == "shared"
    # pretrain=NAME selects the recipe, as --config does; both at once must agree
    assert compose_pretrain_config(None, ["pretrain=ijepa_tiny"])["modality"] == "image"
    assert compose_pretrain_config("ijepa_tiny", ["pretrain=ijepa_tiny"])["name"] == "ijepa_tiny"
    with pytest.raises(PretrainConfigError, match="give one"):
        compose_pretrain_config("vjepa_tiny", ["pretrain=ijepa_tiny"])


def test_a_config_given_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nencoder: vjepa_tiny\noptim: {lr: 1.0e-4}\n"
                    "masks:\n  - {type: multiblock3d, num_blocks: 2, spatial_scale: [0.7, 0.7]}\n")
    cfg = compose_pretrain_config(str(path), ["optim.total_steps=3"])
    assert cfg["name"] == "mine" and cfg["optim"]["lr"] == 1e-4 and cfg["optim"]["total_steps"] == 3
    assert cfg["predictor"] == defaults()["predictor"]  # the rest from defaults.yaml
    assert cfg == resolve(dict(load_config(path), optim={"lr": 1e-4, "total_steps": 3}))
    typo = tmp_path / "typo.yaml"
    typo.write_text(path.read_text() + "optimm: {lr: 1}\n")
    with pytest.raises(PretrainConfigError, match="unknown key optimm. Did you mean: optim"):
        compose_pretrain_config(str(typo))
    with pytest.raises(PretrainConfigError, match="not found"):
        compose_pretrain_config(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("override, message", [
    ("optim.total_step=7", "unknown key optim.total_step. Did you mean: total_steps"),
    ("optimm.lr=1", "unknown key optimm. Did you mean: optim"),
    ("optim.lr=fast", "optim.lr='fast': expected a number"),
    ("optim.warmup_steps=1.5", "expected an integer, got a number with a fraction"),
    ("augmentation.horizontal_flip=1", "expected true or false"),
    ("data.batch_size=0", r"data.batch_size=0 is out of range: expected 1 <= batch_size"),
    ("data.max_failure_fraction=2", "out of range"),
    ("optim.lr=-1e-3", "out of range"),
    ("target=pixel", "target must be one of latent, pixels, got 'pixel' \\(did you mean pixels\\?\\)"),
    ("optim.dtype=bf16", "optim.dtype must be one of"),
    ("predictor=null", "predictor may not be null \\(a mapping of width"),
    ("predictor.num_heads=decoder", "predictor.num_heads must be a positive integer or 'encoder'"),
    ("optim.ema=[0.9]", "optim.ema must be \\[start, end\\]"),
    ("masks=[]", "masks"),
    ("optim.epochs=[1", "could not compose"),
    ("seed", "key=value"),
])
def test_bad_values_fail_up_front_with_what_to_change(override, message):
    with pytest.raises(PretrainConfigError, match=message):
        compose_pretrain_config("vjepa_tiny", [override])


def test_resolve_checks_dicts_built_in_code():
    cfg = load_config("vjepa_tiny")
    cfg["predictor"] = {"width": 32}  # a partial mapping: the rest from the defaults
    assert resolve(cfg)["predictor"]["mlp_ratio"] == 4.0
    cfg["optim"]["schedule_steps"] = 7.5  # a number where the default is null
    assert resolve(cfg)["optim"]["schedule_steps"] == 7.5
    problems = dict(cfg, seed=-1, checkpoint_every=0)
    with pytest.raises(PretrainConfigError, match="checkpoint_every=0 .*seed=-1"):
        resolve(problems)  # every problem in one message
    with pytest.raises(PretrainConfigError,
                       match="unknown pretraining config 'vjepa_tin'. Did you mean: vjepa_tiny"):
        load_config("vjepa_tin")


def test_reading_configs_stays_torch_free():
    import subprocess

    code = ("import sys; from harness.pretrain_config import compose_pretrain_config as c; "
            "c('vjepa_tiny', ['optim.total_steps=3']); import results.pretrain_plot; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_show_config_prints_the_composition(capsys):
    from harness.cli import main

    assert main(["pretrain", "--config", "ijepa_tiny", "--show-config", "optim.total_steps=9"]) == 0
    text = capsys.readouterr().out
    assert "name: ijepa_tiny" in text and "total_steps: 9" in text
    assert main(["pretrain", "--show-config", "optim.totl_steps=9"]) == 2
