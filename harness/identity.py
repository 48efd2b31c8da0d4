"""Identity, decided in one place: what was measured, under which protocol, in which run.

- Encoder: the registry name plus the resolved architecture. A run whose architecture differs
  from the entry's (an `encoder.arch.*` override, a Hugging Face folder's config.json) carries a
  label that says what differs: `videomae_vits (embed_dim 192, depth 2)`.
- Checkpoint: the sha256 of the bytes actually loaded (the encoder loader hashes what it reads;
  the hash taken before loading, to find finished runs, must equal it or the run stops).
- Protocol: a function of content only (`tasks` hashes manifests by content, not location).
  `departures` lists where it departs from the task's published protocol (e.g. `epochs 1`).
- Run: `common.run_id.run_identity`, the one format of the runner, the store, the launcher and
  `watch`.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.run_id import run_identity

# Task config keys that say where data lives or how it is read, not what a number means.
_TASK_PLACE_KEYS = ("name", "description", "kind", "data", "max_failure_fraction", "decoder",
                    "default_probe", "cache_features", "cached_train_copies")


# ----- encoder --------------------------------------------------------------------------------

def arch_differences(encoder_cfg: dict) -> dict:
    """{arch key: value} where the run's architecture differs from its registry entry's."""
    import encoders

    name = encoder_cfg.get("name")
    try:
        entry = encoders.config(name)
    except (KeyError, ValueError, ImportError):
        return {}
    ours, theirs = dict(encoder_cfg.get("arch") or {}), dict(entry.get("arch") or {})
    return {k: ours[k] for k in sorted(ours) if ours[k] != theirs.get(k)}


def encoder_label(encoder_cfg: dict) -> str:
    """`name`, or `name (key value, ...)` for an architecture the entry does not have."""
    name = str(encoder_cfg.get("name"))
    diff = arch_differences(encoder_cfg)
    if not diff:
        return name
    return f"{name} ({', '.join(f'{k} {_short(v)}' for k, v in diff.items())})"


def _short(value) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


# ----- checkpoint -----------------------------------------------------------------------------

def checkpoint_source(c: dict) -> Path | None:
    """What a run reads its weights from: --checkpoint (a file or a Hugging Face folder), the
    entry's packaged default, or None for a random init."""
    if c["random_init"]:
        return None
    if not c["checkpoint"]:
        import encoders

        return encoders.default_checkpoint(c["encoder"])
    return Path(os.path.expanduser(str(c["checkpoint"])))


def checkpoint_identity(c: dict) -> dict:
    """{random_init, sha256} of the weights, hashed the way the loader hashes what it reads
    but without loading them (to find a finished run before a multi-GB file is read)."""
    path = checkpoint_source(c)
    if path is None:
        return {"random_init": bool(c["random_init"]), "sha256": None}
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}; pass --checkpoint PATH to a "
                                f"released .pth/.pth.tar/.safetensors file or a Hugging Face "
                                f"folder")
    import encoders

    return {"random_init": False, "sha256": encoders.checkpoint_sha256(path)}


def check_loaded(planned: dict, loaded: dict) -> None:
    """The weights scored are the weights the run's identity names: a file replaced between
    hashing and loading (a pretraining run saving with os.replace) stops the run."""
    if planned.get("sha256") and loaded.get("sha256") != planned["sha256"]:
        raise ValueError(f"the checkpoint {loaded.get('path')} changed while this run started "
                         f"(sha256 {planned['sha256'][:12]} when planned, "
                         f"{str(loaded.get('sha256'))[:12]} when loaded): a run still writing "
                         f"it? Re-run once the file is final")


# ----- protocol -------------------------------------------------------------------------------

def build_protocol(task, split: str, *, probe_type, probe_cfg: dict, optim, precision: str,
                   cache: bool, copies: int, stored: bool, selection: dict | None) -> dict:
    """The resolved evaluation protocol: task sampling + probe + optimisation + split + data.

    The encoder's own input size is a property of the encoder, not of the protocol (ViT-H/16 at
    224 and at 384 stay comparable, as in the paper). `protocol_version` and the precision that
    really ran are part of it, so numbers made under other code or precision never share an id.
    """
    from results import PROTOCOL_VERSION

    task_protocol = dict(task.protocol(split))
    task_protocol.pop("resolution", None)
    if cache and copies > 0:
        # The task's augmentation drawn a fixed number of times per video and cached: close to
        # online augmentation, but not the same protocol.
        task_protocol["feature_cache"] = {"augmented_copies_per_video": int(copies)}
    elif cache:
        task_protocol["train_aug"] = "none: fixed centred clips, cached frozen features"
    if cache and stored:
        # Tokens on disk are float16 (the in-memory cache keeps float32): a borderline sample
        # can flip, so the two are different protocols.
        task_protocol.setdefault("feature_cache", {})["stored_as"] = "float16"
    if selection is not None:
        task_protocol["selection_split"] = selection
    return {"protocol_version": PROTOCOL_VERSION, "task": task_protocol,
            "probe": probe_type.protocol(probe_cfg), "optim": optim.protocol(),
            "precision": precision}


def departures(task_cfg: dict, optim_protocol: dict) -> dict:
    """{dotted key: value} where a run's task config departs from the task's published one
    (the built-in YAML of that name); {} for a user's own task (its YAML is its protocol)."""
    import yaml

    from harness.config import GROUP_DIRS

    path = GROUP_DIRS["task"] / "task" / f"{task_cfg.get('name')}.yaml"
    if not path.is_file():
        return {}
    published = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    ours = {k: v for k, v in task_cfg.items() if k not in _TASK_PLACE_KEYS}
    theirs = {k: v for k, v in published.items() if k not in _TASK_PLACE_KEYS}
    ours["optim"] = {k: v for k, v in (ours.get("optim") or {}).items() if k in optim_protocol}
    theirs["optim"] = {k: v for k, v in (theirs.get("optim") or {}).items()
                       if k in optim_protocol}
    flat_ours, flat_theirs = _flatten(ours), _flatten(theirs)
    return {k: flat_ours[k] for k in sorted(flat_ours) if flat_ours[k] != flat_theirs.get(k)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ----- run ------------------------------------------------------------------------------------

def run_id(encoder_cfg: dict, checkpoint: dict, task: str, split: str, protocol_id: str,
           seed: int, probe_checkpoint_sha256: str | None = None) -> str:
    return run_identity(encoder=encoder_cfg, checkpoint_sha256=checkpoint["sha256"],
                        random_init=checkpoint["random_init"], task=task, split=split,
                        protocol_id=protocol_id, seed=seed,
                        probe_checkpoint_sha256=probe_checkpoint_sha256)


def find_finished(records_dir: Path, identity: str) -> Path | None:
    """A record already written by the run with this identity, if any. Files that are not
    valid records (torn, hostile, of another tool) are passed over: the store reports them."""
    from results import read_record

    if not records_dir.is_dir():
        return None
    for path in sorted(records_dir.glob("*.json")):
        try:
            rec = read_record(path)
        except (OSError, ValueError):
            continue
        if (rec.get("extra") or {}).get("run_id") == identity:
            return path
    return None
