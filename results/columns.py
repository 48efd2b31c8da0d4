"""What a leaderboard column is called: the task, what sets its protocol apart, and where that
protocol departs from the task's published one.

- `k400 (16x8x3, attentive)`: frames x segments x views of evaluation, and the probe;
- `physics_synth (8 frames, latent surprise)`: a VoE run's window and what its surprise
  compares;
- `k400 (16x8x3, attentive; epochs 1, batch_size 8)`: a record's `protocol_departures` (dotted
  protocol keys -> values, set by the runner where the run leaves the task's published
  protocol), named by the key's last part;
- two protocols that would still share a name get the fewest fields that tell them apart
  (`frame step 2`), else a prefix of their protocol id;
- a note for each task under several protocols names the fields that differ.
"""
from __future__ import annotations

from typing import Any

# How many differing protocol fields a note spells out before summarising the rest.
_MAX_DIFFS = 4

# Protocol fields by the short names readers know them by (the dotted key stays in notes).
SHORT_NAMES = {
    "task.sampling.frames_per_clip": "frames",
    "task.sampling.frame_step": "frame step",
    "task.sampling.eval_segments": "segments",
    "task.sampling.eval_views": "views",
    "task.sampling.eval_placement": "eval placement",
    "task.sampling.train_segments": "train segments",
    "probe.kind": "probe",
    "probe.selection": "selection",
    "probe.depth": "probe depth",
    "protocol_version": "version",
    "precision": "precision",
    "optim.lr": "lr",
    "optim.epochs": "epochs",
    "optim.weight_decay": "wd",
    "optim.batch_size": "batch",
    "task.manifests.eval.sha256": "eval manifest",
    "task.manifests.train.sha256": "train manifest",
    "task.manifests.eval.videos": "eval videos",
    "task.manifests.train.videos": "train videos",
    "task.num_classes": "classes",
}
# Which differing fields name a column first (when the sampling and probe do not tell apart).
_NAME_PRIORITY = ["protocol_version", "precision", "probe.selection", "task.sampling.frame_step",
                  "task.sampling.eval_placement", "optim.epochs", "optim.lr",
                  "task.manifests.train.videos", "task.manifests.train.sha256"]
# The order departures are named in (then the others by key): what a reader checks first.
_DEPARTURE_ORDER = ["sampling.frames_per_clip", "sampling.frame_step",
                    "sampling.eval_segments", "sampling.eval_views", "probe.kind",
                    "probe.depth", "probe.selection", "optim.epochs", "optim.lr",
                    "optim.batch_size", "optim.weight_decay"]

ABSENT = object()


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted.key: leaf}; lists and scalars are leaves."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {"": data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def protocol_diff(a: dict, b: dict) -> list[str]:
    """Differing dotted keys of two protocols, as 'key: a vs b' (sorted by key)."""
    fa, fb = flatten(a or {}), flatten(b or {})
    lines = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, ABSENT), fb.get(key, ABSENT)
        if va != vb:
            lines.append(f"{key}: {show(va)} vs {show(vb)}")
    return lines


def differing_keys(protocols: list[dict]) -> list[str]:
    flats = [flatten(p or {}) for p in protocols]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({repr(f.get(k, ABSENT)) for f in flats}) > 1]


def short_name(key: str) -> str:
    return SHORT_NAMES.get(key, key[5:] if key.startswith("task.") else key)


def show(value: Any) -> str:
    if value is ABSENT or value is None:
        return "<absent>" if value is ABSENT else "none"
    text = str(value)
    if isinstance(value, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:8]  # a sha256: its prefix tells files apart
    return text if len(text) <= 40 else text[:37] + "..."


def departures_text(departures: dict | None) -> str:
    """`{"optim.epochs": 1, "optim.batch_size": 8}` -> `epochs 1, batch_size 8`: each key by its
    last part (the whole dotted key where two keys share it), in a fixed order."""
    if not isinstance(departures, dict) or not departures:
        return ""
    keys = [k for k in _DEPARTURE_ORDER if k in departures]
    keys += sorted(k for k in departures if k not in _DEPARTURE_ORDER)
    last = [str(k).rsplit(".", 1)[-1] for k in keys]
    names = [k if last.count(part) > 1 else part for k, part in zip(keys, last)]
    return ", ".join(f"{name} {_value(departures[k])}" for name, k in zip(names, keys))


def _value(value: Any) -> str:
    # As the value was written in the override (`optim.use_bf16=false`), not Python's spelling.
    if isinstance(value, bool):
        return "true" if value else "false"
    return show(value)


