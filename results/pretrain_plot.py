"""The loss curve of a pretraining run (PNG), drawn from its `metrics.csv` alone.

The trainer (`encoders/jepa/`) writes one CSV row per logged step; this module reads the file
with pandas, so plotting needs no model code and works on any run folder, finished or not:

    from results.pretrain_plot import plot_loss
    plot_loss("runs/pretrain/vjepa_tiny/metrics.csv", "loss.png", title="vjepa_tiny")
"""
from __future__ import annotations

import os
from pathlib import Path

SMOOTH_POINTS = 20  # the smoothed line averages about len / 20 steps


def plot_loss(metrics_csv: str | os.PathLike, out: str | os.PathLike, title: str = "pretraining"
              ) -> Path | None:
    """The loss per logged step, and its trailing mean over about a twentieth of the run when
    that spans more than one row; None (nothing drawn) when the CSV has no rows yet."""
    import pandas as pd

    frame = pd.read_csv(metrics_csv)
    if frame.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from results.plots import literal_text

    with literal_text():  # the title is a run's name: literal text, never mathtext or TeX
        return _draw(frame, out, title)


def _draw(frame, out, title: str) -> Path:
    import matplotlib.pyplot as plt

    from results.escape import printable

    steps, losses = frame["step"].astype(int), frame["loss"].astype(float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    k = max(1, len(losses) // SMOOTH_POINTS)
    if k > 1:
        ax.plot(steps, losses.rolling(k, min_periods=1).mean(), lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(printable(title))
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


__all__ = ["plot_loss"]
