"""The result store's SQLite index: the same answer as the file scan, kept up to date from
what changed on disk, rebuilt when missing, damaged or stale."""
import copy
import json
import logging
import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from results import ResultStore, leaderboard, make_record, render, write_record
from results.exchange import export_store, import_store
from results.index import INDEX_NAME, RecordIndex
from tests.test_leaderboard_cells import K400, SSV2, build_store


def _record(encoder="enc", task="k400", top1=50.0, seed=0, created=None, **extra):
    rec = make_record(encoder={"name": encoder}, checkpoint={"path": "/ckpt/e.pth",
                                                             "sha256": "e" * 64},
                      task=task, split="val", protocol=copy.deepcopy(K400 if task == "k400"
                                                                     else SSV2),
                      metrics={"top1": top1, "num_samples": 100}, data_problems={},
                      timings={"wall_seconds": 10.0}, seed=seed, device="cpu",
                      extra=extra or None)
    if created:
        rec["created"] = created
    return rec


def _put(root: Path, name: str, text: str) -> Path:
    path = root / "records" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def hostile_store(root: Path) -> Path:
    """Good records, re-runs (one of them not reproducing), torn, hostile, foreign, hidden and
    linked files: everything the scan has rules for."""
    build_store(root)
    recs = root / "records"
    # a re-run with other metrics (a conflict) and one that reproduces (replaced quietly)
    a = _record("rerun", top1=10.0, created="2026-11-02T00:00:00+00:00", run_id="r1")
    b = _record("rerun", top1=11.0, created="2026-11-03T00:00:00+00:00", run_id="r1")
    c = _record("same", top1=5.0, created="2026-11-02T00:00:00+00:00", run_id="r2")
    d = _record("same", top1=5.0, created="2026-11-04T00:00:00+00:00", run_id="r2")
    for rec in (a, b, c, d):
        write_record(rec, recs)
    # two records of one run created in the same microsecond: the later path wins
    for name in ("tie-a.json", "tie-b.json"):
        _put(root, name, json.dumps(_record("tie", top1=1.0 if name == "tie-a.json" else 2.0,
                                            created="2026-11-05T00:00:00+00:00", run_id="t")))
    good = json.dumps(_record("torn", top1=33.0), indent=2)
    _put(root, "torn__k400__0123456789ab__20261201T000000_000000Z-abcdef.json",
         good[: len(good) // 2])
    (recs / "bytes.json").write_bytes(b'{"record_version": 1, "created": "\xff\xfe"}')
    _put(root, "future.json", json.dumps(_record("future", created="2999-01-01T00:00:00+00:00")))
    _put(root, "badfield.json", json.dumps({**_record("bad"), "seed": "0"}))
    _put(root, "deep.json", "[" * 5000 + "]" * 5000)
    # odd but valid values: a huge seed, a bool in an unchecked field, NaN
    odd = _record("odd name", top1=float("nan"), seed=2 ** 80)
    odd["protocol"]["precision"] = True
    odd["precision"] = None
    _put(root, "odd.json", json.dumps(odd))
    # not ours: ignored without a word; hidden: in-flight writes
    (root / "config.json").write_text(json.dumps({"lr": 1}))
    (root / "summary.json").write_text("[1, 2, 3]")
    _put(root, ".part-123.json", "{")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.json").write_text(json.dumps(_record("hidden")))
    # a linked file is read (as the scan reads it), a linked folder is not walked
    outside = root.parent / (root.name + "_outside")
    outside.mkdir(exist_ok=True)
    (outside / "linked.json").write_text(json.dumps(_record("linked", top1=44.0)))
    (outside / "sub").mkdir(exist_ok=True)
    (outside / "sub" / "x.json").write_text(json.dumps(_record("linked_dir")))
    (recs / "linked.json").symlink_to(outside / "linked.json")
    (root / "linkdir").symlink_to(outside / "sub")
    # seeds of one cell (mean +- std), one of them in the same microsecond as another run, a
    # seed without top1, and two checkpoints sharing a file name (labels then carry the step)
    for seed, top1 in enumerate((61.3, 62.7, 60.1)):
        write_record(_record("seeds", top1=top1, seed=seed,
                             created="2026-11-06T00:00:00+00:00" if seed else None), recs)
    lack = _record("seeds", seed=9)
    lack["metrics"] = {"top5": 90.0}
    _put(root, "lacking.json", json.dumps(lack))
    for sha, step in (("1" * 64, 10), ("2" * 64, 20)):
        rec = _record("twin", top1=40.0 + step)
        rec["checkpoint"] = {"path": "/ckpt/latest.pth", "sha256": sha, "step": step}
        write_record(rec, recs)
    # two registry entries shown under one label: one row, whose cells fold the runs of two
    # groups interleaved in time
    for seed, (name, day) in enumerate((("lab_a", 7), ("lab_b", 8), ("lab_a", 9))):
        rec = _record(name, top1=50.0 + 1.1 * seed, seed=seed,
                      created=f"2026-11-0{day}T00:00:00+00:00")
        rec["encoder"]["label"] = "one label"
        write_record(rec, recs)
    # tasks ranked by another metric: a task's own (mAP, two seeds, one seed lacking it) and
    # a protocol's `metrics.main` (a VoE run): a board of each task's headline shows them
    for seed, value in enumerate((30.5, 31.5, None)):
        rec = _record("seeds", task="ava", seed=seed)
        rec["protocol"]["task"] = {**rec["protocol"].get("task", {}), "metric": "mAP"}
        rec["metrics"] = {"num_samples": 100} | ({} if value is None else {"mAP": value})
        write_record(rec, recs)
    voe = _record("seeds", task="physics")
    voe["protocol"] = {"metrics": {"main": "paper_relative_mean"}, "surprise": {"target": "latent"},
                       "task": {"kind": "voe", "sampling": {"frames_per_clip": 8}}}
    voe["metrics"] = {"paper_relative_mean": 60.0, "num_samples": 120}
    write_record(voe, recs)
    # a sub-store one level down, whose names sort differently as text and as paths
    write_record(_record("nested", task="ssv2", top1=20.0), root / "a-b" / "records")
    write_record(_record("nested2", task="ssv2", top1=21.0), root / "a" / "records")
    return root


def both(root, **kw):
    """(scan store, scan frame, index store, index frame)."""
    scan, index = ResultStore(root, scan=True), ResultStore(root)
    return scan, scan.frame(**kw), index, index.frame(**kw)


def assert_same(root, **kw):
    scan, f_scan, index, f_index = both(root, **kw)
    assert not index.scan  # the index was used
    pd.testing.assert_frame_equal(f_scan, f_index)
    assert scan.problems == index.problems
    assert scan.conflicts == index.conflicts
    assert scan.replaced == index.replaced
    board_scan = render(leaderboard(f_scan, significance=False), "plain")
    assert board_scan == render(leaderboard(f_index, significance=False), "plain")
    # what the leaderboard command reads: everything but the records' text
    pd.testing.assert_frame_equal(f_scan.assign(record=None),
                                  ResultStore(root).frame(text=False, **kw))
    recs_scan = ResultStore(root, scan=True).records(**kw)
    assert recs_scan == ResultStore(root).records(**kw)
    if kw.get("latest_only", True):
        assert_same_board(root, f_scan, **kw)
    return f_index, index


def assert_same_board(root, f_scan, since=None, until=None):
    """The board from the index's folded runs (`cell_frame`) is the board of the scan's frame,
    to the last bit of every cell, under every filter the command passes."""
    for metric in (None, "top1", "top5"):  # None: each task's headline metric
        store = ResultStore(root)
        cells = store.cell_frame(metric, since=since, until=until)
        if cells is None:
            assert metric is not None and metric not in f_scan
            continue
        scan = ResultStore(root, scan=True)
        scan.frame(since=since, until=until)
        assert (store.problems, store.conflicts, store.replaced) == \
            (scan.problems, scan.conflicts, scan.replaced)
        # folded (fewer rows on the whole store: seeds); a headline board reads the frames of
        # several metrics, each group once under its own
        kept = cells[cells["_metric"] == cells["_main"]] if metric is None else cells
        assert len(kept) <= len(f_scan)
        if since is None and until is None:
            assert len(kept) < len(f_scan)
        for filters in ({}, {"tasks": "ssv2,k400"}, {"encoders": "seeds,v*"}, {"tasks": "ava"},
                        {"protocols": f_scan["protocol_id"].iloc[0][:4]}):
            for significance in (False, True):
                want = leaderboard(f_scan, metric=metric, significance=significance,
                                   since=since, until=until, **filters)
                got = leaderboard(cells, metric=metric, significance=significance,
                                  since=since, until=until, **filters)
                assert render(got, "plain") == render(want, "plain")
                assert render(got, "json") == render(want, "json")
                assert got.cells == want.cells and got.notes == want.notes
                assert got.legend == want.legend


def test_index_and_file_scan_agree_on_a_hostile_store(tmp_path):
    root = hostile_store(tmp_path / "store")
    frame, store = assert_same(root)
    assert (root / INDEX_NAME).is_file()
    problems = dict(store.problems)
    assert any("future" in why for why in problems.values())
    assert str(root / "config.json") not in problems and len(store.conflicts) == 3  # r1, the tie, build_store
    assert "linked" in set(frame["encoder"]) and "linked_dir" not in set(frame["encoder"])
    assert frame.loc[frame["encoder"] == "tie", "top1"].tolist() == [2.0]
    assert store.replaced == 4  # build_store's re-run, r1, r2, the tie
    # every other selection agrees too: all records, date windows
    assert_same(root, latest_only=False)
    assert_same(root, since="2026-11-03", until="2026-11-04")
    assert_same(root, until="2026-11-02T12:00")
    # a task filter pushed into SQL keeps what filtering the scan's frame keeps (the dtypes of
    # a column are those of the rows kept: the huge seed of a k400 row is not among them)
    # (and its metric columns are those of the rows kept: top5 of a k400 seed is not,
    # nor the mAP of an ava run)
    scan = ResultStore(root, scan=True).frame()
    scan = scan[scan["task"] == "ssv2"].reset_index(drop=True)
    others = ["top5", "mAP", "paper_relative_mean"]
    assert scan[others].isna().all().all()
    pd.testing.assert_frame_equal(scan.drop(columns=others),
                                  ResultStore(root).frame(tasks=["ssv2"]), check_dtype=False)


def test_changes_on_disk_are_found_incrementally(tmp_path):
    root = hostile_store(tmp_path / "store")
    assert_same(root)
    recs = root / "records"
    # rewritten (atomically, as a writer does), rewritten in place keeping size and mtime,
    # deleted, torn, a new record, a bad record fixed
    victim = sorted(recs.glob("vjepa_vitl__ssv2__*.json"))[0]
    rec = json.loads(victim.read_text())
    rec["metrics"]["top1"] = 12.0
    write_record(rec, recs, filename=victim.name)
    in_place = sorted(recs.glob("videomae_vitl__ssv2__*.json"))[0]
    st = in_place.stat()
    text = in_place.read_text()
    in_place.write_text(text.replace('"top1": 60.0', '"top1": 66.0'))
    os.utime(in_place, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert in_place.stat().st_size == st.st_size
    sorted(recs.glob("videomae_vitl__k400__*.json"))[0].unlink()
    torn = sorted(recs.glob("vjepa_vitl__k400__*.json"))[-1]
    torn.write_text(torn.read_text()[:100])
    write_record(_record("newcomer", top1=99.0), recs)
    (recs / "badfield.json").write_text(json.dumps(_record("fixed", top1=42.0)))
    frame, store = assert_same(root)
    assert {"newcomer", "fixed"} <= set(frame["encoder"])
    assert 12.0 in frame["top1"].tolist() and 66.0 in frame["top1"].tolist()
    assert str(torn) in dict(store.problems)


def test_bad_records_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    import results.index_rows as index_module

    root = hostile_store(tmp_path / "store")
    ResultStore(root).frame()
    index = RecordIndex(root)
    with sqlite3.connect(index.path) as con:  # a later read finds the last update long past
        con.execute("UPDATE meta SET value = ? WHERE key = 'last_update_ns'",
                    (str(10 ** 19),))
    judged = []
    real = index_module.index_entry
    monkeypatch.setattr(index_module, "index_entry",
                        lambda r, rel, st: judged.append(rel) or real(r, rel, st))
    store = ResultStore(root)
    store.frame()
    assert judged == [] and any("badfield" in p for p, _ in store.problems)
    (root / "records" / "badfield.json").write_text(json.dumps({**_record("bad"), "seed": "1"}))
    store = ResultStore(root)
    store.frame()
    assert judged == ["records/badfield.json"]
    assert any("badfield" in p for p, _ in store.problems)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "older", "link"])
def test_a_damaged_or_stale_index_is_rebuilt(tmp_path, damage, caplog):
    root = hostile_store(tmp_path / "store")
    ResultStore(root).frame()
    path = root / INDEX_NAME
    if damage == "older":  # an index from before records were added and removed
        saved = path.read_bytes()
        RecordIndex(root).close()
        write_record(_record("later", top1=77.0), root / "records")
        next(iter(sorted((root / "records").glob("vjepa_vitl__k400__*.json")))).unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        path.write_bytes(saved)
    else:
        with sqlite3.connect(path) as con:  # everything into the main file first
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        if damage == "deleted":
            path.unlink()
        elif damage == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])
        elif damage == "garbage":
            path.write_bytes(b"not an sqlite file" * 100)
        elif damage == "link":
            victim = tmp_path / "victim"
            victim.write_text("keep")
            path.unlink()
            path.symlink_to(victim)
    with caplog.at_level(logging.WARNING, logger="results.index"):
        frame, _ = assert_same(root)
    if damage == "older":
        assert "later" in set(frame["encoder"])
    if damage in ("garbage", "truncated", "link"):
        assert len([r for r in caplog.records if r.name == "results.index"]) == 1
    if damage == "link":
        assert (tmp_path / "victim").read_text() == "keep" and not path.is_symlink()


