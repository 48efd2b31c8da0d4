"""Label-efficiency curves from fold records (`protocol.task.train_fold`), and intervals that
stay inside [0, 100]."""
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.cli import main
from results import ResultStore, leaderboard, make_record, plots, protocol_id
from results.intervals import cell_interval, wilson
from results.label_efficiency import curves
from results.leaderboard import Cell
from results.predictions import predictions_path, write_predictions
from results.record import record_filename, write_record
from tests.test_leaderboard_cells import protocol

PAPER_K400 = protocol("k400", 16, 8, 3, 100)


def write(root, encoder, task, top1, proto, *, ckpt="vith16.pth.tar", seed=0, samples=100,
          label=None, departures=None, command=None, run_label=None, created=None,
          correct_first=None, predictions_named=True):
    """One record as the runner writes it (`extra.run_id`, `extra.command`, and with
    `correct_first=k` its predictions: samples 0..k-1 right, named in `extra.predictions`)."""
    checkpoint = ({"random_init": True} if ckpt == "random" else
                  {"path": f"/ckpt/{ckpt}", "sha256": (ckpt.encode().hex() * 64)[:64], "step": None})
    encoder_doc = {"name": encoder, **({"label": label} if label else {})}
    run_id = f"{encoder}-{label}-{ckpt}-{task}-{protocol_id(proto)}-{seed}"
    rec = make_record(encoder=encoder_doc, checkpoint=checkpoint, task=task, split="val",
                      protocol=proto, metrics={"top1": top1, "num_samples": samples},
                      data_problems={}, timings={"wall_seconds": 60.0}, seed=seed,
                      device="cpu", precision="fp32",
                      extra={"run_id": run_id, "label": run_label,
                             "command": command or f"harness run --encoder {encoder} --task {task}"})
    if departures is not None:
        rec["protocol_departures"] = departures
    if created:
        rec["created"] = created
    out = Path(root) / "records"
    out.mkdir(parents=True, exist_ok=True)
    name = record_filename(rec)
    if correct_first is not None:
        ids = [f"val/v{i:03d}.mp4" for i in range(samples)]
        labels = np.arange(samples) % 5
        top = np.where(np.arange(samples) < correct_first, labels, (labels + 1) % 5)
        topk = np.stack([top] + [(top + j) % 5 for j in range(1, 5)], axis=1)
        pred = predictions_path(out / name)
        write_predictions(pred, {"path": ids, "label": labels, "topk_index": topk,
                                 "topk_prob": np.full((samples, 5), 0.2)}, ids)
        if predictions_named:
            rec["extra"]["predictions"] = pred.name
    return write_record(rec, out, filename=name)


def fold(proto, fraction, seed):
    """The protocol of a run on a fold, as `harness run --split` records it."""
    p = copy.deepcopy(proto)
    p["task"]["train_fold"] = {"fraction": fraction, "seed": seed}
    sha = f"{fraction}-{seed}".encode().hex()
    p["task"]["manifests"] = {**p["task"]["manifests"],
                              "train": {"sha256": (sha * 64)[:64], "videos": int(1000 * fraction)}}
    return p


VITH = ("vjepa_vith", "vith16.pth.tar")
SMALL = "videomae_vits (embed_dim 192, depth 2)"


def low_shot_store(root):
    root = Path(root)
    write(root, "vjepa_vith", "k400", 10.0, fold(PAPER_K400, 0.05, 0),
          created="2026-01-01T00:00:00+00:00")  # re-run below replaces it
    for frac, values in ((0.05, [50.0, 52.0, 54.0]), (0.1, [60.0, 62.0, 64.0])):
        for seed, v in enumerate(values):
            write(root, "vjepa_vith", "k400", v, fold(PAPER_K400, frac, seed), seed=0)
    write(root, "vjepa_vith", "k400", 75.0, fold(PAPER_K400, 0.5, 0))
    write(root, "vjepa_vith", "k400", 80.0, PAPER_K400)  # full labels: the 100% point
    # an overridden two-layer model: its own curve, never points of a real-size entry
    for seed, v in enumerate([30.0, 31.0, 29.0]):
        write(root, "videomae_vits", "k400", v, fold(PAPER_K400, 0.1, seed), ckpt="random",
              label=SMALL)
    # another protocol (8 frames): another curve
    write(root, "vjepa_vith", "k400", 40.0, fold(protocol("k400", 8, 8, 3, 100), 0.1, 0))
    return root


def test_curves_average_each_fraction_over_its_folds(tmp_path):
    found, _ = curves(ResultStore(low_shot_store(tmp_path)).frame())
    by = {(c.encoder, c.checkpoint, c.column): c for c in found}
    main_curve = by[(*VITH, "k400 (16x8x3, attentive)")]
    assert [p.fraction for p in main_curve.points] == [0.05, 0.1, 0.5, 1.0]
    assert [p.mean for p in main_curve.points] == [52.0, 62.0, 75.0, 80.0]
    assert [p.runs for p in main_curve.points] == [3, 3, 1, 1]
    assert main_curve.points[0].folds == [0, 1, 2]
    # three folds: the t interval of their mean, as scipy computes it
    p5 = main_curve.points[0]
    assert (p5.low, p5.high) == pytest.approx(stats.t.interval(0.95, 2, loc=52.0,
                                                              scale=2.0 / math.sqrt(3)))
    # one fold with its count only: the Wilson interval, as scipy computes it
    p50 = main_curve.points[2]
    ref = stats.binomtest(75, 100).proportion_ci(confidence_level=0.95, method="wilson")
    assert p50.how == "wilson"
    assert (p50.low, p50.high) == pytest.approx((100 * ref.low, 100 * ref.high))
    small = by[(SMALL, "random-init", "k400 (16x8x3, attentive)")]
    assert [(p.fraction, p.mean, p.runs) for p in small.points] == [(0.1, 30.0, 3)]
    other = by[(*VITH, "k400 (8x8x3, attentive)")]
    assert [(p.fraction, p.mean) for p in other.points] == [(0.1, 40.0)]
    assert len(found) == 3


