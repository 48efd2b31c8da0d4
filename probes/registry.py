"""Probe kinds = the YAML files in probes/configs/probe (listed without importing torch)."""
from __future__ import annotations

from dataclasses import dataclass
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
    """Build a probe: `attentive` needs `num_heads` (the encoder's); other keys are the class's.
    `num_classes` is a tuple of sizes for a task with several outputs (anticipation), which only a
    probe type with `outputs` serves."""
    if not isinstance(num_classes, int) and not (kind in TYPES and TYPES[kind].outputs):
        raise ValueError(f"probe {kind!r} has one output; a task with several outputs (verb, "
                         f"noun, action: {tuple(num_classes)}) needs "
                         f"{' or '.join(k for k, t in TYPES.items() if t.outputs)}")
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
    if kind == "logreg":  # not trained: fitted on the training features (LogRegProbe, MVEB's)
        from probes.logreg import LogRegProbe

        return LogRegProbe(embed_dim, num_classes, **kw)
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


# ----- what each probe kind needs from a run (the planner asks; it never branches on a kind) -----

@dataclass(frozen=True)
class ProbeType:
    kind: str
    reads_boxes: bool = False          # classifies person boxes (needs a detection task)
    trained: bool = True               # False: fitted on cached training features (k-NN)
    encoder_heads: bool = True         # `num_heads: null` means the encoder's
    needs_token_grid: bool = False     # reads one clip's token map (RoI pooling)
    build_keys: tuple[str, ...] | None = None   # the only keys its builder takes (None: all)
    unused_keys: tuple[str, ...] = ()  # keys of the shared probe schema it ignores
    memory_keys: tuple[str, ...] = ()  # bound memory, never change a number: not protocol
    loads_release: str = "vjepa"       # format of `--probe-checkpoint` files
    # Serves tasks with several outputs (anticipation: verb, noun, action heads; the task's
    # num_classes is then a tuple of their sizes).
    outputs: bool = False

    def build_kwargs(self, cfg: dict, *, num_heads: int, token_grid=None) -> dict:
        """The builder's keyword arguments from the (overridden) probe config."""
        kw = {k: v for k, v in cfg.items() if k != "kind" and k not in GRID_KEYS}
        if self.build_keys is not None:
            kw = {k: v for k, v in kw.items() if k in self.build_keys}
        kw = {k: v for k, v in kw.items() if k not in self.unused_keys}
        if self.encoder_heads and "num_heads" not in self.unused_keys and kw.get("num_heads") is None:
            kw["num_heads"] = num_heads
        if self.needs_token_grid:
            kw["token_grid"] = token_grid
        return kw

    def protocol(self, cfg: dict) -> dict:
        """What of the probe config enters the protocol."""
        out = {k: v for k, v in cfg.items() if k not in self.memory_keys}
        if not out.get("grid"):  # one head: nothing is selected, the keys mean nothing
            for key in GRID_KEYS:
                out.pop(key, None)
        return out

    def load_trained(self, probe, path) -> dict:
        """Load a trained probe file (`--probe-checkpoint`); what the record says of it."""
        if self.loads_release == "vjepa2":
            from probes.attentive_v2 import load_release_probe_checkpoint, load_release_state_dict

            states = load_release_probe_checkpoint(path)
            if len(states) != 1:
                raise ValueError(f"{path} holds {len(states)} probe heads (V-JEPA 2 saves its "
                                 f"whole grid); this scores one trained probe: save the chosen "
                                 f"head alone as {{'classifiers': [state_dict]}}")
            load_release_state_dict(probe, states[0])
            return {"format": "vjepa2 release", "heads_in_file": 1}
        from probes.attentive import load_probe_checkpoint

        return load_probe_checkpoint(probe, path)


_SINGLE_HEAD_KEYS = ("num_heads", "num_queries", "depth", "mlp_ratio", "xattn_proj")
TYPES = {
    "attentive": ProbeType("attentive"),
    "attentive_v2": ProbeType("attentive_v2", encoder_heads=False, loads_release="vjepa2",
                              outputs=True),
    "linear": ProbeType("linear", unused_keys=_SINGLE_HEAD_KEYS),
    "roi_linear": ProbeType("roi_linear", reads_boxes=True, needs_token_grid=True,
                            unused_keys=_SINGLE_HEAD_KEYS),
    "knn": ProbeType("knn", trained=False, encoder_heads=False,
                     build_keys=("k", "temperature", "bank_chunk", "query_chunk"),
                     memory_keys=("bank_chunk", "query_chunk")),
    # MVEB's protocol (mteb's logistic regression); `benchmark: mveb` labels its records.
    "logreg": ProbeType("logreg", trained=False, encoder_heads=False,
                        build_keys=("benchmark", "samples_per_label", "n_experiments", "seed",
                                    "max_iter")),
}


def probe_type(kind: str) -> ProbeType:
    if kind not in TYPES:
        raise _unknown(kind)
    return TYPES[kind]
