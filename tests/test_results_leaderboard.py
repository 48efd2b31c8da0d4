"""Leaderboards: protocol matching, duplicates, rendering."""
import copy
import csv
import io
import json
import time

import pytest

from results import (ResultStore, leaderboard, make_record, protocol_diff, records_frame, render,
                     write_record)

ATTENTIVE = {"probe": {"kind": "attentive", "depth": 1}, "optim": {"lr": 1e-3, "epochs": 20},
             "task": {"segments": 8, "views": 3}}


def add(root, encoder, task, top1, protocol=ATTENTIVE, checkpoint=None, top5=None):
    rec = make_record(encoder={"name": encoder},
                      checkpoint=checkpoint or {"path": f"/ckpt/{encoder}.pth", "sha256": "a" * 64},
                      task=task, split="val", protocol=protocol,
                      metrics={"top1": top1, **({"top5": top5} if top5 is not None else {})},
                      data_problems={}, timings={}, seed=0, device="cpu")
    return write_record(rec, root)


def board(root, **kw):
    return leaderboard(ResultStore(root).frame(), **kw)


def test_same_protocol_one_column_per_task(tmp_path):
    add(tmp_path, "vjepa_vitl", "k400", 80.8)
    add(tmp_path, "vjepa_vitl", "ssv2", 69.5)
    add(tmp_path, "videomae_vitl", "k400", 77.8)
    add(tmp_path, "videomae_vitl", "ssv2", 65.5)
    lb = board(tmp_path)
    assert list(lb.table.columns) == ["k400 (attentive)", "ssv2 (attentive)"]
    # records without protocol_version are version 1, their precision unknown
    assert lb.notes == []
    pid = ResultStore(tmp_path).frame()["protocol_id"].iloc[0]
    assert lb.legend[0] == f"k400 (attentive): top1, protocol {pid} (v1)"
    assert lb.table.loc[("vjepa_vitl", "vjepa_vitl.pth"), "ssv2 (attentive)"] == 69.5
    assert lb.table.loc[("videomae_vitl", "videomae_vitl.pth"), "k400 (attentive)"] == 77.8
    assert list(lb.table.index.get_level_values("encoder")) == ["vjepa_vitl", "videomae_vitl"]


def test_different_protocol_gets_its_own_column_and_a_note(tmp_path):
    linear = copy.deepcopy(ATTENTIVE)
    linear["probe"] = {"kind": "linear"}
    add(tmp_path, "vjepa_vitl", "k400", 80.8)
    add(tmp_path, "videomae_vitl", "k400", 77.8)
    add(tmp_path, "vjepa_vitl", "ssv2", 69.5)
    add(tmp_path, "vjepa_vitl", "k400", 71.0, protocol=linear)
    frame = ResultStore(tmp_path).frame()
    pid_att = frame[frame["probe"] == "attentive"]["protocol_id"].iloc[0]
    pid_lin = frame[frame["probe"] == "linear"]["protocol_id"].iloc[0]
    lb = leaderboard(frame)
    assert list(lb.table.columns) == ["k400 (attentive)", "k400 (linear)", "ssv2 (attentive)"]
    assert lb.table.loc[("vjepa_vitl", "vjepa_vitl.pth"), "k400 (linear)"] == 71.0
    assert lb.table["k400 (linear)"].isna().sum() == 1  # videomae has no linear record
    assert [c.protocol_id for c in lb.columns][:2] == [pid_att, pid_lin]
    (note,) = lb.notes
    assert note.startswith("k400: 2 protocols, not comparable, split into columns: "
                           "'k400 (attentive)' vs 'k400 (linear)': ")
    assert "probe attentive vs linear (probe.kind)" in note
    assert "probe depth 1 vs <absent> (probe.depth)" in note
    assert "optim" not in note  # only differing fields are named


def test_protocol_diff_dotted_keys():
    a = {"probe": {"kind": "attentive"}, "task": {"views": 3, "size": 224}}
    b = {"probe": {"kind": "linear"}, "task": {"views": 3}, "seed": 1}
    assert protocol_diff(a, b) == ["probe.kind: attentive vs linear", "seed: <absent> vs 1",
                                   "task.size: 224 vs <absent>"]


