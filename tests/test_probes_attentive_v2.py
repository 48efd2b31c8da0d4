"""V-JEPA 2's attentive probe (`probe=attentive_v2`) against the release's AttentiveClassifier."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import probes
from probes.attentive import AttentiveProbe
from probes.attentive_v2 import (AttentiveProbeV2, config_from_state_dict, load_release_grid,
                                 load_release_probe_checkpoint, load_release_state_dict)

FIXTURES = Path(__file__).parent / "fixtures"
# Numbers from the release's own AttentiveClassifier; the file says which command made them.
RELEASE = json.loads((FIXTURES / "release_probe_v2.json").read_text())


def _fixture_module():
    # The script that made the fixture also defines the perturbed weights and the inputs.
    spec = importlib.util.spec_from_file_location("make_release_probe_v2",
                                                  FIXTURES / "make_release_probe_v2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKE = _fixture_module()


def _release_configs():
    return [pytest.param(c, id=f"d{c['embed_dim']}h{c['num_heads']}L{c['depth']}")
            for c in RELEASE["configs"]]


# ------------------------------------------------------------------------- config and registry

def test_config_holds_the_v_jepa_2_protocol():
    cfg = probes.config("attentive_v2")
    assert {k: cfg[k] for k in ("kind", "num_queries", "depth", "mlp_ratio", "num_heads")} == {
        "kind": "attentive_v2", "num_queries": 1, "depth": 4, "mlp_ratio": 4.0, "num_heads": 16}
    assert "attentive_v2" in probes.names()


def test_registry_builds_it_with_16_heads_whatever_the_encoder():
    probe = probes.build("attentive_v2", 64, 10)
    assert isinstance(probe, AttentiveProbeV2) and probe.kind == "attentive_v2"
    assert probe.pooler.cross_attention_block.xattn.num_heads == 16
    assert len(probe.pooler.blocks) == 3
    # the config's 16 wins over the encoder's heads that from_config is given
    # (grid keys configure probes.grid, not a head; the runner keeps them out of the build)
    cfg = {k: v for k, v in probes.config("attentive_v2").items()
           if k not in ("grid", "selection", "val_fraction")}
    probe = probes.from_config(cfg, embed_dim=64, num_classes=10, num_heads=4)
    assert probe.pooler.cross_attention_block.xattn.num_heads == 16
    assert all(b.attn.num_heads == 16 for b in probe.pooler.blocks)


# ------------------------------------------------------------------------- structure and init

def test_structure_release_names_no_xattn_proj_and_param_count():
    d, c = 64, 10
    probe = AttentiveProbeV2(d, c)
    state = probe.state_dict()
    keys = list(state)
    blk = "pooler.cross_attention_block."
    assert keys[:3] == ["pooler.query_tokens", blk + "norm1.weight", blk + "norm1.bias"]
    assert keys.index(blk + "mlp.fc2.bias") < keys.index("pooler.blocks.0.norm1.weight")
    assert keys[-2:] == ["linear.weight", "linear.bias"]
    assert not any("xattn.proj" in k for k in keys)  # the release's proj line is commented out
    assert state["pooler.query_tokens"].shape == (1, 1, d)
    assert state[blk + "xattn.kv.weight"].shape == (2 * d, d) and blk + "xattn.q.bias" in state
    assert state["pooler.blocks.2.attn.qkv.bias"].shape == (3 * d,)
    assert state["pooler.blocks.2.mlp.fc1.weight"].shape == (4 * d, d)
    # cross block 11 D^2 + 13 D; each token block 12 D^2 + 13 D; head C D + C
    n = sum(p.numel() for p in probe.parameters())
    assert n == 11 * d * d + 13 * d + 3 * (12 * d * d + 13 * d) + c * d + c


def test_init_trunc_normal_and_residual_rescale_by_layer():
    torch.manual_seed(0)
    probe = AttentiveProbeV2(256, 50)
    pool = probe.pooler
    cab = pool.cross_attention_block
    assert torch.equal(cab.norm1.weight, torch.ones(256))
    assert torch.equal(cab.xattn.kv.bias, torch.zeros(512))
    assert torch.equal(pool.blocks[1].attn.qkv.bias, torch.zeros(768))

    def std(t):
        return t.std().item()

    assert std(cab.mlp.fc1.weight) == pytest.approx(0.02, rel=0.05)
    for i, b in enumerate(pool.blocks, start=1):  # block i: / sqrt(2 i)
        assert std(b.attn.proj.weight) == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.05)
        assert std(b.mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.05)
        assert std(b.attn.qkv.weight) == pytest.approx(0.02, rel=0.05)
    # the release gives the cross-attention block the last token block's id: sqrt(6), not sqrt(8)
    assert std(cab.mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(6), rel=0.05)
    bound = 256 ** -0.5  # the head keeps PyTorch's default init
    assert probe.linear.weight.abs().max().item() <= bound
    assert 0 < probe.linear.bias.abs().max().item() <= bound
    torch.manual_seed(0)
    one = AttentiveProbeV2(256, 50, depth=1).pooler.cross_attention_block
    assert std(one.mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(2), rel=0.05)


@pytest.mark.parametrize("cfg", _release_configs())
def test_initial_parameters_equal_the_releases_after_the_same_seed(cfg):
    torch.manual_seed(cfg["seed"])
    probe = AttentiveProbeV2(cfg["embed_dim"], cfg["num_classes"], num_heads=cfg["num_heads"],
                             depth=cfg["depth"])
    rng_after = torch.rand(4).double().tolist()
    state = probe.state_dict()
    assert list(state) == cfg["keys"]  # same keys, same order
    for key, ref in cfg["init"].items():
        t = state[key].double()
        assert list(t.shape) == ref["shape"], key
        # Equal to a float32 ulp: the vectorised erfinv of the inverse-CDF draw rounds the last
        # bit differently on some CPUs (AVX-512 vs AVX2); another draw would differ everywhere.
        assert t.flatten()[:len(ref["first"])].tolist() == pytest.approx(
            ref["first"], rel=2e-7, abs=1e-9), key
        assert t.sum().item() == pytest.approx(ref["sum"], rel=1e-6, abs=1e-9), key
        assert (t * t).sum().item() == pytest.approx(ref["sumsq"], rel=1e-6, abs=1e-9), key
    assert rng_after == cfg["rng_after"]  # the construction drew the RNG exactly as the release


# ------------------------------------------------------------------------- function

@pytest.mark.parametrize("cfg", _release_configs())
def test_logits_equal_the_releases_on_the_same_weights(cfg):
    kw = dict(num_heads=cfg["num_heads"], depth=cfg["depth"])
    probe = AttentiveProbeV2(cfg["embed_dim"], cfg["num_classes"], **kw).eval()
    ckpt = AttentiveProbeV2(cfg["embed_dim"], cfg["num_classes"], **kw,
                            activation_checkpointing=True).eval()
    shapes = [(k, list(v.shape)) for k, v in probe.state_dict().items()]
    assert [t["tokens"] for t in cfg["cases"]] == [1, 37, 200]
    for case in cfg["cases"]:
        weights = MAKE.perturbed_state(shapes, case["weight_seed"])
        load_release_state_dict(probe, {"module." + k: v for k, v in weights.items()})
        load_release_state_dict(ckpt, weights)
        x = MAKE.make_tokens(case["batch"], case["tokens"], cfg["embed_dim"], case["input_seed"])
        with torch.no_grad():
            ours = probe(x).double()
        with torch.enable_grad():
            ours_ckpt = ckpt(x).detach().double()
        for path, ref in case["logits"].items():  # release: sdpa, manual, checkpointed
            ref = torch.tensor(ref, dtype=torch.float64)
            for name, got in (("plain", ours), ("checkpointed", ours_ckpt)):
                torch.testing.assert_close(
                    got, ref, atol=1e-5, rtol=1e-5,
                    msg=lambda m: f"N={case['tokens']} release {path} vs ours {name}: {m}")


def test_token_blocks_run_on_the_tokens_then_the_query_cross_attends():
    torch.manual_seed(0)
    probe = AttentiveProbeV2(16, 3, num_heads=2, depth=2).eval()
    pool = probe.pooler
    x = torch.randn(2, 5, 16)
    blk = pool.blocks[0]
    h = x + blk.attn(blk.norm1(x))
    h = h + blk.mlp(blk.norm2(h))
    cab = pool.cross_attention_block
    q = pool.query_tokens.expand(2, -1, -1)
    qp, (k, v) = cab.xattn.q(q), cab.xattn.kv(cab.norm1(h)).chunk(2, -1)
    heads = [((qp[..., s] @ k[..., s].transpose(-1, -2)) / math.sqrt(8)).softmax(-1) @ v[..., s]
             for s in (slice(0, 8), slice(8, 16))]
    y = q + torch.cat(heads, -1)  # no output projection
    y = y + cab.mlp(cab.norm2(y))
    with torch.no_grad():
        torch.testing.assert_close(probe(x), probe.linear(y[:, 0]), atol=1e-5, rtol=1e-5)


def test_rejects_wrong_width_and_indivisible_heads():
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        AttentiveProbeV2(32, 3)(torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="not divisible by num_heads 16"):
        AttentiveProbeV2(40, 3)
    assert AttentiveProbeV2(40, 3, num_heads=5)(torch.randn(1, 3, 40)).shape == (1, 3)


# ------------------------------------------------------------------------- release checkpoints

def _release_file(path, heads, **extra):
    """A probe checkpoint in the layout of the release's eval.py save_checkpoint."""
    torch.save({"classifiers": [{"module." + k: v for k, v in h.state_dict().items()}
                                for h in heads],
                "opt": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                         "param_groups": [{"lr": 1e-3, "weight_decay": 0.01, "params": [0],
                                           "mc_ref_lr": 1e-3}]} for _ in heads],
                "scaler": None, "epoch": 20, "batch_size": 4, "world_size": 64, **extra}, path)


