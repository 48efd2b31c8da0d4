"""Attentive probe: learnable queries cross-attend to a frozen encoder's tokens, then a linear head.

Structure follows the V-JEPA release's `AttentiveClassifier` (facebookresearch/jepa,
`src/models/attentive_pooler.py`), and the parameter names are kept identical
(`pooler.query_tokens`, `pooler.cross_attention_block.{norm1,xattn.q,xattn.kv,xattn.proj,norm2,
mlp.fc1,mlp.fc2}`, `pooler.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
`linear`) so a probe checkpoint from the release loads with `load_release_state_dict` (or a whole
release probe checkpoint file with `load_probe_checkpoint`).

With depth 1 (the paper's protocol) the probe is the same function as the release's, and
`torch.manual_seed(s)` followed by building it gives bit-identical initial parameters to building
the release's `AttentiveClassifier` after the same seed (tests/fixtures/release_probe.json holds
the release's numbers and the command that made them). Facts checked against the release:
- only the tokens are LayerNorm-ed before the cross-attention; the query token is not;
- query and key/value projections are separate Linear layers (`q`: D->D, `kv`: D->2D) with bias;
- the cross-attention's output projection `xattn.proj` exists (it is initialised, rescaled and
  saved in checkpoints) but the release's `CrossAttention.forward` never applies it, so by default
  neither do we (`xattn_proj=False`). V-JEPA 2's `CrossAttention` has no `proj` at all (the line
  is commented out), so it computes the same function. `xattn_proj=True` applies it, as a textbook
  attention block would; that is neither release's probe;
- pooler Linear weights (and the query) are trunc-normal, std 0.02, truncated at +-2 in absolute
  terms, drawn by inverse CDF like the release's `src/utils/tensors.py` (see `_trunc_normal_`);
  `xattn.proj` and `mlp.fc2` weights are then divided by sqrt(2) (depth-scaled init);
- the classifier `linear` keeps PyTorch's default nn.Linear init (it is built after the pooler);
- with depth > 1 the V-JEPA 2 probe runs depth-1 self-attention blocks over the *tokens* before
  the cross-attention (the V-JEPA 1 code applied them to the query, where with one query they do
  little); we follow V-JEPA 2. Only depth 1 matches the V-JEPA 1 release exactly.
"""
from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def _trunc_normal_(tensor: torch.Tensor, std: float, mean: float = 0.0, a: float = -2.0,
                   b: float = 2.0) -> torch.Tensor:
    """Truncated normal on [a, b] by inverse CDF: one uniform draw per element.

    This is the draw the V-JEPA release uses (`src/utils/tensors.py`, PyTorch's algorithm of the
    time). Current `torch.nn.init.trunc_normal_` samples differently (a normal draw with
    rejection, or uniform proposals), so it consumes the RNG differently and gives other values
    after the same seed; this keeps initialisation bit-identical to the release's.
    """
    def phi(z: float) -> float:  # standard normal CDF
        return (1.0 + math.erf(z / math.sqrt(2.0))) / 2.0

    lo, hi = phi((a - mean) / std), phi((b - mean) / std)
    tensor.uniform_(2 * lo - 1, 2 * hi - 1)  # erfinv maps (-1, 1) to the normal's quantiles
    tensor.erfinv_()
    tensor.mul_(std * math.sqrt(2.0))
    tensor.add_(mean)
    tensor.clamp_(min=a, max=b)
    return tensor


def init_release_weights(m: nn.Module, std: float) -> None:
    """The releases' `_init_weights` (applied module by module): Linear weights trunc-normal
    (the release's draw), biases 0; LayerNorm 1 and 0."""
    if isinstance(m, nn.Linear):
        _trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.reshape(b, n, num_heads, d // num_heads).transpose(1, 2)  # (B, H, N, D/H)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


class CrossAttention(nn.Module):
    """Multi-head attention from queries `q` (B, n, D) to tokens `x` (B, N, D).

    `proj` always exists (release checkpoints carry it) but is applied only when `apply_proj`;
    the release never applies it (see the module docstring).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, apply_proj: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.apply_proj = apply_proj
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.q(q), self.num_heads)
        k, v = self.kv(x).chunk(2, dim=-1)
        out = _merge_heads(F.scaled_dot_product_attention(
            q, _split_heads(k, self.num_heads), _split_heads(v, self.num_heads)))
        return self.proj(out) if self.apply_proj else out

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, apply_proj={self.apply_proj}"


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttentionBlock(nn.Module):
    """q <- q + xattn(q, LN(x)); q <- q + MLP(LN(q)). The query itself is not normalised."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 xattn_proj: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, apply_proj=xattn_proj)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class Block(nn.Module):
    """Pre-norm transformer block over the tokens (used when depth > 1)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    """Learnable queries -> (B, num_queries, D).

    Construction consumes the global torch RNG in the release's order: the Linear layers' default
    inits in module order, then the query's trunc-normal, then `_init_weights` over the modules
    (post-order, as `nn.Module.apply`), then the rescale. With depth 1 this is bit-identical to
    the release; with depth > 1 the token blocks are registered (and drawn) first.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_queries: int = 1, depth: int = 1,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, init_std: float = 0.02,
                 xattn_proj: bool = False):
        super().__init__()
        if depth < 1 or num_queries < 1:
            raise ValueError(f"depth and num_queries must be >= 1 (got depth={depth}, "
                             f"num_queries={num_queries})")
        self.init_std = init_std
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.blocks = (nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias)
                                     for _ in range(depth - 1)) if depth > 1 else None)
        self.cross_attention_block = CrossAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias,
                                                         xattn_proj)
        _trunc_normal_(self.query_tokens, std=init_std)
        self.apply(self._init_weights)
        self._rescale_residual_branches()

    def _init_weights(self, m: nn.Module) -> None:
        init_release_weights(m, self.init_std)

    @torch.no_grad()
    def _rescale_residual_branches(self) -> None:
        # Outputs of residual branches are shrunk by sqrt(2 * layer) so deeper stacks start close
        # to identity (as in the release; layer ids count the token blocks first).
        layers = list(self.blocks or [])
        for layer_id, blk in enumerate(layers, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))
        last = len(layers) + 1
        self.cross_attention_block.xattn.proj.weight.div_(math.sqrt(2.0 * last))
        self.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0 * last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blocks is not None:
            for blk in self.blocks:
                x = blk(x)
        q = self.query_tokens.expand(x.shape[0], -1, -1)
        return self.cross_attention_block(q, x)  # (B, num_queries, D)


