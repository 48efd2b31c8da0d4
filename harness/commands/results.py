"""`harness results`: the result store as a whole: export, import, schema."""
from __future__ import annotations

import argparse

EPILOG = """\
  harness results export store.parquet --results runs    # every record, as one file
  harness results import store.parquet --results runs    # merge another machine's records
  harness results schema                                 # the frame's columns, documented

Importing writes each record atomically under `<results>/records/`, named from the record
itself (encoder, task, protocol id, creation time): importing the same file twice, or records
that are already here, adds nothing. The file is untrusted: every row's record is checked as a
record file is (types, finite metrics in range, a parseable time not in the future); a row that
fails is reported with its reason and left out (exit 1 when any was), the others are imported.
Nothing in the file decides where a file is written; a `records` folder that is a link leading
outside --results is refused. Per-sample predictions are not part of an export: statistics on
imported records fall back to their counts.

Exit status: 0 done; 1 done, but rows were left out; 2 an error (its one line says which file
and what to do: a read-only folder, a full disk, a file-size limit); 130 / 143 stopped by
Ctrl-C / SIGTERM between two records (every file written is whole: run it again).
"""


def add_results_argument(p: argparse.ArgumentParser) -> None:
    """`--results DIR`, the store every results command reads."""
    p.add_argument("--results", default=None,
                   help="results folder holding records/ (default: $HARNESS_RESULTS, else runs)")


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:

    p.epilog = EPILOG
    p.add_argument("action", choices=["export", "import", "schema"])
    p.add_argument("file", nargs="?", help="the .parquet or .csv file (export, import)")
    add_results_argument(p)


def main(args) -> int:

    import results
    from results.store import SCHEMA, SCHEMA_VERSION, export_store

    if args.action == "schema":
        print(f"result store frame, schema version {SCHEMA_VERSION} (then one column per metric):")
        width = max(len(c) for c in SCHEMA)
        for column, what in SCHEMA.items():
            print(f"  {column.ljust(width)}  {what}")
        return 0
    if not args.file:
        raise ValueError(f"`harness results {args.action}` needs a FILE (.parquet or .csv)")
    root = results.default_root(args.results)
    if args.action == "export":
        if not root.exists():
            raise FileNotFoundError(f"no results at '{root}': pass --results DIR or set "
                                    f"HARNESS_RESULTS")
        store = results.ResultStore(root)
        n = export_store(store, args.file)
        from harness.output import report_skipped

        report_skipped(store)
        print(f"exported {n} record(s) from {root} to {args.file}")
        return 0
    return run_import(args.file, root)


def run_import(file, root) -> int:
    """`harness results import` and `harness leaderboard --import`: 0 when every row was
    imported, 1 when rows were left out (each reported), 128 + the signal when stopped."""
    import sys

    from harness.output import print_line
    from results.store import ImportInterrupted, import_store

    try:
        done = import_store(file, root)
    except ImportInterrupted as stop:
        print_line(f"stopped: {stop}", file=sys.stderr)
        return 128 + stop.signum
    written, present = done
    skipped = getattr(done, "skipped", [])
    print_line(f"imported {written} record(s) into {root / 'records'} ({present} already there"
               + (f", {len(skipped)} row(s) left out: see the warnings above" if skipped else "")
               + ")")
    return 1 if skipped else 0