def test_release_checkpoint_file_loads_strictly(tmp_path):
    torch.manual_seed(0)
    heads = [AttentiveProbeV2(32, 5, num_heads=4, depth=2) for _ in range(3)]
    _release_file(tmp_path / "latest.pt", heads)
    states = load_release_probe_checkpoint(tmp_path / "latest.pt")
    assert len(states) == 3 and all(not k.startswith("module.") for k in states[0])
    assert config_from_state_dict(states[0]) == {"embed_dim": 32, "num_classes": 5, "depth": 2,
                                                 "num_queries": 1, "mlp_ratio": 4.0}
    for src, state in zip(heads, states):
        dst = AttentiveProbeV2(32, 5, num_heads=4, depth=2)
        load_release_state_dict(dst, state)
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), k
    # a grid of heads (probes.grid.ProbeGrid-like: .heads) takes the whole list, in order
    grid = torch.nn.Module()
    grid.heads = torch.nn.ModuleList(AttentiveProbeV2(32, 5, num_heads=4, depth=2)
                                     for _ in range(3))
    load_release_grid(grid, states)
    assert torch.equal(grid.heads[2].linear.weight, heads[2].linear.weight)
    grid.heads = grid.heads[:2]
    with pytest.raises(ValueError, match="3 probe heads but the grid has 2"):
        load_release_grid(grid, states)
    # a single 'classifier' entry and a bare state dict are read too
    torch.save({"classifier": heads[0].state_dict(), "epoch": 1}, tmp_path / "one.pt")
    torch.save(heads[1].state_dict(), tmp_path / "bare.pt")
    assert len(load_release_probe_checkpoint(tmp_path / "one.pt")) == 1
    assert len(load_release_probe_checkpoint(str(tmp_path / "bare.pt"))) == 1


