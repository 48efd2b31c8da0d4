"""V-JEPA 2's attentive probe: self-attention blocks over the tokens, then one query cross-attends.

The same function, initialisation and parameter names as the V-JEPA 2 release's
`AttentiveClassifier` (facebookresearch/vjepa2, `src/models/attentive_pooler.py` with
`src/models/utils/modules.py`), as its frozen evaluations build it
(`evals/video_classification_frozen/eval.py`: `AttentiveClassifier(embed_dim=encoder.embed_dim,
num_heads=16, depth=num_probe_blocks=4, num_classes)`; every `configs/eval/*` sets
`num_heads: 16, num_probe_blocks: 4`). Facts checked against the release
(tests/fixtures/release_probe_v2.json records its numbers and the command that made them):

- `depth - 1` pre-norm transformer blocks (LayerNorm, fused `attn.qkv` with bias, `attn.proj`,
  LayerNorm, MLP ratio 4 with GELU) run over the encoder's *tokens* first; then one
  cross-attention block: q <- q + xattn(q, LN(tokens)); q <- q + MLP(LN(q)). The query itself is
  not normalised before the cross-attention;
- `xattn` has separate `q` (D->D) and `kv` (D->2D) Linear layers with bias and **no output
  projection** (the release's `self.proj` line is commented out), so there is no `xattn.proj`
  key: a V-JEPA 1 probe checkpoint (which has one) does not load here, and vice versa;
- 16 heads whatever the encoder's (our `attentive` kind uses the encoder's); one query
  (`AttentiveClassifier` hard-codes `num_queries=1`); the head `linear` reads that query;
- state-dict order: `pooler.query_tokens`, `pooler.cross_attention_block.*`, `pooler.blocks.{i}.*`,
  `linear.*` (the cross-attention block is registered *before* the token blocks);
- init: every pooler Linear weight and the query are trunc-normal std 0.02 truncated at +-2
  (absolute), drawn by inverse CDF like the release's `src/utils/tensors.trunc_normal_`
  (`probes.attentive._trunc_normal_`); biases 0, LayerNorms 1/0; then token block i (0-based)
  has `attn.proj.weight` and `mlp.fc2.weight` divided by sqrt(2 (i+1)), and the cross-attention
  block's `mlp.fc2.weight` is divided by sqrt(2 (depth-1)) for depth > 1 (the release reuses the
  last token block's 0-based index + 1, so with depth 4 it is sqrt(6), the same as block 2's, not
  sqrt(8)) and by sqrt(2) for depth 1. The head `linear` keeps PyTorch's default nn.Linear init;
- RNG order: the Linear layers' default inits in construction order (cross-attention block, then
  token blocks), the query's trunc-normal, `_init_weights` over the modules (post-order, as
  `nn.Module.apply`: cross-attention block then token blocks), then the head. So
  `torch.manual_seed(s)` then building this gives bit-identical parameters to the release's;
- the release trains with activation checkpointing of the token blocks (memory only, the same
  numbers); `activation_checkpointing=True` does the same here.

The release saves a *grid* of probes (`eval.py` `save_checkpoint`): `{"classifiers": [state dict
of each DDP-wrapped head ('module.' prefix), ...], "opt": [...], "scaler": [...] | None, "epoch",
"batch_size", "world_size"}`, heads in the order of the config's `multihead_kwargs`; the
published probes (e.g. `ssv2-vitl-16x2x3.pt`) are such files, read by the release's demo with
`torch.load(weights_only=True)["classifiers"][0]`. `load_release_probe_checkpoint` reads them.
"""
from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from probes.attentive import (
    MLP,
    Block,
    _merge_heads,
    _split_heads,
    _trunc_normal_,
    init_release_weights,
)
from probes.optim import OPTIM_GROUPS

__all__ = ["AttentiveProbeV2", "build", "load_release_probe_checkpoint", "load_release_state_dict",
           "load_release_grid", "config_from_state_dict"]


def _check_heads(dim: int, num_heads: int) -> None:
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads} (V-JEPA 2's "
                         f"probe uses 16 heads whatever the encoder; pass num_heads=... for an "
                         f"encoder whose width 16 does not divide)")


