"""`harness encoders` and `harness tasks`: the registries with their key facts.

Reads only the YAML configs (no torch import), so both answer in well under a second.
"""
from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["rich", "markdown", "csv"], default="rich",
                   help="output format (default: rich table)")
    p.set_defaults(listing=name)


def encoder_rows() -> tuple[list[str], list[list[str]]]:
    import encoders

    header = ["name", "family", "modality", "size", "frames", "res", "heads", "description"]
    rows = []
    for name in encoders.names():
        c = encoders.config(name)
        a = c.get("arch", {})
        size = f"{a.get('embed_dim')}d x {a.get('depth')} / p{a.get('patch_size')}"
        if c.get("modality") == "video":
            size += f" t{a.get('tubelet_size')}"
        rows.append([name, str(c.get("family", "")), str(c.get("modality", "")), size,
                     str(a.get("num_frames", "")), str(a.get("resolution", "")),
                     str(a.get("num_heads", "")), str(c.get("description", ""))])
    return header, rows


def task_rows() -> tuple[list[str], list[list[str]]]:
    import tasks

    header = ["name", "kind", "classes", "clip", "eval views", "metric", "epochs", "description"]
    rows = []
    for name in tasks.names():
        c = tasks.config(name)
        s = c.get("sampling", {})
        o = c.get("optim", {})
        clip = f"{s.get('frames_per_clip')}f step {s.get('frame_step')}"
        views = f"{s.get('eval_segments')} seg x {s.get('eval_views')} views"
        rows.append([name, str(c.get("kind", "")), str(c.get("num_classes", "")), clip, views,
                     str(c.get("metric", "")), str(o.get("epochs", "")),
                     str(c.get("description", ""))])
    return header, rows


def render(header: list[str], rows: list[list[str]], fmt: str, title: str) -> None:
    if fmt == "csv":
        import csv
        import sys

        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(rows)
    elif fmt == "markdown":
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in header:
            # Long descriptions would fold the table into a tower: one line each, the full
            # text is in --format markdown/csv and the YAML.
            table.add_column(h, no_wrap=True, overflow="ellipsis",
                             max_width=60 if h == "description" else None)
        for r in rows:
            table.add_row(*r)
        Console().print(table)


def main(args) -> int:
    if args.listing == "encoders":
        header, rows = encoder_rows()
        render(header, rows, args.format, "encoders")
    else:
        header, rows = task_rows()
        render(header, rows, args.format, "tasks")
    return 0
