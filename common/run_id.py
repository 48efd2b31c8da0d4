"""The one run-identity format: the runner, the store, the launcher and `watch` all use it.

A run is what was measured (the encoder's resolved config and the sha256 of its weights, or a
random init), on which task and split, under which protocol, with which seed, and which trained probe file where one was
scored instead of trained. Re-running the same command gives the same identity; another seed,
file or protocol another one.
"""
from __future__ import annotations

from common.digest import json_digest


def run_identity(*, encoder: dict | str | None, checkpoint_sha256: str | None,
                 random_init: bool, task: str | None, split: str | None,
                 protocol_id: str | None, seed, probe_checkpoint_sha256: str | None = None) -> str:
    """16 hex digits over the canonical JSON of the run's identifying fields."""
    bits = {"encoder": encoder, "checkpoint": checkpoint_sha256,
            "random_init": bool(random_init), "task": task, "split": split,
            "protocol_id": protocol_id, "seed": seed}
    if probe_checkpoint_sha256:
        bits["probe_checkpoint"] = probe_checkpoint_sha256
    return json_digest(bits, 16)


def record_run_identity(record: dict) -> str:
    """A record's run identity: the one its runner wrote, else the same format over what the
    record says (imported or hand-made records)."""
    extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
    if extra.get("run_id"):
        return str(extra["run_id"])
    encoder = record.get("encoder") if isinstance(record.get("encoder"), dict) else {}
    checkpoint = record.get("checkpoint") if isinstance(record.get("checkpoint"), dict) else {}
    probe = extra.get("probe_checkpoint") if isinstance(extra.get("probe_checkpoint"), dict) else {}
    return run_identity(encoder=encoder.get("config") or encoder.get("name"),
                        checkpoint_sha256=checkpoint.get("sha256") or checkpoint.get("path"),
                        random_init=bool(checkpoint.get("random_init")),
                        task=record.get("task"), split=record.get("split"),
                        protocol_id=record.get("protocol_id"), seed=record.get("seed"),
                        probe_checkpoint_sha256=probe.get("sha256"))