class CrossAttentionV2(nn.Module):
    """Multi-head attention from queries (B, n, D) to tokens (B, N, D); no output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.q(q), self.num_heads)
        k, v = self.kv(x).chunk(2, dim=-1)
        return _merge_heads(F.scaled_dot_product_attention(
            q, _split_heads(k, self.num_heads), _split_heads(v, self.num_heads)))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


class CrossAttentionBlockV2(nn.Module):
    """q <- q + xattn(q, LN(x)); q <- q + MLP(LN(q))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttentionV2(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentivePoolerV2(nn.Module):
    """depth-1 token blocks, then learnable queries cross-attend: tokens -> (B, num_queries, D)."""

    def __init__(self, embed_dim: int, num_heads: int = 16, num_queries: int = 1, depth: int = 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, init_std: float = 0.02,
                 activation_checkpointing: bool = False):
        super().__init__()
        if depth < 1 or num_queries < 1:
            raise ValueError(f"depth and num_queries must be >= 1 (got depth={depth}, "
                             f"num_queries={num_queries})")
        _check_heads(embed_dim, num_heads)
        self.init_std = init_std
        self.activation_checkpointing = activation_checkpointing
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        # Registered before the token blocks, as the release: fixes key order and RNG order.
        self.cross_attention_block = CrossAttentionBlockV2(embed_dim, num_heads, mlp_ratio,
                                                           qkv_bias)
        self.blocks = (nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias)
                                     for _ in range(depth - 1)) if depth > 1 else None)
        _trunc_normal_(self.query_tokens, std=init_std)
        self.apply(self._init_weights)
        self._rescale_residual_branches()

    def _init_weights(self, m: nn.Module) -> None:
        init_release_weights(m, self.init_std)

    @torch.no_grad()
    def _rescale_residual_branches(self) -> None:
        layers = list(self.blocks or [])
        for layer_id, blk in enumerate(layers, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))
        # The release's cross-attention block shares the last token block's layer id (1 without
        # token blocks); see the module docstring.
        self.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0 * max(len(layers), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks or ():
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        q = self.query_tokens.expand(x.shape[0], -1, -1)
        return self.cross_attention_block(q, x)


class AttentiveProbeV2(nn.Module):
    """V-JEPA 2 attentive probe: tokens (B, N, D) -> logits (B, num_classes).

    Defaults are the release's evaluation probe (16 heads, depth 4, one query). With several
    queries (not the release's) the head reads their mean.

    `out_layers`: encoder blocks read instead of the last one, as the release's multi-level
    wrapper (`vit_encoder_multiclip_multilevel`, Diving-48 and Jester: ViT-L blocks 17, 19, 21,
    23) does. The trainer asks the encoder for those taps and hands them concatenated on the
    channel axis, (B, N, L*D); the release concatenates them on the *token* axis (its
    `torch.cat(outputs, dim=1)`), so the probe, of width D, attends over L*N tokens: done here by
    a reshape. The order of the tokens does not matter to this probe (no position embedding; the
    blocks are permutation-equivariant and the pooling invariant).

    `optim_groups`: how AdamW decays it (`probes.optim.param_groups`): `split` (this harness's:
    biases and norms not decayed) or `release` (V-JEPA 2's eval.py: every parameter decayed, a
    grid's heads in the release's order).
    """

    kind = "attentive_v2"
    OUTPUT_NAMES = ("verb", "noun", "action")

    def __init__(self, embed_dim: int, num_classes: int | Sequence[int], num_heads: int = 16,
                 depth: int = 4, num_queries: int = 1, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_std: float = 0.02, activation_checkpointing: bool = False,
                 out_layers: Sequence[int] | None = None, optim_groups: str = "split"):
        super().__init__()
        self.embed_dim = embed_dim
        # Several outputs (action anticipation: num_classes = (verbs, nouns, actions)): one query
        # per output and one Linear per output, `verb_classifier`, `noun_classifier`,
        # `action_classifier`, built in that order after the pooler, as the release's
        # `evals/action_anticipation_frozen/models.py` AttentiveClassifier; the logits are
        # returned concatenated, [verb | noun | action].
        self.outputs = None
        if isinstance(num_classes, Sequence):
            self.outputs = tuple(int(n) for n in num_classes)
            if len(self.outputs) != len(self.OUTPUT_NAMES) or min(self.outputs) < 1:
                raise ValueError(f"attentive_v2 probe: several outputs are (verbs, nouns, actions), "
                                 f"positive sizes; got {list(num_classes)}")
            if num_queries not in (1, len(self.outputs)):
                raise ValueError(f"attentive_v2 probe: with {len(self.outputs)} outputs the probe has "
                                 f"one query per output; num_queries {num_queries} does not fit")
            num_queries = len(self.outputs)
        self.num_classes = sum(self.outputs) if self.outputs else num_classes
        if out_layers is not None:
            out_layers = tuple(int(i) for i in out_layers)
            if not out_layers or len(set(out_layers)) != len(out_layers):
                raise ValueError(f"attentive_v2 probe: out_layers must be distinct block "
                                 f"indices, e.g. [17, 19, 21, 23]; got {list(out_layers)}")
        self.out_layers = out_layers  # the trainer asks the encoder for these taps
        if optim_groups not in OPTIM_GROUPS:
            raise ValueError(f"attentive_v2 probe: optim_groups must be one of {OPTIM_GROUPS}, "
                             f"got {optim_groups!r}")
        self.optim_groups = optim_groups
        self.pooler = AttentivePoolerV2(embed_dim, num_heads, num_queries, depth, mlp_ratio,
                                        qkv_bias, init_std, activation_checkpointing)
        if self.outputs is None:  # default init, built last, as the release
            self.linear = nn.Linear(embed_dim, num_classes)
        else:
            for name, n in zip(self.OUTPUT_NAMES, self.outputs):
                setattr(self, f"{name}_classifier", nn.Linear(embed_dim, n))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        taps = len(self.out_layers) if self.out_layers else 1
        if tokens.ndim != 3 or tokens.shape[-1] != taps * self.embed_dim:
            what = (f"{taps} taps of width {self.embed_dim} concatenated on the channel axis"
                    if taps > 1 else "")
            raise ValueError(f"attentive_v2 probe expects tokens (B, N, {taps * self.embed_dim})"
                             f"{' (' + what + ')' if what else ''}, got {tuple(tokens.shape)}")
        if taps > 1:  # (B, N, L*D) -> (B, N*L, D): the taps as tokens, as the release
            tokens = tokens.unflatten(-1, (taps, self.embed_dim)).flatten(1, 2)
        pooled = self.pooler(tokens)
        if self.outputs is not None:  # query i -> output i
            return torch.cat([getattr(self, f"{name}_classifier")(pooled[:, i])
                              for i, name in enumerate(self.OUTPUT_NAMES)], dim=-1)
        return self.linear(pooled.mean(dim=1))

    def extra_repr(self) -> str:
        return f"out_layers={self.out_layers}, optim_groups={self.optim_groups!r}"


def build(embed_dim: int, num_classes: int, num_heads: int | None = 16, depth: int = 4,
          **kw) -> AttentiveProbeV2:
    """The registry's entry point; `num_heads=None` means the release's 16."""
    heads = 16 if num_heads is None else num_heads
    return AttentiveProbeV2(embed_dim, num_classes, num_heads=heads, depth=depth, **kw)


# --------------------------------------------------------------------------- release checkpoints

def _strip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def config_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, int | float]:
    """embed_dim, num_classes, depth, num_queries, mlp_ratio of a release probe state dict.

    The number of heads is not in the weights (the release always uses 16).
    """
    s = _strip(state)
    try:
        _, num_queries, embed_dim = s["pooler.query_tokens"].shape
        num_classes = s["linear.weight"].shape[0]
        hidden = s["pooler.cross_attention_block.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"not a V-JEPA 2 attentive probe state dict: no {e.args[0]!r} "
                         f"(keys: {sorted(s)[:6]}...)") from None
    blocks = {k.split(".")[2] for k in s if k.startswith("pooler.blocks.")}
    return {"embed_dim": embed_dim, "num_classes": num_classes, "depth": len(blocks) + 1,
            "num_queries": num_queries, "mlp_ratio": hidden / embed_dim}