def base_name(task: str, protocol: dict, departures: dict | None = None) -> str:
    """`task (16x8x3, attentive)`, with `; <departures>` where the protocol leaves the task's
    published one."""
    protocol = protocol if isinstance(protocol, dict) else {}
    sampling = (protocol.get("task") or {}).get("sampling") if isinstance(protocol.get("task"), dict) else None
    parts = []
    if isinstance(sampling, dict) and sampling.get("frames_per_clip"):
        if "eval_segments" in sampling or "eval_views" in sampling:
            parts.append("x".join(str(sampling.get(k, "?")) for k in
                                  ("frames_per_clip", "eval_segments", "eval_views")))
        else:  # one clip per sample (a VoE window): no segments or views to count
            parts.append(f"{sampling['frames_per_clip']} frames")
    probe = protocol.get("probe")
    kind = probe.get("kind") if isinstance(probe, dict) else probe
    if kind:
        parts.append(str(kind))
    surprise = protocol.get("surprise")
    if isinstance(surprise, dict) and surprise.get("target"):
        target = str(surprise["target"])
        parts.append(f"{'pixel' if target == 'pixels' else target} surprise")
    inside = ", ".join(parts)
    departed = departures_text(departures)
    if departed:
        inside = f"{inside}; {departed}" if inside else departed
    return f"{task} ({inside})" if inside else task


def headline_metric(protocol: Any) -> str:
    """The metric a protocol's runs are ranked by when none is asked for: its own `metrics.main`
    (a VoE run's), else its task's `metric` (top1, top5, mAP, recall5), else top1."""
    if not isinstance(protocol, dict):
        return "top1"
    for section, key in (("metrics", "main"), ("task", "metric")):
        value = protocol.get(section)
        value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    return "top1"


def column_names(task: str, pids: list[str], protocols: dict[str, dict],
                 departures: dict[str, dict] | None = None) -> dict[str, str]:
    """One name per protocol id of `task`, each unique."""
    departures = departures or {}
    names = {pid: base_name(task, protocols[pid], departures.get(pid)) for pid in pids}
    if len(set(names.values())) == len(names):
        return names
    keys = differing_keys([protocols[p] for p in pids])
    base_keys = {"task.sampling.frames_per_clip", "task.sampling.eval_segments",
                 "task.sampling.eval_views", "probe.kind"}
    keys = [k for k in _NAME_PRIORITY if k in keys] + [k for k in keys if k not in _NAME_PRIORITY
                                                        and k not in base_keys]
    out = {}
    for pid in pids:
        clash = [p for p in pids if names[p] == names[pid]]
        if len(clash) == 1:
            out[pid] = names[pid]
            continue
        # The fewest fields (at most 2) that set this protocol apart from its namesakes.
        flats = {p: flatten(protocols[p] or {}) for p in clash}
        local = [k for k in keys if len({repr(flats[p].get(k, ABSENT)) for p in clash}) > 1][:2]
        extra = [_name_part(k, flats[pid].get(k, ABSENT)) for k in local]
        out[pid] = _append(names[pid], ", ".join(extra))
    if len(set(out.values())) < len(out):  # still alike: the protocol id tells them apart
        out = {pid: _append(n, pid[:6]) for pid, n in out.items()}
    return out


def _append(name: str, extra: str) -> str:
    if not extra:
        return name
    return name[:-1] + ", " + extra + ")" if name.endswith(")") else f"{name} ({extra})"


def _name_part(key: str, value: Any) -> str:
    if key == "protocol_version":
        return f"v{1 if value is ABSENT or value is None else value}"
    if key == "precision":
        return "precision unknown" if value is ABSENT or value is None else str(value)
    return f"{short_name(key)} {show(value)}"


def mismatch_note(task: str, pids: list[str], protocols: dict, names: dict) -> str:
    ref = pids[0]
    parts = []
    for pid in pids[1:]:
        fa, fb = flatten(protocols[ref] or {}), flatten(protocols[pid] or {})
        keys = [k for k in sorted(set(fa) | set(fb)) if fa.get(k, ABSENT) != fb.get(k, ABSENT)]
        keys = [k for k in _NAME_PRIORITY + list(SHORT_NAMES) if k in keys] + \
               [k for k in keys if k not in _NAME_PRIORITY and k not in SHORT_NAMES]
        keys = list(dict.fromkeys(keys))
        shown = "; ".join(f"{short_name(k)} {show(fa.get(k, ABSENT))} vs {show(fb.get(k, ABSENT))}"
                          + (f" ({k})" if short_name(k) != k else "") for k in keys[:_MAX_DIFFS])
        if len(keys) > _MAX_DIFFS:
            shown += f"; and {len(keys) - _MAX_DIFFS} more"
        parts.append(f"'{names[ref]}' vs '{names[pid]}': {shown or 'fields not recorded'}")
    return (f"{task}: {len(pids)} protocols, not comparable, split into columns: "
            + " | ".join(parts))