def test_plot_and_the_table_agree_on_the_folds(tmp_path, capsys):
    root = low_shot_store(tmp_path / "runs")
    out = tmp_path / "low.png"
    assert main(["plot", "low-shot", "--results", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = next(ln for ln in printed.splitlines()
                if ln.startswith("k400 (16x8x3, attentive): vjepa_vith (vith16.pth.tar)"))
    assert "5% 52.0" in line and "10% 62.0" in line and "100% 80.0" in line and "(n=3)" in line
    assert main(["table", "vjepa-low-shot", "--results", str(root), "--format", "json"]) == 0
    rows = {r["method"]: r["cells"] for r in json.loads(capsys.readouterr().out)["rows"]}
    cell = rows["V-JEPA ViT-H/16"]["K400 10%"]
    assert cell["ours"] == pytest.approx(62.0) and cell["runs"] == 3
    # the figure: x = percent of labels, y = the means, every whisker inside [0, 100]
    found, _ = curves(ResultStore(root).frame(), encoders="vjepa_vith")
    fig, axes = plots.low_shot(found, tmp_path / "x.png", keep_figure=True)
    bars = {c.get_label(): c for c in axes[0].containers}  # one errorbar per curve
    assert set(bars) == {"vjepa_vith (vith16.pth.tar), k400 (16x8x3, attentive)",
                         "vjepa_vith (vith16.pth.tar), k400 (8x8x3, attentive)"}
    line = bars["vjepa_vith (vith16.pth.tar), k400 (16x8x3, attentive)"].lines[0]
    assert list(line.get_xdata()) == [5.0, 10.0, 50.0, 100.0]
    assert list(line.get_ydata()) == [52.0, 62.0, 75.0, 80.0]
    assert axes[0].get_xscale() == "log"
    for coll in axes[0].collections:  # the whiskers
        for seg in coll.get_segments():
            assert all(0.0 <= y <= 100.0 for _, y in seg)


def test_plot_low_shot_filters_and_says_what_is_missing(tmp_path, capsys):
    root = low_shot_store(tmp_path / "runs")
    assert main(["plot", "low-shot", "--results", str(root), "--encoders", "videomae_*",
                 "--out", str(tmp_path / "s.png")]) == 0
    printed = capsys.readouterr().out
    assert SMALL in printed and "vjepa_vith (" not in printed
    assert main(["plot", "low-shot", "--results", str(root), "--tasks", "ssv2",
                 "--out", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err
    assert "no records of label-efficiency folds" in err and "ssv2: no records" in err


def _inside(lo, hi):
    return 0.0 <= lo <= hi <= 100.0


def test_intervals_stay_inside_0_100():
    # three seeds at the ceiling: the t interval reaches past 100, ours stops there
    values = [99.0, 100.0, 100.0]
    mean, sd = np.mean(values), np.std(values, ddof=1)
    raw = stats.t.interval(0.95, 2, loc=mean, scale=sd / math.sqrt(3))
    assert raw[1] > 100
    lo, hi, how = cell_interval(Cell(mean=mean, std=sd, runs=3, values=values))
    assert hi == 100.0 and lo == pytest.approx(raw[0]) and "within [0, 100]" in how
    # counts only, at 100% and 0% of 10: the Wilson interval (the normal approximation would
    # give a zero-width interval there; scipy's Wilson agrees with ours)
    for k in (10, 0, 1):
        lo, hi, how = cell_interval(Cell(mean=100.0 * k / 10, num_samples=10))
        ref = stats.binomtest(k, 10).proportion_ci(method="wilson")
        assert how == "wilson" and (lo, hi) == pytest.approx((100 * ref.low, 100 * ref.high))
        assert _inside(lo, hi) and lo < hi
    assert wilson(0, 50)[0] == 0.0 and wilson(50, 50)[1] == 1.0
    with pytest.raises(ValueError):
        wilson(1, 0)


def test_bars_whiskers_inside_0_100(tmp_path):
    proto = protocol("k400", 16, 8, 3, 10)
    for seed, v in enumerate([99.0, 100.0, 100.0]):
        write(tmp_path, "vjepa_vith", "k400", v, proto, seed=seed, samples=10)
    write(tmp_path, "vjepa_vitl", "k400", 100.0, proto, ckpt="vitl16.pth.tar", samples=10)
    write(tmp_path, "vjepa_tiny", "k400", 0.0, proto, ckpt="tiny.pth", samples=10,
          correct_first=0)
    lb = leaderboard(ResultStore(tmp_path).frame(), significance=False)
    fig, ax, intervals = plots.bars(lb, tmp_path / "b.png", keep_figure=True)
    assert len(intervals) == 3
    assert {ci[2] for ci in intervals.values()} == {"t over runs, within [0, 100]", "wilson",
                                                    "bootstrap"}
    for lo, hi, _ in intervals.values():
        assert _inside(lo, hi)
    # the drawn whiskers end inside [0, 100] too
    for coll in ax.collections:
        for seg in coll.get_segments():
            ys = [y for _, y in seg]
            assert min(ys) >= 0.0 - 1e-9 and max(ys) <= 100.0 + 1e-9
