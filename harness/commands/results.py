"""`harness results`: the result store as a whole: export, import, schema."""
from __future__ import annotations

import argparse

EPILOG = """\
  harness results export store.parquet --results runs    # every record, as one file
  harness results import store.parquet --results runs    # merge another machine's records
  harness results schema                                 # the frame's columns, documented

Importing writes each record under its original name (atomically): importing the same file
twice, or records that are already here, adds nothing. Per-sample predictions are not part of
an export: statistics on imported records fall back to their counts.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands.leaderboard import add_results_argument

    p.epilog = EPILOG
    p.add_argument("action", choices=["export", "import", "schema"])
    p.add_argument("file", nargs="?", help="the .parquet or .csv file (export, import)")
    add_results_argument(p)


def main(args) -> int:
    import results
    from results.store import SCHEMA, SCHEMA_VERSION, export_store, import_store

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
        from harness.commands.leaderboard import report_problems

        report_problems(store)
        print(f"exported {n} record(s) from {root} to {args.file}")
        return 0
    written, present = import_store(args.file, root)
    print(f"imported {written} record(s) into {root / 'records'} ({present} already there)")
    return 0
