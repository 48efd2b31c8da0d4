"""`harness compare`: checkpoints shown, ambiguous names refused with the candidates, and the
true reason when per-sample predictions are missing."""
import re

import pytest

from harness.cli import main
from results import ResultStore
from results.predictions import missing_reason, predictions_path
from results.exchange import export_store, import_store
from tests.test_leaderboard_cells import protocol
from tests.test_results_low_shot import write

MOTION = protocol("digits_motion", 8, 2, 1, 100)


def _two_checkpoints(root):
    a = write(root, "vjepa_tiny", "digits_motion", 80.0, MOTION, ckpt="ep10.pth.tar",
              correct_first=80)
    b = write(root, "vjepa_tiny", "digits_motion", 60.0, MOTION, ckpt="ep20.pth.tar",
              correct_first=60)
    return a, b


def _sha8(ckpt: str) -> str:
    return (ckpt.encode().hex() * 64)[:8]


def test_two_checkpoints_of_one_encoder_are_told_apart(tmp_path, capsys):
    a, b = _two_checkpoints(tmp_path)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert f"A vjepa_tiny [ep10.pth.tar (sha256 {_sha8('ep10.pth.tar')})]: 80.0" in out
    assert f"B vjepa_tiny [ep20.pth.tar (sha256 {_sha8('ep20.pth.tar')})]: 60.0" in out
    assert "difference A - B: +20.0 points" in out


def test_an_ambiguous_name_lists_the_records_and_a_run_id_picks_one(tmp_path, capsys):
    a, b = _two_checkpoints(tmp_path)
    write(tmp_path, "vjepa_tiny", "digits_motion", 40.0, MOTION, ckpt="random", correct_first=40)
    assert main(["compare", "vjepa_tiny", str(a), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'vjepa_tiny' fits 3 records" in err and "pick one by its record file or run id" in err
    assert str(a) in err and str(b) in err and "ep20.pth.tar" in err and "random init" in err
    assert "--task" not in err  # all on one task: --task would not help
    # the run id listed picks one (a unique prefix too)
    records = {r["_path"]: r for r in ResultStore(tmp_path).records()}
    run_id = records[str(b)]["extra"]["run_id"]
    assert f"run id {run_id}" in err
    assert main(["compare", run_id, str(a), "--results", str(tmp_path)]) == 0
    assert "B vjepa_tiny [ep10.pth.tar" in capsys.readouterr().out
    assert main(["compare", str(a), run_id[:20], "--results", str(tmp_path)]) == 0
    assert "B vjepa_tiny [ep20.pth.tar" in capsys.readouterr().out


def test_names_on_several_tasks_suggest_the_task(tmp_path, capsys):
    write(tmp_path, "vjepa_tiny", "digits_motion", 80.0, MOTION, ckpt="ep10.pth.tar")
    write(tmp_path, "vjepa_tiny", "digits_appearance", 70.0,
          protocol("digits_appearance", 8, 2, 1, 100), ckpt="ep10.pth.tar")
    assert main(["compare", "vjepa_tiny", "other", "--results", str(tmp_path)]) == 2
    assert "narrow with --task" in capsys.readouterr().err


def test_labels_name_records(tmp_path, capsys):
    write(tmp_path, "vjepa_tiny", "digits_motion", 80.0, MOTION, ckpt="ep10.pth.tar",
          correct_first=80, run_label="ours")
    write(tmp_path, "vjepa_tiny", "digits_motion", 70.0, MOTION, ckpt="random", correct_first=70,
          label="vjepa_tiny (depth 2)")
    assert main(["compare", "ours", "vjepa_tiny (depth 2)", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "A ours [ep10.pth.tar" in out and "B vjepa_tiny (depth 2) [random init]: 70.0" in out


def test_missing_predictions_give_the_true_reason(tmp_path, capsys):
    a, b = _two_checkpoints(tmp_path / "here")
    # 1. the .npz the record names was deleted
    predictions_path(b).unlink()
    assert main(["compare", str(a), str(b)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "saved its per-sample predictions as" in err and "deleted or moved" in err
    # 2. a record of a run that saved none (older records name no predictions file)
    old = write(tmp_path / "here", "vjepa_tiny", "digits_motion", 50.0, MOTION, ckpt="old.pth")
    assert main(["compare", str(a), str(old)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "saved no per-sample predictions" in err and "deleted" not in err
    # 3. imported from an export: the export carried the records only
    export_store(ResultStore(tmp_path / "here"), tmp_path / "store.csv")
    import_store(tmp_path / "store.csv", tmp_path / "there")
    there = {r["checkpoint"]["path"]: r for r in ResultStore(tmp_path / "there").records()}
    rec = there["/ckpt/ep10.pth.tar"]
    assert rec["imported"]["from"] == "store.csv"
    why = missing_reason(rec, rec["_path"])
    assert "imported from store.csv" in why and "an export carries the records only" in why
    assert main(["compare", rec["_path"], str(a)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert re.search(r"was imported from store\.csv \(at \d{4}-", err)
    assert "saved no per-sample predictions" not in err and "deleted" not in err


def test_missing_reason_is_none_when_the_file_is_there(tmp_path):
    a, _ = _two_checkpoints(tmp_path)
    rec = next(r for r in ResultStore(tmp_path).records() if r["_path"] == str(a))
    assert missing_reason(rec, a) is None
    from types import SimpleNamespace

    from harness.commands.compare import main as compare

    other = write(tmp_path, "vjepa_tiny", "digits_motion", 1.0,
                  protocol("digits_motion", 16, 2, 1, 100), ckpt="x.pth")
    with pytest.raises(ValueError, match="different protocols"):
        compare(SimpleNamespace(a=str(a), b=str(other), task=None, results=None, bootstrap=100,
                                seed=0))
