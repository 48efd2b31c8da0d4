"""Checkpoint series: one encoder's checkpoints as rows, in pretraining-step order."""
from __future__ import annotations

import math
import re


def _step_label(row) -> str:
    step = row.get("checkpoint_step")
    if step is not None and not (isinstance(step, float) and math.isnan(step)):
        return f"step {int(step)}"
    return str(row.get("checkpoint") or "none")


def series_frame(frame, encoder: str):
    """Rows of `encoder` (a registry name: all its labels, each its own series; or one label),
    each checkpoint named by its pretraining step (`step 450`) where the record knows it, else
    by its file name; run labels are dropped so that the steps name the rows."""
    labels = (frame["encoder_label"] if "encoder_label" in frame else frame["encoder"]) \
        if not frame.empty else None
    if frame.empty or (encoder not in set(frame["encoder"]) and encoder not in set(labels)):
        names = sorted(set(frame["encoder"])) if not frame.empty else []
        raise ValueError(f"no records of encoder {encoder!r}" + (
            f"; encoders with records: {', '.join(names)}" if names else ""))
    sub = frame[(frame["encoder"] == encoder) | (labels == encoder)].copy()
    sub["checkpoint"] = [_step_label(r) for _, r in sub.iterrows()]
    sub["label"] = None
    return sub


def _step_of(label: str) -> float:
    m = re.match(r"step (\d+)", str(label))
    return float(m.group(1)) if m else math.inf


def order_by_step(lb) -> None:
    """Reorder a leaderboard's rows by pretraining step (unknown steps last), in place."""
    if lb.table.empty:
        return
    order = sorted(lb.table.index, key=lambda key: (_step_of(key[1]), str(key[1])))
    lb.table = lb.table.reindex(order)
    lb.notes.append("rows: checkpoints in pretraining-step order")
