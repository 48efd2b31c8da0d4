"""A store of generated records (several encoders, checkpoints, seeds, a protocol mismatch, an
old record version, files that are not records, a corrupt record), checked cell by cell in
every leaderboard format."""
import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, chi2_contingency
from scipy.stats import t as student_t

from results import ResultStore, leaderboard, make_record, protocol_id, render, write_record
from results.predictions import predictions_path, write_predictions
from results.record import record_filename

REPO = Path(__file__).resolve().parents[1]


def protocol(task: str, frames: int, segments: int, views: int, split_size: int,
             probe: str = "attentive") -> dict:
    return {"protocol_version": 2, "precision": "bf16",
            "probe": {"kind": probe, "depth": 1},
            "optim": {"lr": 1e-3, "epochs": 20},
            "task": {"task": task, "sampling": {"frames_per_clip": frames, "frame_step": 4,
                                                "eval_segments": segments, "eval_views": views},
                     "manifests": {"eval": {"sha256": "9" * 64, "videos": split_size}}}}


K400 = protocol("k400", 16, 8, 3, 100)
K400_8F = protocol("k400", 8, 8, 3, 100)
SSV2 = protocol("ssv2", 16, 2, 3, 10000)
IDS = [f"val/v{i:03d}.mp4" for i in range(100)]


def add(root, encoder, task, top1, proto, *, ckpt, step=None, seed=0, samples=None,
        correct_first=None, created=None):
    """One record; with `correct_first=k` also its predictions: samples 0..k-1 right."""
    if correct_first is not None and samples is None:
        samples = 100
    checkpoint = ({"random_init": True} if ckpt == "random" else
                  {"path": f"/ckpt/{ckpt}", "sha256": (ckpt * 64)[:64].encode().hex()[:64],
                   "step": step})
    rec = make_record(encoder={"name": encoder, "metadata": {
                          "at_run_input": {"parameters": 304_000_000, "gflops_per_clip": 180.5}}},
                      checkpoint=checkpoint, task=task, split="val", protocol=proto,
                      metrics={"top1": top1, "num_samples": samples},
                      data_problems={}, timings={"wall_seconds": 3600.0, "eval_samples_per_s": 12.5},
                      seed=seed, device="cuda", precision="bf16",
                      extra={"run_id": f"{encoder}-{ckpt}-{task}-{protocol_id(proto)}-{seed}"})
    if created:
        rec["created"] = created
    out = Path(root) / "records"
    out.mkdir(parents=True, exist_ok=True)
    name = record_filename(rec)
    if correct_first is not None:
        labels = np.arange(100) % 5
        wrong = (labels + 1) % 5
        top = np.where(np.arange(100) < correct_first, labels, wrong)
        topk = np.stack([top] + [(top + j) % 5 for j in range(1, 5)], axis=1)
        write_predictions(predictions_path(out / name),
                          {"path": IDS, "label": labels, "topk_index": topk,
                           "topk_prob": np.full((100, 5), 0.2)}, IDS)
    return write_record(rec, out, filename=name)


def build_store(root: Path) -> Path:
    root = Path(root)
    # k400 under the paper's 16x8x3: two checkpoints of one encoder (a series), another
    # encoder evaluated on 98 of the split's 100 videos (no predictions), random init.
    add(root, "vjepa_vitl", "k400", 70.0, K400, ckpt="vitl_a.pth", step=1000, correct_first=70,
        created="2026-11-01T00:00:00+00:00")  # re-run below replaces it
    add(root, "vjepa_vitl", "k400", 80.0, K400, ckpt="vitl_a.pth", step=1000, correct_first=80)
    add(root, "vjepa_vitl", "k400", 85.0, K400, ckpt="vitl_b.pth", step=2000, correct_first=85)
    add(root, "videomae_vitl", "k400", 78.0, K400, ckpt="vmae.pth", samples=98)
    add(root, "vjepa_vitl", "k400", 40.0, K400, ckpt="random", correct_first=40)
    # the same task under another protocol: 8 frames
    add(root, "vjepa_vitl", "k400", 75.0, K400_8F, ckpt="vitl_b.pth", step=2000, samples=100)
    # ssv2: three seeds each for two rows, one run for a third; a 10,000-video split
    for seed, v in enumerate([70.0, 72.0, 74.0]):
        add(root, "vjepa_vitl", "ssv2", v, SSV2, ckpt="vitl_a.pth", step=1000, seed=seed,
            samples=10000)
    for seed, v in enumerate([60.0, 61.0, 62.0]):
        add(root, "videomae_vitl", "ssv2", v, SSV2, ckpt="vmae.pth", seed=seed, samples=10000)
    add(root, "vjepa_vitl", "ssv2", 71.5, SSV2, ckpt="vitl_b.pth", step=2000, samples=10000)
    # a record of the first record layout: no protocol_version, precision, run id, counts
    old = {"record_version": 1, "created": "2026-06-01T12:00:00+00:00",
           "encoder": {"name": "videomae_vitl"},
           "checkpoint": {"path": "/ckpt/vmae.pth", "sha256": ("vmae.pth" * 64)[:64].encode().hex()[:64]},
           "task": "in1k", "split": "val", "protocol": {"probe": {"kind": "attentive"}},
           "protocol_id": protocol_id({"probe": {"kind": "attentive"}}),
           "metrics": {"top1": 70.0}, "seed": 0, "device": "cpu"}
    (root / "old").mkdir()
    (root / "old" / "videomae_vitl__in1k__old.json").write_text(json.dumps(old))
    # files that are not records, and a torn record
    (root / "config.json").write_text(json.dumps({"out": "runs", "seeds": [0]}))
    (root / "demo_summary.json").write_text(json.dumps({"records": 12}))
    (root / "records" / "vjepa_vitl__k400__0123456789ab__20261201T000000_000000Z-abcdef.json"
     ).write_text('{"record_version": 1, "encoder": {"na')
    return root


