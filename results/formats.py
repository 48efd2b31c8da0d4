"""A leaderboard as text: rich, plain, markdown, CSV, JSON, LaTeX (booktabs) or one HTML page.

Every format shows the same cells (`Cell.text`: rounded mean, `± std (n=runs)`, `[evaluated/
split]`, best `*` / not significantly different `~`; markdown and LaTeX show the marks as markup,
bold and italic / LaTeX's textbf and underline, and their legends name that markup); none wraps or
cuts a name. CSV and JSON
carry the numbers rounded as shown (no float32 noise) with the std, run count and marks in
their own fields.

Nothing written here may execute where it lands (a record's names are data, whoever wrote them):
every format goes through one neutraliser of its own, and they all start from `printable`
(control characters, C0 and C1, ESC, DEL and line breaks, shown as visible escapes, so data never
moves a terminal's cursor nor starts a new line). `latex_escape` escapes TeX's specials,
`markdown_escape` HTML and table pipes, `csv_safe` the cells a spreadsheet would read as formulas,
and `shell_join` / `shell_line` quote the commands the CLI prints so a copied line runs exactly the
arguments it shows.
"""
from __future__ import annotations

import html
import io
import json
import math

from results.escape import csv_safe, latex_escape, markdown_escape, printable
from results.leaderboard import BEST, ROW_KEYS, TIED, Leaderboard

FORMATS = ("rich", "plain", "markdown", "csv", "json", "latex", "html")


def _rows(lb: Leaderboard):
    """(row key, [cell or None per column]) in table order."""
    for key in lb.table.index:
        key = tuple(key)
        yield key, [lb.cells.get((key, c.name)) for c in lb.columns]


def _rank_text(lb: Leaderboard, key) -> str:
    if lb.mean_rank is None:
        return ""
    value = lb.mean_rank.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    have = sum(1 for c in lb.columns if (key, c.name) in lb.cells)
    return f"{value:.1f}" + (f" ({have}/{len(lb.columns)})" if have < len(lb.columns) else "")


def _cost_texts(lb: Leaderboard, key) -> list[str]:
    if lb.cost is None:
        return []
    out = []
    for col in lb.cost.columns:
        v = lb.cost.loc[key, col] if key in lb.cost.index else None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("-")
        elif col == "device-h":
            out.append(f"{v:.3g}")
        else:
            out.append(f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}")
    return out


def _header(lb: Leaderboard) -> list[str]:
    head = ROW_KEYS + [printable(c.name) for c in lb.columns]
    if lb.mean_rank is not None:
        head.append("mean rank")
    if lb.cost is not None:
        head += [printable(c) for c in lb.cost.columns]
    return head


def _text_rows(lb: Leaderboard, marks: bool = True) -> list[list[str]]:
    out = []
    for key, cells in _rows(lb):
        row = [printable(key[0]), printable(key[1])] + [c.text(marks) if c else "-" for c in cells]
        if lb.mean_rank is not None:
            row.append(_rank_text(lb, key))
        row += _cost_texts(lb, key)
        out.append(row)
    return out


def _footer(lb: Leaderboard) -> list[str]:
    return ([f"legend: {printable(line)}" for line in lb.legend]
            + [f"note: {printable(note)}" for note in lb.notes])


def _marks_legend(lb: Leaderboard, best: str, tied: str, escape=printable) -> list[str]:
    """The legend for a format that shows the marks as markup (bold, italic, underline) instead
    of the `*` / `~` the text cells carry: the legend names what the reader sees. `escape`
    neutralises the legend's text for the format; `best` and `tied` are the format's own markup
    (only the marks line of the legend is rewritten, never a column's name)."""
    out = []
    start, middle = f"{BEST} best", f"; {TIED} not"
    for line in lb.legend:
        if line.startswith(start) and middle in line:
            first, rest = line[len(start):].split(middle, 1)
            out.append(f"{best}: best{escape(first)}; {tied}: not{escape(rest)}")
        else:
            out.append(escape(line))
    return out


