"""The k-NN probe against scikit-learn (majority voting) and hand-worked weighted votes."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

import probes
from probes.feature_cache import TokenCache
from probes.kinds import Classification
from probes.knn import (DEFAULT_K, DEFAULT_TEMPERATURE, KNNProbe, bank_from, knn_votes,
                        pool_tokens)

# --------------------------------------------------------------------------------------------
# the test's own k-NN classifier on the library's votes: the reference the probe is held to


def knn_scores(bank, bank_labels, tokens, **kw):
    """Query tokens (q, V, L, D) (or (q, L, D)) -> view-merged scores (q, C): the mean over views
    of each view's normalised votes."""
    if tokens.ndim == 3:
        tokens = tokens.unsqueeze(1)
    feats = pool_tokens(tokens)  # (q, V, D)
    q, v = feats.shape[:2]
    votes = knn_votes(bank, bank_labels, feats.reshape(q * v, -1).to(bank.device), **kw)
    return votes.reshape(q, v, -1).mean(dim=1)


def rank_classes(scores):
    """Classes by descending score, ties in class order (scikit-learn's argmax breaks them so)."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def knn_evaluate(train, evaluation, *, num_classes, k=DEFAULT_K, temperature=DEFAULT_TEMPERATURE,
                 topk=(1, 5), bank_chunk=16384, query_chunk=1024):
    """Metrics (top-k, `mean_class_acc`, percent) and per-sample predictions {path, label,
    topk_index, topk_prob} of a k-NN classifier whose bank is `train` and whose queries are
    `evaluation` (TokenCaches)."""
    from torchmetrics.classification import MulticlassAccuracy

    bank, bank_labels = bank_from(train.tokens, train.labels)
    labels = torch.as_tensor(evaluation.labels).long()
    ranked, probs = [], []
    for t in evaluation.tokens.split(query_chunk):
        s = knn_scores(bank, bank_labels, t, num_classes=num_classes, k=k,
                       temperature=temperature, bank_chunk=bank_chunk, query_chunk=query_chunk)
        order = rank_classes(s)
        ranked.append(order)
        probs.append(s.gather(1, order))
    ranked, probs = torch.cat(ranked), torch.cat(probs)
    # torchmetrics scores a tie-free stand-in (C - rank) so its top-k is exactly this ranking:
    # with the probabilities themselves its tie order (many classes get no vote) is unspecified.
    stand_in = torch.empty_like(probs).scatter_(
        1, ranked, torch.arange(num_classes, 0, -1, dtype=torch.float32).expand_as(probs).contiguous())
    metrics = {}
    for kk in topk:
        kk = min(int(kk), num_classes)
        m = MulticlassAccuracy(num_classes=num_classes, top_k=kk, average="micro")
        metrics[f"top{kk}"] = 100.0 * m(stand_in, labels).item()
    macro = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="macro")
    metrics["mean_class_acc"] = 100.0 * macro(stand_in, labels).item()
    n_top = min(5, num_classes)
    predictions = {"path": list(evaluation.paths), "label": labels.numpy(),
                   "topk_index": ranked[:, :n_top].numpy(), "topk_prob": probs[:, :n_top].numpy()}
    return metrics, predictions


def probe_views(probe, tokens):
    """tokens (B, V, L, D) -> logits (B, V, C): one probe pass per view, as the trainer runs it."""
    return Classification().forward(probe, tokens, {}, contextlib.nullcontext)


def merge_views(logits):
    """The trainer's view merge: the mean over views of the softmax."""
    return Classification().merge(logits)


# --------------------------------------------------------------------------------------------


