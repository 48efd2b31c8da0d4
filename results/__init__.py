"""Result records, the result store, leaderboards and the paper's reference tables.

Never imports torch or model code; pandas and yaml are imported inside the functions that need
them, so `import results` stays light.
"""
from __future__ import annotations

# Imported eagerly on purpose: importing the submodule `results.leaderboard` sets the package
# attribute `leaderboard` to the module; binding the function afterwards here keeps
# `results.leaderboard(...)` the function however the submodule is imported later.
from results.columns import protocol_diff
from results.leaderboard import Leaderboard, leaderboard
from results.formats import render
from results.record import (PROTOCOL_VERSION, make_record, protocol_id, read_record,
                            record_filename, record_protocol_version, write_record)
from results.reference import load_reference_tables
from results.frame import checkpoint_label, records_frame
from results.store import ResultStore, default_root

__all__ = ["PROTOCOL_VERSION", "Leaderboard", "ResultStore", "record_protocol_version", "checkpoint_label", "default_root", "leaderboard",
           "load_reference_tables", "make_record", "protocol_diff", "protocol_id", "read_record",
           "record_filename", "records_frame", "render", "write_record"]