def plain(lb: Leaderboard) -> str:
    head, rows = _header(lb), _text_rows(lb)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(cells):
        left = [c.ljust(w) for c, w in zip(cells[:2], widths[:2])]
        right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:])]
        return "  ".join(left + right).rstrip()

    lines = [line(head)] + [line(r) for r in rows] if lb.columns else []
    return "\n".join(lines + _footer(lb)) + "\n"


def rich_table(lb: Leaderboard, title: str | None = None):
    from rich.table import Table
    from rich.text import Text

    # Text objects, not strings: '[ec87535c0225]' in a name would be read as markup.
    table = Table(title=Text(printable(title or f"leaderboard ({lb.metric})")))
    for i, name in enumerate(_header(lb)):
        table.add_column(Text(name), justify="left" if i < 2 else "right", no_wrap=True)
    for (key, cells), texts in zip(_rows(lb), _text_rows(lb)):
        styled = []
        for i, text in enumerate(texts):
            cell = cells[i - 2] if 2 <= i < 2 + len(cells) else None
            style = "bold" if cell and cell.best else "italic" if cell and cell.tied else ""
            styled.append(Text(text, style=style))
        table.add_row(*styled)
    return table


def rich(lb: Leaderboard, width: int = 120) -> str:
    from rich.console import Console

    table = rich_table(lb)
    # Wide enough for the whole table: a name is never cut or folded, whatever the terminal.
    need = Console(file=io.StringIO(), width=10_000).measure(table).maximum
    buf = io.StringIO()
    console = Console(file=buf, width=max(width, need), color_system=None, force_terminal=False)
    if lb.columns:
        console.print(table)
    for line in _footer(lb):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    return buf.getvalue()


