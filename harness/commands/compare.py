"""`harness compare A B`: is the difference between two runs real? A paired test on the same
evaluation samples, from the per-sample predictions saved beside each record."""
from __future__ import annotations

import argparse

from harness.output import print_line

EPILOG = """\
A and B are record files (runs/records/*.json), run ids (extra.run_id, or a unique prefix of 6
or more characters), or names matched against the records under --results: a run's label
(`label=...`), an encoder label (`vjepa_tiny (depth 2)`) or an encoder name. A name that fits
several records (two checkpoints, seeds, tasks) is refused with the list of them: pick one by
its record file or run id, or narrow with --task.

  harness compare runs/records/a.json runs/records/b.json
  harness compare "video, latent targets (V-JEPA)" "random init (floor)" --task digits_motion \\
      --results runs/demo

Refused when the two records were made under different protocols (protocol_id) or evaluated
different samples: a paired test needs the same samples under the same protocol.
Prints each run's encoder and checkpoint (file name, sha256 prefix, step), its top-1 with a
bootstrap 95% interval, the difference with its paired bootstrap interval and p-value, and
McNemar's exact test on the samples exactly one of them got right.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("a", help="record file, run id, run label, encoder label or encoder name")
    p.add_argument("b", help="record file, run id, run label, encoder label or encoder name")
    p.add_argument("--task", help="task, when A/B are names")
    p.add_argument("--results", default=None,
                   help="results root searched for names (default: $HARNESS_RESULTS, else runs)")
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)


def checkpoint_text(record: dict) -> str:
    """`latest.pth.tar (sha256 1a2b3c4d, step 450)`, `random init`, or `no checkpoint`."""
    from results.frame import checkpoint_label

    ckpt = record.get("checkpoint") or {}
    label = checkpoint_label(ckpt)
    if label == "random-init":
        return "random init"
    if label == "none":
        return "no checkpoint"
    facts = []
    if isinstance(ckpt.get("sha256"), str) and ckpt["sha256"]:
        facts.append(f"sha256 {ckpt['sha256'][:8]}")
    for key in ("step", "epoch"):
        if ckpt.get(key) is not None:
            facts.append(f"{key} {ckpt[key]}")
            break
    return f"{label} ({', '.join(facts)})" if facts else label


def run_name(record: dict) -> str:
    """The run as a reader knows it: its label, else its encoder's label (registry name plus
    the architecture that differs from the entry)."""
    from results.frame import encoder_label

    return (record.get("extra") or {}).get("label") or encoder_label(record.get("encoder"))


def _candidates(hits: list[dict]) -> str:
    from results.frame import encoder_label, run_identity

    lines = []
    for r in sorted(hits, key=lambda r: (str(r.get("task")), str(r.get("created")))):
        label = (r.get("extra") or {}).get("label")
        lines.append(f"  {r['_path']}\n    run id {run_identity(r)}; {r.get('task')} "
                     f"({r.get('split')}); {encoder_label(r.get('encoder'))}"
                     + (f", label {label!r}" if label else "")
                     + f"; checkpoint {checkpoint_text(r)}; seed {r.get('seed')}; "
                     f"protocol {r.get('protocol_id')}; created {r.get('created')}")
    return "\n".join(lines)


def find(ref: str, task: str | None, root, store_records: list | None = None) -> tuple:
    """(record path, record) that `ref` names; ValueError when none or several fit. A record
    file is read by the one reader (checked like every record); names are looked up in
    `store_records` (the store's records, read once by the caller) or the store under `root`."""
    from pathlib import Path

    import results
    from results.frame import encoder_label, run_identity

    path = Path(ref)
    if path.is_file():
        return path, results.read_record(path)
    root = results.default_root(root)
    if store_records is None:
        store_records = _store_records(root, [ref])
    records = [r for r in store_records if task is None or r.get("task") == task]
    # Most specific first: a run id, then a run's label, then an encoder label, then a name.
    tiers = [
        [r for r in records if run_identity(r) == ref or Path(r["_path"]).stem == ref],
        [r for r in records if len(ref) >= 6 and run_identity(r).startswith(ref)],
        [r for r in records if (r.get("extra") or {}).get("label") == ref],
        [r for r in records if encoder_label(r.get("encoder")) == ref],
        [r for r in records if (r.get("encoder") or {}).get("name") == ref],
    ]
    hits = next((t for t in tiers if t), [])
    if not hits:
        raise ValueError(f"no record named {ref!r}" + (f" on task {task!r}" if task else "")
                         + f" under {root}; pass a record file or run id, or check "
                           f"--results/--task")
    if len(hits) > 1:
        tasks = {r.get("task") for r in hits}
        narrow = " or narrow with --task" if len(tasks) > 1 and task is None else ""
        raise ValueError(f"{ref!r} fits {len(hits)} records under {root}; pick one by its record "
                         f"file or run id{narrow}:\n{_candidates(hits)}")
    return Path(hits[0]["_path"]), hits[0]


def _store_records(root, refs: list[str]) -> list:
    """The store's records that any of `refs` could name (by run id or its prefix, record
    file stem, run label, encoder label or encoder name), once: the index picks them, so only
    their files are read. The files left out are said once, with their reasons."""
    from pathlib import Path

    import results
    from harness.output import report_skipped

    store = results.ResultStore(root)
    if not store.root.is_dir():
        return []
    records = []
    for path in store.named_paths(refs):
        rec = store.read(Path(path))
        if rec is not None:
            rec["_path"] = path
            records.append(rec)
    report_skipped(store)
    return records


def main(args) -> int:
    from pathlib import Path

    import results
    from results.predictions import correct, record_predictions
    from results.stats import align, bootstrap_ci, paired

    named = [ref for ref in (args.a, args.b) if not Path(ref).is_file()]
    store_records = _store_records(results.default_root(args.results), named) if named else []
    (pa, ra), (pb, rb) = (find(args.a, args.task, args.results, store_records),
                          find(args.b, args.task, args.results, store_records))
    if ra["protocol_id"] != rb["protocol_id"]:
        raise ValueError(f"the records were made under different protocols ({ra['protocol_id']} "
                         f"vs {rb['protocol_id']}): their numbers are not comparable")
    preds = []
    for path, rec in ((pa, ra), (pb, rb)):
        try:
            pred = record_predictions(rec, path)
        except FileNotFoundError as err:
            raise ValueError(f"no paired test: {err}") from None
        if "topk_index" not in pred:
            raise ValueError(f"no paired top-1 test: {path} holds {pred.get('kind', 'other')} "
                             f"predictions (scores per class), not classification top-k")
        preds.append(pred)
    ia, ib = align(*preds)
    a, b = correct(preds[0])[ia], correct(preds[1])[ib]
    res = paired(a, b, n_boot=args.bootstrap, seed=args.seed)

    print_line(f"{ra['task']} ({ra['split']}), protocol {ra['protocol_id']}, {res.n} samples, top-1:")
    for tag, rec, x in (("A", ra, a), ("B", rb, b)):
        lo, hi = bootstrap_ci(x, n_boot=args.bootstrap, seed=args.seed)
        print_line(f"  {tag} {run_name(rec)} [{checkpoint_text(rec)}]: {100 * x.mean():.1f} "
              f"(95% CI {100 * lo:.1f} to {100 * hi:.1f})")
    verdict = "significant" if res.significant else "not significant"
    print_line(f"  difference A - B: {100 * res.diff:+.1f} points (paired 95% CI {100 * res.ci[0]:+.1f} "
          f"to {100 * res.ci[1]:+.1f}, bootstrap p = {res.p_bootstrap:.3f}): {verdict} at 5%")
    print_line(f"  McNemar exact: {res.only_a} samples right for A only, {res.only_b} for B only, "
          f"p = {res.p_mcnemar:.3g}")
    return 0
