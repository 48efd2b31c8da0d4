"""`harness encoders` and `harness tasks`: the registries with their key facts.

Reads only the YAML configs (no torch import), so both answer in well under a second.
"""
from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["rich", "plain", "markdown", "csv"], default="rich",
                   help="output format (default: a rich table on a terminal, plain aligned "
                        "text when piped)")
    if name == "encoders":
        p.add_argument("--verbose", "-v", action="store_true",
                       help="every entry's paper, published weights, licence, pretraining data, "
                            "expected input, parameters and GFLOPs per clip (counted on the meta "
                            "device; imports torch, a few seconds)")
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

    header = ["name", "kind", "classes", "clip", "eval views", "metric", "epochs", "description",
              "layout on disk"]
    rows = []
    for name in tasks.names():
        c = tasks.config(name)
        s = c.get("sampling", {})
        o = c.get("optim", {})
        clip, views = _clip_columns(c, s)
        rows.append([name, str(c.get("kind", "")), str(c.get("num_classes", "")), clip, views,
                     str(c.get("metric", "")), str(o.get("epochs", "")),
                     str(c.get("description", "")), task_layout(name, c)])
    return header, rows


def _clip_columns(cfg: dict, s: dict) -> tuple[str, str]:
    """The clip and evaluation-view columns: anticipation clips are defined by a frame rate,
    violation-of-expectation windows by a stride and context lengths."""
    if cfg.get("kind") == "anticipation":
        a = cfg.get("anticipation") or {}
        return f"{a.get('frames_per_clip')}f at {a.get('fps')} fps", "1 seg x 1 views"
    if cfg.get("kind") == "voe":
        return (f"{s.get('frames_per_clip')}f step {s.get('frame_step')}",
                f"windows every {s.get('stride')}, context {s.get('context_frames')}")
    return (f"{s.get('frames_per_clip')}f step {s.get('frame_step')}",
            f"{s.get('eval_segments', 1)} seg x {s.get('eval_views', 1)} views")


def task_layout(name: str, cfg: dict) -> str:
    """What a user puts on disk for `name`: the publisher's layout that `harness data prepare`
    reads, or the manifests the task reads directly."""
    from tasks.native import PREPARERS, layout

    if name in PREPARERS:
        return f"{layout(name)}; then `harness data prepare {name} --root ROOT`"
    if cfg.get("temporal_probe"):
        return ("any video task's manifests (`path label` per line; the labels are not used): "
                "point task.data.root / train / val at them")
    if name.startswith("digits"):
        return "made by `harness data make digits --out data/digits`"
    if name == "physics_synth":
        return "made by `harness data make physics --out data/physics`"
    return "manifests `path label` per line (train/val) and a class list, one name per line"


def render(header: list[str], rows: list[list[str]], fmt: str, title: str) -> None:
    """The listing in `fmt`; names and descriptions (a user's task YAML may hold anything) are
    neutralised for each format: no formula cells, no HTML, no terminal control sequences."""
    import sys

    from results.escape import csv_safe, markdown_escape, printable

    if fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow([csv_safe(h) for h in header])
        w.writerows([[csv_safe(c) for c in r] for r in rows])
        return
    if fmt == "markdown":
        print("| " + " | ".join(markdown_escape(h) for h in header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(markdown_escape(c) for c in r) + " |")
        return
    header = [printable(h, multiline=False) for h in header]
    rows = [[printable(c, multiline=False) for c in r] for r in rows]
    if fmt == "plain" or not sys.stdout.isatty():
        # Piped or redirected: whole names in aligned columns, nothing cut to a terminal width
        # (`harness encoders | grep vjepa_vith384` must find it).
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(header)]
        for line in [header, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title)
        for h in header:
            # Long descriptions would fold the table into a tower: one line each, the full
            # text is in --format markdown/csv and the YAML.
            table.add_column(h, no_wrap=True, overflow="ellipsis",
                             max_width=60 if h == "description" else None)
        for r in rows:
            table.add_row(*(Text(c) for c in r))  # data, never rich markup
        Console().print(table)


def verbose_encoders(fmt: str) -> None:
    import json

    import encoders
    from encoders.metadata import describe
    from encoders.predictors import predictor_summary

    cfgs = [encoders.compose(name) for name in encoders.names()]
    entries = [{**describe(c), "predictor": predictor_summary(c)} for c in cfgs]
    if fmt == "csv":
        import csv
        import sys

        keys = ["name", "family", "paper", "weights", "licence", "pretraining_data", "clip",
                "parameters", "gflops_per_clip", "predictor"]
        w = csv.writer(sys.stdout)
        w.writerow(keys)
        for e in entries:
            w.writerow([e.get(k, "") for k in keys])
        return
    for e in entries:
        inp = e["input"]
        print(f"{e['name']} ({e['family']})")
        for key in ("paper", "weights", "licence", "pretraining_data", "notes"):
            if e.get(key):
                print(f"  {key.replace('_', ' ')}: {e[key]}")
        print(f"  input: {inp['frames']} frame(s) x {inp['resolution']} px, mean "
              f"{json.dumps(inp['mean'])}, std {json.dumps(inp['std'])}")
        print(f"  cost: {e['parameters'] / 1e6:.1f}M parameters, {e['gflops_per_clip']:g} GFLOPs "
              f"per {e['clip']} clip")
        print(f"  predictor: {e['predictor']}")


def main(args) -> int:
    if args.listing == "encoders" and getattr(args, "verbose", False):
        verbose_encoders(args.format)
        return 0
    if args.listing == "encoders":
        header, rows = encoder_rows()
        render(header, rows, args.format, "encoders")
    else:
        header, rows = task_rows()
        render(header, rows, args.format, "tasks")
    return 0