B = ("vjepa_vitl", "vitl_b.pth")
A = ("vjepa_vitl", "vitl_a.pth")
VMAE = ("videomae_vitl", "vmae.pth")
RAND = ("vjepa_vitl", "random-init")
C16, C8 = "k400 (16x8x3, attentive)", "k400 (8x8x3, attentive)"
CS, CI = "ssv2 (16x2x3, attentive)", "in1k (attentive)"

# The expected text of every cell (see build_store): k400's 100-video split supports whole
# numbers, ssv2's 10,000 one decimal; the old record has no counts (one decimal).
EXPECTED = {
    (B, C16): "85*", (A, C16): "80~", (VMAE, C16): "78 [98/100]~", (RAND, C16): "40",
    (B, C8): "75*",
    (A, CS): "72.0 ± 2.0 (n=3)*", (VMAE, CS): "61.0 ± 1.0 (n=3)", (B, CS): "71.5~",
    (VMAE, CI): "70.0*",
}
ROWS = [B, A, VMAE, RAND]
COLUMNS = [CI, C16, C8, CS]  # tasks in name order
RANKS = {B: "1.3 (3/4)", A: "1.5 (2/4)", VMAE: "2.3 (3/4)", RAND: "4.0 (1/4)"}


@pytest.fixture
def store_root(tmp_path):
    return build_store(tmp_path / "store")


@pytest.fixture
def board(store_root):
    store = ResultStore(store_root)
    lb = leaderboard(store.frame())
    return store, lb


def test_store_reads_records_only_and_one_row_per_run(board, store_root):
    store, lb = board
    # the torn record is reported (once); config.json / demo_summary.json / .npz are not read
    assert [Path(p).name for p, _ in store.problems] == [
        "vjepa_vitl__k400__0123456789ab__20261201T000000_000000Z-abcdef.json"]
    assert store.replaced == 1  # the re-run of vitl_a on k400
    frame = store.frame()
    assert len(frame) == 13
    old = frame[frame["task"] == "in1k"].iloc[0]
    assert old["protocol_version"] == 1 and old["precision"] != old["precision"]  # NaN
    # no run id written: the store derives one in the runner's format (common.run_id)
    assert math.isnan(old["num_samples"]) and len(old["run_id"]) == 16


def test_columns_rows_and_legend(board):
    _, lb = board
    assert [c.name for c in lb.columns] == COLUMNS
    assert list(lb.table.index) == ROWS
    pid16, pid8 = protocol_id(K400), protocol_id(K400_8F)
    assert lb.legend[1] == f"{C16}: top1, protocol {pid16} (v2, bf16)"
    assert lb.legend[2] == f"{C8}: top1, protocol {pid8} (v2, bf16)"
    assert lb.legend[0].startswith(f"{CI}: top1, protocol ") and lb.legend[0].endswith("(v1)")
    assert lb.rank_over == COLUMNS
    note = next(n for n in lb.notes if n.startswith("k400"))
    assert note == (f"k400: 2 protocols, not comparable, split into columns: '{C16}' vs '{C8}': "
                    f"frames 16 vs 8 (task.sampling.frames_per_clip)")
    assert len(note) < 200


