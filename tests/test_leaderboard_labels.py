"""Encoder labels (`record.encoder.label`), protocol departures in column titles, the LaTeX
legend, and shell-safe fill-in commands that carry the data root."""
import copy
import json
import shlex
import subprocess

import pytest

from harness.cli import main
from results import ResultStore, leaderboard, plots, render
from results.columns import departures_text
from results.frame import SCHEMA
from tests.test_leaderboard_cells import build_store, protocol
from tests.test_results_low_shot import fold, write

K400 = protocol("k400", 16, 8, 3, 100)
SMALL = "videomae_vits (embed_dim 192, depth 2)"


def _labelled_store(root):
    # the registry entry and an overridden two-layer model, both random init: without labels
    # they would be one row and one cell of two runs
    write(root, "videomae_vits", "k400", 60.0, K400, ckpt="random")
    write(root, "videomae_vits", "k400", 20.0, K400, ckpt="random", label=SMALL)
    write(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="vitl16.pth.tar")
    return root


def test_the_frame_has_the_label_and_old_records_fall_back_to_the_name(tmp_path):
    frame = ResultStore(_labelled_store(tmp_path)).frame()
    assert "encoder_label" in SCHEMA and "protocol_departures" in SCHEMA
    assert sorted(frame["encoder_label"]) == sorted(["videomae_vits", SMALL, "vjepa_vitl"])
    assert set(frame["encoder"]) == {"videomae_vits", "vjepa_vitl"}
    old = ResultStore(build_store(tmp_path / "old")).frame()  # records without labels
    assert list(old["encoder_label"]) == list(old["encoder"])
    assert all(d == {} for d in old["protocol_departures"])


def test_leaderboard_rows_group_by_label(tmp_path):
    frame = ResultStore(_labelled_store(tmp_path)).frame()
    lb = leaderboard(frame)
    col = "k400 (16x8x3, attentive)"
    assert list(lb.table.index) == [("vjepa_vitl", "vitl16.pth.tar"),
                                    ("videomae_vits", "random-init"), (SMALL, "random-init")]
    assert lb.cells[((SMALL, "random-init"), col)].runs == 1
    assert lb.cells[((SMALL, "random-init"), col)].mean == 20.0
    assert lb.cells[(("videomae_vits", "random-init"), col)].mean == 60.0
    # a registry name (or glob) selects all its labels; a label selects itself
    assert len(leaderboard(frame, encoders="videomae_vits").table) == 2
    assert list(leaderboard(frame, encoders=SMALL).table.index) == [(SMALL, "random-init")]
    text = render(lb, "plain")
    assert f"{SMALL}  random-init" in text
    fig, ax, _ = plots.bars(lb, tmp_path / "b.png", keep_figure=True)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"{SMALL} (random-init)" in legend and "videomae_vits (random-init)" in legend


def test_series_keeps_architectures_apart(tmp_path):
    from results.series import order_by_step, series_frame

    for step, v in ((100, 50.0), (200, 60.0)):
        write(tmp_path, "vjepa_tiny", "k400", v, K400, ckpt=f"s{step}.pth", seed=step)
        write(tmp_path, "vjepa_tiny", "k400", v - 30, K400, ckpt=f"d{step}.pth", seed=step,
              label="vjepa_tiny (depth 2)")
    frame = ResultStore(tmp_path).frame()
    # checkpoint steps come from the records; these have none, so name them by file
    frame["checkpoint_step"] = [int(c[1:-4]) for c in frame["checkpoint"]]
    lb = leaderboard(series_frame(frame, "vjepa_tiny"), significance=False)
    order_by_step(lb)
    fig, ax = plots.series(lb, tmp_path / "s.png", keep_figure=True)
    by = {c.get_label(): c.lines[0] for c in ax.containers}
    assert list(by["k400 (16x8x3, attentive): vjepa_tiny"].get_ydata()) == [50.0, 60.0]
    assert list(by["k400 (16x8x3, attentive): vjepa_tiny (depth 2)"].get_ydata()) == [20.0, 30.0]
    only = leaderboard(series_frame(frame, "vjepa_tiny (depth 2)"), significance=False)
    assert {k[0] for k in only.table.index} == {"vjepa_tiny (depth 2)"}


