"""Hostile records: records, exports and names are untrusted input.

Each case runs the command line (`harness.cli.main`) on a store or an export that was tampered
with, and checks the exit status, the message, and every file under the test's folder before
and after (nothing written outside the folder named, nothing changed through a link, every file
left whole). Families: where imports write (names and links), bounded parsing, field checks
(types, ranges, times), torn records, runs that disagree, environment faults, signals.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from results import ResultStore, make_record, write_record
from results.exchange import export_store
from results.index import INDEX_NAME
from tests.test_leaderboard_cells import K400, SSV2, add

REPO = Path(__file__).resolve().parents[1]
ROW = ("vjepa_vitl", "a.pth")


# ----------------------------------------------------------------------------------------------
# helpers


def snapshot(base: Path) -> dict:
    """Every entry under `base`, links not followed: {relative path: what it is}. The result
    index (`index.sqlite*`, derived from the records and rewritten by reads) is left out."""
    out = {}
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            if name.startswith(INDEX_NAME):
                continue
            p = Path(folder) / name
            rel = str(p.relative_to(base))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def changed(before: dict, after: dict) -> set:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}


def good_store(root: Path) -> Path:
    add(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="a.pth", step=1)
    add(root, "videomae_vitl", "k400", 70.0, K400, ckpt="m.pth")
    add(root, "vjepa_vitl", "ssv2", 60.0, SSV2, ckpt="a.pth", step=1)
    return root


def base_record(encoder="evil_enc", top1=50.0, **kw) -> dict:
    return make_record(encoder={"name": encoder}, checkpoint={"path": "/ckpt/e.pth",
                                                               "sha256": "e" * 64},
                       task="k400", split="val", protocol=copy.deepcopy(K400),
                       metrics={"top1": top1},
                       data_problems={}, timings={}, seed=kw.pop("seed", 0), device="cpu", **kw)


def put(root: Path, rec, name: str | None = None, text: str | None = None) -> Path:
    """Write a (possibly hostile) record as JSON text, bypassing every check."""
    folder = root / "records"
    folder.mkdir(parents=True, exist_ok=True)
    name = name or "hostile__k400__0123456789ab__20261201T000000_000000Z-abcdef.json"
    path = folder / name
    path.write_text(text if text is not None else json.dumps(rec, sort_keys=True, indent=2))
    return path


def board(root: Path, capsys, *extra) -> tuple[int, str, str]:
    rc = main(["leaderboard", "--results", str(root), "--format", "csv", "--no-significance",
               *extra])
    out, err = capsys.readouterr()
    return rc, out, " ".join(err.split())


def export_csv(root: Path, dest: Path):
    import pandas as pd

    export_store(ResultStore(root), dest)
    return pd.read_csv(dest, dtype=str, keep_default_na=False)


def set_record(frame, i: int, change) -> None:
    rec = json.loads(frame.loc[i, "record"])
    change(rec)
    frame.loc[i, "record"] = json.dumps(rec, sort_keys=True)


def run_cli(args, env=None, preexec=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec)


def whole_records(folder: Path) -> list[dict]:
    """Every file in `folder` is a whole record; no temporary file is left."""
    names = os.listdir(folder)
    assert not [n for n in names if n.startswith(".") or n.endswith(".part")], names
    return [json.loads((folder / n).read_text()) for n in names if n.endswith(".json")]


# ----------------------------------------------------------------------------------------------
# 1. where an import writes: names and links


def test_csv_record_name_climbing_out_of_the_store_is_rebuilt(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")
    frame.loc[0, "record_name"] = "../../../../X__k400__0123456789ab__20261201T000000_000000Z-abcdef.json"
    frame.to_csv(tmp_path / "evil.csv", index=False)
    store = tmp_path / "a" / "b" / "c" / "store"
    before = snapshot(tmp_path)
    assert main(["results", "import", str(tmp_path / "evil.csv"), "--results", str(store)]) == 0
    assert "imported 3 record(s)" in capsys.readouterr().out
    new = changed(before, snapshot(tmp_path))
    assert new and all(k == "a" or k.startswith("a/b/c/store") or k in ("a/b", "a/b/c")
                       for k in new), new
    assert not list(tmp_path.rglob("X__*"))
    assert len(whole_records(store / "records")) == 3


def test_parquet_absolute_record_name_is_not_where_it_writes(tmp_path, capsys):
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    import pandas as pd

    src = good_store(tmp_path / "src")
    export_store(ResultStore(src), tmp_path / "s.parquet")
    frame = pd.read_parquet(tmp_path / "s.parquet")
    target = tmp_path / "abs" / "X__k400__0123456789ab__20261201T000000_000000Z-abcdef.json"
    (tmp_path / "abs").mkdir()
    frame.loc[0, "record_name"] = str(target)
    frame.to_parquet(tmp_path / "evil.parquet", index=False)
    before = snapshot(tmp_path)
    assert main(["leaderboard", "--import", str(tmp_path / "evil.parquet"), "--results",
                 str(tmp_path / "store")]) == 0
    assert not target.exists()
    assert all(k.startswith("store") for k in changed(before, snapshot(tmp_path)))
    assert len(whole_records(tmp_path / "store" / "records")) == 3


def test_hostile_fields_never_reach_a_file_name(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")

    def evil(rec):
        rec["encoder"]["name"] = "../../../../escaped"
        rec["task"] = "/etc/cron.d/x"
        rec["protocol_id"] = "../../pid"
    set_record(frame, 0, evil)
    frame.to_csv(tmp_path / "evil.csv", index=False)
    before = snapshot(tmp_path)
    assert main(["results", "import", str(tmp_path / "evil.csv"), "--results",
                 str(tmp_path / "store")]) == 0
    assert all(k.startswith("store") for k in changed(before, snapshot(tmp_path)))
    names = os.listdir(tmp_path / "store" / "records")
    assert len(names) == 3 and all("/" not in n and not n.startswith(".") for n in names)
    assert any(n.startswith("escaped__etc-cron.d-x__pid__") for n in names), names


def test_records_folder_linked_outside_the_store_is_refused(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    export_csv(src, tmp_path / "s.csv")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "records").symlink_to(outside)
    before = snapshot(tmp_path)
    assert main(["results", "import", str(tmp_path / "s.csv"), "--results",
                 str(tmp_path / "store")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "refusing to write into" in err and "outside the results folder" in err
    assert snapshot(tmp_path) == before and list(outside.iterdir()) == []


def test_records_folder_linked_inside_the_store_is_used(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    export_csv(src, tmp_path / "s.csv")
    (tmp_path / "store" / "real").mkdir(parents=True)
    (tmp_path / "store" / "records").symlink_to("real")
    assert main(["results", "import", str(tmp_path / "s.csv"), "--results",
                 str(tmp_path / "store")]) == 0
    assert len(whole_records(tmp_path / "store" / "real")) == 3


def test_dangling_records_link_is_refused(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    export_csv(src, tmp_path / "s.csv")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "records").symlink_to(tmp_path / "nowhere")
    assert main(["results", "import", str(tmp_path / "s.csv"), "--results",
                 str(tmp_path / "store")]) == 2
    assert "refusing to write into" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_a_link_at_a_record_name_is_never_written_through(tmp_path, capsys):
    from results.record import parse_record
    from results.exchange import _import_name

    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")
    rec = parse_record(frame.loc[0, "record"], "row 0")
    name = _import_name(rec, frame.loc[0, "record_name"])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "store" / "records").mkdir(parents=True)
    (tmp_path / "store" / "records" / name).symlink_to(victim)
    assert main(["results", "import", str(tmp_path / "s.csv"), "--results",
                 str(tmp_path / "store")]) == 0
    assert "imported 2 record(s)" in capsys.readouterr().out  # the linked name: left alone
    assert victim.read_text() == "precious"
    assert (tmp_path / "store" / "records" / name).is_symlink()


def test_export_replaces_a_link_at_its_path(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    victim = tmp_path / "victim.csv"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "s.csv").symlink_to(victim)
    assert main(["results", "export", str(tmp_path / "out" / "s.csv"), "--results",
                 str(root)]) == 0
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out" / "s.csv").is_symlink()
    assert "record_name" in (tmp_path / "out" / "s.csv").read_text()


def test_audit_folder_linked_outside_is_refused(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "audits").symlink_to(outside)
    rc = main(["audit", "--image", "videomae_vitl", "--video", "vjepa_vitl", "--static-task",
               "k400", "--temporal-task", "ssv2", "--results", str(root)])
    assert rc == 2 and "refusing to write into" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_a_records_predictions_name_never_leads_a_read_elsewhere(tmp_path, capsys):
    import numpy as np

    from results.predictions import write_predictions

    ids = [f"v{i}" for i in range(100)]
    secret = tmp_path / "secret.predictions.npz"
    write_predictions(secret, {"path": ids, "label": np.zeros(100, int),
                               "topk_index": np.zeros((100, 5), int),
                               "topk_prob": np.full((100, 5), .2)}, ids)
    a = add(tmp_path / "store", "vjepa_vitl", "k400", 80.0, K400, ckpt="a.pth", correct_first=80)
    rec = json.loads(a.read_text())
    rec["extra"]["predictions"] = "../../secret.predictions.npz"
    rec["extra"]["run_id"] = "other"
    rec["created"] = "2026-11-02T00:00:00+00:00"
    b = put(tmp_path / "store", rec, name="b.json")
    assert main(["compare", str(a), str(b)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no such file is beside the record" in err


# ----------------------------------------------------------------------------------------------
# 2. bounded parsing


def test_a_record_nested_100k_deep_is_one_problem(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    deep = '{"record_version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    bad = put(root, None, text=deep)
    rc, out, err = board(root, capsys)
    assert rc == 0 and "80" in out and "70" in out
    assert err.count(str(bad)) == 1 and "nested more than 64 levels deep" in err


def test_an_import_row_nested_100k_deep_is_skipped(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")
    frame.loc[1, "record"] = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    frame.to_csv(tmp_path / "evil.csv", index=False)
    rc = main(["results", "import", str(tmp_path / "evil.csv"), "--results",
               str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert rc == 1 and "imported 2 record(s)" in out and "1 row(s) left out" in out
    assert "row 1 is nested more than 64 levels deep" in " ".join(err.split())
    assert len(whole_records(tmp_path / "store" / "records")) == 2


def test_an_oversized_record_file_is_refused_unread(tmp_path, capsys, monkeypatch):
    import results.record

    monkeypatch.setattr(results.record, "MAX_RECORD_BYTES", 4000)
    root = good_store(tmp_path / "store")
    rec = base_record()
    rec["extra"] = {"padding": "x" * 10_000}
    bad = put(root, rec)
    rc, out, err = board(root, capsys)
    assert rc == 0 and "80" in out and "evil_enc" not in out
    assert err.count(str(bad)) == 1 and f"{bad}: larger than 4000 bytes" in err


def test_an_import_row_too_long_is_refused_in_bounded_memory(tmp_path, capsys, monkeypatch):
    import results.exchange

    monkeypatch.setattr(results.exchange, "_CSV_ROW_LIMIT", 20_000)
    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")
    frame.loc[2, "label"] = "y" * 50_000
    frame.to_csv(tmp_path / "evil.csv", index=False)
    rc = main(["results", "import", str(tmp_path / "evil.csv"), "--results",
               str(tmp_path / "store")])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "a row longer than" in err and "evil.csv" in err
    assert len(whole_records(tmp_path / "store" / "records")) == 2  # the rows before it


def test_a_number_past_pythons_digit_limit_is_one_problem(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    text = json.dumps(base_record(), sort_keys=True).replace('"seed": 0', '"seed": ' + "9" * 5000)
    bad = put(root, None, name="digits.json", text=text)
    rc, out, err = board(root, capsys)
    assert rc == 0 and err.count(str(bad)) == 1 and "a number too long to read" in err and "80" in out


def test_a_record_file_that_is_not_utf8_is_reported(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    bad = root / "records" / "vjepa_vitl__k400__0123456789ab__20261201T000000_000000Z-bbbbbb.json"
    bad.write_bytes(b'{"record_version": 1, "task": "\xff\xfe"}')
    rc, out, err = board(root, capsys)
    assert rc == 0 and err.count(str(bad)) == 1 and "not UTF-8" in err


# ----------------------------------------------------------------------------------------------
# 3. fields checked where read, in one reader: each bad record reported once, the rest shown


def _set(rec, dotted, value):
    *parents, last = dotted.split(".")
    node = rec
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


BAD_FIELDS = [
    ("record_version", "1", "record_version must be a positive integer"),
    ("record_version", 99, "newer than this code understands"),
    ("protocol_id", ["a", "b"], "protocol_id must be text"),
    ("created", "yesterday", "is not an ISO 8601 time"),
    ("created", 2099, "created must be an ISO 8601 time"),
    ("created", "1600-01-01T00:00:00+00:00", "before 1970"),
    ("encoder", "vjepa_vitl", "encoder must be an object"),
    ("task", {"k400": 1}, "task must be a name"),
    ("metrics", [80.0], "metrics must be an object"),
    ("metrics.top1", 1e308, "out of range"),
    ("metrics.top1", -50, "out of range"),
    ("metrics.top1", "99", "metrics.top1 must be a number"),
    ("metrics.top5", True, "metrics.top5 must be a number"),
    ("metrics.mAP", 250.0, "out of range"),
    ("metrics.recall5", 130.0, "out of range"),
    ("metrics.verb_recall5_max_over_heads", -1.0, "out of range"),
    ("metrics.paper_relative_mean", 100.5, "out of range"),
    ("metrics.relative_max/permanence_hi", 101.0, "out of range"),
    ("metrics.absolute_max_lo", -2.0, "out of range"),
    ("metrics.auroc_mean", 1.5, "an AUROC is in [0, 1]"),
    ("metrics.auroc_max/continuity_lo", -0.1, "an AUROC is in [0, 1]"),
    ("metrics.num_samples", -3, "whole number >= 0"),
    ("seed", "0", "seed must be an integer"),
    ("world_size", 0, "world_size must be a positive integer"),
    ("checkpoint.step", "last", "checkpoint.step must be a whole number"),
    ("checkpoint.random_init", "yes", "random_init must be true or false"),
    ("protocol", ["x"], "protocol must be an object"),
    ("protocol.protocol_version", "2", "protocol_version must be a positive integer"),
    ("protocol.task.manifests.eval.videos", "many", "videos must be a whole number"),
    ("protocol.task.train_fold", {"fraction": 5, "seed": 0}, "fraction must be a number in (0, 1]"),
    ("extra.label", ["x"], "extra.label must be text"),
    ("timings.wall_seconds", -1, "timings.wall_seconds must be a finite number >= 0"),
]


@pytest.mark.parametrize("field,value,why", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD_FIELDS])
def test_a_record_with_a_bad_field_is_reported_once_and_skipped(tmp_path, capsys, field, value,
                                                                 why):
    root = good_store(tmp_path / "store")
    rec = base_record(top1=99.0)
    _set(rec, field, value)
    bad = put(root, rec, name="not-a-standard-name.json")  # reported whatever its name
    before = snapshot(tmp_path)
    rc, out, err = board(root, capsys)
    assert rc == 0, err
    assert err.count(str(bad)) == 1 and why in err, err
    assert "evil_enc" not in out and "80" in out and "70" in out and "60" in out
    assert snapshot(tmp_path) == before  # reading changes nothing


def test_infinity_and_nan_in_a_record(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    inf = put(root, None, name="inf.json",
              text=json.dumps(base_record(top1=float("inf")), allow_nan=True))
    nan_rec = base_record(encoder="nan_enc", seed=1)
    nan_rec["metrics"]["mAP"] = float("nan")  # a metric that could not be computed: no cell
    put(root, None, name="nan.json", text=json.dumps(nan_rec, allow_nan=True))
    rc, out, err = board(root, capsys)
    assert rc == 0 and err.count(str(inf)) == 1 and "must be a finite number" in err
    assert "nan_enc" in out and "nan.json" not in err


def test_a_forged_future_record_never_replaces_the_real_one(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    real = next((root / "records").glob("vjepa_vitl__k400__*"))
    forged = json.loads(real.read_text())
    forged["metrics"]["top1"] = 100.0
    forged["created"] = "2099-01-01T00:00:00+00:00"
    bad = put(root, forged, name="zz-forged.json")
    rc, out, err = board(root, capsys, "--tasks", "k400")
    assert rc == 0 and "in the future" in err and err.count(str(bad)) == 1
    assert "80" in out and "100" not in out


LONE_SURROGATES = [("encoder.name", "evil\ud800"), ("extra.label", "\udfff"),
                   ("protocol.probe.note", "x\udc80y"), ("extra.\ud83d", "a key")]


@pytest.mark.parametrize("field,value", LONE_SURROGATES, ids=[f for f, _ in LONE_SURROGATES])
def test_a_lone_surrogate_is_a_bad_field_not_a_crash(tmp_path, capsys, field, value):
    # Valid JSON (`"\ud800"`) that no UTF-8 text holds: it passed every field check and then
    # stopped every leaderboard with UnicodeEncodeError in pandas / pyarrow.
    root = good_store(tmp_path / "store")
    rec = base_record(top1=99.0)
    _set(rec, field, value)
    bad = put(root, None, name="surrogate.json", text=json.dumps(rec))  # ASCII: `\udXXX` escapes
    assert "\\ud" in bad.read_text()
    for fmt in ("csv", "plain", "json", "markdown"):
        rc, out, err = board(root, capsys, "--format", fmt)
        assert rc == 0, err
        assert err.count(str(bad)) == 1 and "not valid Unicode" in err, err
        assert "evil" not in out and "80" in out and "70" in out
    where = field if not field.endswith("\ud83d") else "extra (a key)"
    assert where in err
    scan, index = ResultStore(root, scan=True), ResultStore(root)
    assert scan.frame(text=False).drop(columns="record").equals(
        index.frame(text=False).drop(columns="record"))
    assert scan.problems == index.problems and len(index.problems) == 1
    assert main(["results", "export", str(tmp_path / "s.parquet"), "--results", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "exported 3 record(s)" in out and err.count(str(bad)) == 1


def test_compare_on_a_hostile_record_file_is_one_line(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    a = next((root / "records").glob("vjepa_vitl__k400__*"))
    rec = base_record()
    rec["record_version"] = "1"
    bad = put(root, rec, name="bad.json")
    assert main(["compare", str(a), str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error:" in err and str(bad) in err and "record_version must be a positive integer" in err
    assert "internal error" not in err


def test_hostile_records_do_not_stop_series_tables_audit_or_export(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    for i, (field, value, _) in enumerate(BAD_FIELDS):
        rec = base_record(encoder="vjepa_vitl", top1=99.0, seed=100 + i)
        _set(rec, field, value)
        put(root, rec, name=f"bad{i}.json")
    n = len(BAD_FIELDS)
    assert main(["leaderboard", "--results", str(root), "--series", "vjepa_vitl", "--format",
                 "csv"]) == 0
    out, err = capsys.readouterr()
    assert "step 1" in out and err.count("skipped unreadable record") == n
    assert main(["table", "vjepa-frozen", "--results", str(root)]) == 0
    capsys.readouterr()
    assert main(["audit", "--image", "videomae_vitl", "--video", "vjepa_vitl", "--static-task",
                 "k400", "--temporal-task", "ssv2", "--results", str(root)]) == 0
    assert "accepted_winner: pending" in capsys.readouterr().out
    assert main(["results", "export", str(tmp_path / "s.csv"), "--results", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "exported 3 record(s)" in out and err.count("skipped unreadable record") == n


def test_import_rows_with_bad_fields_are_skipped_the_rest_imported(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")
    set_record(frame, 0, lambda r: r["metrics"].update(top1=1e308))
    set_record(frame, 1, lambda r: r["metrics"].update(top1=-50))
    frame.to_csv(tmp_path / "evil.csv", index=False)
    rc = main(["results", "import", str(tmp_path / "evil.csv"), "--results",
               str(tmp_path / "store")])
    out, err = capsys.readouterr()
    err = " ".join(err.split())
    assert rc == 1 and "imported 1 record(s)" in out and "2 row(s) left out" in out
    assert "row 0: metrics.top1=1e+308 is out of range" in err
    assert "row 1: metrics.top1=-50 is out of range" in err
    rc, out, _ = board(tmp_path / "store", capsys)
    assert rc == 0 and "1e+308" not in out and "-50" not in out


@pytest.mark.parametrize("cell,why", [
    ("", "holds no record JSON"),
    ("[1, 2]", "not a result record"),
    ('{"record_version": 1', "not valid JSON"),
])
def test_import_rows_that_hold_no_record(tmp_path, capsys, cell, why):
    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")
    frame.loc[0, "record"] = cell
    frame.to_csv(tmp_path / "evil.csv", index=False)
    rc = main(["results", "import", str(tmp_path / "evil.csv"), "--results",
               str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert rc == 1 and why in err and "imported 2 record(s)" in out


def test_a_garbled_schema_version_or_file_is_one_line(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    frame = export_csv(src, tmp_path / "s.csv")
    frame["schema_version"] = "abc"
    frame.to_csv(tmp_path / "evil.csv", index=False)
    before = snapshot(tmp_path)
    assert main(["results", "import", str(tmp_path / "evil.csv"), "--results",
                 str(tmp_path / "store")]) == 2
    assert "schema_version 'abc' is not a whole number" in capsys.readouterr().err
    (tmp_path / "bin.csv").write_bytes(b"record\n\xff\xfe\x00garbage\n")
    assert main(["results", "import", str(tmp_path / "bin.csv"), "--results",
                 str(tmp_path / "store")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    (tmp_path / "bin.parquet").write_bytes(b"PAR1 not really")
    pytest.importorskip("pyarrow")
    assert main(["results", "import", str(tmp_path / "bin.parquet"), "--results",
                 str(tmp_path / "store")]) == 2
    assert "not a Parquet file" in capsys.readouterr().err
    assert not changed(before, snapshot(tmp_path)) - {"bin.csv", "bin.parquet", "store",
                                                      "store/records"}


def test_parquet_record_column_of_numbers(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"schema_version": [3, 3], "record_name": ["a", "b"],
                             "record": [1, 2]}), tmp_path / "n.parquet")
    rc = main(["results", "import", str(tmp_path / "n.parquet"), "--results",
               str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert rc == 1 and "holds no record JSON" in err and "imported 0 record(s)" in out


# ----------------------------------------------------------------------------------------------
# 4. torn records, whatever their name; files that are not ours stay silent


def test_a_torn_record_under_any_name_is_reported(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    text = json.dumps(base_record(), sort_keys=True, indent=2)
    late = tmp_path / "store" / "copies"
    late.mkdir()
    (late / "backup copy.json").write_text(text[: len(text) // 2])  # cut before record_version
    (late / "tail.json").write_text(text[: text.index('"record_version"') + 20])
    (late / "config.json").write_text('{"out": "runs", "seeds": [0, ')  # not ours: silent
    (late / "notes.json").write_text('{"todo": 1}')
    rc, out, err = board(root, capsys)
    assert rc == 0 and "80" in out
    assert err.count("backup copy.json") == 1 and err.count("tail.json") == 1
    assert "config.json" not in err and "notes.json" not in err


def test_a_torn_record_with_a_long_head_is_still_found(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    rec = base_record()
    rec["checkpoint"]["notes"] = "n" * 10_000  # sorted first: record_version far past 4 KiB
    text = json.dumps(rec, sort_keys=True, indent=2)
    assert text.index('"record_version"') > 4096
    (root / "old").mkdir()
    (root / "old" / "kept.json").write_text(text[:-30])
    rc, out, err = board(root, capsys)
    assert rc == 0 and err.count("kept.json") == 1 and "not valid JSON" in err


# ----------------------------------------------------------------------------------------------
# 5. records of one run that disagree; date windows before de-duplication


def test_two_records_of_one_run_that_differ_are_reported(tmp_path, capsys):
    root = tmp_path / "store"
    first = add(root, "vjepa_vitl", "k400", 70.0, K400, ckpt="a.pth", step=1,
                created="2026-11-01T00:00:00+00:00")
    second = add(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="a.pth", step=1,
                 created="2026-11-05T00:00:00+00:00")
    rc, out, err = board(root, capsys)
    assert rc == 0 and "80" in out
    assert "records of the same run differ in top1" in err
    assert str(first) in err and str(second) in err and "top1 70.0" in err


def test_identical_reruns_are_no_conflict(tmp_path, capsys):
    root = tmp_path / "store"
    add(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="a.pth", created="2026-11-01T00:00:00+00:00")
    add(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="a.pth", created="2026-11-05T00:00:00+00:00")
    rc, out, err = board(root, capsys)
    assert rc == 0 and "differ" not in err and err == ""


def test_a_date_window_applies_before_deduplication(tmp_path):
    root = tmp_path / "store"
    add(root, "vjepa_vitl", "k400", 70.0, K400, ckpt="a.pth", created="2026-11-01T10:00:00+00:00")
    add(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="a.pth", created="2026-12-05T00:00:00+00:00")
    store = ResultStore(root)
    assert list(store.frame(until="2026-11-30")["top1"]) == [70.0]  # the board as it stood
    assert list(store.frame(until="2026-11-01")["top1"]) == [70.0]  # a bare date: its whole day
    assert list(store.frame(since="2026-12-01")["top1"]) == [80.0]
    assert list(store.frame()["top1"]) == [80.0]
    with pytest.raises(ValueError, match="cannot read the date"):
        store.frame(since="last week")


def test_created_times_compare_as_times_not_text(tmp_path, capsys):
    root = tmp_path / "store"
    # 01:00+02:00 is 23:00 UTC the day before: older, though its text sorts later
    add(root, "vjepa_vitl", "k400", 70.0, K400, ckpt="a.pth", created="2026-11-02T01:00:00+02:00")
    add(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="a.pth", created="2026-11-01T23:30:00+00:00")
    assert list(ResultStore(root).frame()["top1"]) == [80.0]


# ----------------------------------------------------------------------------------------------
# 6. environment faults: one line naming the file and what to do


def test_export_past_the_file_size_limit(tmp_path):
    import resource

    root = good_store(tmp_path / "store")
    out = tmp_path / "out"
    out.mkdir()

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    r = run_cli(["results", "export", str(out / "s.csv"), "--results", str(root)],
                preexec=limit)
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert f"cannot write {out / 's.csv'}" in err and "ulimit -f" in err
    assert os.listdir(out) == []  # no partial file, no temporary file


def test_export_to_a_folder_path_and_into_a_new_folder(tmp_path, capsys):
    root = good_store(tmp_path / "store")
    (tmp_path / "dir.csv").mkdir()
    assert main(["results", "export", str(tmp_path / "dir.csv"), "--results", str(root)]) == 2
    assert "it is a folder" in capsys.readouterr().err
    assert main(["results", "export", str(tmp_path / "new" / "deep" / "s.csv"), "--results",
                 str(root)]) == 0
    assert (tmp_path / "new" / "deep" / "s.csv").is_file()


def test_export_on_a_read_only_file_system(tmp_path, capsys, monkeypatch):
    import tempfile

    root = good_store(tmp_path / "store")

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["results", "export", str(tmp_path / "s.csv"), "--results", str(root)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot write {tmp_path / 's.csv'}: the file system is read-only" in err
    assert not (tmp_path / "s.csv").exists()


def test_import_when_the_disk_fills(tmp_path, capsys, monkeypatch):
    src = good_store(tmp_path / "src")
    export_csv(src, tmp_path / "s.csv")
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:  # the second record's file (each write: the file, then its folder)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    rc = main(["results", "import", str(tmp_path / "s.csv"), "--results", str(tmp_path / "store")])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "no space left on the device" in err and "free some space" in err
    assert str(tmp_path / "store" / "records") in err and "internal error" not in err
    assert len(whole_records(tmp_path / "store" / "records")) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_import_into_a_read_only_store(tmp_path, capsys):
    src = good_store(tmp_path / "src")
    export_csv(src, tmp_path / "s.csv")
    (tmp_path / "store" / "records").mkdir(parents=True)
    os.chmod(tmp_path / "store" / "records", 0o555)
    try:
        rc = main(["results", "import", str(tmp_path / "s.csv"), "--results",
                   str(tmp_path / "store")])
    finally:
        os.chmod(tmp_path / "store" / "records", 0o755)
    assert rc == 2 and "permission denied" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 7. signals during an import: stop between two records, whole files only


def _big_export(tmp_path, n=60) -> Path:
    root = tmp_path / "src"
    for i in range(n):
        rec = base_record(encoder=f"enc{i}", top1=float(i % 100), seed=i)
        rec["extra"] = {"history": [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(200)]}
        write_record(rec, root / "records")
    export_store(ResultStore(root), tmp_path / "s.csv")
    return tmp_path / "s.csv"


@pytest.mark.parametrize("sig,code", [("TERM", 143), ("INT", 130)])
def test_a_signal_mid_import_stops_between_records(tmp_path, sig, code):
    dump = _big_export(tmp_path, n=12)
    store = tmp_path / "store"
    r = run_cli(["results", "import", str(dump), "--results", str(store)],
                env={"HARNESS_FAILPOINT": f"import_row:4@{sig}"})
    assert r.returncode == code, r.stderr
    assert f"stopped by SIG{sig} after 4 record(s) written" in " ".join(r.stderr.split())
    assert len(whole_records(store / "records")) == 4
    r = run_cli(["results", "import", str(dump), "--results", str(store)])
    assert r.returncode == 0 and "imported 8 record(s)" in r.stdout and "(4 already there)" in r.stdout
    assert len(whole_records(store / "records")) == 12


def test_sigterm_from_outside_stops_within_seconds(tmp_path):
    dump = _big_export(tmp_path, n=400)
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "results", "import",
                             str(dump), "--results", str(store)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (
            (store / "records").is_dir() and len(os.listdir(store / "records")) >= 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)  # stops between records: well before all 400
    if proc.returncode == 0:
        pytest.skip("the import finished before the signal arrived")
    assert proc.returncode == 143, err
    assert "every file written is whole" in " ".join(err.split())
    assert 0 < len(whole_records(store / "records")) < 400
