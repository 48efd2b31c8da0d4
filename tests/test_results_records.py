"""Records: protocol_id, atomic writes, reading, the store."""
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import results
from results import ResultStore, make_record, protocol_id, read_record, write_record

PROTOCOL = {
    "task": {"name": "k400", "frames": 16, "frame_step": 4, "segments": 8, "views": 3,
             "label_map_sha256": "ab" * 32},
    "probe": {"kind": "attentive", "num_queries": 1, "depth": 1, "num_heads": 16},
    "optim": {"epochs": 20, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 256},
    "split": {"train": "train.csv", "eval": "val.csv"},
}


def record(encoder="vjepa_vitl", task="k400", protocol=PROTOCOL, top1=80.8, **kw):
    return make_record(encoder={"name": encoder, "embed_dim": 1024},
                       checkpoint=kw.pop("checkpoint", {"path": "/ckpt/vitl16.pth.tar",
                                                        "sha256": "c" * 64}),
                       task=task, split="val", protocol=protocol,
                       metrics={"top1": top1, "top5": 95.0}, data_problems={"failed": {}},
                       timings={"total_s": 1.0}, seed=0, device="cpu", **kw)


def test_import_is_light():
    code = ("import sys, results; assert 'torch' not in sys.modules; "
            "assert 'pandas' not in sys.modules; print(results.protocol_id({}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_protocol_id_stable_under_key_order():
    reordered = {k: dict(reversed(list(v.items()))) for k, v in reversed(list(PROTOCOL.items()))}
    assert protocol_id(reordered) == protocol_id(PROTOCOL)
    assert len(protocol_id(PROTOCOL)) == 12
    assert all(c in "0123456789abcdef" for c in protocol_id(PROTOCOL))


@pytest.mark.parametrize("section,key,value", [
    ("task", "segments", 2), ("task", "label_map_sha256", "cd" * 32), ("probe", "kind", "linear"),
    ("optim", "lr", 1e-4), ("optim", "weight_decay", 0.001), ("split", "eval", "test.csv")])
def test_protocol_id_changes_with_any_value(section, key, value):
    changed = json.loads(json.dumps(PROTOCOL))
    changed[section][key] = value
    assert protocol_id(changed) != protocol_id(PROTOCOL)


def test_make_record_fields():
    rec = record(world_size=8, extra={"note": "x"})
    assert rec["protocol_id"] == protocol_id(PROTOCOL)
    assert rec["record_version"] == 1 and rec["world_size"] == 8 and rec["extra"] == {"note": "x"}
    assert rec["created"].endswith("+00:00")
    assert rec["versions"]["python"].count(".") == 2
    assert rec["versions"]["torch"]  # read from metadata, torch is not imported
    assert set(rec) >= {"git_commit", "host", "device", "seed", "timings", "data_problems"}
    with pytest.raises(ValueError, match="name"):
        make_record(encoder={}, checkpoint={}, task="k400", split="val", protocol={},
                    metrics={}, data_problems={}, timings={}, seed=0, device="cpu")


def test_write_and_read_back(tmp_path):
    rec = record(encoder="vjepa/vit l", extra={"out": tmp_path})  # a Path becomes a string
    path = write_record(rec, tmp_path / "records")
    assert path.parent == tmp_path / "records"
    assert path.name.startswith(f"vjepa-vit-l__k400__{rec['protocol_id']}__")
    assert path.suffix == ".json"
    back = read_record(path)
    assert back["metrics"] == {"top1": 80.8, "top5": 95.0}
    assert back["extra"]["out"] == str(tmp_path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_write_refuses_non_json_values_and_leaves_nothing(tmp_path):
    rec = record()
    rec["metrics"]["weird"] = object()
    with pytest.raises(TypeError, match="not JSON"):
        write_record(rec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_never_produce_partial_files(tmp_path):
    out = tmp_path / "records"
    big = {"table": list(range(20000))}  # large enough that a torn write would be visible
    errors, paths, stop = [], [], threading.Event()

    def writer(i):
        try:
            for j in range(10):
                paths.append(write_record(record(top1=float(i * 10 + j), extra=big), out))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        while not stop.is_set():
            for p in out.glob("*.json") if out.exists() else []:
                try:
                    json.loads(p.read_text())
                except Exception as exc:
                    errors.append(f"partial read of {p}: {exc}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert len(set(paths)) == 60
    files = sorted(out.iterdir())
    assert len(files) == 60 and all(not f.name.startswith(".") for f in files)
    tops = sorted(read_record(f)["metrics"]["top1"] for f in files)
    assert tops == sorted(float(i * 10 + j) for i in range(6) for j in range(10))


def test_read_record_rejects_non_records(tmp_path):
    (tmp_path / "a.json").write_text("{\"top1\": 1}")
    with pytest.raises(ValueError, match="not a result record"):
        read_record(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{\"top1\": ")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_record(tmp_path / "b.json")


def test_store_skips_corrupt_files_and_reports_them(tmp_path):
    write_record(record(), tmp_path / "run1" / "records")
    write_record(record(encoder="videomae_vitl", top1=77.8,
                        checkpoint={"random_init": True}), tmp_path / "run2")
    (tmp_path / "run2" / "torn.json").write_text("{\"record_version\": 1, \"enc")
    (tmp_path / "run2" / "config.json").write_text("[1, 2]")
    (tmp_path / "run2" / ".inflight.json.part").write_text("{")  # temp files are not records
    store = ResultStore(tmp_path)
    recs = store.records()
    assert len(recs) == 2 and all(Path(r["_path"]).exists() for r in recs)
    # a torn record is reported; a JSON file that is no record (config.json) is not ours
    assert sorted(Path(p).name for p, _ in store.problems) == ["torn.json"]
    assert any("not valid JSON" in why for _, why in store.problems)

    frame = store.frame()
    assert len(frame) == 2
    assert list(frame.columns[:7]) == ["encoder", "checkpoint", "checkpoint_sha256", "task",
                                       "split", "probe", "protocol_id"]
    row = frame.set_index("encoder").loc["vjepa_vitl"]
    assert row["checkpoint"] == "vitl16.pth.tar" and row["checkpoint_sha256"] == "c" * 64
    assert row["probe"] == "attentive" and row["top1"] == 80.8 and row["top5"] == 95.0
    assert frame.set_index("encoder").loc["videomae_vitl", "checkpoint"] == "random-init"
    assert str(frame["created"].dtype).startswith("datetime64")


def test_store_on_missing_root_reports_it(tmp_path):
    store = ResultStore(tmp_path / "nope")
    assert store.frame().empty
    assert store.problems == [(str(tmp_path / "nope"), "results root does not exist")]


def test_reference_tables_ship_with_the_package():
    tables = results.load_reference_tables()
    row = tables["vjepa_2024"]["table6_sota_frozen"]["rows"]["V-JEPA ViT-H/16"]
    assert (row["K400"], row["SSv2"], row["IN1K"]) == (82.0, 71.4, 75.9)