def test_column_titles_name_the_departures(tmp_path):
    short = copy.deepcopy(K400)
    short["optim"] = {**short["optim"], "epochs": 1, "batch_size": 8}
    write(tmp_path, "vjepa_vitl", "k400", 80.0, K400, departures={})
    write(tmp_path, "vjepa_vitl", "k400", 30.0, short,
          departures={"optim.batch_size": 8, "optim.epochs": 1})
    lb = leaderboard(ResultStore(tmp_path).frame())
    assert [c.name for c in lb.columns] == ["k400 (16x8x3, attentive)",
                                            "k400 (16x8x3, attentive; epochs 1, batch_size 8)"]
    assert departures_text({"sampling.eval_views": 1, "probe.x.depth": 2,
                            "optim.depth": 3, "optim.use_bf16": False}) == \
        "eval_views 1, optim.depth 3, use_bf16 false, probe.x.depth 2"
    assert departures_text(None) == "" and departures_text({}) == ""


def test_latex_legend_names_the_markup_the_cells_use(tmp_path):
    lb = leaderboard(ResultStore(build_store(tmp_path)).frame())
    tex = render(lb, "latex")
    body, _, comments = tex.partition(r"\end{tabular}")
    assert r"\textbf{85}" in body and r"\underline{80}" in body
    assert "*" not in body.replace(r"\textbf", "")  # no star in the cells ...
    legend = next(ln for ln in comments.splitlines() if "best in its column" in ln)
    # ... nor in the legend: it names the markup the cells carry
    assert legend.startswith(r"% legend: bold (\textbf): best in its column; underlined "
                             r"(\underline): not significantly different from the best")
    assert "* best" not in tex and "~ not" not in tex
    assert "* best" in render(lb, "plain")  # the text formats keep their marks


def _paper_store(root, command=None):
    write(root, "vjepa_vitl", "k400", 81.0, K400, ckpt="vitl16.pth.tar",
          command=command)
    return root


