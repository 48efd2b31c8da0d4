"""`harness demo` wiring end to end at a tiny budget: pretraining x3, probes, leaderboard, report."""
from __future__ import annotations

import json

from harness.cli import main


def test_demo_writes_leaderboard_report_and_chart(tmp_path, capsys):
    from tasks.digits import make_digits

    data = tmp_path / "digits"
    make_digits(data, seed=0, per_class_train=3, per_class_val=1, per_class_test=1,
                num_frames=20, size=32, progress=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(data), "--budget", "0.02",
                 "--no-progress"]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    # one protocol per task, shared by every encoder
    assert len(summary["protocol_ids"]) == 2
    rows = summary["top1"]["digits_motion"]
    assert {"vjepa_tiny video, latent targets (V-JEPA)",
            "vjepa_tiny video, pixel targets (VideoMAE-style)",
            "ijepa_tiny image, latent targets (I-JEPA-style)",
            "vjepa_tiny random init (floor)"} <= set(rows)
    assert all(0.0 <= v <= 100.0 for v in rows.values())
    report = (out / "report.md").read_text()
    assert "digits_motion" in report and "demo.png" in report
    assert "target rank" in report
    assert "## Intuitive physics" in report
    ranks = {r["config"]: r for r in summary["pretraining"]}
    assert set(ranks) == {"vjepa_tiny", "vjepa_tiny_pixels", "ijepa_tiny"}
    assert ranks["vjepa_tiny"]["target_rank_end"] > 0 and ranks["vjepa_tiny_pixels"]["target_rank_end"] is None
    assert all(isinstance(r["context_gain"], float) for r in ranks.values())
    assert "context gain" in report
    # 1 test video per class: 8 for motion, 10 for appearance
    assert "digits_motion 8 videos, 17.7 points" in report and "Standard error" in report
    assert (out / "demo.png").stat().st_size > 1000
    for variant in ("vjepa_tiny", "vjepa_tiny_pixels", "ijepa_tiny"):
        assert (out / "pretrain" / variant / "latest.pth.tar").exists()
    assert "leaderboard" in capsys.readouterr().out.lower()
    # what the numbers were computed with: one intra-op thread on CPU (the data are loaded in
    # process), the CPU kernels, and the video encoder's settings
    import torch

    runtime = summary["runtime"]
    assert runtime["pretrain_torch_threads"] == (1 if not torch.cuda.is_available()
                                                 else torch.get_num_threads())
    assert runtime["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert runtime["x264_params"] == "threads=1:asm=0"
    assert "Computed with: pretrain_torch_threads" in report
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert records and all(r["runtime"]["torch_threads"] == runtime["pretrain_torch_threads"]
                           for r in records)


def test_demo_report_averages_seeds_and_keeps_one_seed_in_the_leaderboard(tmp_path):
    from rich.console import Console

    from harness.demo import DemoEntry, write_outputs

    def record(label, task, seed, top1):
        return {"encoder": {"name": "vjepa_tiny"}, "checkpoint": {"path": label}, "task": task,
                "split": "test", "protocol_id": f"pid-{task}", "protocol": {}, "seed": seed,
                "metrics": {"top1": top1}, "extra": {"label": label},
                "created": f"2026-11-23T09:0{seed}:00+00:00"}

    records = [record(label, task, seed, base + seed)
               for label, base in (("a", 50.0), ("b", 70.0))
               for task in ("digits_motion", "digits_appearance") for seed in (0, 1, 2)]
    summary = write_outputs(records, tmp_path, {"pretrain_steps": 10, "seeds": [0, 1, 2]},
                            {"total_s": 1.0}, Console(file=open(tmp_path / "log", "w")), [])
    assert summary["top1"]["digits_motion"] == {"vjepa_tiny b": 71.0, "vjepa_tiny a": 51.0}
    assert summary["top1_sd"]["digits_motion"]["vjepa_tiny a"] == 1.0
    report = (tmp_path / "report.md").read_text()
    assert "| vjepa_tiny b | 71.0 +- 1.0 | 71.0 +- 1.0 |" in report
    assert "records, the latest is shown" not in report  # the leaderboard holds seed 0 only
    assert "| **70.0** |" in report and (tmp_path / "demo.png").stat().st_size > 1000  # best: bold


def test_demo_runs_side_by_side_give_the_records_of_runs_one_after_another(tmp_path):
    """--jobs 2 (two worker processes, the default on a CPU with 2 cores) against --jobs 1 (every
    run in this process, in order): the same pretraining losses, the same probe and VoE numbers
    and the same table."""
    from harness.demo_jobs import default_jobs
    from tasks.digits import make_digits

    assert default_jobs("cuda:0") == 1 and default_jobs("cpu") in (1, 2)
    data = tmp_path / "digits"
    make_digits(data, seed=0, per_class_train=2, per_class_val=1, per_class_test=1,
                num_frames=20, size=32, progress=False)
    outs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["demo", "--out", str(out), "--data", str(data), "--budget", "0.02",
                     "--no-progress", "--jobs", str(jobs)]) == 0
        outs[jobs] = out
    one, two = (json.loads((outs[j] / "demo_summary.json").read_text()) for j in (1, 2))
    assert one["runtime"]["jobs"] == 1 and two["runtime"]["jobs"] == 2
    assert one["top1"] == two["top1"] and one["physics"] == two["physics"]
    assert one["pretraining"] == [{**r, "clips_per_s": one["pretraining"][i]["clips_per_s"]}
                                  for i, r in enumerate(two["pretraining"])]

    def metrics(out):
        found = {}
        for path in (out / "records").glob("*.json"):
            r = json.loads(path.read_text())
            found[(r["extra"]["label"], r["task"], r["seed"])] = r["metrics"]
        return found

    assert metrics(outs[1]) == metrics(outs[2]) and len(metrics(outs[1])) == 13

    def losses(out, variant):
        import pandas as pd

        return pd.read_csv(out / "pretrain" / variant / "metrics.csv")["loss"].tolist()

    for variant in ("vjepa_tiny", "vjepa_tiny_pixels", "ijepa_tiny"):
        assert losses(outs[1], variant) == losses(outs[2], variant)
    # the report up to its timings, line by line; rows with equal numbers may swap places (the
    # leaderboard keeps the records' order among ties, and the records finish in another order)
    def report(out):
        lines = (out / "report.md").read_text().split("Timings (s)")[0].splitlines()
        # the pretraining table's last column is clips/s, a speed
        return sorted(line.rsplit("|", 2)[0] if line.startswith("| ") and "->" in line else line
                      for line in lines)

    assert report(outs[1]) == report(outs[2])


def test_demo_refuses_no_jobs(tmp_path, capsys):
    assert main(["demo", "--jobs", "0", "--out", str(tmp_path / "demo")]) != 0
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
