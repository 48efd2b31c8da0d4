"""The transfer audit's verdict from records with saved predictions."""
import json

import pytest
from scipy.stats import binomtest

from harness.cli import main
from results import ResultStore
from results.audit import verdict
from tests.test_leaderboard_cells import add, protocol

STATIC = protocol("digits_appearance", 8, 2, 1, 100)
TEMPORAL = protocol("digits_motion", 8, 2, 1, 100)


def _store(root, image_motion=50, video_motion=80, video_static=True):
    add(root, "ijepa_tiny", "digits_appearance", 60.0, STATIC, ckpt="i.pth", correct_first=60)
    add(root, "ijepa_tiny", "digits_motion", float(image_motion), TEMPORAL, ckpt="i.pth",
        correct_first=image_motion)
    if video_static:
        add(root, "vjepa_tiny", "digits_appearance", 58.0, STATIC, ckpt="v.pth", correct_first=58)
    add(root, "vjepa_tiny", "digits_motion", float(video_motion), TEMPORAL, ckpt="v.pth",
        correct_first=video_motion)
    return ResultStore(root).records()


def _audit(records, **kw):
    return verdict(records, image="ijepa_tiny", video="vjepa_tiny",
                   static_task="digits_appearance", temporal_task="digits_motion", **kw)


def test_promoted_when_the_temporal_gain_is_significant_and_large(tmp_path):
    v = _audit(_store(tmp_path))
    assert v["accepted_winner"] == "vjepa_tiny"
    t = v["tasks"]["digits_motion"]
    assert t["diff"] == pytest.approx(30.0) and t["ci"][0] > 0 and t["n"] == 100
    # video right on samples 50..79 only, never the other way round
    assert t["p_mcnemar"] == pytest.approx(binomtest(30, 30, 0.5).pvalue)
    s = v["tasks"]["digits_appearance"]
    assert s["diff"] == pytest.approx(-2.0) and s["status"] == "done"


def test_image_stays_when_not_significant_or_below_the_margin(tmp_path):
    v = _audit(_store(tmp_path / "a", image_motion=50, video_motion=51))
    assert v["accepted_winner"] == "ijepa_tiny" and "not significant" in v["reason"]
    v = _audit(_store(tmp_path / "b"), margin=40.0)
    assert v["accepted_winner"] == "ijepa_tiny"
    assert "below the 40-point margin" in v["reason"]


def test_pending_until_both_tasks_have_results(tmp_path):
    v = _audit(_store(tmp_path, video_static=False))
    assert v["accepted_winner"] == "pending"
    assert v["tasks"]["digits_appearance"]["status"] == "missing"
    assert "no record of vjepa_tiny on digits_appearance" in v["reason"]


def test_protocol_mismatch_is_pending(tmp_path):
    _store(tmp_path, video_static=False)
    add(tmp_path, "vjepa_tiny", "digits_appearance", 58.0,
        protocol("digits_appearance", 16, 2, 1, 100), ckpt="v.pth", correct_first=58)
    v = _audit(ResultStore(tmp_path).records())
    assert v["accepted_winner"] == "pending"
    assert v["tasks"]["digits_appearance"]["status"] == "mismatch"


def test_audit_command_writes_the_verdict_record(tmp_path, capsys):
    _store(tmp_path)
    assert main(["audit", "--image", "ijepa_tiny", "--video", "vjepa_tiny", "--static-task",
                 "digits_appearance", "--temporal-task", "digits_motion",
                 "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accepted_winner: vjepa_tiny" in out
    (path,) = (tmp_path / "audits").glob("*.json")
    saved = json.loads(path.read_text())
    assert saved["accepted_winner"] == "vjepa_tiny" and saved["kind"] == "transfer_audit"
    assert saved["cost"]["ratio"] == pytest.approx(1.0)  # both records say 180.5 GFLOPs
    store = ResultStore(tmp_path)
    assert len(store.records()) == 4 and store.problems == []  # the verdict is no run record
