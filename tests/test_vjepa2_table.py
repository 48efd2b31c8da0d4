"""`harness table vjepa2-frozen`: V-JEPA 2's published frozen numbers (results/reference/
vjepa2_frozen.yaml) beside ours, counted only from records run under the release's recipe, with
fill-in commands that run exactly that recipe."""
import copy
import json
import shlex

import pytest
import yaml
from omegaconf import OmegaConf

import results
from harness.cli import main
from results import paper_tables as pt
from results.record import make_record, record_filename, write_record

TABLE = ("vjepa2_2025", "frozen_classification_and_anticipation")


def _body():
    return results.load_reference_tables()[TABLE[0]][TABLE[1]]


def _protocol_of(argv: list[str]) -> tuple[dict, dict]:
    """(protocol, departures) the planner would record for a fill-in command's run."""
    from harness.config import compose_run
    from harness.identity import departures
    from probes import OptimConfig
    from probes.registry import probe_type

    args = argv[argv.index("run") + 1:]
    opts = dict(zip(args[:8:2], args[1:8:2]))  # --encoder E --checkpoint C --task T --probe P
    overrides = [a for a in args if "=" in a and not a.startswith("--")]
    overrides = [o for o in overrides if not o.startswith("task.data.root")]
    cfg = OmegaConf.to_container(compose_run(
        [f"encoder={opts['--encoder']}", f"task={opts['--task']}", f"probe={opts['--probe']}",
         *overrides]), resolve=True)
    task = cfg["task"]
    optim = OptimConfig.from_dict(task["optim"])
    protocol = {"protocol_version": results.PROTOCOL_VERSION, "precision": "bf16",
                "probe": probe_type(cfg["probe"]["kind"]).protocol(cfg["probe"]),
                "optim": optim.protocol(),
                "task": {"task": task["name"], "sampling": task["sampling"],
                         "manifests": {"eval": {"sha256": "9" * 64, "videos": 100}}}}
    return protocol, departures(task, optim.protocol())


def _add(root, encoder, task, top1, protocol, departures, ckpt):
    rec = make_record(encoder={"name": encoder}, checkpoint={"path": f"/ckpt/{ckpt}",
                                                             "sha256": "ab" * 32},
                      task=task, split="val", protocol=protocol,
                      metrics={"top1": top1, "num_samples": 100}, data_problems={},
                      timings={"wall_seconds": 60.0}, seed=0, device="cuda", precision="bf16",
                      extra={"run_id": f"{encoder}-{task}-{results.protocol_id(protocol)}"})
    rec["protocol_departures"] = departures
    out = root / "records"
    out.mkdir(parents=True, exist_ok=True)
    write_record(rec, out, filename=record_filename(rec))


