"""Probe modules: shapes, structure, init, registry."""
import subprocess
import sys

import pytest
import torch

import probes
from probes.attentive import AttentiveProbe, load_release_state_dict
from probes.linear import LinearProbe


def test_names_list_configs_without_importing_torch():
    code = ("import sys, probes; print(probes.names()); "
            "assert 'torch' not in sys.modules, 'probes.names() imported torch'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "['attentive', 'linear']" in out.stdout


def test_configs_hold_the_release_protocol():
    cfg = probes.config("attentive")
    assert cfg == {"kind": "attentive", "num_queries": 1, "depth": 1, "mlp_ratio": 4.0,
                   "num_heads": None}
    assert probes.config("linear")["kind"] == "linear"


def test_unknown_kind_lists_known_and_close_names():
    with pytest.raises(probes.UnknownNameError, match="attentive") as err:
        probes.build("atentive", 8, 3)
    assert "Did you mean attentive" in str(err.value)
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
    assert torch.equal(probe.linear.bias, torch.zeros(50))
    # trunc-normal std 0.02, truncated at +-2 (absolute), residual outputs rescaled by 1/sqrt(2)
    assert abs(blk.mlp.fc1.weight.std().item() - 0.02) < 0.002
    assert abs(blk.mlp.fc2.weight.std().item() - 0.02 / 2 ** 0.5) < 0.002
    assert abs(probe.pooler.query_tokens.std().item() - 0.02) < 0.006


def test_query_is_not_normalised_only_tokens_are():
    # Scaling the tokens leaves LN(tokens) unchanged, so the output must not change.
    torch.manual_seed(0)
    probe = AttentiveProbe(16, 3, num_heads=2).eval()
    x = torch.randn(2, 5, 16)
    assert torch.allclose(probe(x), probe(10 * x), atol=1e-5)


def test_attention_matches_manual_computation():
    torch.manual_seed(0)
    probe = AttentiveProbe(8, 3, num_heads=2).eval()
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
    y = q + blk.xattn.proj(torch.cat(heads, -1))
    y = y + blk.mlp(blk.norm2(y))
    assert torch.allclose(probe(x), probe.linear(y[:, 0]), atol=1e-5)


def test_release_state_dict_with_module_prefix_loads_and_mismatch_names_keys():
    src = AttentiveProbe(16, 3, num_heads=2)
    state = {"module." + k: v for k, v in src.state_dict().items()}
    dst = AttentiveProbe(16, 3, num_heads=2)
    load_release_state_dict(dst, state)
    assert torch.equal(dst.linear.weight, src.linear.weight)
    state.pop("module.linear.bias")
    with pytest.raises(ValueError, match="linear.bias"):
        load_release_state_dict(dst, state)
