"""Probe kinds = the YAML files in probes/configs/probe (listed without importing torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.names import UnknownNameError, unknown  # noqa: F401  (re-exported)

CONFIG_DIR = Path(__file__).parent / "configs" / "probe"
GRID_KEYS = ("grid", "selection", "val_fraction")


def names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _unknown(kind: str) -> UnknownNameError:
    return unknown("probe kind", kind, names())


def config(kind: str) -> dict[str, Any]:
    import yaml

    path = CONFIG_DIR / f"{kind}.yaml"
    if not path.exists():
        raise _unknown(kind)
    return yaml.safe_load(path.read_text()) or {}


def build(kind: str, embed_dim: int, num_classes: int, **kw):
    """Build a probe: `attentive` needs `num_heads` (the encoder's); other keys are the class's."""
    if kind == "attentive":
        from probes.attentive import AttentiveProbe

        if kw.get("num_heads") is None:
            raise ValueError("the attentive probe needs num_heads: pass the encoder's "
                             "(encoder.spec.num_heads), as the V-JEPA protocol does")
        return AttentiveProbe(embed_dim, num_classes, **kw)
    if kind == "attentive_v2":
        from probes.attentive_v2 import build as build_attentive_v2

        return build_attentive_v2(embed_dim, num_classes, **kw)
    if kind == "knn":  # not trained: the trainer fits it on the training features (KNNProbe)
        from probes.knn import KNNProbe

        return KNNProbe(embed_dim, num_classes, **kw)
    if kind == "linear":
        from probes.linear import LinearProbe

        return LinearProbe(embed_dim, num_classes, **kw)
    if kind == "roi_linear":  # AVA: reads (tokens, boxes); needs the clip's token grid
        from probes.roi import RoIProbe

        if kw.get("token_grid") is None:
            raise ValueError("the roi_linear probe needs the encoder's token grid (t, h, w) of "
                             "one clip: pass token_grid=encoder.spec.grid_for(frames, height, width)")
        return RoIProbe(embed_dim, num_classes, **kw)
    raise _unknown(kind)


def from_config(cfg: dict[str, Any], *, embed_dim: int, num_classes: int,
                num_heads: int | None = None):
    """Build from a probe config dict (a probes/configs/probe YAML, possibly overridden).

    `num_heads: null` in the config means the encoder's heads, given here as `num_heads`.
    """
    kw = dict(cfg)
    kind = kw.pop("kind", None)
    for key in GRID_KEYS:  # how heads are trained and chosen, not how one is built
        kw.pop(key, None)
    if kind is None:
        raise ValueError(f"probe config has no 'kind' (one of {', '.join(names())})")
    if kind == "attentive" and kw.get("num_heads") is None:
        kw["num_heads"] = num_heads
    return build(kind, embed_dim, num_classes, **kw)