def test_an_index_made_by_other_code_is_rebuilt(tmp_path):
    root = build_store(tmp_path / "store")
    ResultStore(root).frame()
    with sqlite3.connect(root / INDEX_NAME) as con:
        con.execute("UPDATE meta SET value = 'old' WHERE key = 'stamp'")
        con.execute("DELETE FROM records")
    assert_same(root)


def test_a_folder_where_no_index_can_be_written_is_scanned(tmp_path, caplog):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    root = build_store(tmp_path / "store")
    os.chmod(root, 0o555)
    try:
        store = ResultStore(root)
        frame = store.frame()
        assert store.scan and len(frame) == len(ResultStore(root, scan=True).frame())
    finally:
        os.chmod(root, 0o755)


def test_export_streams_in_chunks_and_round_trips(tmp_path, monkeypatch):
    root = hostile_store(tmp_path / "store")
    import results.store as store_module

    chunks = []
    real = store_module.ResultStore.chunks
    monkeypatch.setattr(store_module.ResultStore, "chunks",
                        lambda self, size=2000: (chunks.append(1) or c for c in real(self, 3)))
    n = export_store(ResultStore(root), tmp_path / "s.csv")
    assert n == len(ResultStore(root, scan=True).frame(latest_only=False)) and n > 6
    written, present = import_store(tmp_path / "s.csv", tmp_path / "copy")
    assert written == n and present == 0
    # the copy holds the same records (names rebuilt, `imported` added): the same board
    # (but for the two records of one run made in the same microsecond: their new names decide)
    a = ResultStore(root, scan=True).frame().query("encoder != 'tie'")
    b = ResultStore(tmp_path / "copy").frame().query("encoder != 'tie'")
    cols = ["encoder", "task", "protocol_id", "run_id", "top1", "seed"]
    key = ["run_id"]
    pd.testing.assert_frame_equal(a[cols].sort_values(key, ignore_index=True),
                                  b[cols].sort_values(key, ignore_index=True))
    pytest.importorskip("pyarrow")
    assert export_store(ResultStore(root), tmp_path / "s.parquet") == n
    assert import_store(tmp_path / "s.parquet", tmp_path / "copy2").written == n