def _data(n=60, q=25, classes=4, length=3, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    y = torch.arange(n) % classes
    yq = torch.randint(0, classes, (q,), generator=g)
    train = centres[y][:, None, None] + 1.2 * torch.randn(n, 1, length, dim, generator=g)
    query = centres[yq][:, None, None] + 1.2 * torch.randn(q, 1, length, dim, generator=g)
    return train, y, query, yq


def _pooled(tokens):  # the independent pooling: numpy mean over the tokens
    return tokens.numpy().astype(np.float64).mean(axis=2)[:, 0]


@pytest.mark.parametrize("k", [1, 5, 20])
def test_majority_votes_equal_scikit_learn(k):
    train, y, query, yq = _data()
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="uniform",
                               algorithm="brute").fit(_pooled(train), y.numpy())
    bank, labels = bank_from(train, y)
    scores = knn_scores(bank, labels, query, num_classes=4, k=k, temperature=None,
                        bank_chunk=7, query_chunk=4)
    np.testing.assert_allclose(scores.numpy(), ref.predict_proba(_pooled(query)), atol=1e-6)
    assert rank_classes(scores)[:, 0].tolist() == ref.predict(_pooled(query)).tolist()

    metrics, pred = knn_evaluate(TokenCache(train, y, [], 0.0),
                                 TokenCache(query, yq, [], 0.0, paths=[f"v{i}" for i in range(25)]),
                                 num_classes=4, k=k, temperature=None, bank_chunk=7,
                                 query_chunk=4)
    hat = ref.predict(_pooled(query))
    assert metrics["top1"] == pytest.approx(100 * np.mean(hat == yq.numpy()))
    assert metrics["mean_class_acc"] == pytest.approx(100 * balanced_accuracy_score(yq.numpy(), hat))
    assert set(pred) == {"path", "label", "topk_index", "topk_prob"}
    assert pred["topk_index"].shape == (25, 4) and pred["path"][3] == "v3"
    proba = ref.predict_proba(_pooled(query))
    assert metrics["top4"] == 100.0  # every class is within the top 4 of 4
    assert pred["topk_index"][:, 0].tolist() == hat.tolist()
    np.testing.assert_allclose(pred["topk_prob"], -np.sort(-proba, axis=1), atol=1e-6)


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_hand_worked_weighted_votes():
    # bank: label 0 at 0 deg; label 1 at 36.87 and 53.13 deg (cosines 0.8 and 0.6 to the query)
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[1.0, 0.0]])
    t = 0.07
    w = [math.exp(c / t) for c in (1.0, 0.8, 0.6)]
    votes = knn_votes(bank, labels, query, num_classes=3, k=3, temperature=t)
    assert votes[0].tolist() == pytest.approx([w[0] / sum(w), (w[1] + w[2]) / sum(w), 0.0],
                                              rel=1e-5)
    assert votes[0, 0] > 0.9  # the one close neighbour outweighs two farther ones ...
    uniform = knn_votes(bank, labels, query, num_classes=3, k=3, temperature=None)
    assert uniform[0].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])  # ... which win a vote
    # k = 2 at T = 0.07: p0 = 1 / (1 + exp(-0.2 / 0.07)) = 0.94569
    two = knn_votes(bank, labels, query, num_classes=3, k=2, temperature=t)
    assert two[0, 0].item() == pytest.approx(0.945687, abs=1e-5)
    # a tiny temperature neither overflows nor loses the ranking
    cold = knn_votes(bank, labels, query, num_classes=3, k=3, temperature=1e-3)
    assert torch.isfinite(cold).all() and cold[0, 0].item() == pytest.approx(1.0)


def test_chunking_and_view_merge():
    train, y, query, _ = _data(n=50, q=9)
    bank, labels = bank_from(train, y)
    whole = knn_scores(bank, labels, query, num_classes=4, k=20, temperature=0.07)
    chunked = knn_scores(bank, labels, query, num_classes=4, k=20, temperature=0.07,
                         bank_chunk=3, query_chunk=2)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    assert torch.allclose(whole.sum(1), torch.ones(9))
    # two views: the mean of each view's vote distribution (not of the features)
    other = torch.flip(query, dims=[3])
    views = torch.cat([query, other], dim=1)  # (q, 2, L, D)
    merged = knn_scores(bank, labels, views, num_classes=4, k=20, temperature=0.07)
    alone = knn_scores(bank, labels, other, num_classes=4, k=20, temperature=0.07)
    torch.testing.assert_close(merged, (whole + alone) / 2)
    feature_mean = knn_scores(bank, labels, views.mean(dim=1, keepdim=True), num_classes=4,
                              k=20, temperature=0.07)
    assert not torch.allclose(merged, feature_mean)


def test_registered_probe_plugs_into_the_trainers_view_merge():
    assert "knn" in probes.names()
    cfg = probes.config("knn")
    assert (cfg["k"], cfg["temperature"]) == (20, 0.07)
    probe = probes.from_config(cfg, embed_dim=6, num_classes=4)
    assert isinstance(probe, KNNProbe) and not list(probe.parameters())
    train, y, query, _ = _data()
    views = torch.cat([query, query.flip(3)], dim=1)
    with pytest.raises(RuntimeError, match="no bank"):
        probe(views[:, 0])
    probe.fit(train, y)
    bank, labels = bank_from(train, y)
    expected = knn_scores(bank, labels, views, num_classes=4, k=20, temperature=0.07)
    got = merge_views(probe_views(probe, views))
    torch.testing.assert_close(got, expected)
    assert "bank" not in probe.state_dict()
    with pytest.raises(ValueError, match="k must be"):
        probes.build("knn", 6, 4, k=0)