def test_wrong_key_or_shape_errors_naming_it(tmp_path):
    probe = AttentiveProbeV2(32, 5, num_heads=4, depth=2)
    state = {"module." + k: v for k, v in probe.state_dict().items()}
    state["module.pooler.blocks.0.attn.qkv_wrong.weight"] = state.pop(
        "module.pooler.blocks.0.attn.qkv.weight")
    torch.save({"classifiers": [state], "epoch": 1}, tmp_path / "bad.pt")
    (loaded,) = load_release_probe_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"missing keys \['pooler.blocks.0.attn.qkv.weight'\]"
                                         r".*unexpected keys \['pooler.blocks.0.attn.qkv_wrong"):
        load_release_state_dict(probe, loaded)
    with pytest.raises(ValueError, match=r"linear.weight: checkpoint \(7, 32\) vs probe \(5, 32\)"
                                         r".*'num_classes': 7"):
        load_release_state_dict(probe, AttentiveProbeV2(32, 7, num_heads=4, depth=2).state_dict())
    with pytest.raises(ValueError, match=r"missing keys \['pooler.blocks.1"):  # depth 3 vs 4
        load_release_state_dict(AttentiveProbeV2(32, 5, num_heads=4, depth=3),
                                AttentiveProbeV2(32, 5, num_heads=4, depth=2).state_dict())
    # a V-JEPA 1 probe (it has xattn.proj) is named as such
    v1 = AttentiveProbe(32, 5, num_heads=4, depth=2).state_dict()
    with pytest.raises(ValueError, match=r"xattn.proj.*V-JEPA 1 probe; use probe=attentive"):
        load_release_state_dict(probe, v1)


class _Pickled:  # any class makes torch.save pickle it
    pass


def test_checkpoint_file_errors_are_clear(tmp_path):
    probe = AttentiveProbeV2(16, 3, num_heads=2, depth=1)
    _release_file(tmp_path / "pickled.pt", [probe], extra_obj=_Pickled())
    with pytest.raises(ValueError, match="needs pickle"):
        load_release_probe_checkpoint(tmp_path / "pickled.pt")
    torch.save({"encoder": probe.state_dict(), "epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"no 'classifiers'.*\['encoder', 'epoch'\]"):
        load_release_probe_checkpoint(tmp_path / "other.pt")
    torch.save({"classifiers": [], "epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="non-empty list"):
        load_release_probe_checkpoint(tmp_path / "empty.pt")
    torch.save({"classifiers": [{"a": 1}]}, tmp_path / "notstate.pt")
    with pytest.raises(ValueError, match="classifier 0 is not a state dict"):
        load_release_probe_checkpoint(tmp_path / "notstate.pt")
    with pytest.raises(FileNotFoundError, match="probe checkpoint not found"):
        load_release_probe_checkpoint(tmp_path / "missing.pt")