def test_reindex_and_schema_commands(tmp_path, capsys):
    root = build_store(tmp_path / "store")
    assert main(["results", "reindex", "--results", str(root)]) == 0
    out = capsys.readouterr().out
    n = len(ResultStore(root, scan=True).records(latest_only=False))
    assert f"indexed {n} record(s)" in out and (root / INDEX_NAME).is_file()
    assert main(["results", "schema"]) == 0
    out = capsys.readouterr().out
    assert "index.sqlite" in out and "retry_at" in out


def test_a_writer_adds_its_row_and_a_crash_before_it_is_repaired(tmp_path):
    from types import SimpleNamespace

    from harness.record_writer import write_run_record

    root = build_store(tmp_path / "store")
    ResultStore(root).frame()
    plan = SimpleNamespace(settings=SimpleNamespace(out=root))
    path = write_run_record(plan, _record("written", top1=50.0), None, "abcdef1234567890")
    with sqlite3.connect(root / INDEX_NAME) as con:
        assert con.execute("SELECT COUNT(*) FROM records WHERE encoder = 'written'"
                           ).fetchone() == (1,)
    # a record whose writer died before its row: the next read finds it
    crashed = write_record(_record("crashed", top1=51.0), root / "records")
    frame, _ = assert_same(root)
    assert {"written", "crashed"} <= set(frame["encoder"]) and path.is_file() and crashed