def test_every_cell_and_its_significance(board, store_root):
    _, lb = board
    for (row, col), text in EXPECTED.items():
        assert lb.cells[(row, col)].text() == text, (row, col)
    assert {(r, c) for (r, c) in lb.cells} == set(EXPECTED)
    # McNemar on the saved predictions: B right on 85, A on the first 80 of them -> 5
    # discordant pairs, all for B; random init: 45, all for B.
    assert lb.cells[(A, C16)].test == "mcnemar"
    assert lb.cells[(A, C16)].p_value == pytest.approx(binomtest(0, 5, 0.5).pvalue)
    assert lb.cells[(RAND, C16)].p_value == pytest.approx(binomtest(0, 45, 0.5).pvalue)
    # no predictions beside videomae's record: the two-proportion test on the counts, which
    # is the uncorrected chi-square test of the 2x2 table
    table = [[85, 15], [0.78 * 98, 0.22 * 98]]
    p = chi2_contingency(table, correction=False)[1]
    assert lb.cells[(VMAE, C16)].test == "two-proportion"
    assert lb.cells[(VMAE, C16)].p_value == pytest.approx(p)
    # Welch over seeds, by hand: means 72 and 61, sd 2 and 1, n 3 and 3
    se = math.sqrt(4 / 3 + 1 / 3)
    tstat = 11 / se
    df = (4 / 3 + 1 / 3) ** 2 / ((4 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2)
    assert lb.cells[(VMAE, CS)].test == "welch"
    assert lb.cells[(VMAE, CS)].p_value == pytest.approx(2 * student_t.sf(tstat, df))
    for row, rank in RANKS.items():
        from results.formats import _rank_text
        assert _rank_text(lb, row) == rank


def _cell_of(text_rows, row, col_index):
    for r in text_rows:
        if tuple(r[:2]) == row:
            return r[2 + col_index]
    raise AssertionError(f"row {row} not found")


def test_plain_and_rich(board):
    _, lb = board
    for fmt in ("plain", "rich"):
        text = render(lb, fmt, width=80)
        lines = text.splitlines()
        for row in ROWS:
            line = next(ln for ln in lines if f"{row[0]} " in ln and f" {row[1]} " in ln)
            for col in COLUMNS:
                want = EXPECTED.get((row, col), "-")
                assert f" {want}" in line, (fmt, row, col, line)
            assert RANKS[row] in line
        for col in COLUMNS:  # whole names even at 80 columns
            assert col in text
        assert max(len(ln) for ln in lines if not ln.startswith(("legend", "note"))) > 80


def test_markdown(board):
    _, lb = board
    lines = render(lb, "markdown").splitlines()
    assert lines[0] == "| encoder | checkpoint | " + " | ".join(COLUMNS) + " | mean rank |"
    row_b = next(ln for ln in lines if ln.startswith("| vjepa_vitl | vitl_b.pth"))
    assert row_b == "| vjepa_vitl | vitl_b.pth | - | **85** | **75** | _71.5_ | 1.3 (3/4) |"
    row_v = next(ln for ln in lines if ln.startswith("| videomae_vitl"))
    assert row_v == "| videomae_vitl | vmae.pth | **70.0** | _78 [98/100]_ | - | 61.0 ± 1.0 (n=3) | 2.3 (3/4) |"
    assert any("bold: best" in ln for ln in lines)


def test_csv_rounded_with_std_runs_counts_and_marks(board):
    _, lb = board
    rows = {(r["encoder"], r["checkpoint"]): r
            for r in csv.DictReader(io.StringIO(render(lb, "csv")))}
    assert rows[B][C16] == "85" and rows[B][f"{C16} mark"] == "best"
    assert rows[A][f"{C16} mark"] == "tied" and rows[RAND][f"{C16} mark"] == ""
    assert rows[VMAE][f"{C16} samples"] == "98" and rows[VMAE][f"{C16} split size"] == "100"
    assert rows[A][CS] == "72.0" and rows[A][f"{CS} std"] == "2.0" and rows[A][f"{CS} runs"] == "3"
    assert rows[B][CS] == "71.5" and rows[B][f"{CS} runs"] == "1"
    assert rows[RAND][CS] == "" and rows[B]["mean rank"] == "1.33"
    assert f"{C8} samples" not in rows[B]  # no short cell in that column


def test_csv_has_no_float32_noise(tmp_path):
    add(tmp_path, "vjepa_tiny", "k400", 16.66666716337204, K400, ckpt="t.pth", samples=100)
    add(tmp_path, "vjepa_small", "k400", 16.66666716337204, SSV2, ckpt="s.pth", samples=10000)
    text = render(leaderboard(ResultStore(tmp_path).frame()), "csv")
    assert "16.666" not in text and ",17," in text and ",16.7," in text


def test_json(board):
    _, lb = board
    doc = json.loads(render(lb, "json"))
    assert [c["name"] for c in doc["columns"]] == COLUMNS
    assert doc["columns"][1]["protocol_id"] == protocol_id(K400)
    rows = {(r["encoder"], r["checkpoint"]): r for r in doc["rows"]}
    for (row, col), text in EXPECTED.items():
        assert rows[row]["cells"][col]["text"] == text
    cell = rows[A]["cells"][CS]
    assert (cell["mean"], cell["std"], cell["runs"], cell["num_samples"]) == (72.0, 2.0, 3, 10000)
    assert rows[VMAE]["cells"][C16]["split_size"] == 100 and rows[VMAE]["cells"][C16]["tied"]
    assert rows[B]["mean_rank"] == pytest.approx(4 / 3, abs=1e-3)
    assert doc["rank_over"] == COLUMNS


def test_latex_booktabs(board):
    _, lb = board
    tex = render(lb, "latex")
    assert tex.startswith(r"\begin{tabular}{llrrrrr}" + "\n" + r"\toprule")
    assert r"\midrule" in tex and r"\bottomrule" in tex
    assert r"vjepa\_vitl & vitl\_b.pth & - & \textbf{85} & \textbf{75} & \underline{71.5} & 1.3 (3/4) \\" in tex
    assert r"\underline{78 [98/100]}" in tex and r"\textbf{72.0 $\pm$ 2.0 (n=3)}" in tex


def test_html_is_self_contained(board):
    _, lb = board
    page = render(lb, "html")
    assert "<script>" in page and "http" not in page.replace("http-equiv", "")
    assert '<td class="num best" data-value="85">85*</td>' in page
    assert '<td class="num tied" data-value="78">78 [98/100]~</td>' in page


def test_filters(store_root):
    frame = ResultStore(store_root).frame()
    lb = leaderboard(frame, encoders="videomae_*")
    assert list(lb.table.index) == [VMAE]
    lb = leaderboard(frame, tasks="ssv2", protocols=protocol_id(SSV2)[:6])
    assert [c.name for c in lb.columns] == [CS]
    lb = leaderboard(frame, until="2026-06-01")
    assert [c.name for c in lb.columns] == [CI]  # only the old record is that old
    lb = leaderboard(frame, since="2026-06-02")
    assert CI not in [c.name for c in lb.columns]
    assert "encoder nope: no records" in leaderboard(frame, encoders="nope").notes
    with pytest.raises(ValueError, match="ISO date"):
        leaderboard(frame, since="yesterday-ish")


def test_series_orders_checkpoints_by_step(store_root):
    from results.series import order_by_step, series_frame

    frame = series_frame(ResultStore(store_root).frame(), "vjepa_vitl")
    lb = leaderboard(frame)
    order_by_step(lb)
    assert [k[1] for k in lb.table.index] == ["step 1000", "step 2000", "random-init"]
    with pytest.raises(ValueError, match="encoders with records: videomae_vitl, vjepa_vitl"):
        series_frame(ResultStore(store_root).frame(), "vjepa_vith")


def test_cost_columns(store_root):
    lb = leaderboard(ResultStore(store_root).frame(), cost=True)
    text = render(lb, "plain")
    line = next(ln for ln in text.splitlines() if ln.startswith("videomae_vitl"))
    # 304M parameters, 180.5 GFLOPs per clip, 12.5 clips/s, 4 runs x 1 h (the old record
    # has no timings)
    assert line.split()[-4:] == ["304", "180", "12.5", "4"]
    assert "params (M)" in text.splitlines()[0]


def test_cli_piped_prints_whole_names_and_problems_once(store_root):
    out = subprocess.run([sys.executable, "-m", "harness", "leaderboard", "--results",
                          str(store_root)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("videomae_vitl", "vjepa_vitl", "vitl_b.pth", "random-init", *COLUMNS):
        assert name in out.stdout
    assert "…" not in out.stdout
    assert out.stderr.count("skipped unreadable record") == 1
    assert "config.json" not in out.stderr and "demo_summary" not in out.stderr


def test_cli_output_file_format_from_suffix(store_root, tmp_path):
    from harness.cli import main

    dest = tmp_path / "board.tex"
    assert main(["leaderboard", "--results", str(store_root), "--output", str(dest)]) == 0
    assert dest.read_text().startswith(r"\begin{tabular}")
