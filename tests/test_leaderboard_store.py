"""The result store: where it is, file modes, concurrent writers, export and import."""
import json
import multiprocessing
import os
import stat

import pytest

from results import ResultStore, leaderboard, make_record, write_record
from common.atomic import atomic_write
from results.exchange import export_store, import_store
from results.frame import SCHEMA, SCHEMA_VERSION
from tests.test_leaderboard_cells import COLUMNS, build_store


def test_atomic_write_uses_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.json", lambda f: f.write(b"{}"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o002)  # a team folder: group-writable
        path = atomic_write(tmp_path / "b.json", lambda f: f.write(b"{}"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_results_folder_from_flag_env_or_default(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    root = build_store(tmp_path / "store")
    monkeypatch.setenv("HARNESS_RESULTS", str(root))
    assert ResultStore().root == root
    assert main(["leaderboard", "--format", "csv"]) == 0
    assert COLUMNS[1] in capsys.readouterr().out
    monkeypatch.delenv("HARNESS_RESULTS")
    assert str(ResultStore().root) == "runs"
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard"]) == 2  # no ./runs: one clear line
    assert "HARNESS_RESULTS" in capsys.readouterr().err


def _writer(root, worker, n):
    for i in range(n):
        rec = make_record(encoder={"name": f"enc{worker}"}, checkpoint={"random_init": True},
                          task="k400", split="val", protocol={"probe": {"kind": "linear"}},
                          metrics={"top1": float(i)}, data_problems={}, timings={}, seed=i,
                          device="cpu")
        write_record(rec, root)


def test_concurrent_writers_and_a_reader(tmp_path):
    root = tmp_path / "records"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(root, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    seen = []
    while any(p.is_alive() for p in procs):  # a reader during the writes sees whole records
        store = ResultStore(tmp_path)
        seen.append(len(store.records()))
        assert store.problems == [] or store.problems[0][1] == "results root does not exist"
    for p in procs:
        p.join()
        assert p.exitcode == 0
    store = ResultStore(tmp_path)
    frame = store.frame()
    assert len(frame) == 100 and store.problems == [] and store.replaced == 0
    # every seed is its own run: the leaderboard aggregates 25 runs per encoder
    lb = leaderboard(frame)
    cell = lb.cells[(("enc0", "random-init"), "k400 (linear)")]
    assert cell.runs == 25 and cell.mean == 12.0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_import_round_trip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install pyarrow)")
    root = build_store(tmp_path / "here")
    dump = tmp_path / f"store{suffix}"
    n = export_store(ResultStore(root), dump)
    assert n == 14  # every record file, the re-run included; not the torn one
    other = tmp_path / "there"
    assert import_store(dump, other) == (14, 0)
    assert import_store(dump, other) == (0, 14)  # importing again adds nothing
    store = ResultStore(other)
    lb = leaderboard(store.frame())
    assert store.replaced == 1 and store.problems == []
    # same cells, same marks where no saved predictions are needed
    here = leaderboard(ResultStore(root).frame())
    for key, cell in here.cells.items():
        assert lb.cells[key].number() == cell.number() and lb.cells[key].runs == cell.runs
        assert lb.cells[key].best == cell.best
    # predictions stay behind: McNemar falls back to the count test (documented)
    a_k400 = (("vjepa_vitl", "vitl_a.pth"), COLUMNS[1])
    assert here.cells[a_k400].test == "mcnemar" and lb.cells[a_k400].test == "two-proportion"


def test_old_export_schema_and_bad_files(tmp_path):
    import pandas as pd

    root = build_store(tmp_path / "here")
    dump = tmp_path / "store.csv"
    export_store(ResultStore(root), dump)
    frame = pd.read_csv(dump, dtype=str, keep_default_na=False)
    assert frame["schema_version"].iloc[0] == str(SCHEMA_VERSION)
    assert list(frame.columns[2:2 + 3]) == list(SCHEMA)[:3]
    # a schema-1 export: no schema_version, no record_name -> names are made afresh
    old = frame.drop(columns=["schema_version", "record_name"])
    old.to_csv(tmp_path / "old.csv", index=False)
    assert import_store(tmp_path / "old.csv", tmp_path / "o")[0] == 14
    newer = frame.assign(schema_version=str(SCHEMA_VERSION + 1))
    newer.to_csv(tmp_path / "newer.csv", index=False)
    with pytest.raises(ValueError, match="newer than this code"):
        import_store(tmp_path / "newer.csv", tmp_path / "n")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an exported result store"):
        import_store(tmp_path / "x.csv", tmp_path / "n")
    with pytest.raises(ValueError, match=".parquet or .csv"):
        export_store(ResultStore(root), tmp_path / "store.xlsx")


def test_results_command(tmp_path, capsys):
    from harness.cli import main

    root = build_store(tmp_path / "here")
    assert main(["results", "schema"]) == 0
    out = capsys.readouterr().out
    assert f"schema version {SCHEMA_VERSION}" in out and "split_size" in out
    assert main(["results", "export", str(tmp_path / "s.csv"), "--results", str(root)]) == 0
    assert "exported 14 record(s)" in capsys.readouterr().out
    assert main(["leaderboard", "--import", str(tmp_path / "s.csv"), "--results",
                 str(tmp_path / "b")]) == 0
    assert "imported 14 record(s)" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "b" / "records").glob("*.json"))
    assert len(names) == 14 and json.loads((tmp_path / "b" / "records" / names[0]).read_text())
