"""The loss plot: drawn by results/ from metrics.csv alone; `harness pretrain` draws it after training."""
import csv

from encoders.jepa.reporting import METRICS_FIELDS
from results.pretrain_plot import plot_loss


def _metrics(path, n):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
        w.writeheader()
        for step in range(1, n + 1):
            w.writerow({"step": step, "epoch": 0, "batch": step, "loss": 1.0 / step, "lr": 1e-4,
                        "wd": 0.04, "momentum": 0.99, "target_rank": "", "context_gain": "",
                        "clips_per_s": 10.0, "elapsed_s": step})
    return path


def test_plot_loss_reads_only_the_csv(tmp_path):
    out = plot_loss(_metrics(tmp_path / "metrics.csv", 60), tmp_path / "loss.png", title="run")
    assert out == tmp_path / "loss.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_loss(_metrics(tmp_path / "empty.csv", 0), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_harness_pretrain_draws_the_loss_plot(tmp_path):
    from harness.pretrain import run_pretrain
    from tasks.digits import make_digits

    root = tmp_path / "digits"
    make_digits(root, seed=0, per_class_train=1, per_class_val=1, per_class_test=1,
                tasks=("digits_motion",), progress=False)
    out = tmp_path / "run"
    run_pretrain("vjepa_tiny", ["encoder_overrides.depth=1", "predictor.width=32", "predictor.depth=1",
                                "data.batch_size=4", "device=cpu", f"data.root={root}",
                                "data.manifests=[digits_motion/train.csv]", "optim.total_steps=2"],
                 out_dir=out, progress=False)
    assert (out / "loss.png").is_file() and (out / "metrics.csv").is_file()
