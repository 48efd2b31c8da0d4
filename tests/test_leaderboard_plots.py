"""`harness plot`: PNGs with 95% intervals; legends outside the data."""
import math

import numpy as np
import pytest
from scipy import stats

from results import ResultStore, leaderboard, plots
from results.series import order_by_step, series_frame
from tests.test_leaderboard_cells import A, B, C16, CS, VMAE, build_store


@pytest.fixture
def lb(tmp_path):
    return leaderboard(ResultStore(build_store(tmp_path / "store")).frame())


def test_intervals_against_independent_values(lb):
    # several seeds: the t interval of their mean, as scipy computes it
    lo, hi, how = plots.cell_interval(lb.cells[(A, CS)])
    want = stats.t.interval(0.95, 2, loc=72.0, scale=2.0 / math.sqrt(3))
    assert how == "t over runs" and (lo, hi) == pytest.approx(want)
    # saved predictions (80 of 100 right): the bootstrap percentile interval; scipy's own
    # bootstrap of the same sample agrees to within resampling noise
    lo, hi, how = plots.cell_interval(lb.cells[(A, C16)])
    ref = stats.bootstrap((np.r_[np.ones(80), np.zeros(20)],), np.mean, n_resamples=4000,
                          method="percentile", confidence_level=0.95,
                          random_state=np.random.default_rng(1)).confidence_interval
    assert how == "bootstrap"
    assert lo == pytest.approx(100 * ref.low, abs=1.5) and hi == pytest.approx(100 * ref.high, abs=1.5)
    # counts only: 78% of 98, the Wilson score interval worked by hand
    lo, hi, how = plots.cell_interval(lb.cells[(VMAE, C16)])
    z, n, p = stats.norm.ppf(0.975), 98, 0.78
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert how == "wilson" and (lo, hi) == pytest.approx((100 * (centre - half), 100 * (centre + half)))


def _overlaps(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def test_bars_png_with_the_legend_off_the_axes(lb, tmp_path):
    fig, ax, intervals = plots.bars(lb, tmp_path / "x.png", keep_figure=True)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert not _overlaps(ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer))
    assert intervals[(B, C16)][2] == "bootstrap"
    path = plots.bars(lb, tmp_path / "bars.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[1] > 600


def test_series_png(tmp_path):
    root = build_store(tmp_path / "store")
    lb = leaderboard(series_frame(ResultStore(root).frame(), "vjepa_vitl"), significance=False)
    order_by_step(lb)
    fig, ax = plots.series(lb, tmp_path / "x.png", keep_figure=True)
    k400 = next(line for line in ax.get_lines() if list(line.get_xdata()) == [1000, 2000])
    assert list(k400.get_ydata()) == [80.0, 85.0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "k400 (16x8x3, attentive): random init" in labels
    assert plots.series(lb, tmp_path / "s.png").stat().st_size > 1000


def test_plot_command(tmp_path, capsys):
    from harness.cli import main

    root = build_store(tmp_path / "store")
    assert main(["plot", "bars", "--results", str(root), "--tasks", "k400",
                 "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "b.png").is_file()
    assert main(["plot", "series", "vjepa_vitl", "--results", str(root),
                 "--out", str(tmp_path / "s.png")]) == 0
    # no fold records in this store: the error says how to make them
    assert main(["plot", "low-shot", "--results", str(root), "--out", str(tmp_path / "l.png")]) == 2
    err = capsys.readouterr().err
    assert "no records of label-efficiency folds" in err and "harness data split" in err