def test_overridden_and_departing_records_fill_no_paper_cell(tmp_path, capsys):
    short = copy.deepcopy(K400)
    short["optim"]["epochs"] = 1
    write(tmp_path, "vjepa_vith", "k400", 99.0, K400, ckpt="vith16.pth.tar",
          label="vjepa_vith (depth 2)")
    write(tmp_path, "vjepa_vith", "ssv2", 99.0, protocol("ssv2", 16, 2, 3, 100),
          ckpt="vith16.pth.tar", departures={"optim.epochs": 1})
    write(tmp_path, "vjepa_vitl", "k400", 81.0, K400, ckpt="vitl16.pth.tar",
          departures={"sampling.eval_views": 3})  # a field the table checks itself
    assert main(["table", "vjepa-frozen", "--results", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["method"]: r["cells"] for r in doc["rows"]}
    assert rows["V-JEPA ViT-H/16"]["K400"]["ours"] is None
    assert rows["V-JEPA ViT-H/16"]["SSv2"]["ours"] is None
    assert rows["V-JEPA ViT-L/16"]["K400"]["ours"] == 81.0
    assert any("vjepa_vith (depth 2)" in n for n in doc["notes"])
    assert any("optim.epochs" in n for n in doc["notes"])


def test_fill_in_commands_carry_the_data_root_and_are_shell_quoted(tmp_path, capsys):
    # the data root the records ran on (a path with a space, Hydra-quoted in the command)
    root = tmp_path / "r y;touch X"
    _paper_store(root, command="harness run --encoder vjepa_vitl --task k400 --seed 0 "
                               "\"task.data.root='/data/k 400'\" task.optim.epochs=20")
    assert main(["table", "vjepa-frozen", "--results", str(root), "--format", "json"]) == 0
    rows = {r["method"]: r["cells"] for r in json.loads(capsys.readouterr().out)["rows"]}
    cmd = rows["V-JEPA ViT-H/16"]["K400"]["command"]
    argv = shlex.split(cmd)
    assert argv[argv.index("--out") + 1] == str(root)
    assert 'task.data.root="/data/k 400"' in argv  # Hydra reads back /data/k 400
    assert "--task" in argv and "task.data.root" not in rows["V-JEPA ViT-H/16"]["SSv2"]["command"]
    # --data-root wins over the records; low-shot: one root for the split and the runs
    assert main(["table", "vjepa-low-shot", "--results", str(root), "--format", "json",
                 "--data-root", "k400=/mnt/k4 00"]) == 0
    rows = {r["method"]: r["cells"] for r in json.loads(capsys.readouterr().out)["rows"]}
    cmd = rows["V-JEPA ViT-H/16"]["K400 10%"]["command"]
    parts = cmd.split("; ")
    assert shlex.split(parts[0]) == ["harness", "data", "split", "k400", "--root", "/mnt/k4 00",
                                     "--fraction", "0.1", "--seeds", "0,1,2"]
    for seed, part in enumerate(parts[1:]):
        argv = shlex.split(part)
        assert 'task.data.root="/mnt/k4 00"' in argv
        assert argv[-2:] == ["--split", f"10pct:seed{seed}"]
    # the printed commands run in a shell as the arguments they show, and nothing else
    work = tmp_path / "shell"
    work.mkdir()
    for text in (cmd, rows["VideoMAE ViT-H/16"]["SSv2 50%"]["command"]):
        done = subprocess.run(["bash", "-c", 'harness() { printf "%s\\n" "$@"; }; ' + text],
                              cwd=work, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert str(root) in done.stdout.splitlines()
    assert list(work.iterdir()) == []  # no `touch X` ran
    with pytest.raises(ValueError, match="TASK=DIR"):
        from harness.commands.table import _data_roots

        _data_roots(["k400"])


def test_plain_output_prints_quoted_commands(tmp_path, capsys):
    root = tmp_path / "r y;touch X"
    assert main(["table", "vjepa-frozen", "--results", str(root)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("[1] "))
    assert shlex.split(line[4:])[-2:] == ["--out", str(root)]
    assert shlex.quote(str(root)) in line


def test_low_shot_commands_without_a_known_root_use_one_placeholder(capsys):
    assert main(["table", "vjepa-low-shot", "--results", "/nonexistent", "--format", "json"]) == 0
    rows = {r["method"]: r["cells"] for r in json.loads(capsys.readouterr().out)["rows"]}
    cmd = rows["V-JEPA ViT-H/16"]["K400 10%"]["command"]
    assert cmd.startswith("harness data split k400 --root DATA/k400 --fraction 0.1 --seeds 0,1,2; ")
    assert cmd.count("task.data.root=DATA/k400") == 3


def test_fold_records_feed_the_table(tmp_path, capsys):
    for seed, v in enumerate([70.0, 72.0, 74.0]):
        write(tmp_path, "vjepa_vith", "k400", v, fold(K400, 0.1, seed),
              departures={"train_fold.fraction": 0.1, "train_fold.seed": seed})
    assert main(["table", "vjepa-low-shot", "--results", str(tmp_path), "--format", "json"]) == 0
    rows = {r["method"]: r["cells"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["V-JEPA ViT-H/16"]["K400 10%"]["ours"] == pytest.approx(72.0)


def test_data_roots_round_trip_through_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from results.paper_tables import _unquote_hydra, hydra_value

    parser = OverridesParser.create()
    for root in ["/data/k400", "/data/k 400", "r y;touch X", "it's", 'a"b c', "a\\b", "end\\",
                 "C:\\x y\\", "x#y", "both ' and \"", 'a\\"b c']:
        text = hydra_value(root)
        assert parser.parse_override(f"task.data.root={text}").value() == root
        assert _unquote_hydra(text) == root
