"""`harness run --checkpoint 'glob'`: a checkpoint series, evaluated in step order, never twice."""
import json

import torch

import encoders
from harness.cli import main




def test_a_glob_evaluates_each_checkpoint_in_step_order_once(digits_small, tmp_path, capsys):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for epoch, seed in ((10, 1), (2, 2)):  # ep2 must come before ep10 (natural order)
        state = encoders.build("vjepa_tiny", random_init=True, seed=seed).backbone.state_dict()
        torch.save({"target_encoder": state, "epoch": epoch}, ckpts / f"ep{epoch}.pth.tar")
    out = tmp_path / "runs"
    argv = ["run", "--encoder", "vjepa_tiny", "--task", "digits_motion", "--checkpoint",
            str(ckpts / "*.pth.tar"), "--out", str(out), "--no-progress",
            f"task.data.root={digits_small}", "task.optim.epochs=1", "task.optim.batch_size=8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.index("ep2.pth.tar") < printed.index("ep10.pth.tar")
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert sorted(r["checkpoint"]["epoch"] for r in records) == [2, 10]
    assert main(argv) == 0  # again: both found recorded, nothing redone
    assert capsys.readouterr().out.count("already done") == 2
    assert len(list((out / "records").glob("*.json"))) == 2
    assert main([*argv[:6], str(ckpts / "*.nothing"), *argv[7:]]) == 2
    assert "matches no file" in capsys.readouterr().err


def test_watch_evaluates_new_and_rewritten_checkpoints(digits_small, tmp_path, capsys):
    ckpts = tmp_path / "pretrain"
    ckpts.mkdir()

    def save(name, seed):
        state = encoders.build("vjepa_tiny", random_init=True, seed=seed).backbone.state_dict()
        torch.save({"target_encoder": state, "epoch": seed}, ckpts / name)

    save("latest.pth.tar", 1)
    out = tmp_path / "runs"
    argv = ["watch", str(ckpts), "--once", "--encoder", "vjepa_tiny", "--task", "digits_motion",
            "--out", str(out), "--no-progress", f"task.data.root={digits_small}",
            "task.optim.epochs=1", "task.optim.batch_size=8"]
    assert main(argv) == 0
    assert len(list((out / "records").glob("*.json"))) == 1
    save("latest.pth.tar", 2)  # the next save overwrites it: new weights, a new evaluation
    assert main(argv) == 0
    epochs = sorted(json.loads(p.read_text())["checkpoint"]["epoch"]
                    for p in (out / "records").glob("*.json"))
    assert epochs == [1, 2]
    assert main(argv) == 0  # nothing new: both found recorded
    assert len(list((out / "records").glob("*.json"))) == 2
    assert main(["watch", str(tmp_path / "nowhere"), "--once", "--encoder", "vjepa_tiny"]) == 2
    assert "no folder" in capsys.readouterr().err