def test_latest_duplicate_wins_with_a_note(tmp_path):
    add(tmp_path, "vjepa_vitl", "k400", 70.0)
    time.sleep(0.002)
    add(tmp_path, "vjepa_vitl", "k400", 80.8)
    store = ResultStore(tmp_path)
    lb = leaderboard(store.frame())
    assert store.replaced == 1  # the same run (encoder, weights, protocol, seed) re-run
    assert lb.table.loc[("vjepa_vitl", "vjepa_vitl.pth"), "k400 (attentive)"] == 80.8
    assert lb.cells[(("vjepa_vitl", "vjepa_vitl.pth"), "k400 (attentive)")].runs == 1
    # records in memory (no store in between) are deduplicated by the leaderboard itself
    from results import read_record
    lb = leaderboard(records_frame([read_record(p) for p in sorted(tmp_path.glob("*.json"))]))
    assert lb.table.iloc[0, 0] == 80.8 and any("re-run" in n for n in lb.notes)


def test_same_file_name_different_checkpoints_stay_apart(tmp_path):
    add(tmp_path, "vjepa_tiny", "k400", 40.0, checkpoint={"path": "/a/latest.pth",
                                                          "sha256": "1" * 64})
    add(tmp_path, "vjepa_tiny", "k400", 50.0, checkpoint={"path": "/b/latest.pth",
                                                          "sha256": "2" * 64})
    add(tmp_path, "vjepa_tiny", "k400", 10.0, checkpoint={"random_init": True})
    lb = board(tmp_path)
    assert set(lb.table.index.get_level_values("checkpoint")) == {
        "latest.pth@11111111", "latest.pth@22222222", "random-init"}
    assert list(lb.table["k400 (attentive)"]) == [50.0, 40.0, 10.0]  # best first


def test_task_filter_metric_choice_and_missing(tmp_path):
    add(tmp_path, "vjepa_vitl", "k400", 80.8, top5=94.0)
    add(tmp_path, "vjepa_vitl", "ssv2", 69.5)
    lb = board(tmp_path, tasks="ssv2,in1k")
    assert list(lb.table.columns) == ["ssv2 (attentive)"]
    assert "in1k: no records" in lb.notes
    lb5 = board(tmp_path, metric="top5")
    assert list(lb5.table.columns) == ["k400 (attentive)"] and lb5.table.iloc[0, 0] == 94.0
    assert any("without top5" in n for n in lb5.notes)
    assert "no record has metric 'map'" in board(tmp_path, metric="map").notes[0]
    assert board(tmp_path / "empty").notes == ["no result records found"]


def _add_metrics(root, encoder, task, protocol, metrics):
    rec = make_record(encoder={"name": encoder}, checkpoint={"path": f"/ckpt/{encoder}.pth",
                                                             "sha256": "a" * 64},
                      task=task, split="val", protocol=protocol, metrics=metrics,
                      data_problems={}, timings={}, seed=0, device="cpu")
    return write_record(rec, root)


