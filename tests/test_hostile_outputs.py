"""Output that becomes code: nothing the harness writes or prints may execute.

A record's names are data, whoever wrote them. Each case writes records with hostile names
(`results.make_record` / `results.write_record` into a tmp folder), runs the command through
`harness.cli.main` where there is one, and checks the exit code, the exact neutralised text,
and that nothing the injected text would have done happened (no file appears where a shell, a
LaTeX run or a terminal acting on it would have made one).

Families: LaTeX (escaped everywhere, data never starts a source line), CSV (formula cells
neutralised, numbers kept), Markdown / HTML (no tag, no link, no broken row), terminal (no
control sequence, no markup), plots (literal labels: no mathtext, no TeX), launch (sbatch values
checked and quoted, printed runs shell-quoted) and the table's fill-in commands (one line that
runs exactly its arguments).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

import results
from harness.cli import main
from results.escape import csv_safe, latex_escape, markdown_escape, printable, shell_join, shell_line
from results.formats import render

ESC = "\x1b"
# A terminal would: colour the text red, set the window title, clear the screen; C1 CSI (0x9b)
# is ESC [ on terminals that read 8-bit controls; DEL and a carriage return rewrite the line.
TERMINAL = f"enc{ESC}[31mRED{ESC}]0;pwned\x07\x9b2J\x7f\rX"
TERMINAL_SHOWN = r"enc\x1b[31mRED\x1b]0;pwned\x07\x9b2J\x7f\rX"
LATEX_TASK = "k400\n\\immediate\\write18{touch PWNED}"
LATEX_TASK_TEX = r"k400\textbackslash{}n\textbackslash{}immediate\textbackslash{}write18\{touch PWNED\}"


def protocol(task: str = "k400") -> dict:
    return {"protocol_version": 2, "precision": "bf16", "probe": {"kind": "attentive", "depth": 1},
            "optim": {"lr": 1e-3, "epochs": 20},
            "task": {"task": task, "sampling": {"frames_per_clip": 16, "frame_step": 4,
                                                "eval_segments": 8, "eval_views": 3}}}


def add(root: Path, encoder: str, task: str = "k400", top1: float | None = 50.0, *,
        ckpt: str = "a.pth", metrics: dict | None = None, seed: int = 0) -> Path:
    """One record under `root/records`."""
    proto = protocol(task)
    rec = results.make_record(
        encoder={"name": encoder}, checkpoint={"path": f"/ckpt/{ckpt}", "sha256": "ab" * 32},
        task=task, split="val", protocol=proto,
        metrics=metrics if metrics is not None else {"top1": top1},
        data_problems={}, timings={}, seed=seed, device="cpu", precision="bf16",
        extra={"run_id": f"{encoder}-{ckpt}-{task}-{seed}"})
    return results.write_record(rec, Path(root) / "records")


def column(task: str) -> str:
    return f"{task} (16x8x3, attentive)"


def legend(task: str) -> str:
    return f"{column(task)}: top1, protocol {results.protocol_id(protocol(task))} (v2, bf16)"


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _no_controls(text: str, keep: str = "\n") -> None:
    bad = [c for c in text if (ord(c) < 0x20 and c not in keep) or 0x7f <= ord(c) < 0xa0]
    assert not bad, bad


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*")}


def _bash_argv(line: str, cwd: Path, program: str = "harness") -> list[str]:
    """The arguments bash passes to `program` when it runs `line` (`program` a function that
    prints its arguments NUL-separated), in `cwd`."""
    script = f'{program}() {{ printf "%s\\0" "$@"; }}\n{line}\n'
    out = subprocess.run(["bash", "-c", script], check=False, cwd=cwd, capture_output=True,
                         timeout=60,
                         env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert out.returncode == 0, out.stderr
    return out.stdout.decode("utf-8").split("\0")[:-1]


# ---------------------------------------------------------------- LaTeX


def test_latex_footer_newline_and_write18_stay_inside_the_comment(tmp_path, capsys):
    add(tmp_path, "vjepa_vitl", LATEX_TASK)
    code, out, err = _run(["leaderboard", "--results", str(tmp_path), "--format", "latex"], capsys)
    assert code == 0, err
    pid = results.protocol_id(protocol(LATEX_TASK))
    lines = out.splitlines()
    assert lines[2] == rf"encoder & checkpoint & {LATEX_TASK_TEX} (16x8x3, attentive) \\"
    assert f"% legend: {LATEX_TASK_TEX} (16x8x3, attentive): top1, protocol {pid} (v2, bf16)" in lines
    # every line is the table's own or a comment: data never starts a line of the source
    for line in lines:
        assert line.startswith(("\\begin{tabular}", "\\toprule", "\\midrule", "\\bottomrule",
                                "\\end{tabular}", "% ")) or line.endswith(r" \\"), line
    # and no command of the data survives: without the escaped backslashes, none is left
    plain = out.replace(r"\textbackslash{}", "")
    assert "\\immediate" not in plain and "\\write18" not in plain


def test_latex_escapes_every_special_character_of_a_name(tmp_path, capsys):
    name = "a$b%c&d#e_f{g}h~i^^Jj<k>l|m\\n"
    add(tmp_path, name)
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "latex"], capsys)
    assert code == 0
    row = (r"a\$b\%c\&d\#e\_f\{g\}h\textasciitilde{}i\textasciicircum{}\textasciicircum{}Jj"
           r"\textless{}k\textgreater{}l\textbar{}m\textbackslash{}n & a.pth & \textbf{50.0} \\")
    assert row in out.splitlines()


def test_latex_note_from_data_is_escaped_too(tmp_path, capsys):
    # a record without the metric: the note names its task
    add(tmp_path, "vjepa_vitl", LATEX_TASK, metrics={"top5": 90.0})
    add(tmp_path, "vjepa_vitl", "ssv2", 60.0)
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "latex"], capsys)
    assert code == 0
    assert f"% note: 1 record(s) without top1 left out ({LATEX_TASK_TEX})" in out.splitlines()
    assert not any(line.startswith("\\immediate") for line in out.splitlines())


def test_latex_row_starting_with_a_bracket_or_star_is_no_optional_argument(tmp_path):
    add(tmp_path, "[3cm]evil", top1=60.0)
    add(tmp_path, "*starred", top1=50.0, ckpt="b.pth")
    tex = render(results.leaderboard(results.ResultStore(tmp_path).frame()), "latex")
    lines = tex.splitlines()
    # `\\` and `\midrule` would read `[3cm]` as their optional argument, `\\` eat the `*`
    assert r"{}[3cm]evil & a.pth & \textbf{60.0} \\" in lines
    assert r"{}*starred & b.pth & 50.0 \\" in lines


def test_latex_output_file_and_marks_legend(tmp_path, capsys):
    add(tmp_path, "vjepa_vitl", LATEX_TASK)
    out = tmp_path / "board.tex"
    code, printed, _ = _run(["leaderboard", "--results", str(tmp_path), "--output", str(out)],
                            capsys)
    assert code == 0 and printed == f"wrote {out} (latex)\n"
    tex = out.read_text()
    assert (r"% legend: bold (\textbf): best in its column; underlined (\underline): not "
            r"significantly different from the best at 0.05") in tex
    assert "\n\\immediate" not in tex


# ---------------------------------------------------------------- CSV


def test_csv_formula_cells_are_text_and_numbers_stay_numbers(tmp_path, capsys):
    # a metric that may be negative (accuracies are checked to lie in [0, 100])
    add(tmp_path, "=HYPERLINK(\"http:\\\\evil\",\"x\")", ckpt="@SUM(1+1)",
        metrics={"delta": 60.0})
    add(tmp_path, "+cmd|' /C calc'!A0", ckpt="-2+3", metrics={"delta": -0.5})
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "csv",
                         "--metric", "delta"], capsys)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    col = column("k400")
    assert rows == [["encoder", "checkpoint", col, f"{col} mark"],
                    ["'=HYPERLINK(\"http:\\\\evil\",\"x\")", "'@SUM(1+1)", "60.0", "best"],
                    ["'+cmd|' /C calc'!A0", "'-2+3", "-0.5", ""]]


def test_csv_header_from_a_task_name_is_neutralised(tmp_path, capsys):
    task = "=1+2"
    add(tmp_path, "vjepa_vitl", task)
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "csv"], capsys)
    assert code == 0
    head = next(csv.reader(io.StringIO(out)))
    assert head == ["encoder", "checkpoint", f"'{column(task)}", f"'{column(task)} mark"]


def test_csv_control_characters_are_shown_not_kept(tmp_path, capsys):
    add(tmp_path, "\t=1+1\r\nX")
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "csv"], capsys)
    assert code == 0
    _no_controls(out)
    assert list(csv.reader(io.StringIO(out)))[1][0] == r"\t=1+1\r\nX"


@pytest.mark.parametrize("value, safe", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("  =1", "'  =1"), ("\uff1d1+1", "'\uff1d1+1"),
    ("vjepa_vitl", "vjepa_vitl"), ("a=b", "a=b"), ("", ""), ("'quoted", "'quoted"),
    (-0.5, -0.5), (-3, -3), (1.25, 1.25), (None, None),
])
def test_csv_safe(value, safe):
    assert csv_safe(value) == safe
    if isinstance(value, float):
        assert isinstance(csv_safe(value), float)  # a number, never a string


# ---------------------------------------------------------------- Markdown and HTML


def test_markdown_escapes_html_pipes_and_links(tmp_path, capsys):
    add(tmp_path, "<img src=x onerror=alert(1)>", top1=60.0)
    add(tmp_path, "a|b\\|c", top1=50.0, ckpt="b.pth")
    add(tmp_path, "[x](javascript:alert(1))", top1=40.0, ckpt="c.pth")
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "markdown"],
                        capsys)
    assert code == 0
    lines = out.splitlines()
    assert "| &lt;img src=x onerror=alert(1)&gt; | a.pth | **60.0** |" in lines
    assert r"| a\|b\\\|c | b.pth | 50.0 |" in lines
    assert r"| [x]\(javascript:alert(1)) | c.pth | 40.0 |" in lines
    assert "<img" not in out and "](" not in out
    for line in lines[:5]:  # every row has its three cells: no pipe of the data splits one
        assert len(re.findall(r"(?<!\\)(?:\\\\)*\|", line)) == 4, line


def test_markdown_newline_in_a_task_keeps_the_header_on_one_line(tmp_path, capsys):
    add(tmp_path, "vjepa_vitl", "k400\n# heading\n<script>alert(1)</script>")
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "markdown"],
                        capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("| encoder | checkpoint | k400\\\\n# heading\\\\n&lt;script&gt;alert(1)"
                        "&lt;/script&gt; (16x8x3, attentive) |")
    assert lines[1] == "|---|---|---:|" and "<script>" not in out
    assert not any(line.startswith("#") for line in lines)


def test_html_page_has_only_its_own_script(tmp_path):
    add(tmp_path, "</td><script>alert(1)</script>", "k400<img src=x onerror=alert(2)>")
    lb = results.leaderboard(results.ResultStore(tmp_path).frame())
    page = render(lb, "html")
    assert page.count("<script>") == 1 and "<img" not in page
    assert "<td>&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page


def test_markdown_escape_and_latex_escape_directly():
    assert markdown_escape("a<b>&c|d\\e\nf](g") == r"a&lt;b&gt;&amp;c\|d\\e\\nf]\(g"
    assert latex_escape("50% of $x$\r\n") == r"50\% of \$x\$\textbackslash{}r\textbackslash{}n"


# ---------------------------------------------------------------- terminal


def test_plain_output_shows_terminal_sequences_as_text(tmp_path, capsys):
    add(tmp_path, TERMINAL)
    code, out, err = _run(["leaderboard", "--results", str(tmp_path)], capsys)
    assert code == 0, err
    _no_controls(out)
    lines = out.splitlines()
    assert len(lines) == 4  # header, one row, two legend lines: no line of the data's own
    assert lines[1].startswith(TERMINAL_SHOWN + "  a.pth") and lines[1].endswith("50.0*")


def test_newline_in_a_name_never_makes_a_row_of_its_own(tmp_path, capsys):
    add(tmp_path, "real\nfake_row     forged.pth     99.9*", top1=10.0)
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "plain"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[1].startswith(r"real\nfake_row     forged.pth     99.9*  a.pth")
    assert not any(line.startswith("fake_row") for line in lines)


def test_rich_output_never_reads_markup_or_sequences_of_the_data(tmp_path, capsys):
    add(tmp_path, f"[bold red]x[/bold red][link=file:///etc]y[/link]{ESC}[2J")
    code, out, _ = _run(["leaderboard", "--results", str(tmp_path), "--format", "rich"], capsys)
    assert code == 0
    _no_controls(out)
    assert r"[bold red]x[/bold red][link=file:///etc]y[/link]\x1b[2J" in out


def test_unreadable_record_with_a_hostile_file_name_is_reported_escaped(tmp_path, capsys):
    add(tmp_path, "vjepa_vitl")
    (tmp_path / "records" / f"torn{ESC}]0;pwned\x07.json").write_text('{"record_version": 1, "enc')
    code, out, err = _run(["leaderboard", "--results", str(tmp_path)], capsys)
    assert code == 0
    _no_controls(out + err)
    assert "skipped unreadable record:" in err and r"torn\x1b]0;pwned\x07.json" in err


def test_error_message_with_a_terminal_sequence_is_escaped(tmp_path, capsys):
    missing = tmp_path / f"nope{ESC}[2J{ESC}]0;pwned\x07"
    code, out, err = _run(["leaderboard", "--results", str(missing)], capsys)
    assert code == 2 and out == ""
    _no_controls(err)
    assert r"nope\x1b[2J\x1b]0;pwned\x07" in err


def test_log_lines_are_escaped(capsys):
    import logging

    from harness import output

    output.install(0)
    logging.getLogger("harness.test").warning("encoder %s\nsecond line", TERMINAL)
    err = capsys.readouterr().err
    assert err == f"warning: encoder {TERMINAL_SHOWN}\nsecond line\n"


def test_printable_maps_every_control_character():
    assert printable("a\x00b\x1bc\x7fd\x85e\u2028f\u202eg\tz\n") == \
        r"a\x00b\x1bc\x7fd\x85e\u2028f\u202eg\tz\n"
    assert printable("one\ntwo\tcol\r", multiline=True) == "one\ntwo\tcol\\r"
    assert printable("vjepa_vitl ± 1.0 (n=3) [98/100] ü") == "vjepa_vitl ± 1.0 (n=3) [98/100] ü"
    from harness.output import printable as cli_printable

    assert cli_printable(TERMINAL, multiline=False) == TERMINAL_SHOWN


# ---------------------------------------------------------------- plots


MATH = "$\\frac{1}{$"


def test_plot_bars_with_dollar_names_draws_literal_text(tmp_path, capsys, monkeypatch):
    import matplotlib

    # Even a matplotlibrc asking for TeX never sends a name to a LaTeX run.
    monkeypatch.setitem(matplotlib.rcParams, "text.usetex", True)
    add(tmp_path, MATH, "$x^2$ \\input{/etc/passwd}")
    png = tmp_path / "bars.png"
    code, out, err = _run(["plot", "bars", "--results", str(tmp_path), "--out", str(png)], capsys)
    assert code == 0, err
    assert out == f"wrote {png}\n" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from results import plots

    lb = results.leaderboard(results.ResultStore(tmp_path).frame(), significance=False)
    fig, ax, _ = plots.bars(lb, tmp_path / "unused.png", keep_figure=True)
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert f"{MATH} (a.pth)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "$x^2$ \\input{/etc/passwd} (16x8x3, attentive)" in [
        t.get_text() for t in ax.get_xticklabels()]
    assert all(not t.get_parse_math() and not t.get_usetex() for t in texts)
    fig.canvas.draw()  # drawing later, outside the context, still parses nothing
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_plot_series_title_and_legend_label_starting_with_underscore(tmp_path, capsys):
    for step, ckpt, top1 in ((100, "a.pth", 20.0), (200, "b.pth", 30.0)):
        proto = protocol("k400")
        rec = results.make_record(
            encoder={"name": "_nolegend_" + MATH}, checkpoint={"path": f"/c/{ckpt}",
                                                              "sha256": ckpt * 8, "step": step},
            task="k400", split="val", protocol=proto, metrics={"top1": top1}, data_problems={},
            timings={}, seed=0, device="cpu", precision="bf16")
        results.write_record(rec, tmp_path / "records")
    from results import plots
    from results.series import order_by_step, series_frame

    lb = results.leaderboard(series_frame(results.ResultStore(tmp_path).frame(),
                                          "_nolegend_" + MATH), significance=False)
    order_by_step(lb)
    fig, ax = plots.series(lb, tmp_path / "s.png", title=MATH, keep_figure=True)
    assert ax.get_title() == MATH and not ax.title.get_parse_math()
    # a label starting with `_` would be left out of the legend: it is kept, behind a space
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [column("k400")]
    import matplotlib.pyplot as plt

    plt.close(fig)
    png = tmp_path / "series.png"
    code, _, err = _run(["plot", "series", "_nolegend_" + MATH, "--results", str(tmp_path),
                         "--out", str(png)], capsys)
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert plots.literal_label("_x") == " _x" and plots.literal_label(f"a{ESC}b") == r"a\x1bb"


def test_pretrain_loss_plot_title_is_literal(tmp_path):
    from results.pretrain_plot import plot_loss

    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,loss\n" + "".join(f"{i},{1.0 / (i + 1)}\n" for i in range(30)))
    assert plot_loss(metrics, tmp_path / "loss.png", title=MATH) == tmp_path / "loss.png"
    assert (tmp_path / "loss.png").stat().st_size > 0


# ---------------------------------------------------------------- launch


def _launch_args(digits_root: Path, out: Path) -> list[str]:
    return ["launch", "--encoder", "vjepa_tiny", "--random-init", "--out", str(out),
            "--no-progress", f"task.data.root={digits_root}", "--task", "digits_motion",
            "--dry-run"]


@pytest.mark.parametrize("flag", ["--partition", "--account", "--qos", "--constraint",
                                  "--folder"])
def test_launch_refuses_a_newline_in_an_sbatch_value(flag, digits_root, tmp_path, capsys):
    cwd = os.getcwd()
    code, out, err = _run([*_launch_args(digits_root, tmp_path / "runs"), flag,
                           "gpu\ntouch PWNED_SBATCH"], capsys)
    assert code == 2
    assert out == ""  # refused before any run or script is printed
    assert err.startswith(f"error: {flag} 'gpu\\ntouch PWNED_SBATCH': holds a newline or "
                          f"control character (\\n)")
    assert not Path(cwd, "PWNED_SBATCH").exists() and not (tmp_path / "runs").exists()


def test_launch_refuses_control_characters_other_than_newline(digits_root, tmp_path, capsys):
    code, out, err = _run([*_launch_args(digits_root, tmp_path / "runs"), "--qos",
                           f"high{ESC}[2J\r"], capsys)
    assert code == 2 and out == ""
    _no_controls(err)
    assert r"(\r, \x1b)" in err and "--qos" in err


def test_sbatch_values_with_shell_characters_are_quoted_and_run_nothing(digits_root, tmp_path,
                                                                       capsys):
    out_dir = tmp_path / "runs"
    code, out, err = _run([*_launch_args(digits_root, out_dir), "--constraint",
                           "a100&h100|x;touch PWNED_C", "--account", "$(touch PWNED_A)",
                           "--partition", "`touch PWNED_P`"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "#SBATCH --constraint='a100&h100|x;touch PWNED_C'" in lines
    assert "#SBATCH --account='$(touch PWNED_A)'" in lines
    assert "#SBATCH --partition='`touch PWNED_P`'" in lines
    # run the script itself (srun a stub): the #SBATCH lines stay comments, nothing is made
    script = out[out.index("#!/bin/bash"):]
    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    (work / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (work / "bin" / "srun").chmod(0o755)
    (work / "job.sh").write_text(script)
    before = _files(work)
    done = subprocess.run(["bash", "job.sh"], check=False, cwd=work, capture_output=True,
                          timeout=60,
                          env={**os.environ, "PATH": f"{work / 'bin'}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert _files(work) == before


def test_sbatch_script_and_resources_check_every_value(tmp_path):
    from harness.launch import Resources, make_executor, sbatch_script

    with pytest.raises(ValueError, match=r"^the job name 'x\\ny': holds a newline"):
        Resources(job_name="x\ny")
    with pytest.raises(ValueError, match=r"^--partition 'a\\u2028b'"):
        Resources(partition="a\u2028b")  # a line separator is a line break to many readers
    for call in (lambda f: sbatch_script(f, Resources(), 1),
                 lambda f: make_executor("local", f, Resources())):
        with pytest.raises(ValueError, match=r"^--folder '.*\\ntouch PWNED'"):
            call(tmp_path / "logs\ntouch PWNED")
    text = sbatch_script(tmp_path / "logs dir", Resources(job_name="my job;id"), 1)
    assert "#SBATCH --job-name='my job;id'" in text.splitlines()
    assert f"#SBATCH --output='{tmp_path}/logs dir/%j_0_log.out'" in text.splitlines()


def test_printed_run_lines_are_shell_quoted_and_run_exactly_their_overrides(tmp_path):
    from harness.launch import PlannedRun

    overrides = ["encoder=vjepa_tiny", "task.data.root=/d/x\ntouch PWNED_1",
                 "label='a;$(touch PWNED_2)`touch PWNED_3`'", f"seed=0{ESC}[2J", "x=\u2028y"]
    line = PlannedRun(overrides).command
    assert line == ("harness run encoder=vjepa_tiny $'task.data.root=/d/x\\ntouch PWNED_1' "
                    + shlex.quote(overrides[2]) + " $'seed=0\\x1b[2J' $'x=\\u2028y'")
    _no_controls(line, keep="")
    before = _files(tmp_path)
    assert _bash_argv(line, tmp_path) == ["run", *overrides]
    assert _files(tmp_path) == before


def test_launch_dry_run_prints_hostile_overrides_as_one_runnable_line(digits_root, tmp_path,
                                                                      capsys):
    label = "x\ny;$(touch PWNED_L)"
    code, out, err = _run([*_launch_args(digits_root, tmp_path / "runs"), f"label='{label}'"],
                          capsys)
    assert code == 0, err
    _no_controls(out)
    line = next(ln for ln in out.splitlines() if ln.startswith("  submit: "))
    argv = _bash_argv(line[len("  submit: "):], tmp_path)
    assert f"label='{label}'" in argv and argv[0] == "run"
    assert not list(tmp_path.glob("PWNED*"))


# ---------------------------------------------------------------- the table's fill-in commands


def test_table_fill_in_commands_run_exactly_their_arguments(tmp_path, capsys):
    from results.paper_tables import hydra_value

    root = "/data/k 400\ntouch PWNED_T;$(touch PWNED_U)" + ESC + "]0;x\x07"
    runs = tmp_path / "runs"
    code, out, err = _run(["table", "vjepa-frozen", "--results", str(runs), "--data-root",
                           f"k400={root}"], capsys)
    assert code == 0, err
    _no_controls(out)
    commands = [ln.split("] ", 1)[1] for ln in out.splitlines() if re.match(r"\[\d+\] ", ln)]
    k400 = [c for c in commands if "--task k400" in c]
    assert k400
    for command in k400:
        argv = _bash_argv(command, tmp_path)
        assert argv[-1] == f"task.data.root={hydra_value(root)}"
        assert argv[:2] == ["run", "--encoder"]
    assert not list(tmp_path.glob("PWNED*"))


def test_table_markdown_escapes_and_json_keeps_the_data(tmp_path, capsys):
    root = "/d/<img src=x>|y\nz"
    code, out, _ = _run(["table", "vjepa-frozen", "--results", str(tmp_path / "r"),
                         "--format", "markdown", "--data-root", f"k400={root}"], capsys)
    assert code == 0
    _no_controls(out)
    # the commands are a code block (a path's tag or link never renders); outside it, no tag
    start, end = out.index("\n```sh\n"), out.rindex("\n```\n")
    assert "<img" not in out[:start] + out[end:]
    block = out[start:end].splitlines()[2:]
    assert block and all(re.match(r"\[\d+\] harness ", ln) for ln in block)
    assert any(_bash_argv(ln.split("] ", 1)[1], tmp_path)[-1] == f'task.data.root="{root}"'
               for ln in block)
    code, out, _ = _run(["table", "vjepa-frozen", "--results", str(tmp_path / "r"),
                         "--format", "json", "--data-root", f"k400={root}"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert any("<img src=x>|y\nz" in (c.get("command") or "")
               for row in doc["rows"] for c in row["cells"].values())


# ---------------------------------------------------------------- the quoting helpers


NASTY = ["", "plain", "two words", "it's", 'say "hi"', "$(touch PWNED_Q)", "`touch PWNED_Q`",
         "a;touch PWNED_Q", "back\\slash", "new\nline", "cr\rhere", "tab\there", f"esc{ESC}[2J",
         "c1\x85\x9b", "del\x7f", "ls\u2028ps\u2029", "rtl\u202eevil", "ü ± 漢字", "'\n'"]


def test_shell_join_round_trips_through_bash(tmp_path):
    line = shell_join(["harness", *NASTY])
    _no_controls(line, keep="")
    assert "\n" not in line
    assert _bash_argv(line, tmp_path) == NASTY
    assert not list(tmp_path.glob("PWNED*"))
    # without control characters it is shlex's own quoting (POSIX sh reads it back)
    plain = [a for a in NASTY if a.isprintable()]
    assert shlex.split(shell_join(plain)) == plain


def test_shell_line_makes_a_shlex_joined_line_one_printable_line(tmp_path):
    first, second = shlex.join(["harness", *NASTY]), shlex.join(["harness", "x\ny"])
    line = shell_line(f"{first}; {second}")
    _no_controls(line, keep="")
    assert _bash_argv(line, tmp_path) == [*NASTY, "x\ny"]
    assert shell_line("plain text 'quoted'") == "plain text 'quoted'"
    assert shell_line("raw\ncontrol") == r"raw\ncontrol"  # not a quoted line: shown escaped