def load_release_state_dict(probe: AttentiveProbeV2, state: Mapping[str, torch.Tensor]) -> None:
    """Load one release probe state dict (an entry of `classifiers`) strictly into `probe`.

    The `module.` prefix (DDP) is stripped. Missing or unexpected keys and shape mismatches are
    an error that names them.
    """
    cleaned = _strip(state)
    own = probe.state_dict()
    missing = sorted(set(own) - set(cleaned))
    unexpected = sorted(set(cleaned) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(cleaned[k].shape)} vs probe {tuple(own[k].shape)}"
                    for k in set(own) & set(cleaned) if cleaned[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        hint = ""
        if any(".xattn.proj." in k for k in unexpected):
            hint = (" The checkpoint has xattn.proj, which V-JEPA 2's probe lacks: it looks like a "
                    "V-JEPA 1 probe; use probe=attentive.")
        else:
            try:
                found = config_from_state_dict(cleaned)
                hint = f" The checkpoint's probe has {found}."
            except ValueError:
                pass
        raise ValueError(f"probe checkpoint does not match AttentiveProbeV2: missing keys "
                         f"{missing}, unexpected keys {unexpected}, shape mismatches {shapes}."
                         + hint)
    probe.load_state_dict(cleaned, strict=True)


def load_release_grid(grid: nn.Module, states: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Load the release's list of heads into a `probes.grid.ProbeGrid` (head i <- states[i]).

    The release orders heads as its config's `multihead_kwargs` (for its eval configs: weight
    decay outer, lr inner); match the grid's points to that order before reading results.
    """
    heads = getattr(grid, "heads", None)
    if heads is None or len(heads) != len(states):
        have = "no heads" if heads is None else f"{len(heads)} heads"
        raise ValueError(f"the checkpoint holds {len(states)} probe heads but the grid has {have}")
    for i, (head, state) in enumerate(zip(heads, states)):
        try:
            load_release_state_dict(head, state)
        except ValueError as e:
            raise ValueError(f"head {i}: {e}") from None


def load_release_probe_checkpoint(path: str | Path) -> list[dict[str, torch.Tensor]]:
    """The probe state dicts in a V-JEPA 2 release probe checkpoint file, `module.` stripped.

    Accepts the release's `{"classifiers": [state dict, ...], "opt", "scaler", "epoch", ...}`
    (one entry per head of its grid; the published probes are such files), a single
    `{"classifier": state dict, ...}`, or a bare state dict. Read with `weights_only=True`; a file
    that needs pickle is refused. Load an entry with `load_release_state_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"probe checkpoint {path} needs pickle to load (it holds Python objects, "
                         f"not only tensors and plain containers); refusing it, since unpickling "
                         f"can run code. Re-save its 'classifiers' state dicts with torch.save. "
                         f"({str(e).splitlines()[0]})") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"probe checkpoint {path} holds a {type(obj).__name__}, not a dict")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        states = [obj]
    elif "classifiers" in obj:
        states = obj["classifiers"]
        if not isinstance(states, (list, tuple)) or not states:
            raise ValueError(f"probe checkpoint {path}: 'classifiers' should be a non-empty list "
                             f"of state dicts, got {type(states).__name__}"
                             + (" (empty)" if isinstance(states, (list, tuple)) else ""))
    elif "classifier" in obj:
        states = [obj["classifier"]]
    else:
        raise ValueError(f"probe checkpoint {path} has no 'classifiers' entry and is not a state "
                         f"dict; top-level keys: {sorted(map(str, obj))} (the V-JEPA 2 release "
                         f"saves classifiers, opt, scaler, epoch, batch_size, world_size)")
    out = []
    for i, state in enumerate(states):
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                     for v in state.values()):
            raise ValueError(f"probe checkpoint {path}: classifier {i} is not a state dict of "
                             f"tensors ({type(state).__name__})")
        out.append(_strip(state))
    return out
