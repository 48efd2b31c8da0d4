"""The transfer audit: does a video encoder earn its cost over an image encoder?

Both encoders frozen, one static-semantic task (appearance) and one temporal task (motion),
each task under one protocol for both (same head, same split), compared with the paired test
on the same evaluation videos. The acceptance rule: the video encoder is promoted only if its
gain on the temporal task is significant (the paired 95% interval of video - image lies above
0) and at least `margin` points; otherwise the image encoder stays. Its cost ratio (GFLOPs per
clip, video / image) is reported beside the verdict. Until both tasks have results for both
encoders the verdict is `pending`.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

AUDIT_VERSION = 1
DEFAULT_MARGIN = 2.0  # points of top-1


@dataclass
class TaskComparison:
    task: str
    role: str                       # 'static' or 'temporal'
    status: str                     # 'done', 'missing', 'mismatch'
    detail: str = ""
    protocol_id: str | None = None
    n: int | None = None
    image_top1: float | None = None
    video_top1: float | None = None
    diff: float | None = None       # video - image, points
    ci: tuple[float, float] | None = None
    p_bootstrap: float | None = None
    p_mcnemar: float | None = None
    records: dict = field(default_factory=dict)


def _name(rec: dict) -> str:
    from results.frame import encoder_label

    return (rec.get("extra") or {}).get("label") or encoder_label(rec["encoder"])


def _gflops(rec: dict | None) -> float | None:
    if not rec:
        return None
    meta = (rec.get("encoder") or {}).get("metadata") or {}
    value = (meta.get("at_run_input") or {}).get("gflops_per_clip", meta.get("gflops_per_clip"))
    return float(value) if isinstance(value, (int, float)) else None


def _top1(rec: dict) -> float | None:
    value = (rec.get("metrics") or {}).get("top1")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value else None


def pick(records: list[dict], who: str, task: str) -> list[dict]:
    """Records of `who` (a run label, an encoder label, or an encoder name: its trained
    checkpoints, or its random init where it has nothing else) on `task`, newest first; several
    checkpoints or architectures of one encoder are refused by the caller."""
    from results.frame import encoder_label

    on_task = [r for r in records if r.get("task") == task]
    by_label = [r for r in on_task if (r.get("extra") or {}).get("label") == who] or \
        [r for r in on_task if encoder_label(r["encoder"]) == who]
    if by_label:
        hits = by_label
    else:
        named = [r for r in on_task if r["encoder"].get("name") == who]
        trained = [r for r in named if not (r.get("checkpoint") or {}).get("random_init")]
        hits = trained or named
    from results.record import record_created

    # Newest first by the time read (records reach here checked: `created` parses).
    return sorted(hits, key=record_created, reverse=True)


def compare_task(records: list[dict], image: str, video: str, task: str, role: str,
                 *, n_boot: int = 2000, seed: int = 0) -> TaskComparison:
    from results.predictions import correct, read_predictions
    from results.stats import align, paired

    imgs, vids = pick(records, image, task), pick(records, video, task)
    missing = [who for who, hits in ((image, imgs), (video, vids)) if not hits]
    if missing:
        return TaskComparison(task, role, "missing", f"no record of {', '.join(missing)} on {task}")
    from results.frame import encoder_label

    for who, hits in ((image, imgs), (video, vids)):
        archs = sorted({encoder_label(r["encoder"]) for r in hits})
        if len(archs) > 1:
            raise ValueError(f"{who} has records of {len(archs)} architectures on {task} "
                             f"({'; '.join(archs)}): name one by its encoder label or run label")
        shas = {(r.get("checkpoint") or {}).get("sha256") for r in hits}
        if len(shas) > 1:
            labels = sorted({_name(r) for r in hits})
            raise ValueError(f"{who} has records of {len(shas)} checkpoints on {task} "
                             f"({'; '.join(labels)}): name one by its run label")
    imgs, vids = [r for r in imgs if _top1(r) is not None], [r for r in vids if _top1(r) is not None]
    if not imgs or not vids:
        return TaskComparison(task, role, "missing", f"no top-1 in the records of "
                              f"{image if not imgs else video} on {task}")
    common = [v for v in vids if any(i["protocol_id"] == v["protocol_id"] for i in imgs)]
    if not common:
        return TaskComparison(task, role, "mismatch",
                              f"{image} and {video} have no {task} records under the same protocol "
                              f"({sorted({r['protocol_id'] for r in imgs})} vs "
                              f"{sorted({r['protocol_id'] for r in vids})})")
    v = common[0]
    i = next(r for r in imgs if r["protocol_id"] == v["protocol_id"])
    out = TaskComparison(task, role, "done", protocol_id=v["protocol_id"],
                         image_top1=_top1(i), video_top1=_top1(v),
                         records={"image": i.get("_path"), "video": v.get("_path")})
    try:
        pi, pv = read_predictions(i["_path"]), read_predictions(v["_path"])
        ii, iv = align(pi, pv)
    except (KeyError, OSError, ValueError) as exc:
        out.status, out.detail = "mismatch", f"no paired test possible on {task}: {exc}"
        return out
    res = paired(correct(pv)[iv], correct(pi)[ii], n_boot=n_boot, seed=seed)
    out.n, out.diff = res.n, 100 * res.diff
    out.ci = (100 * res.ci[0], 100 * res.ci[1])
    out.p_bootstrap, out.p_mcnemar = res.p_bootstrap, res.p_mcnemar
    return out


def verdict(records: list[dict], *, image: str, video: str, static_task: str,
            temporal_task: str, margin: float = DEFAULT_MARGIN, n_boot: int = 2000,
            seed: int = 0) -> dict[str, Any]:
    """The audit's verdict record (a plain dict, JSON-ready)."""
    static = compare_task(records, image, video, static_task, "static", n_boot=n_boot, seed=seed)
    temporal = compare_task(records, image, video, temporal_task, "temporal", n_boot=n_boot,
                            seed=seed)
    img_rec = next(iter(pick(records, image, temporal_task) or pick(records, image, static_task)), None)
    vid_rec = next(iter(pick(records, video, temporal_task) or pick(records, video, static_task)), None)
    gi, gv = _gflops(img_rec), _gflops(vid_rec)
    pending = [t for t in (static, temporal) if t.status != "done"]
    if pending:
        winner = "pending"
        reason = "; ".join(t.detail for t in pending)
    else:
        gain, (lo, hi) = temporal.diff, temporal.ci
        significant = lo > 0
        if significant and gain >= margin:
            winner = video
            reason = (f"{video} gains {gain:+.1f} points on {temporal_task} (paired 95% CI "
                      f"{lo:+.1f} to {hi:+.1f}), significant and at least the {margin:g}-point margin")
        else:
            winner = image
            why = ("not significant" if not significant else
                   f"significant but below the {margin:g}-point margin")
            reason = (f"{video}'s gain on {temporal_task} is {gain:+.1f} points (paired 95% CI "
                      f"{lo:+.1f} to {hi:+.1f}): {why}; the image encoder stays")
    return {
        "kind": "transfer_audit",
        "audit_version": AUDIT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "image": image, "video": video,
        "static_task": static_task, "temporal_task": temporal_task,
        "rule": (f"{video} is promoted only if its gain on {temporal_task} is significant (paired "
                 f"bootstrap 95% interval of video - image above 0) and at least {margin:g} "
                 f"points; the static task is reported, not required"),
        "margin_points": margin,
        "tasks": {t.task: asdict(t) for t in (static, temporal)},
        "cost": {"image_gflops_per_clip": gi, "video_gflops_per_clip": gv,
                 "ratio": (gv / gi) if gi and gv else None},
        "accepted_winner": winner,
        "reason": reason,
    }


def describe(v: dict) -> list[str]:
    """The verdict as lines of text."""
    lines = [f"transfer audit: {v['image']} (image) vs {v['video']} (video)"]
    for t in v["tasks"].values():
        if t["status"] != "done":
            lines.append(f"  {t['task']} ({t['role']}): {t['status']}: {t['detail']}")
            continue
        ci = t["ci"]
        lines.append(f"  {t['task']} ({t['role']}), protocol {t['protocol_id']}, {t['n']} videos: "
                     f"image {t['image_top1']:.1f}, video {t['video_top1']:.1f}, video - image "
                     f"{t['diff']:+.1f} (paired 95% CI {ci[0]:+.1f} to {ci[1]:+.1f}; McNemar p = "
                     f"{t['p_mcnemar']:.3g})")
    cost = v["cost"]
    if cost["ratio"]:
        lines.append(f"  cost: {cost['video_gflops_per_clip']:g} vs {cost['image_gflops_per_clip']:g} "
                     f"GFLOPs per clip ({cost['ratio']:.2f}x)")
    lines.append(f"  rule: {v['rule']}")
    lines.append(f"  accepted_winner: {v['accepted_winner']} ({v['reason']})")
    return lines
