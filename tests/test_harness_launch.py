"""`harness launch` through submitit's local executor: sweeps, skipping recorded runs, requeue.

The jobs are real submitit jobs (separate processes, pickled calls, submitit's signal handling);
only the cluster is this machine. The preemption test sends the job's process the signal SLURM
sends before a time limit (USR2, through `--signal`), mid-training.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main




def _tiny(root: Path, out: Path, epochs: int = 2) -> list[str]:
    return ["--encoder", "vjepa_tiny", "--random-init", "--out", str(out), "--no-progress",
            f"task.data.root={root}", f"task.optim.epochs={epochs}", "task.optim.batch_size=8",
            "cache_features=false"]


def test_sweep_is_the_product_of_comma_lists_and_checkpoint_globs(tmp_path):
    from harness.launch import expand_runs

    runs = expand_runs({"encoder": "vjepa_tiny", "task": "digits_motion,digits_appearance"},
                       ["out=x"], ["seed=0,1", "task.optim.epochs=2"], sweep=True)
    assert len(runs) == 4
    assert runs[0] == ["encoder=vjepa_tiny", "task=digits_motion", "out=x", "seed=0",
                       "task.optim.epochs=2"]
    assert {(r[1], r[3]) for r in runs} == {(f"task={t}", f"seed={s}")
                                            for t in ("digits_motion", "digits_appearance")
                                            for s in (0, 1)}
    assert len(expand_runs({}, [], ["seed=range(0,3)", "seed=0"], sweep=True)) == 3
    assert len(expand_runs({}, [], ["seed=1,1"], sweep=True)) == 1  # duplicates run once

    for name in ("b.pth.tar", "a.pth.tar", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    runs = expand_runs({"checkpoint": str(tmp_path / "*.pth.tar")}, [], [], sweep=True)
    assert [r[0] for r in runs] == [f"checkpoint={tmp_path / 'a.pth.tar'}",
                                    f"checkpoint={tmp_path / 'b.pth.tar'}"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_runs({"checkpoint": str(tmp_path / "*.safetensors")}, [], [], sweep=True)
    with pytest.raises(ValueError, match="add --sweep"):
        expand_runs({"task": "digits_motion,digits_appearance"}, [], [], sweep=False)
    with pytest.raises(ValueError, match="add --sweep"):
        expand_runs({}, [], ["seed=0,1"], sweep=False)


def test_each_task_of_a_sweep_gets_its_own_data_root():
    from harness.config import ConfigError
    from harness.launch import expand_runs

    flags = {"encoder": "vjepa_tiny", "task": "digits_motion,digits_appearance"}
    runs = expand_runs(flags, [], ["seed=0,1"], sweep=True,
                       data_roots={"digits_motion": "/d/m", "digits_appearance": "/d/a b"})
    assert len(runs) == 4
    for run in runs:
        root = [o for o in run if o.startswith("task.data.root=")]
        assert root == (["task.data.root=/d/m"] if "task=digits_motion" in run
                        else ["task.data.root='/d/a b'"])
    with pytest.raises(ConfigError, match="does not run"):
        expand_runs(flags, [], [], sweep=True, data_roots={"k400": "/d/k"})
    shared = expand_runs(flags, [], ["task.data.root=/d"], sweep=True,
                         data_roots={"digits_motion": "/d/m"})
    assert sorted(o for r in shared for o in r if o.startswith("task.data.root=")) == \
        ["task.data.root=/d", "task.data.root=/d/m"]


def test_dry_run_prints_the_runs_and_the_sbatch_file_and_submits_nothing(digits_root, tmp_path,
                                                                        capsys):
    out = tmp_path / "runs"
    assert main(["launch", "--sweep", *_tiny(digits_root, out), "--task",
                 "digits_motion,digits_appearance", "seed=0,1", "--partition", "gpu",
                 "--gpus-per-node", "2", "--time", "60", "--account", "lab", "--qos", "high",
                 "--constraint", "h100", "--mem", "64", "--cpus-per-task", "10",
                 "--max-parallel", "2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "4 run(s): 4 to submit, 0 already recorded" in printed
    assert printed.count("submit: harness run encoder=vjepa_tiny") == 4
    assert "device=cuda" in printed  # planned on the device the job gets, so the same protocol
    for line in ("--partition=gpu", "--array=0-3%2", "--gpus-per-node=2", "--ntasks-per-node=2",
                 "--time=60", "--account=lab", "--qos=high", "--constraint=h100", "--mem=64GB",
                 "--cpus-per-task=10", "--signal=USR2@90", f"--output={out}/submitit/"):
        assert f"#SBATCH {line}" in printed, line
    assert not out.exists()


def test_bad_launches_end_in_one_clear_line(digits_root, tmp_path, capsys):
    import shutil

    out = tmp_path / "runs"
    common = ["launch", *_tiny(digits_root, out)]
    assert main([*common, "--task", "digits_motion", "--no-resume", "--launcher", "local"]) == 2
    assert "resumes its saved state" in capsys.readouterr().err
    assert main([*common, "--task", "digits_motion,digits_appearance"]) == 2
    assert "add --sweep" in capsys.readouterr().err
    if shutil.which("sbatch") is None:
        assert main([*common, "--task", "digits_motion"]) == 2
        assert "sbatch is not on this machine" in capsys.readouterr().err
    assert not (out / "submitit").exists()


def test_local_array_completes_and_a_second_launch_skips_every_run(digits_root, tmp_path, capsys,
                                                                   monkeypatch):
    # Three jobs at once on a small CI machine: one thread each rather than threads fighting.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "runs"
    args = ["launch", "--launcher", "local", "--sweep", "--task", "digits_motion",
            *_tiny(digits_root, out), "seed=0,1,2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 run(s): 3 to submit" in printed and printed.count(" done: top1") == 3
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    assert sorted(r["seed"] for r in records) == [0, 1, 2]
    assert len({r["protocol_id"] for r in records}) == 1
    submitted = sorted((out / "submitit").glob("*_submitted.pkl"))
    assert len(submitted) == 3

    assert main(args) == 0  # the same sweep again: every run is found recorded
    printed = capsys.readouterr().out
    assert "3 run(s): 0 to submit, 3 already recorded" in printed
    assert "nothing to submit" in printed
    # `harness run --launcher local` is the same thing for one run
    assert main(["run", "--launcher", "local", "--task", "digits_motion",
                 *_tiny(digits_root, out), "seed=1"]) == 0
    assert "1 run(s): 0 to submit, 1 already recorded" in capsys.readouterr().out
    assert sorted((out / "submitit").glob("*_submitted.pkl")) == submitted
    assert len(list((out / "records").glob("*.json"))) == 3


def _task_pid(controller_pid: str) -> int:
    # The local executor's job id is its controller's pid; the job's Python process is its child.
    children = Path(f"/proc/{controller_pid}/task/{controller_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_job_signalled_mid_run_is_requeued_and_finishes_with_the_same_numbers(digits_root,
                                                                              tmp_path):
    from harness import launch
    from harness.config import compose_run
    from harness.runner import run_evaluation
    from results.predictions import read_predictions

    def overrides(out):
        # Online augmentation (no feature cache): every step runs the encoder, so the signal
        # lands while training is still going.
        return ["encoder=vjepa_tiny", "random_init=true", "task=digits_motion", f"out={out}",
                "progress=false", f"task.data.root={digits_root}", "task.optim.epochs=3",
                "task.optim.batch_size=4", "cache_features=false"]

    out = tmp_path / "launched"
    resources = launch.Resources()
    planned = launch.plan_launch([overrides(out)], resources)
    (job,) = launch.submit(planned, "local", out / "submitit", resources)
    deadline = time.time() + 150
    while not list((out / "state").glob("*.pt")) and time.time() < deadline:  # epoch 1 saved
        assert job.state == "RUNNING", job.stderr()
        time.sleep(0.05)
    os.kill(_task_pid(job.job_id), signal.SIGUSR2)
    result = job.result()
    log = job.stderr() or ""
    assert "Caught signal SIGUSR2" in log and "saving the training state" in log
    assert log.count("data: train 32 of 32 videos") == 2  # ran, then ran again after requeue
    assert not result["reused"]
    launched = json.loads(Path(result["record"]).read_text())
    timings = launched["timings"]
    resumed_at = (timings["resumed_from_epoch"], timings["resumed_from_step"])
    assert (1, 0) < resumed_at < (3, 0), resumed_at  # stopped mid-run, after epoch 1's save

    reference_out = tmp_path / "uninterrupted"
    ref = run_evaluation(compose_run(overrides(reference_out) + ["device=cpu"]))
    assert ref.record["timings"]["resumed_from_epoch"] == 0
    assert launched["extra"]["run_id"] == ref.record["extra"]["run_id"]
    assert launched["metrics"] == ref.record["metrics"]

    def curve(rec):
        return [(h["epoch"], h["loss"], h["lr"], h["train_top1"]) for h in rec["extra"]["history"]]

    assert curve(launched) == curve(ref.record)
    a = read_predictions(Path(result["record"]).parent / launched["extra"]["predictions"])
    b = read_predictions(ref.path.parent / ref.record["extra"]["predictions"])
    for key in ("index", "label", "topk_index", "topk_prob"):
        assert np.array_equal(a[key], b[key]), key


def test_distributed_variables_are_exported_for_a_multi_task_job(monkeypatch):
    from harness.launch import export_distributed

    # What submitit's local executor sets for task 1 of a 2-task job (one per GPU).
    for key, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4242",
                       "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1",
                       "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_NODEID": "0",
                       "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "CUDA_VISIBLE_DEVICES": "0,1",
                       # restored after the test (export writes os.environ)
                       "RANK": "x", "WORLD_SIZE": "x", "LOCAL_RANK": "x", "LOCAL_WORLD_SIZE": "x",
                       "MASTER_ADDR": "x", "MASTER_PORT": "12345"}.items():
        monkeypatch.setenv(key, value)
    assert export_distributed() == (1, 2)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == \
        ("1", "2", "1")
    assert os.environ["MASTER_ADDR"] != "x" and os.environ["MASTER_PORT"] == "12345"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # each rank takes cuda:LOCAL_RANK itself
