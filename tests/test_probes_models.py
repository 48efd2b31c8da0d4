"""Probe modules: shapes, structure, init, registry; the attentive probe against the V-JEPA release."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import probes
from probes.attentive import AttentiveProbe, load_probe_checkpoint, load_release_state_dict
from probes.linear import LinearProbe

FIXTURES = Path(__file__).parent / "fixtures"
# Numbers from the release's own AttentiveClassifier; the file says which command made them.
RELEASE = json.loads((FIXTURES / "release_probe.json").read_text())


def _fixture_module():
    # The script that made the fixture also defines the perturbed weights and the inputs.
    spec = importlib.util.spec_from_file_location("make_release_probe",
                                                  FIXTURES / "make_release_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKE = _fixture_module()


def test_names_list_configs_without_importing_torch():
    code = ("import sys, probes; print(probes.names()); "
            "assert 'torch' not in sys.modules, 'probes.names() imported torch'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "['attentive', 'attentive_v2', 'knn', 'linear', 'logreg', 'roi_linear']" in out.stdout


def test_configs_hold_the_release_protocol():
    cfg = probes.config("attentive")
    assert cfg == {"kind": "attentive", "num_queries": 1, "depth": 1, "mlp_ratio": 4.0,
                   "num_heads": None, "xattn_proj": False,
                   "grid": None, "selection": "val", "val_fraction": 0.1}
    assert probes.config("linear")["kind"] == "linear"


def test_unknown_kind_lists_known_and_close_names():
    with pytest.raises(probes.UnknownNameError, match="attentive") as err:
        probes.build("atentive", 8, 3)
    assert "Did you mean: attentive" in str(err.value)
    with pytest.raises(KeyError):
        probes.config("nope")


def test_attentive_needs_heads_and_from_config_fills_them():
    with pytest.raises(ValueError, match="num_heads"):
        probes.build("attentive", 16, 3)
    probe = probes.from_config(probes.config("attentive"), embed_dim=16, num_classes=3,
                               num_heads=4)
    assert probe.pooler.cross_attention_block.xattn.num_heads == 4


@pytest.mark.parametrize("num_queries,depth", [(1, 1), (3, 1), (1, 3), (2, 2)])
def test_attentive_output_shape(num_queries, depth):
    probe = probes.build("attentive", 32, 7, num_heads=4, num_queries=num_queries, depth=depth)
    assert probe(torch.randn(5, 11, 32)).shape == (5, 7)
    assert probe.pooler(torch.randn(5, 11, 32)).shape == (5, num_queries, 32)
    assert (probe.pooler.blocks is None) == (depth == 1)
    if depth > 1:
        assert len(probe.pooler.blocks) == depth - 1


def test_linear_output_shape_and_no_affine_norm():
    probe = probes.build("linear", 32, 7)
    assert isinstance(probe, LinearProbe)
    assert probe(torch.randn(5, 11, 32)).shape == (5, 7)
    names = [n for n, _ in probe.named_parameters()]
    assert names == ["linear.weight", "linear.bias"]


def test_probes_reject_wrong_token_width():
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        probes.build("linear", 32, 3)(torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        probes.build("attentive", 32, 3, num_heads=4)(torch.randn(2, 4, 16))


def test_attentive_structure_matches_release_names_and_param_count():
    d, c = 64, 10
    probe = AttentiveProbe(d, c, num_heads=4)
    shapes = {n: tuple(p.shape) for n, p in probe.named_parameters()}
    blk = "pooler.cross_attention_block."
    assert shapes["pooler.query_tokens"] == (1, 1, d)
    assert shapes[blk + "xattn.q.weight"] == (d, d)
    assert shapes[blk + "xattn.kv.weight"] == (2 * d, d)
    assert shapes[blk + "xattn.q.bias"] == (d,)  # qkv bias on
    assert shapes[blk + "mlp.fc1.weight"] == (4 * d, d)
    assert shapes["linear.weight"] == (c, d)
    # 12 D^2 (q, kv, proj, fc1, fc2) + 14 D (query, 2 LN, biases) + head
    assert sum(p.numel() for p in probe.parameters()) == 12 * d * d + 14 * d + c * d + c


def test_attentive_init():
    torch.manual_seed(0)
    probe = AttentiveProbe(256, 50, num_heads=8)
    blk = probe.pooler.cross_attention_block
    assert torch.equal(blk.norm1.weight, torch.ones(256))
    assert torch.equal(blk.norm2.bias, torch.zeros(256))
    assert torch.equal(blk.xattn.kv.bias, torch.zeros(512))
    # trunc-normal std 0.02, truncated at +-2 (absolute), residual outputs rescaled by 1/sqrt(2)
    assert abs(blk.mlp.fc1.weight.std().item() - 0.02) < 0.002
    assert abs(blk.mlp.fc2.weight.std().item() - 0.02 / 2 ** 0.5) < 0.002
    assert abs(blk.xattn.proj.weight.std().item() - 0.02 / 2 ** 0.5) < 0.002
    assert abs(probe.pooler.query_tokens.std().item() - 0.02) < 0.006
    # the head keeps PyTorch's default nn.Linear init (uniform within 1/sqrt(fan_in)), as the
    # release's does; it used to be re-initialised trunc-normal with a zero bias here
    bound = 256 ** -0.5
    assert probe.linear.weight.abs().max().item() <= bound
    assert probe.linear.weight.std().item() > 0.5 * bound / 3 ** 0.5
    assert 0 < probe.linear.bias.abs().max().item() <= bound


def test_query_is_not_normalised_only_tokens_are():
    # Scaling the tokens leaves LN(tokens) unchanged, so the output must not change.
    torch.manual_seed(0)
    probe = AttentiveProbe(16, 3, num_heads=2).eval()
    x = torch.randn(2, 5, 16)
    assert torch.allclose(probe(x), probe(10 * x), atol=1e-5)


@pytest.mark.parametrize("xattn_proj", [False, True])
def test_attention_matches_manual_computation(xattn_proj):
    torch.manual_seed(0)
    probe = AttentiveProbe(8, 3, num_heads=2, xattn_proj=xattn_proj).eval()
    blk = probe.pooler.cross_attention_block
    x = torch.randn(1, 4, 8)
    q = probe.pooler.query_tokens
    xn = blk.norm1(x)
    qp, (k, v) = blk.xattn.q(q), blk.xattn.kv(xn).chunk(2, -1)
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        att = (qp[..., s] @ k[..., s].transpose(-1, -2) / 2.0).softmax(-1)
        heads.append(att @ v[..., s])
    attended = torch.cat(heads, -1)
    # the release never applies xattn.proj (the default); xattn_proj=True does
    y = q + (blk.xattn.proj(attended) if xattn_proj else attended)
    y = y + blk.mlp(blk.norm2(y))
    assert torch.allclose(probe(x), probe.linear(y[:, 0]), atol=1e-5)


def test_xattn_proj_is_a_parameter_but_unused_by_default():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    for xattn_proj, changes in ((False, False), (True, True)):
        probe = AttentiveProbe(16, 3, num_heads=2, xattn_proj=xattn_proj).eval()
        names = [n for n, _ in probe.named_parameters()]
        assert "pooler.cross_attention_block.xattn.proj.weight" in names
        before = probe(x)
        with torch.no_grad():
            probe.pooler.cross_attention_block.xattn.proj.weight.normal_()
        assert (not torch.allclose(probe(x), before)) == changes
    probe = probes.from_config({**probes.config("attentive"), "xattn_proj": True}, embed_dim=16,
                               num_classes=3, num_heads=2)
    assert probe.pooler.cross_attention_block.xattn.apply_proj


def _release_configs():
    return [pytest.param(c, id=f"d{c['embed_dim']}h{c['num_heads']}c{c['num_classes']}")
            for c in RELEASE["configs"]]


def _build_like_release(cfg):
    torch.manual_seed(cfg["seed"])
    return AttentiveProbe(cfg["embed_dim"], cfg["num_classes"], num_heads=cfg["num_heads"],
                          depth=cfg["depth"])


@pytest.mark.parametrize("cfg", _release_configs())
def test_initial_parameters_equal_the_releases_after_the_same_seed(cfg):
    # Same seed -> bit-identical initial parameters and the same RNG consumption as the release's
    # AttentiveClassifier (default head init, inverse-CDF trunc-normal, release draw order).
    probe = _build_like_release(cfg)
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
    assert rng_after == cfg["rng_after"]


@pytest.mark.parametrize("cfg", _release_configs())
def test_logits_equal_the_releases_on_the_same_weights(cfg):
    probe = AttentiveProbe(cfg["embed_dim"], cfg["num_classes"], num_heads=cfg["num_heads"],
                           depth=cfg["depth"]).eval()
    shapes = [(k, list(v.shape)) for k, v in probe.state_dict().items()]
    for case in cfg["cases"]:
        weights = MAKE.perturbed_state(shapes, case["weight_seed"])
        load_release_state_dict(probe, {"module." + k: v for k, v in weights.items()})
        x = MAKE.make_tokens(case["batch"], case["tokens"], cfg["embed_dim"], case["input_seed"])
        with torch.no_grad():
            ours = probe(x).double()
        for path, ref in case["logits"].items():  # the release's sdpa and manual attention
            torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64),
                                       atol=1e-5, rtol=1e-5,
                                       msg=lambda m: f"N={case['tokens']} {path}: {m}")


def _release_style_file(path, probe, **extra):
    torch.save({"classifier": {"module." + k: v for k, v in probe.state_dict().items()},
                "opt": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                        "param_groups": [{"lr": 1e-3, "weight_decay": 0.01, "params": [0]}]},
                "scaler": None, "epoch": 20, "batch_size": 4, "world_size": 64, "lr": 0.001,
                **extra}, path)


def test_load_probe_checkpoint_release_file_and_bare_state_dict(tmp_path):
    torch.manual_seed(0)
    src = AttentiveProbe(16, 3, num_heads=2)
    _release_style_file(tmp_path / "latest.pth.tar", src)
    dst = AttentiveProbe(16, 3, num_heads=2)
    meta = load_probe_checkpoint(dst, tmp_path / "latest.pth.tar")
    assert meta == {"format": "release", "epoch": 20, "batch_size": 4, "world_size": 64,
                    "lr": 0.001}
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    torch.save(src.state_dict(), tmp_path / "bare.pt")
    assert load_probe_checkpoint(AttentiveProbe(16, 3, num_heads=2), str(tmp_path / "bare.pt")) \
        == {"format": "state_dict"}


class _Pickled:  # any class makes torch.save pickle it
    pass


def test_load_probe_checkpoint_refuses_pickle_and_names_missing_classifier(tmp_path):
    probe = AttentiveProbe(16, 3, num_heads=2)
    _release_style_file(tmp_path / "pickled.pth", probe, extra_obj=_Pickled())
    with pytest.raises(ValueError, match="needs pickle"):
        load_probe_checkpoint(probe, tmp_path / "pickled.pth")
    torch.save({"encoder": probe.state_dict(), "epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"no 'classifier'.*\['encoder', 'epoch'\]"):
        load_probe_checkpoint(probe, tmp_path / "other.pth")
    state = {"module." + k: v for k, v in probe.state_dict().items()}
    state["module.linear.extra"] = torch.zeros(1)
    torch.save({"classifier": state, "epoch": 1}, tmp_path / "bad_keys.pth")
    with pytest.raises(ValueError, match="linear.extra"):
        load_probe_checkpoint(probe, tmp_path / "bad_keys.pth")


def test_release_state_dict_with_module_prefix_loads_and_mismatch_names_keys():
    src = AttentiveProbe(16, 3, num_heads=2)
    state = {"module." + k: v for k, v in src.state_dict().items()}
    dst = AttentiveProbe(16, 3, num_heads=2)
    load_release_state_dict(dst, state)
    assert torch.equal(dst.linear.weight, src.linear.weight)
    state.pop("module.linear.bias")
    with pytest.raises(ValueError, match="linear.bias"):
        load_release_state_dict(dst, state)