class AttentiveProbe(nn.Module):
    """Attentive pooler + linear head: tokens (B, N, D) -> logits (B, num_classes).

    With several queries the head reads the mean of the query outputs. `xattn_proj=False` (the
    default) is the release's function: the cross-attention's `proj` is kept as a parameter but
    not applied; True applies it (a textbook block, neither V-JEPA release's probe).
    The head `linear` keeps PyTorch's default init and is built after the pooler, as in the
    release, so the same seed gives the release's initial parameters (depth 1).
    """

    kind = "attentive"

    def __init__(self, embed_dim: int, num_classes: int, num_heads: int, num_queries: int = 1,
                 depth: int = 1, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_std: float = 0.02, xattn_proj: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.pooler = AttentivePooler(embed_dim, num_heads, num_queries, depth, mlp_ratio,
                                      qkv_bias, init_std, xattn_proj)
        self.linear = nn.Linear(embed_dim, num_classes)  # default init, as the release

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"attentive probe expects tokens (B, N, {self.embed_dim}), "
                             f"got {tuple(tokens.shape)}")
        return self.linear(self.pooler(tokens).mean(dim=1))


def load_release_state_dict(probe: AttentiveProbe, state: Mapping[str, torch.Tensor]) -> None:
    """Load a V-JEPA release probe state dict (its `classifier` entry) into `probe`.

    The release saves the DDP-wrapped module, so keys carry a `module.` prefix; it is stripped.
    Loading is strict: missing or unexpected keys are an error that names them.
    """
    cleaned = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = probe.load_state_dict(cleaned, strict=False)
    if missing or unexpected:
        raise ValueError(f"probe checkpoint does not match AttentiveProbe: missing keys "
                         f"{sorted(missing)}, unexpected keys {sorted(unexpected)}")


_RELEASE_CHECKPOINT_KEYS = ("classifier", "opt", "scaler", "epoch", "batch_size", "world_size", "lr")


def load_probe_checkpoint(probe: AttentiveProbe, path: str | Path) -> dict[str, Any]:
    """Load a probe checkpoint file saved by the V-JEPA release's frozen evaluation into `probe`.

    The release saves `{classifier: DDP state dict ('module.' prefix), opt, scaler, epoch,
    batch_size, world_size, lr}`; a bare state dict is accepted too. The file is read with
    `weights_only=True` (no code runs); one that needs pickle is refused. Loading is strict.
    Returns the file's metadata for the record: `format` ('release' or 'state_dict') and the
    scalar top-level entries (epoch, batch_size, world_size, lr).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"probe checkpoint {path} needs pickle to load (it holds Python objects, "
                         f"not only tensors and plain containers); refusing it, since unpickling "
                         f"can run code. Re-save its 'classifier' state dict with torch.save. "
                         f"({str(e).splitlines()[0]})") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"probe checkpoint {path} holds a {type(obj).__name__}, not a dict")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        load_release_state_dict(probe, obj)
        return {"format": "state_dict"}
    if "classifier" not in obj:
        raise ValueError(f"probe checkpoint {path} has no 'classifier' entry and is not a state "
                         f"dict; top-level keys: {sorted(map(str, obj))} (the release saves "
                         f"{', '.join(_RELEASE_CHECKPOINT_KEYS)})")
    state = obj["classifier"]
    if not isinstance(state, Mapping):
        raise ValueError(f"probe checkpoint {path}: 'classifier' is a {type(state).__name__}, "
                         f"not a state dict")
    load_release_state_dict(probe, state)
    meta: dict[str, Any] = {"format": "release"}
    meta.update({k: v for k, v in obj.items() if k not in ("classifier", "opt", "scaler")
                 and (v is None or isinstance(v, (bool, int, float, str)))})
    return meta
