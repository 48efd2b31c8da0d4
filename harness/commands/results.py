"""`harness results`: the result store as a whole: export, import, schema, reindex."""
from __future__ import annotations

import argparse

EPILOG = """\
  harness results export store.parquet --results runs    # every record, as one file
  harness results import store.parquet --results runs    # merge another machine's records
  harness results schema                                 # the frame's columns, the index
  harness results reindex --results runs                 # rebuild <results>/index.sqlite

Every reader goes through `<results>/index.sqlite`, an SQLite index of the record files that
each read brings up to date with what changed on disk (new, rewritten, deleted or torn files);
the records stay the truth and the index can be deleted at any time. Export streams the store
a chunk at a time.

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
    p.add_argument("action", choices=["export", "import", "schema", "reindex"])
    p.add_argument("file", nargs="?", help="the .parquet or .csv file (export, import)")
    add_results_argument(p)


def main(args) -> int:

    import results
    from results.exchange import export_store
    from results.frame import SCHEMA, SCHEMA_VERSION

    from harness.output import print_line

    if args.action == "schema":
        from results.index import describe

        print_line(f"result store frame, schema version {SCHEMA_VERSION} (then one column per "
                   f"metric):")
        width = max(len(c) for c in SCHEMA)
        for column, what in SCHEMA.items():
            print_line(f"  {column.ljust(width)}  {what}")
        print_line("")
        for line in describe():
            print_line(line)
        return 0
    if args.action == "reindex":
        from results.index import RecordIndex

        root = results.default_root(args.results)
        if not root.is_dir():
            raise FileNotFoundError(f"no results at '{root}': pass --results DIR or set "
                                    f"HARNESS_RESULTS")
        index = RecordIndex(root)
        n = index.rebuild()
        bad = len(index.problems())
        index.close()
        print_line(f"indexed {n} record(s) under {root} into {index.path}"
                   + (f" ({bad} file(s) that are no usable record: see `harness leaderboard`)"
                      if bad else ""))
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
        print_line(f"exported {n} record(s) from {root} to {args.file}")
        return 0
    return run_import(args.file, root)


def run_import(file, root) -> int:
    """`harness results import` and `harness leaderboard --import`: 0 when every row was
    imported, 1 when rows were left out (each reported), 128 + the signal when stopped."""
    import sys

    from harness.output import print_line
    from results.exchange import ImportInterrupted, import_store

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
