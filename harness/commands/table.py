"""`harness table NAME`: a paper's table, the published number beside ours under its protocol."""
from __future__ import annotations

import argparse

EPILOG = """\
Each cell: the published number / ours (our minus published). A number marked `?` is one the
sources disagree on (see the notes). A cell we lack shows `[k]`: the k-th command under the
table fills it (shell-quoted; with `task.data.root=` where the task's data root is known:
--data-root TASK=DIR, else the root its newest record ran on). The low-shot table also gives
each published number's relative drop from the same method with all labels (Table 6).

  harness table --list
  harness table vjepa-frozen --results runs
  harness table vjepa-low-shot --format markdown --data-root k400=/data/k400
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands.results import add_results_argument

    p.epilog = EPILOG
    p.add_argument("name", nargs="?", help="table name (see --list)")
    p.add_argument("--list", action="store_true", help="list the tables")
    add_results_argument(p)
    p.add_argument("--data-root", action="append", default=[], metavar="TASK=DIR",
                   help="the data root of a task, for the fill-in commands (repeatable; "
                        "default: the root the newest record of the task ran on)")
    p.add_argument("--format", choices=["plain", "markdown", "json"], default="plain")


def fill_argv(root: str):
    """`argv(encoder, release, task, spec, data_root=None)`: the `harness run` that fills a cell,
    as a list of arguments (quote it with shlex.join to print it)."""
    def argv(encoder: str, release: str | None, task: str, spec,
             data_root: str | None = None) -> list[str]:
        import tasks
        from results.paper_tables import PROBE_OF, hydra_value

        parts = ["harness", "run", "--encoder", encoder,
                 "--checkpoint", release or f"PATH/TO/{encoder}-weights.pth", "--task", task]
        probe = PROBE_OF.get(task, spec.probe)
        if probe not in (None, "attentive"):  # None: no probe (violation-of-expectation tasks)
            parts += ["--probe", probe]
        parts += ["--out", str(root)]
        if data_root:
            parts.append(f"task.data.root={hydra_value(data_root)}")
        want = spec.views.get(task)
        if want:
            s = tasks.config(task).get("sampling", {})
            for key, value in zip(("frames_per_clip", "eval_segments", "eval_views"), want):
                if s.get(key) != value:
                    parts.append(f"task.sampling.{key}={value}")
        return parts
    return argv


def fill_command(root: str):
    """Like `fill_argv`, the command as one shell-quoted line (`results.escape.shell_join`:
    a control character in an argument is written as bash's $'...', so the line stays one
    line and runs exactly those arguments)."""
    from results.escape import shell_join

    argv = fill_argv(root)

    def command(encoder: str, release: str | None, task: str, spec,
                data_root: str | None = None) -> str:
        return shell_join(argv(encoder, release, task, spec, data_root=data_root))
    return command


def _data_roots(values: list[str]) -> dict[str, str]:
    roots = {}
    for value in values or []:
        task, eq, folder = str(value).partition("=")
        if not eq or not task.strip() or not folder:
            raise ValueError(f"--data-root {value!r}: expected TASK=DIR, e.g. k400=/data/k400")
        roots[task.strip()] = folder
    return roots


def _published(cell) -> str:
    pub = cell.published
    if pub is None:
        return "-"
    if isinstance(pub, dict):
        text = f"{pub.get('mean')} ± {pub.get('std')}"
    else:
        text = str(pub)  # exactly as in the reference data
    if cell.uncertain:
        text += "?"
    if cell.drop is not None:
        text += f", drop {cell.drop:.1f}%"
    return text


def _cell_text(cell, commands: list[str]) -> str:
    pub = _published(cell)
    if cell.ours is not None:
        ours = f"{cell.ours:.1f}"
        if cell.runs > 1:
            ours += f" ± {cell.ours_std:.1f} (n={cell.runs})"
        diff = cell.diff
        return f"{pub} / {ours}" + (f" ({diff:+.1f})" if diff is not None else "")
    if cell.command:
        commands.append(cell.command)
        return f"{pub} / [{len(commands)}]"
    return pub if cell.published is not None else "-"


def main(args) -> int:
    import json
    import sys

    import results
    from harness.output import print_line, printable
    from results import paper_tables
    from results.escape import markdown_escape, shell_line

    reference = results.load_reference_tables()
    if args.list or not args.name:
        names = paper_tables.table_names(reference)
        width = max(len(n) for n, _ in names)
        for name, title in names:
            print_line(f"{name.ljust(width)}  {title}")
        if not args.list:
            print("\nrun `harness table NAME` to print one")
        return 0
    spec = paper_tables.spec_for(args.name, reference)
    if spec is None:
        from common.names import unknown

        known = [n for n, _ in paper_tables.table_names(reference)]
        raise unknown("table", args.name, known, cutoff=0.4, list_known=False,
                      extra=" See `harness table --list`.")
    import tasks

    root = results.default_root(args.results)
    store = results.ResultStore(root)
    # Only the table's tasks: at a million records the frame of every run costs seconds and GBs.
    frame = store.frame(text=False, tasks=paper_tables.table_tasks(spec, reference)) \
        if root.exists() else None
    from harness.output import report_skipped

    report_skipped(store)
    table = paper_tables.build(spec, reference, frame, known_tasks=set(tasks.names()),
                               command=fill_argv(str(root)), data_roots=_data_roots(args.data_root))
    commands: list[str] = []
    rows = [[method] + [_cell_text(c, commands) for c in cells] for method, cells in table.rows]
    head = ["method"] + table.columns
    # What the data holds is shown, never acted on: one printable line per cell (and the
    # format's own escaping for markdown); commands one line each that run what they show.
    cell = markdown_escape if args.format == "markdown" else (
        lambda text: printable(text, multiline=False))
    rows = [[cell(c) for c in r] for r in rows]
    head = [cell(c) for c in head]
    commands = [shell_line(c) for c in commands]
    if args.format == "json":
        doc = {"table": spec.name, "title": spec.title, "source": table.source,
               "protocol": table.protocol, "columns": table.columns, "notes": table.notes,
               "rows": [{"method": m, "cells": {c.column: {
                   "published": c.published, "uncertain": c.uncertain, "ours": c.ours,
                   "ours_std": c.ours_std, "runs": c.runs, "diff": c.diff,
                   "protocol_id": c.protocol_id, "relative_drop_pct": c.drop,
                   "command": c.command, "why_not": c.why_not} for c in cells}}
                   for m, cells in table.rows]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    lines = [cell(spec.title), cell(f"source: {table.source}")]
    if table.protocol:
        lines.append(cell(f"protocol: {table.protocol}"))
    lines.append("cells: published / ours (ours - published); ? = sources disagree; "
                 "[k] = fill with command k below")
    if spec.low_shot:
        lines.append(cell(f"drop: relative drop from the same method with all labels "
                          f"({spec.full_labels}), (full - low) / full"))
    lines.append("")
    if args.format == "markdown":
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|" + "---:|" * len(table.columns))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        for r in [head] + rows:
            lines.append("  ".join([r[0].ljust(widths[0])] +
                                   [c.rjust(w) for c, w in zip(r[1:], widths[1:])]).rstrip())
    reasons = sorted({(c.why_not or "") for _, cells in table.rows for c in cells
                      if c.ours is None and not c.command and c.why_not})
    if commands:
        numbered = [f"[{i}] {c}" for i, c in enumerate(commands, 1)]
        if args.format == "markdown":  # code, not Markdown: no tag or link of a path renders
            numbered = ["```sh", *numbered, "```"]
        lines += ["", "to fill the empty cells:"] + numbered
    if reasons:
        lines += ["", cell("cells nothing here can fill yet: " + "; ".join(reasons))]
    filled = {c.protocol_id for _, cells in table.rows for c in cells if c.protocol_id}
    if filled:
        lines += ["", cell(f"our cells: records under protocol {', '.join(sorted(filled))} "
                           f"in {root}")]
    if table.notes:
        lines += [""] + [cell(f"note: {n}") for n in table.notes]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
