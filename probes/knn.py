"""k-NN probe: cosine similarity on mean-pooled frozen tokens, weighted votes of the k nearest.

The cheapest frozen evaluation, common in SSL papers; this is DINO's weighted k-NN (Caron et al.
2021, `eval_knn.py`): features L2-normalised, the k most similar training samples vote for their
label with weight exp(cos / T), k = 20 and T = 0.07 by default (`probes/configs/probe/knn.yaml`).
`temperature: null` gives every neighbour one vote (majority voting, scikit-learn's
`KNeighborsClassifier(weights="uniform")`). A sample's scores are its normalised votes.

Tokens `(n, V, L, D)` are mean-pooled over L (the segments' tokens concatenated per view, as the
trainer makes them). Spatial views are merged by the **mean of the per-view vote distributions**,
not by averaging the views' features first: it is the protocol's own view merge (the attentive
probe averages its per-view softmaxes), and each view's embedding stays a single clip's, drawn
from the same distribution as the training bank's single-clip embeddings (an average of three
crops' features is a smoother vector than any training clip's, which biases cosine ranks).
Training samples with several views or augmented copies put one bank entry per view or copy.

Memory stays bounded: similarities are computed for `query_chunk` queries against `bank_chunk`
bank rows at a time, keeping a running top-k, so the largest temporary is query_chunk x
bank_chunk (the pooled bank itself, n x D fp32, is held; a memory-mapped token cache is pooled
chunk by chunk). Scores and rankings are in fp32 whatever autocast is active.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_K, DEFAULT_TEMPERATURE = 20, 0.07


def _no_autocast(device: torch.device):
    # Cosine ranks must not be computed in bf16 (ties and swaps among close neighbours).
    return torch.autocast(device_type=device.type, enabled=False)


def pool_tokens(tokens: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n, ..., L, D) -> L2-normalised mean over L, (n, ..., D) fp32; read `chunk` rows at a time
    (a memory-mapped fp16 cache is never loaded whole)."""
    if tokens.ndim < 3:
        raise ValueError(f"expected tokens (n, ..., L, D), got {tuple(tokens.shape)}")
    if tokens.shape[0] == 0:
        return torch.empty((*tokens.shape[:-2], tokens.shape[-1]), dtype=torch.float32)
    parts = [F.normalize(t.float().mean(dim=-2), dim=-1) for t in tokens.split(chunk)]
    return torch.cat(parts)


def bank_from(tokens: torch.Tensor, labels: torch.Tensor, chunk: int = 4096
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training tokens (n, V, L, D) (or (n, L, D)) and labels (n,) -> bank (n*V, D), labels."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    if tokens.shape[0] != labels.shape[0]:
        raise ValueError(f"{tokens.shape[0]} training samples but {labels.shape[0]} labels")
    if tokens.ndim == 3:
        tokens = tokens.unsqueeze(1)
    feats = pool_tokens(tokens, chunk)  # (n, V, D)
    v = feats.shape[1]
    return feats.reshape(-1, feats.shape[-1]), labels.repeat_interleave(v)


@torch.no_grad()
def knn_votes(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, *,
              num_classes: int, k: int = DEFAULT_K, temperature: float | None = DEFAULT_TEMPERATURE,
              bank_chunk: int = 16384, query_chunk: int = 1024) -> torch.Tensor:
    """Normalised votes (Q, C) of the k nearest bank rows (cosine: rows must be L2-normalised).

    exp(cos / T) weights are taken relative to each query's best neighbour (exp((cos - max) / T)):
    the same votes once normalised, without overflow at small T."""
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank {tuple(bank.shape)} and queries {tuple(queries.shape)} must be "
                         f"(n, D) and (q, D) with the same D")
    if bank.shape[0] == 0:
        raise ValueError("the k-NN bank is empty: no training sample was encoded")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"knn k must be an integer >= 1, got {k!r}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"knn temperature must be > 0 or null (uniform votes), got {temperature!r}")
    device = queries.device
    bank_labels = bank_labels.to(device).long()
    if int(bank_labels.max()) >= num_classes or int(bank_labels.min()) < 0:
        raise ValueError(f"bank labels must lie in [0, {num_classes})")
    kk = min(k, bank.shape[0])
    out = []
    with _no_autocast(device):
        for q in queries.float().split(query_chunk):
            best_sim = torch.full((q.shape[0], 0), -2.0, device=device)
            best_idx = torch.zeros((q.shape[0], 0), dtype=torch.long, device=device)
            for start in range(0, bank.shape[0], bank_chunk):
                b = bank[start:start + bank_chunk].to(device, torch.float32)
                sim = torch.cat([best_sim, q @ b.T], dim=1)
                idx = torch.cat([best_idx, torch.arange(start, start + b.shape[0],
                                                        device=device).expand(q.shape[0], -1)],
                                dim=1)
                best_sim, pos = sim.topk(min(kk, sim.shape[1]), dim=1)
                best_idx = idx.gather(1, pos)
            if temperature is None:
                weights = torch.ones_like(best_sim)
            else:
                weights = ((best_sim - best_sim[:, :1]) / temperature).exp()
            votes = torch.zeros(q.shape[0], num_classes, device=device)
            votes.scatter_add_(1, bank_labels[best_idx], weights)
            out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out) if out else torch.empty(0, num_classes, device=device)