def test_an_index_sqlite_refuses_to_write_falls_back_to_the_scan(tmp_path, monkeypatch, caplog):
    root = build_store(tmp_path / "store")

    def refuse(self):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(RecordIndex, "_open", refuse)
    store = ResultStore(root)
    with caplog.at_level(logging.WARNING):
        frame = store.frame()
    assert store.scan and "reading every record file instead" in caplog.text
    pd.testing.assert_frame_equal(frame, ResultStore(root, scan=True).frame())


def _age(root: Path, seconds: float) -> None:
    """Every file and folder under `root` last modified `seconds` ago (links themselves)."""
    import time

    when = time.time() - seconds
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            os.utime(Path(folder) / name, (when, when), follow_symlinks=False)
        os.utime(folder, (when, when))


def test_unchanged_folders_are_not_listed_and_in_place_edits(tmp_path, monkeypatch):
    """The cheap change check: a folder whose mtime did not change is not listed again and its
    old files are not stat-ed. A file edited in place changes no folder: one modified recently
    is stat-ed anyway (found), an old one is found by the next full walk (hourly, or
    `harness results reindex`)."""
    import time

    import results.index as index_module

    root = hostile_store(tmp_path / "store")
    recs = root / "records"
    _age(root, 2 * 86400)
    recent = sorted(recs.glob("vjepa_vitl__ssv2__*.json"))[0]
    os.utime(recent, (time.time() - 60,) * 2)  # written a minute ago
    os.utime(recs, (time.time() - 2 * 86400,) * 2)
    folder_mtime = recs.stat().st_mtime_ns
    old = sorted(recs.glob("videomae_vitl__ssv2__*.json"))[0]
    assert_same(root)
    walks = []
    real = index_module.walk_changed
    monkeypatch.setattr(index_module, "walk_changed",
                        lambda *a: walks.append(real(*a)) or walks[-1])
    ResultStore(root).frame()
    listed = {f.rel for f in walks[-1][0] if f.listed}
    # the root holds the index (its files come and go: listed each time), records/ does not
    assert "records" not in listed and not [r for r, _ in walks[-1][1] if r.startswith("records/")]
    # edited in place (its folder's mtime kept): the recent file is found at once
    for path, value in ((recent, "13.0"), (old, "67.0")):
        rec = json.loads(path.read_text())
        rec["metrics"]["top1"] = float(value)
        path.write_text(json.dumps(rec, indent=2, sort_keys=True))
    assert recs.stat().st_mtime_ns == folder_mtime  # an edit in place changes no folder
    frame = ResultStore(root).frame()
    assert 13.0 in frame["top1"].tolist()
    # the old one is not (documented: its folder and its indexed mtime say nothing changed) ...
    assert 67.0 not in frame["top1"].tolist()
    # ... until a full walk: `harness results reindex`, or the hourly one
    monkeypatch.setattr(index_module, "FULL_WALK_NS", 0)
    frame, _ = assert_same(root)
    assert 67.0 in frame["top1"].tolist() and 13.0 in frame["top1"].tolist()
    assert any(f.listed and f.rel == "records" for f in walks[-1][0])


