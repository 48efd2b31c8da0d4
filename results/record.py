"""Result records: one JSON file per evaluation, written atomically.

A record holds everything needed to trust and reproduce one number: encoder and checkpoint
(path + sha256), task and split, the resolved `protocol` and its short hash `protocol_id`,
metrics, data problems, timings, versions, git commit, host, device, world size and seed.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.bounded import json_depth
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
    # importlib.metadata reads installed metadata without importing the packages (no torch here);
    # imported here, as platform, socket and subprocess below: readers of records never need
    # them (the leaderboard's start-up).
    import importlib.metadata
    import platform

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path = _REPO_ROOT) -> str | None:
    """HEAD of the repository holding this code, or None (not a checkout, no git, no commit)."""
    import subprocess

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
    import socket

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
    """`ENC__TASK__PID__STAMP-xxxxxx.json`: every part made safe for a file name (a record's
    fields are untrusted: no separator, `..` or control character reaches the name), the
    random suffix keeping two records written in the same microsecond apart."""
    stamp = record_created(record).strftime("%Y%m%dT%H%M%S_%fZ")
    return (f"{_safe(record['encoder']['name'])}__{_safe(record['task'])}__"
            f"{_safe(record['protocol_id'], 64)}__{stamp}-{uuid.uuid4().hex[:6]}.json")


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
    """Read and check one record: the one reader of record files (the store, `compare`, the
    runner's finished-run check). RecordError (a ValueError) says what is wrong with the file:
    not JSON, too large or too deeply nested, not a record, or a field of the wrong type or
    range (`check_record`)."""
    path = Path(path)
    with open(path, "rb") as f:  # bounded: a huge file is refused before it is parsed
        data = f.read(MAX_RECORD_BYTES + 1)
    return parse_record(data, str(path))


# --------------------------------------------------------------------------------------------
# checking what is read: records, their exports and hand-made files are untrusted input

MAX_RECORD_BYTES = 32 << 20   # a record with a long probe history is well under 1 MiB
MAX_DEPTH = 64                # a record nests about 8 deep (extra.history, protocol)
FUTURE_SLACK = _dt.timedelta(days=1)   # clock skew, and local times written without a zone
EARLIEST = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
# Metrics that are percentages, in [0, 100]: accuracies, mAP, EK100's recall@k (per output,
# and the best head's), and VoE pairwise and absolute accuracies (per property, and the bounds
# of their intervals). AUROC (and its bounds) is in [0, 1].
PERCENT_METRIC = re.compile(
    r"^(train_|val_)?((verb_|noun_|action_)?(top\d+|recall\d+(_max_over_heads)?)"
    r"|mean_class_acc\w*|acc\w*|mAP|map"
    r"|((paper_)?relative_(mean|max)|absolute_max)(/[\w.+-]+?)?(_lo|_hi)?)$")
UNIT_METRIC = re.compile(r"^auroc_(mean|max)(/[\w.+-]+?)?(_lo|_hi)?$")
_COUNT_METRICS = ("num_samples", "classes_scored")
_TEXT_LIMIT = 4096            # names, ids, labels: longer is no name of ours


class RecordError(ValueError):
    """A record (file, export row or in-memory dict) that cannot be used, and why. `kind`:
    'format' (not JSON, too large, too deep), 'not_record' (JSON, but no record object), or
    'field' (a record with a field of the wrong type or range)."""

    def __init__(self, message: str, kind: str = "field"):
        super().__init__(message)
        self.kind = kind


def parse_record(data: bytes | str, where: str, *, need_version: bool = True) -> dict[str, Any]:
    """Parse the JSON text of one record (a file's bytes or an export's `record` cell) within
    MAX_RECORD_BYTES and MAX_DEPTH, then `check_record` it."""
    if isinstance(data, bytes):
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(f"{where} is larger than {_size(MAX_RECORD_BYTES)}: no record "
                              f"is that large", "format")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"{where} is not valid JSON: not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start})", "format") from None
    else:
        text = data
        if len(text) > MAX_RECORD_BYTES:
            raise RecordError(f"{where} is larger than {_size(MAX_RECORD_BYTES)}: no record "
                              f"is that large", "format")
    depth = json_depth(text.encode("utf-8"), MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise RecordError(f"{where} is nested more than {MAX_DEPTH} levels deep (a record nests "
                          f"far less): not a record of ours", "format")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RecordError(f"{where} is not valid JSON: {exc}", "format") from None
    except ValueError as exc:  # an integer past Python's digit limit, and the like
        what = "a number too long to read" if "digits" in str(exc) else f"a value that cannot " \
                                                                        f"be read ({exc})"
        raise RecordError(f"{where} holds {what}", "format") from None
    return check_record(obj, where, need_version=need_version)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def record_created(record: dict) -> _dt.datetime:
    """The record's `created` as an aware UTC datetime (a time without zone is UTC);
    RecordError when it is missing or not an ISO 8601 time."""
    value = record.get("created") if isinstance(record, dict) else None
    if not isinstance(value, str):
        raise RecordError(f"created must be an ISO 8601 time (text), not {_shown(value)}")
    try:
        when = _dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise RecordError(f"created {_shown(value)} is not an ISO 8601 time (e.g. "
                          f"2026-12-01T09:30:00+00:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc)


def _shown(value, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    kind = type(value).__name__ if not isinstance(value, str) else "text"
    text = text if len(text) <= limit else text[:limit] + "..."
    return text if isinstance(value, str) else f"{text} ({kind})"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text_ok(v, *, empty: bool = False) -> bool:
    return isinstance(v, str) and (empty or v.strip() != "") and len(v) <= _TEXT_LIMIT


def check_record(record, where: str = "record", *, need_version: bool = True,
                 now: _dt.datetime | None = None) -> dict[str, Any]:
    """`record` if every field the harness reads has the type and range it must have, else
    RecordError naming the first field that does not (prefixed with `where`).

    Checked: record_version (an integer this code understands), created (an ISO time, not
    more than a day in the future), encoder (an object with a name), task, split, protocol_id,
    protocol (an object: its protocol_version, probe, task sampling, manifests and label-
    efficiency fold), checkpoint, seed, world_size, device, precision, metrics (finite numbers;
    accuracies, mAP, recall@k and VoE accuracies are percentages in [0, 100], AUROC in
    [0, 1]; NaN is a metric that could not be computed, an empty cell), timings, extra
    (label, run_id), protocol_departures, imported. Fields the harness does not read may hold
    anything JSON holds."""
    try:
        _check(record, need_version, now)
    except RecordError as exc:
        raise RecordError(f"{where}: {exc}", exc.kind) from None
    return record


def _check(rec, need_version: bool, now) -> None:
    if not isinstance(rec, dict):
        raise RecordError(f"not a result record (a JSON {type(rec).__name__}, not an object)",
                          "not_record")
    if "record_version" in rec or need_version:
        if "record_version" not in rec:
            raise RecordError("not a result record (no record_version)", "not_record")
        version = rec["record_version"]
        if not _is_int(version) or version < 1:
            raise RecordError(f"record_version must be a positive integer, not {_shown(version)}")
        if version > RECORD_VERSION:
            raise RecordError(f"record_version {version} is newer than this code understands "
                              f"({RECORD_VERSION}); update harness")
    when = record_created(rec)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if when > now + FUTURE_SLACK:
        # No "now" in the message: the index remembers a verdict, and it must read the same
        # at every later read until the record's time comes.
        raise RecordError(f"created {rec['created']!r} is in the future (past this machine's "
                          f"clock): a wrong clock or a forged "
                          f"record, which would replace the real record of its run; it is not "
                          f"used (fix its created time or the clock of the machine that wrote it)")
    if when < EARLIEST:
        raise RecordError(f"created {rec['created']!r} is before 1970: not a time a record "
                          f"was written")
    encoder = rec.get("encoder")
    if not isinstance(encoder, dict) or not _text_ok(encoder.get("name")):
        raise RecordError(f"encoder must be an object with a name, not {_shown(encoder)}")
    for key in ("label", "family", "modality"):
        if encoder.get(key) is not None and not _text_ok(encoder[key], empty=True):
            raise RecordError(f"encoder.{key} must be text, not {_shown(encoder[key])}")
    for key in ("metadata", "config", "spec"):
        if encoder.get(key) is not None and not isinstance(encoder[key], dict):
            raise RecordError(f"encoder.{key} must be an object, not {_shown(encoder[key])}")
    _check_numbers(encoder.get("metadata") or {}, "encoder.metadata",
                   ("parameters", "gflops_per_clip"), nested="at_run_input")
    if not _text_ok(rec.get("task")):
        raise RecordError(f"task must be a name (text), not {_shown(rec.get('task'))}")
    if "protocol_id" not in rec or not _text_ok(rec["protocol_id"]):
        raise RecordError(f"protocol_id must be text, not {_shown(rec.get('protocol_id'))}")
    for key in ("split", "device", "precision", "host", "git_commit"):
        if rec.get(key) is not None and not _text_ok(rec[key], empty=True):
            raise RecordError(f"{key} must be text, not {_shown(rec[key])}")
    if rec.get("seed") is not None and not _is_int(rec["seed"]):
        raise RecordError(f"seed must be an integer, not {_shown(rec['seed'])}")
    if rec.get("world_size") is not None and not (_is_int(rec["world_size"])
                                                  and rec["world_size"] >= 1):
        raise RecordError(f"world_size must be a positive integer, not {_shown(rec['world_size'])}")
    for key in ("checkpoint", "protocol", "metrics", "timings", "extra", "protocol_departures",
                "imported", "data_problems", "versions"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            raise RecordError(f"{key} must be an object, not {_shown(rec[key])}")
    _check_checkpoint(rec.get("checkpoint") or {})
    _check_protocol(rec.get("protocol") or {})
    if rec.get("protocol_version") is not None and not (_is_int(rec["protocol_version"])
                                                        and rec["protocol_version"] >= 1):
        raise RecordError(f"protocol_version must be a positive integer, not "
                          f"{_shown(rec['protocol_version'])}")
    _check_metrics(rec.get("metrics") or {})
    _check_numbers(rec.get("timings") or {}, "timings", ("wall_seconds", "eval_samples_per_s"))
    extra = rec.get("extra") or {}
    for key in ("label", "run_id", "predictions"):
        if extra.get(key) is not None and not _text_ok(extra[key], empty=True):
            raise RecordError(f"extra.{key} must be text, not {_shown(extra[key])}")
    if extra.get("command") is not None and not isinstance(extra["command"], str):
        raise RecordError(f"extra.command must be text, not {_shown(extra['command'])}")
    _check_unicode(rec)


def _check_unicode(rec: dict) -> None:
    """Every text of the record (keys too) encodes as UTF-8. JSON can spell a lone surrogate
    (`"\\ud800"`) that no UTF-8 text holds: it would pass every check above and then stop each
    reader that writes the text out (pandas, pyarrow, a terminal) with UnicodeEncodeError."""
    try:
        json.dumps(rec, ensure_ascii=False, allow_nan=True).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass
    except (TypeError, ValueError):  # an in-memory record holding non-JSON values: not ours here
        return
    where = _bad_text(rec, "")
    raise RecordError(f"{where or 'a key'} holds text that is not valid Unicode (a lone "
                      f"surrogate such as \\ud800): not text a record writes")


def _bad_text(node, where: str) -> str | None:
    """The dotted place of the first text (key or value) under `node` that is not UTF-8."""
    items = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        place = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and not _encodes(key):
            return f"{where or 'the record'} (a key)"
        if isinstance(value, str) and not _encodes(value):
            return place
        found = _bad_text(value, place) if isinstance(value, (dict, list)) else None
        if found:
            return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _check_checkpoint(ckpt: dict) -> None:
    for key in ("path", "sha256", "key"):
        if ckpt.get(key) is not None and not _text_ok(ckpt[key], empty=True):
            raise RecordError(f"checkpoint.{key} must be text, not {_shown(ckpt[key])}")
    for key in ("step", "epoch"):
        if ckpt.get(key) is not None and not _is_int(ckpt[key]):
            raise RecordError(f"checkpoint.{key} must be a whole number, not {_shown(ckpt[key])}")
    if ckpt.get("random_init") is not None and not isinstance(ckpt["random_init"], bool):
        raise RecordError(f"checkpoint.random_init must be true or false, not "
                          f"{_shown(ckpt['random_init'])}")


def _check_protocol(protocol: dict) -> None:
    version = protocol.get("protocol_version")
    if version is not None and not (_is_int(version) and version >= 1):
        raise RecordError(f"protocol.protocol_version must be a positive integer, not "
                          f"{_shown(version)}")
    probe = protocol.get("probe")
    if probe is not None and not isinstance(probe, (dict, str)):
        raise RecordError(f"protocol.probe must be an object, not {_shown(probe)}")
    if isinstance(probe, dict) and probe.get("kind") is not None and not _text_ok(probe["kind"]):
        raise RecordError(f"protocol.probe.kind must be text, not {_shown(probe['kind'])}")
    task = protocol.get("task")
    if task is None:
        return
    if not isinstance(task, dict):
        raise RecordError(f"protocol.task must be an object, not {_shown(task)}")
    for key in ("sampling", "manifests"):
        if task.get(key) is not None and not isinstance(task[key], dict):
            raise RecordError(f"protocol.task.{key} must be an object, not {_shown(task[key])}")
    manifests = task.get("manifests") or {}
    for split, manifest in manifests.items():
        if manifest is not None and not isinstance(manifest, (dict, str)):
            raise RecordError(f"protocol.task.manifests.{split} must be an object, not "
                              f"{_shown(manifest)}")
        videos = manifest.get("videos") if isinstance(manifest, dict) else None
        if videos is not None and not (_is_int(videos) and videos >= 0):
            raise RecordError(f"protocol.task.manifests.{split}.videos must be a whole number "
                              f">= 0, not {_shown(videos)}")
    fold = task.get("train_fold")
    if fold is not None:
        if not isinstance(fold, dict):
            raise RecordError(f"protocol.task.train_fold must be an object, not {_shown(fold)}")
        fraction = fold.get("fraction")
        if not (_is_number(fraction) and 0 < fraction <= 1):
            raise RecordError(f"protocol.task.train_fold.fraction must be a number in (0, 1], "
                              f"not {_shown(fraction)}")
        if not (_is_int(fold.get("seed")) and fold["seed"] >= 0):
            raise RecordError(f"protocol.task.train_fold.seed must be an integer >= 0, not "
                              f"{_shown(fold.get('seed'))}")


def _check_metrics(metrics: dict) -> None:
    for name, value in metrics.items():
        if value is None:
            continue
        if not _is_number(value):
            raise RecordError(f"metrics.{name} must be a number, not {_shown(value)}")
        if isinstance(value, float) and math.isnan(value):
            continue  # not computed (e.g. mAP with no class scored): an empty cell
        if not math.isfinite(value):
            raise RecordError(f"metrics.{name} must be a finite number, not {value!r}")
        if PERCENT_METRIC.match(name) and not 0 <= value <= 100:
            raise RecordError(f"metrics.{name}={value!r} is out of range: accuracies, mAP and "
                              f"recall are percentages in [0, 100]")
        if UNIT_METRIC.match(name) and not 0 <= value <= 1:
            raise RecordError(f"metrics.{name}={value!r} is out of range: an AUROC is in [0, 1]")
        if name in _COUNT_METRICS and not (value >= 0 and float(value).is_integer()):
            raise RecordError(f"metrics.{name} must be a whole number >= 0, not {value!r}")


def _check_numbers(obj: dict, where: str, keys, nested: str | None = None) -> None:
    if not isinstance(obj, dict):
        return
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise RecordError(f"{where}.{key} must be a finite number >= 0, not {_shown(value)}")
    if nested is not None and obj.get(nested) is not None:
        if not isinstance(obj[nested], dict):
            raise RecordError(f"{where}.{nested} must be an object, not {_shown(obj[nested])}")
        _check_numbers(obj[nested], f"{where}.{nested}", keys)