def _table(root, capsys):
    assert main(["table", "vjepa2-frozen", "--results", str(root), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return doc, {r["method"]: r["cells"] for r in doc["rows"]}


def test_published_numbers_exactly_as_the_reference_and_why_not(tmp_path, capsys):
    body = _body()
    doc, rows = _table(tmp_path / "runs", capsys)
    assert doc["columns"] == body["columns"] == ["SSv2", "Diving48", "Jester", "K400", "COIN",
                                                 "IN1K", "EK100"]
    assert list(rows) == ["V-JEPA 2 ViT-L", "V-JEPA 2 ViT-H", "V-JEPA 2 ViT-g",
                          "V-JEPA 2 ViT-g384"]
    for method, cells in rows.items():
        for col, cell in cells.items():
            assert cell["published"] == body["rows"][method][col]
            assert cell["ours"] is None
    assert rows["V-JEPA 2 ViT-g384"]["EK100"]["published"] == 39.7
    assert "IN1K grid (21 heads" in rows["V-JEPA 2 ViT-L"]["IN1K"]["why_not"]
    assert "not wired" in rows["V-JEPA 2 ViT-L"]["EK100"]["why_not"]
    assert "no ViT-H config" in rows["V-JEPA 2 ViT-H"]["Diving48"]["why_not"]
    cmd = rows["V-JEPA 2 ViT-L"]["Diving48"]["command"]
    for part in ("--probe attentive_v2", "++probe.selection=eval_max",
                 "++probe.optim_groups=release", "'++probe.out_layers=[17,19,21,23]'",
                 "'++probe.grid={lr: [0.001,0.0003,0.0001], weight_decay: [0.8]}'"):
        assert part in cmd, part
    g384 = rows["V-JEPA 2 ViT-g384"]["SSv2"]["command"]
    assert "task.sampling.frames_per_clip=64 task.sampling.frame_step=2" in g384
    assert "task.optim.clip_grad_norm=null task.optim.final_weight_decay=0.8" in g384


@pytest.mark.parametrize("method,column", [("V-JEPA 2 ViT-L", "Diving48"),
                                           ("V-JEPA 2 ViT-g384", "SSv2"),
                                           ("V-JEPA 2 ViT-g", "COIN"),
                                           ("V-JEPA 2 ViT-H", "K400")])
def test_a_run_of_the_fill_in_command_fills_its_cell_and_no_other(tmp_path, capsys, method,
                                                                  column):
    root = tmp_path / "runs"
    _, rows = _table(root, capsys)
    argv = shlex.split(rows[method][column]["command"])
    protocol, departures = _protocol_of(argv)
    encoder, release = pt.ENCODER_OF[method]
    task = pt.TASK_OF[column]
    _add(root, encoder, task, 80.0, protocol, departures, release)
    # the same run without the release's optimiser, or choosing its head on held-out data,
    # is another protocol: never in the cell
    for key, value in (("optim_groups", None), ("selection", "val")):
        other = copy.deepcopy(protocol)
        other["probe"].pop(key) if value is None else other["probe"].update({key: value})
        _add(root, encoder, task, 10.0, other, departures, release)
    _, rows = _table(root, capsys)
    cell = rows[method][column]
    assert cell["ours"] == 80.0 and cell["runs"] == 1
    assert cell["protocol_id"] == results.protocol_id(protocol)
    others = [(m, c) for m, cells in rows.items() for c, v in cells.items()
              if v["ours"] is not None]
    assert others == [(method, column)]


def test_reference_files_merge_and_a_table_defined_twice_is_an_error(tmp_path, monkeypatch):
    tables = results.load_reference_tables()
    assert "table4_frozen_classification" in tables["vjepa2_2025"]  # paper_tables.yaml's
    assert TABLE[1] in tables["vjepa2_2025"]                        # vjepa2_frozen.yaml's
    assert "table6_sota_frozen" in tables["vjepa_2024"]
    # a single file given explicitly is read alone
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump({"p": {"t": {"rows": {}}}}))
    assert results.load_reference_tables(one) == {"p": {"t": {"rows": {}}}}
    from results import reference

    folder = tmp_path / "reference"
    folder.mkdir()
    main_file = folder / "paper_tables.yaml"
    main_file.write_text(yaml.safe_dump({"p": {"t": {"rows": {}}}}))
    (folder / "more.yaml").write_text(yaml.safe_dump({"p": {"u": {"rows": {}}}}))
    monkeypatch.setattr(reference, "REFERENCE_TABLES", main_file)
    assert sorted(reference.load_reference_tables()["p"]) == ["t", "u"]
    (folder / "twice.yaml").write_text(yaml.safe_dump({"p": {"t": {"rows": {}}}}))
    with pytest.raises(ValueError, match="table p/t is already defined"):
        reference.load_reference_tables()


def test_recipe_values_compare_as_yaml_values():
    assert pt._same({"lr": [1e-3, 3e-4]}, {"lr": [0.001, 0.0003]})
    assert not pt._same([17, 19, 21, 23], [17, 19, 21])
    assert not pt._same(None, 0.0) and not pt._same(True, 1)
    assert pt.recipe_overrides({"probe": {"kind": "attentive_v2", "out_layers": [1, 2]},
                                "task": {"optim.clip_grad_norm": None}}) == [
        "++probe.out_layers=[1,2]", "task.optim.clip_grad_norm=null"]