def markdown(lb: Leaderboard) -> str:
    head = _header(lb)
    lines = []
    if lb.columns:
        lines = ["| " + " | ".join(_md(h) for h in head) + " |",
                 "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
        for (key, cells), texts in zip(_rows(lb), _text_rows(lb, marks=False)):
            shown = [_md(t) for t in texts]
            for i, cell in enumerate(cells):
                if cell and cell.best:
                    shown[2 + i] = f"**{shown[2 + i]}**"
                elif cell and cell.tied:
                    shown[2 + i] = f"_{shown[2 + i]}_"
            lines.append("| " + " | ".join(shown) + " |")
    # '*' and '~' are markdown syntax: here the best is bold and a tie italic.
    legend = _marks_legend(lb, "bold", "italic", escape=markdown_escape)
    footer = [f"- legend: {x}" for x in legend] + [f"- {_md(n)}" for n in lb.notes]
    if footer:
        lines += [""] + footer
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return markdown_escape(text)


def _number(cell, value: float | None) -> float | None:
    return None if value is None else round(value, cell.decimals)


def csv(lb: Leaderboard) -> str:
    import csv as _csv

    runs = {c.name for c in lb.columns if any(lb.cells.get((k, c.name)) and lb.cells[(k, c.name)].runs > 1
                                               for k, _ in _rows(lb))}
    short = {c.name for c in lb.columns if any(lb.cells.get((k, c.name)) and lb.cells[(k, c.name)].short
                                                for k, _ in _rows(lb))}
    head = list(ROW_KEYS)
    for c in lb.columns:
        head.append(c.name)
        if c.name in runs:
            head += [f"{c.name} std", f"{c.name} runs"]
        if c.name in short:
            head += [f"{c.name} samples", f"{c.name} split size"]
        head.append(f"{c.name} mark")
    if lb.mean_rank is not None:
        head.append("mean rank")
    if lb.cost is not None:
        head += list(lb.cost.columns)
    buf = io.StringIO()
    writer = _csv.writer(buf, lineterminator="\n")
    # Text cells (names, titles) shown as text, never formulas; the numbers stay numbers.
    writer.writerow([csv_safe(printable(h)) for h in head])
    for key, cells in _rows(lb):
        row = [csv_safe(printable(key[0])), csv_safe(printable(key[1]))]
        for c, cell in zip(lb.columns, cells):
            row.append(cell.number() if cell else "")
            if c.name in runs:
                row += [cell.number(cell.std) if cell and cell.std is not None else "",
                        cell.runs if cell else ""]
            if c.name in short:
                row += [cell.num_samples if cell and cell.num_samples is not None else "",
                        cell.split_size if cell and cell.split_size is not None else ""]
            row.append(("best" if cell.best else "tied" if cell.tied else "") if cell else "")
        if lb.mean_rank is not None:
            v = lb.mean_rank.get(key)
            row.append("" if v is None or math.isnan(v) else f"{v:.2f}")
        row += ["" if t == "-" else t.replace(",", "") for t in _cost_texts(lb, key)]
        writer.writerow(row)
    return buf.getvalue()


def to_json(lb: Leaderboard) -> str:
    rows = []
    for key, cells in _rows(lb):
        out = {"encoder": key[0], "checkpoint": key[1], "cells": {}}
        for c, cell in zip(lb.columns, cells):
            if cell is None:
                continue
            out["cells"][c.name] = {
                "mean": _number(cell, cell.mean), "std": _number(cell, cell.std), "runs": cell.runs,
                "num_samples": cell.num_samples, "split_size": cell.split_size,
                "text": cell.text(), "best": cell.best, "tied": cell.tied, "test": cell.test,
                "p_value": cell.p_value, "records": cell.paths}
        if lb.mean_rank is not None:
            v = lb.mean_rank.get(key)
            out["mean_rank"] = None if v is None or math.isnan(v) else round(float(v), 3)
        if lb.cost is not None and key in lb.cost.index:
            out["cost"] = {k: (None if v is None or (isinstance(v, float) and math.isnan(v))
                               else float(v)) for k, v in lb.cost.loc[key].items()}
        rows.append(out)
    doc = {"metric": lb.metric,
           "columns": [{"name": c.name, "task": c.task, "protocol_id": c.protocol_id,
                        "protocol_version": c.version, "precision": c.precision,
                        "metric": c.metric}
                       for c in lb.columns],
           "rank_over": lb.rank_over, "rows": rows, "legend": lb.legend, "notes": lb.notes}
    return json.dumps(doc, indent=2) + "\n"


def _tex(text: str) -> str:
    return latex_escape(text)


def _tex_row(cells: list[str]) -> str:
    # `\\` and booktabs' rules read a following `[` as their optional argument, and `\\` a `*`
    # as its star: a row whose first cell starts with one begins with an empty group instead.
    if cells and cells[0][:1] in ("[", "*"):
        cells = ["{}" + cells[0]] + cells[1:]
    return " & ".join(cells) + r" \\"


def latex(lb: Leaderboard) -> str:
    """A booktabs tabular (\\usepackage{booktabs}); best in bold, ties underlined."""
    head = _header(lb)
    lines = [r"\begin{tabular}{ll" + "r" * (len(head) - 2) + "}", r"\toprule",
             _tex_row([_tex(h) for h in head]), r"\midrule"]
    for (key, cells), texts in zip(_rows(lb), _text_rows(lb, marks=False)):
        shown = [_tex(t) for t in texts]
        for i, cell in enumerate(cells):
            if cell and cell.best:
                shown[2 + i] = r"\textbf{" + shown[2 + i] + "}"
            elif cell and cell.tied:
                shown[2 + i] = r"\underline{" + shown[2 + i] + "}"
        lines.append(_tex_row(shown))
    lines += [r"\bottomrule", r"\end{tabular}"]
    # The cells carry \textbf / \underline, not '*' / '~': the legend says so.
    # Comments, but escaped all the same: a newline in the data would end the comment.
    legend = _marks_legend(lb, r"bold (\textbf)", r"underlined (\underline)", escape=latex_escape)
    lines += [f"% legend: {line}" for line in legend] + [f"% note: {_tex(note)}" for note in lb.notes]
    return "\n".join(lines) + "\n"


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: 0.3em 0.8em; border-bottom: 1px solid #ccc; white-space: nowrap; }}
th {{ cursor: pointer; background: #f4f4f4; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.best {{ font-weight: bold; }}
td.tied {{ font-style: italic; }}
th.sorted-asc::after {{ content: " \\25B2"; }}
th.sorted-desc::after {{ content: " \\25BC"; }}
</style></head><body>
<h1>{title}</h1>
<table id="leaderboard"><thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody></table>
<ul>{footer}</ul>
<script>
// Click a header to sort by it (numbers by value, names by text); click again to reverse.
document.querySelectorAll("#leaderboard th").forEach(function (th, col) {{
  th.addEventListener("click", function () {{
    var body = document.querySelector("#leaderboard tbody");
    var rows = Array.from(body.rows);
    var desc = !th.classList.contains("sorted-desc");
    document.querySelectorAll("#leaderboard th").forEach(function (h) {{
      h.classList.remove("sorted-asc", "sorted-desc"); }});
    th.classList.add(desc ? "sorted-desc" : "sorted-asc");
    function key(row) {{
      var cell = row.cells[col];
      var v = cell.getAttribute("data-value");
      return v === null ? cell.textContent : (v === "" ? NaN : parseFloat(v));
    }}
    rows.sort(function (a, b) {{
      var x = key(a), y = key(b);
      if (typeof x === "number" || typeof y === "number") {{
        if (isNaN(x)) return 1; if (isNaN(y)) return -1;
        return desc ? y - x : x - y;
      }}
      return desc ? String(y).localeCompare(String(x)) : String(x).localeCompare(String(y));
    }});
    rows.forEach(function (r) {{ body.appendChild(r); }});
  }});
}});
// A link can open the page sorted: board.html#sort=3 (by the fourth column, best first).
var wanted = /^#sort=(\\d+)$/.exec(window.location.hash);
if (wanted) {{
  var th = document.querySelectorAll("#leaderboard th")[parseInt(wanted[1], 10)];
  if (th) th.click();
}}
</script>
</body></html>
"""


def to_html(lb: Leaderboard, title: str | None = None) -> str:
    """One self-contained page (inline CSS and script, no server, nothing fetched)."""
    esc = html.escape
    title = printable(title or f"leaderboard ({lb.metric})")
    head = "".join(f"<th>{esc(h)}</th>" for h in _header(lb))
    body = []
    for (key, cells), texts in zip(_rows(lb), _text_rows(lb)):
        tds = [f"<td>{esc(texts[0])}</td>", f"<td>{esc(texts[1])}</td>"]
        for cell, text in zip(cells, texts[2:2 + len(cells)]):
            cls = "num" + (" best" if cell and cell.best else " tied" if cell and cell.tied else "")
            value = "" if cell is None else cell.number()
            tds.append(f'<td class="{cls}" data-value="{value}">{esc(text)}</td>')
        for text in texts[2 + len(cells):]:
            value = text.split(" ")[0].replace(",", "")
            value = value if value.replace(".", "", 1).isdigit() else ""
            tds.append(f'<td class="num" data-value="{value}">{esc(text)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    footer = "".join(f"<li>{esc(line)}</li>" for line in _footer(lb))
    return _HTML.format(title=esc(title), head=head, body="\n".join(body), footer=footer)


def render(lb: Leaderboard, fmt: str = "rich", *, width: int = 120) -> str:
    """Text of the leaderboard in one of FORMATS."""
    if fmt == "rich":
        return rich(lb, width=width)
    if fmt == "plain":
        return plain(lb)
    if fmt == "markdown":
        return markdown(lb)
    if fmt == "csv":
        return csv(lb)
    if fmt == "json":
        return to_json(lb)
    if fmt == "latex":
        return latex(lb)
    if fmt == "html":
        return to_html(lb)
    raise ValueError(f"unknown leaderboard format {fmt!r}; use one of {', '.join(FORMATS)}")


def format_for_path(path: str) -> str | None:
    """The format a file name asks for (`board.html` -> html), or None."""
    suffix = str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
    return {"md": "markdown", "csv": "csv", "json": "json", "tex": "latex", "html": "html",
            "htm": "html", "txt": "plain"}.get(suffix)
