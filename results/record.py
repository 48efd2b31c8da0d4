"""Result records: one JSON file per evaluation, written atomically.

A record holds everything needed to trust and reproduce one number: encoder and checkpoint
(path + sha256), task and split, the resolved `protocol` and its short hash `protocol_id`,
metrics, data problems, timings, versions, git commit, host, device, world size and seed.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.digest import json_digest

RECORD_VERSION = 1
# Bumped whenever code changes what a protocol field means (it is part of every protocol, so
# records of other versions never share a protocol_id). History:
#   1 (implicit: records without the field): sampling/augmentation of the first releases.
#   2: the release's exact frame indices and clip placement (eval clips placed at random, as
#      the release does), timm RandAugment on PIL frames with per-frame random erasing, the
#      release's probe function (no output projection in the cross-attention) and classifier
#      init, lr/wd schedules stepped before each update, wd cosine to 1e-6, grad-norm clip 1.0,
#      `batch_size` as the global batch, and the precision that actually ran.
PROTOCOL_VERSION = 2
_REPO_ROOT = Path(__file__).resolve().parents[1]
_VERSIONED = ("torch", "torchvision", "timm", "harness")


def protocol_id(protocol: dict) -> str:
    """First 12 hex chars of sha256 over canonical JSON: independent of key order."""
    return json_digest(protocol, 12)


def record_protocol_version(record: dict) -> int:
    """The protocol version of a record; records made before the field existed are version 1."""
    protocol = record.get("protocol") or {}
    return int(protocol.get("protocol_version") or record.get("protocol_version") or 1)


def package_versions() -> dict[str, str | None]:
    # importlib.metadata reads installed metadata without importing the packages (no torch here).
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path = _REPO_ROOT) -> str | None:
    """HEAD of the repository holding this code, or None (not a checkout, no git, no commit)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=3)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def make_record(*, encoder: dict, checkpoint: dict, task: str, split: str, protocol: dict,
                metrics: dict, data_problems: dict, timings: dict, seed: int, device: str,
                world_size: int = 1, precision: str | None = None,
                extra: dict | None = None) -> dict[str, Any]:
    """Assemble a record; `encoder` needs a `name`, `checkpoint` is e.g. {path, sha256, step,
    random_init} (use {} / random_init=True for a randomly initialised encoder)."""
    if not isinstance(encoder, dict) or not encoder.get("name"):
        raise ValueError("make_record: encoder must be a dict with at least a 'name'")
    if not task:
        raise ValueError("make_record: task must be a non-empty name")
    record = {
        "record_version": RECORD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
        "encoder": dict(encoder),
        "checkpoint": dict(checkpoint or {}),
        "task": task,
        "split": split,
        "protocol": protocol,
        "protocol_id": protocol_id(protocol),
        "protocol_version": record_protocol_version({"protocol": protocol}),
        "precision": precision,
        "metrics": dict(metrics),
        "data_problems": dict(data_problems or {}),
        "timings": dict(timings or {}),
        "seed": seed,
        "device": str(device),
        "world_size": int(world_size),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
    }
    if extra:
        record["extra"] = dict(extra)
    return record


def _json_default(value):
    # Common non-JSON values that have one obvious text/number form; anything else is an error
    # (a silently stringified tensor in a record would be worse than a failed write).
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return value.item()
    raise TypeError(f"record value {value!r} of type {type(value).__name__} is not JSON; "
                    f"convert it to a number, string, list or dict before writing")


def _safe(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")[:limit] or "x"


def record_filename(record: dict) -> str:
    created = _dt.datetime.fromisoformat(record["created"])
    stamp = created.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
    # The random suffix keeps two records written in the same microsecond apart.
    return (f"{_safe(record['encoder']['name'])}__{_safe(record['task'])}__"
            f"{record['protocol_id']}__{stamp}-{uuid.uuid4().hex[:6]}.json")


def write_record(record: dict, out_dir: str | os.PathLike, filename: str | None = None) -> Path:
    """Write `record` into `out_dir` atomically and return its path.

    The text goes to a hidden `.part` file in the same directory (same file system), is fsync-ed,
    then renamed over the final name with os.replace: readers see no file or a whole file, never a
    partial one, even with many jobs writing into the same folder.
    """
    for key in ("encoder", "task", "protocol_id", "created"):
        if key not in record:
            raise ValueError(f"not a result record (no {key!r}); build it with make_record()")
    text = json.dumps(record, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (filename or record_filename(record))
    return atomic_write(path, lambda f: f.write((text + "\n").encode("utf-8")))


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read one record; ValueError if the file is not valid JSON or not a record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "record_version" not in data:
        raise ValueError(f"{path} is not a result record (no record_version)")
    if data["record_version"] > RECORD_VERSION:
        raise ValueError(f"{path} has record_version {data['record_version']}, newer than this "
                         f"code understands ({RECORD_VERSION}); update harness")
    return data