def test_a_folder_changed_by_a_writer_is_listed_again(tmp_path, monkeypatch):
    """New, renamed, replaced and deleted files in an old folder (and in a new sub-folder) are
    found; of the old folder's entries only the new and replaced ones are stat-ed."""
    import time

    import results.index as index_module
    from common.atomic import atomic_write

    root = hostile_store(tmp_path / "store")
    recs = root / "records"
    _age(root, 2 * 86400)
    assert_same(root)
    write_record(_record("newcomer", top1=98.0), recs)
    victim = sorted(recs.glob("videomae_vitl__k400__*.json"))[0]
    victim.rename(recs / "renamed.json")
    sorted(recs.glob("vjepa_vitl__ssv2__*.json"))[0].unlink()
    # replaced by an atomic rename under its own name, dated as old as the rest
    replaced = max(recs.glob("vjepa_vitl__k400__*.json"))
    rec = json.loads(replaced.read_text())
    rec["metrics"]["top1"] = 12.5
    atomic_write(replaced, lambda f: f.write(json.dumps(rec, indent=2, sort_keys=True).encode()))
    os.utime(replaced, (time.time() - 2 * 86400,) * 2)
    write_record(_record("deeper", task="ssv2", top1=97.0), root / "a" / "new" / "records")

    stats = []

    class Counted:  # an os.DirEntry that counts its stat calls
        def __init__(self, entry):
            self.entry = entry

        def __getattr__(self, name):
            return getattr(self.entry, name)

        def stat(self):
            stats.append(self.entry.name)
            return self.entry.stat()

    real = index_module.walk_changed

    def walk(*args):
        folders, files = real(*args)
        return folders, [(rel, Counted(entry)) for rel, entry in files]

    monkeypatch.setattr(index_module, "walk_changed", walk)
    frame, _ = assert_same(root)
    assert {"newcomer", "deeper"} <= set(frame["encoder"])
    assert str(recs / "renamed.json") in set(frame["path"])
    assert 12.5 in frame["top1"].tolist()
    in_records = {n for n in stats if (recs / n).exists()}
    links = {p.name for p in recs.iterdir() if p.is_symlink()}
    assert in_records - links == {"renamed.json", replaced.name,
                                  *[p.name for p in recs.glob("newcomer__*.json")]}


