"""Probes on frozen encoders: attentive and linear probes, and the probe trainer.

`names()`, `config()` and `UnknownNameError` are torch-free; everything else is imported on first
use (module `__getattr__`) so listing probe kinds stays fast.
"""
from __future__ import annotations

from probes.registry import UnknownNameError, build, config, from_config, names

_LAZY = {
    "AttentiveProbe": "probes.attentive",
    "AttentiveProbeV2": "probes.attentive_v2",
    "ProbeGrid": "probes.grid",
    "LinearProbe": "probes.linear",
    "LogRegProbe": "probes.logreg",
    "OptimConfig": "probes.optim",
    "ProbeResult": "probes.trainer",
    "Preempted": "probes.state",
    "StateInUseError": "probes.state",
    "state_lock": "probes.state",
    "train_probe": "probes.trainer",
    "evaluate": "probes.evaluation",
    "evaluate_full": "probes.evaluation",
    "resolve_precision": "probes.forward",
    "encode_views": "probes.forward",
    "load_probe_checkpoint": "probes.attentive",
    "CosineSchedule": "probes.optim",
    "cosine_value": "probes.optim",
    "param_groups": "probes.optim",
    "DataProblems": "probes.problems",
    "DataProblemError": "probes.problems",
}

__all__ = ["UnknownNameError", "build", "config", "from_config", "names", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probes' has no attribute {name!r}")
