"""One record per run: of several records of one run identity the newest stands, and records
of one run that differ in their metrics are said (a re-run that did not reproduce, or a record
edited or forged, is never resolved silently). The file scan applies `latest_per_run` to records
in memory; the index does the same selection in SQL and words its conflicts with
`conflict_text`, so both say the same."""
from __future__ import annotations

import math

from common.digest import canonical_json
from results.frame import run_identity
from results.record import record_created


def metrics_key(rec: dict) -> str:
    metrics = rec.get("metrics") if isinstance(rec.get("metrics"), dict) else {}
    # NaN == NaN here (a metric not computed in both records is no difference).
    return canonical_json({k: ("nan" if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in metrics.items()})


def latest_per_run(records: list[dict], conflicts: list | None = None) -> list[dict]:
    """Of several records of one run identity, the newest (by `created`, read as a time; the
    later file name breaks a tie); order kept. Runs whose records differ in their metrics are
    described in `conflicts` (when given): a re-run that did not reproduce, or a record edited
    or forged, is never resolved silently."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(run_identity(rec), []).append(rec)
    keep = set()
    for key, recs in groups.items():
        ordered = sorted(recs, key=lambda r: (record_created(r), str(r.get("_path", ""))))
        newest = ordered[-1]
        keep.add(id(newest))
        if conflicts is not None and len({metrics_key(r) for r in recs}) > 1:
            conflicts.append(conflict_text(key, ordered))
    return [r for r in records if id(r) in keep]


def conflict_text(key: str, ordered: list[dict]) -> str:
    names = sorted({n for r in ordered for n in (r.get("metrics") or {})
                    if any(_metric(o, n) != _metric(r, n) for o in ordered)})
    shown = "; ".join(
        f"{r.get('_path', '<in memory>')} (created {r.get('created')}: "
        + ", ".join(f"{n} {_metric(r, n)}" for n in names[:4]) + ")" for r in ordered)
    return (f"run {key}: {len(ordered)} records of the same run differ in "
            f"{', '.join(names[:4]) or 'their metrics'}: {shown}. The newest is shown; if it is "
            f"not the right one, delete the record that is wrong (or re-run the run)")


def _metric(rec: dict, name: str):
    value = (rec.get("metrics") or {}).get(name)
    return "nan" if isinstance(value, float) and math.isnan(value) else value