def test_each_task_under_its_own_metric_by_default(tmp_path, capsys):
    from harness.cli import main

    ava = {**ATTENTIVE, "task": {"kind": "detection", "metric": "mAP"}}
    voe = {"metrics": {"main": "paper_relative_mean"}, "surprise": {"target": "pixels"},
           "task": {"kind": "voe", "sampling": {"frames_per_clip": 8, "stride": 2}}}
    add(tmp_path, "vjepa_vitl", "k400", 80.8)
    add(tmp_path, "videomae_vitl", "k400", 77.0)
    _add_metrics(tmp_path, "vjepa_vitl", "ava", ava, {"mAP": 25.0})
    _add_metrics(tmp_path, "videomae_vitl", "ava", ava, {"mAP": 27.5})
    _add_metrics(tmp_path, "videomae_vitl", "ava", {**ava, "seed_like": 1}, {"top1": 3.0})
    _add_metrics(tmp_path, "vjepa_vitl", "intphys", voe, {"paper_relative_mean": 61.0})
    lb = board(tmp_path, metric=None)
    voe_column = "intphys (8 frames, pixel surprise; paper_relative_mean)"
    assert list(lb.table.columns) == ["ava (attentive; mAP)", voe_column, "k400 (attentive)"]
    assert lb.metric == "mAP, paper_relative_mean, top1"
    assert lb.table.loc[("videomae_vitl", "videomae_vitl.pth"), "ava (attentive; mAP)"] == 27.5
    assert lb.legend[0].startswith("ava (attentive; mAP): mAP, protocol ")
    # the run of a protocol that names mAP but holds only top1 is counted, not shown as top1
    assert "1 record(s) without mAP left out (ava)" in lb.notes
    # one metric asked for: one metric shown, the other tasks counted as lacking it
    lb1 = board(tmp_path, metric="top1")
    assert list(lb1.table.columns) == ["ava (attentive)", "k400 (attentive)"]
    assert "3 record(s) without top1 left out (ava, intphys)" in lb1.notes
    # the command: the index's folded runs give the same board as the frame of runs
    assert main(["leaderboard", "--results", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in doc["columns"]] == list(lb.table.columns)
    assert [c["metric"] for c in doc["columns"]] == ["mAP", "paper_relative_mean", "top1"]
    folded = leaderboard(ResultStore(tmp_path).cell_frame(None), metric=None)
    assert "_runs" in ResultStore(tmp_path).cell_frame(None)
    assert render(folded, "json") == render(lb, "json")


def test_render_markdown_csv_rich(tmp_path):
    linear = {**ATTENTIVE, "probe": {"kind": "linear"}}
    add(tmp_path, "vjepa_vitl", "k400", 80.84)
    add(tmp_path, "videomae_vitl", "k400", 77.8)
    add(tmp_path, "vjepa_vitl", "ssv2", 69.5)
    lb = board(tmp_path, tasks=["k400", "ssv2"])
    md = render(lb, "markdown")
    lines = md.splitlines()
    assert lines[0] == "| encoder | checkpoint | k400 (attentive) | ssv2 (attentive) | mean rank |"
    assert lines[1] == "|---|---|---:|---:|---:|"
    # no sample counts in these records: one decimal; best bold; no test possible -> no tie
    assert lines[2] == "| vjepa_vitl | vjepa_vitl.pth | **80.8** | **69.5** | 1.0 |"
    assert lines[3] == "| videomae_vitl | videomae_vitl.pth | 77.8 | - | 2.0 (1/2) |"

    rows = list(csv.DictReader(io.StringIO(render(lb, "csv"))))
    assert rows[0] == {"encoder": "vjepa_vitl", "checkpoint": "vjepa_vitl.pth",
                       "k400 (attentive)": "80.8", "k400 (attentive) mark": "best",
                       "ssv2 (attentive)": "69.5", "ssv2 (attentive) mark": "best",
                       "mean rank": "1.00"}
    assert rows[1]["ssv2 (attentive)"] == "" and rows[1]["k400 (attentive) mark"] == ""

    add(tmp_path, "videomae_vitl", "ssv2", 60.0, protocol=linear)
    lb = board(tmp_path)
    text = render(lb, "rich")
    assert "vjepa_vitl" in text and "80.8*" in text and "77.8" in text
    for column in lb.columns:  # '[pid]' in the legend must not be swallowed as rich markup
        assert column.name in text and f"protocol {column.protocol_id}" in text
    assert "note: ssv2: 2 protocols, not comparable" in text
    assert "probe.kind" in render(lb, "markdown").splitlines()[-1]
    with pytest.raises(ValueError, match="markdown"):
        render(lb, "pdf")


def test_records_in_memory_give_the_same_frame(tmp_path):
    paths = [add(tmp_path, "vjepa_vitl", "k400", 80.8), add(tmp_path, "vjepa_vitl", "ssv2", 69.5)]
    from results import read_record

    in_memory = records_frame([read_record(p) for p in paths])
    stored = ResultStore(tmp_path).frame()
    assert in_memory["path"].isna().all()
    cols = ["encoder", "checkpoint", "task", "protocol_id", "top1"]
    assert in_memory[cols].equals(stored[cols])
    with pytest.raises(ValueError, match="lacks expected fields"):
        records_frame([{"task": "k400"}])