class KNNProbe(nn.Module):
    """The k-NN classifier as a probe module: `fit(tokens, labels)` stores the pooled bank;
    `forward(tokens (B, L, D))` returns log votes, so `softmax(forward(x))` is the normalised
    votes and the trainer's view merge (mean of per-view softmaxes) gives the mean over
    views of each view's normalised votes.

    Nothing trains (`trainable = False`): the trainer must fit it on the training features
    instead of running epochs."""

    kind = "knn"
    trainable = False

    def __init__(self, embed_dim: int, num_classes: int, k: int = DEFAULT_K,
                 temperature: float | None = DEFAULT_TEMPERATURE, bank_chunk: int = 16384,
                 query_chunk: int = 1024):
        super().__init__()
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"knn k must be an integer >= 1, got {k!r}")
        if temperature is not None and not (isinstance(temperature, (int, float))
                                            and temperature > 0):
            raise ValueError(f"knn temperature must be > 0 or null, got {temperature!r}")
        self.embed_dim, self.num_classes = int(embed_dim), int(num_classes)
        self.k, self.temperature = k, None if temperature is None else float(temperature)
        self.bank_chunk, self.query_chunk = int(bank_chunk), int(query_chunk)
        # Not in the state dict: the bank is the training split's features, rebuilt from them.
        self.register_buffer("bank", torch.empty(0, self.embed_dim), persistent=False)
        self.register_buffer("bank_labels", torch.empty(0, dtype=torch.long), persistent=False)

    def fit(self, tokens: torch.Tensor, labels: torch.Tensor) -> "KNNProbe":
        if tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"k-NN probe of width {self.embed_dim} got tokens "
                             f"{tuple(tokens.shape)}")
        bank, bank_labels = bank_from(tokens, labels)
        self.bank = bank.to(self.bank.device)
        self.bank_labels = bank_labels.to(self.bank.device)
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.bank.shape[0] == 0:
            raise RuntimeError("the k-NN probe has no bank: fit() it on the training split's "
                               "tokens before evaluating")
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"k-NN probe expects tokens (B, N, {self.embed_dim}), got "
                             f"{tuple(tokens.shape)}")
        votes = knn_votes(self.bank, self.bank_labels, pool_tokens(tokens).to(self.bank.device),
                          num_classes=self.num_classes, k=self.k, temperature=self.temperature,
                          bank_chunk=self.bank_chunk, query_chunk=self.query_chunk)
        return votes.log()  # 0 votes -> -inf -> probability 0 after softmax