def test_named_records_are_the_scans(tmp_path):
    """`harness compare`'s lookup (`named_paths`): SQL picks the candidates from the index, the
    same records, in the same order, as the scan finds by every kind of name."""
    root = hostile_store(tmp_path / "store")
    frame = ResultStore(root, scan=True).frame()
    some = frame.iloc[3]
    stem = Path(frame["path"].iloc[5]).stem
    for refs in ([str(some["run_id"])], [str(some["run_id"])[:7]], [stem], ["one label"],
                 ["lab_a", "seeds"], ["vjepa_vitl"], ["odd name"], ["tie"], ["nothing"],
                 ["None"], [stem, str(some["run_id"]), "twin"]):
        want = ResultStore(root, scan=True).named_paths(refs)
        assert ResultStore(root).named_paths(refs) == want, refs
        assert want or refs in (["nothing"], ["None"])


def test_a_first_build_judges_files_in_worker_processes(tmp_path, monkeypatch, caplog):
    """Many files are judged by a pool of processes (one per CPU): the same index as judged in
    process, and where no pool can start, judged in process after one line."""
    import concurrent.futures

    import results.index_rows as rows

    pools = []

    class Counted(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(rows, "PARALLEL_FROM", 1)
    monkeypatch.setattr(rows, "_cpus", lambda: 2)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Counted)
    root = hostile_store(tmp_path / "store")
    assert_same(root)
    assert pools and pools[0] == 2

    class Refused(concurrent.futures.ProcessPoolExecutor):
        def map(self, *args, **kwargs):  # a worker killed: the pool is broken
            raise concurrent.futures.process.BrokenProcessPool("a worker died")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Refused)
    with caplog.at_level(logging.WARNING):
        RecordIndex(root).rebuild()
    assert "no worker pool" in caplog.text
    assert_same(root)


def test_a_first_build_is_written_as_it_goes_and_a_killed_one_goes_on(tmp_path, monkeypatch):
    """A first build commits its rows a chunk at a time (memory of one chunk); one killed part
    way leaves rows the next update finds current, and it finishes the index."""
    import results.index as index_module

    root = hostile_store(tmp_path / "store")
    monkeypatch.setattr(index_module, "WRITE_CHUNK", 4)
    parts = []
    real = RecordIndex._write_part

    def killed(self, con, entries):
        parts.append(len(entries))
        if len(parts) == 3:
            raise KeyboardInterrupt  # killed while writing the third chunk
        real(self, con, entries)

    monkeypatch.setattr(RecordIndex, "_write_part", killed)
    with pytest.raises(KeyboardInterrupt):
        RecordIndex(root).update()
    assert parts == [4, 4, 4]
    con = sqlite3.connect(root / INDEX_NAME)
    assert con.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 8  # two chunks committed
    con.close()
    monkeypatch.setattr(RecordIndex, "_write_part", real)
    assert_same(root)
