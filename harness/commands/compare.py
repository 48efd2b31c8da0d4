"""`harness compare A B`: is the difference between two runs real? A paired test on the same
evaluation samples, from the per-sample predictions saved beside each record."""
from __future__ import annotations

import argparse

EPILOG = """\
A and B are record files (runs/records/*.json), or names matched against the records under
--results: a record's label, or an encoder name (the newest record of it on --task).

  harness compare runs/records/a.json runs/records/b.json
  harness compare vjepa_tiny mobilenet_v2_imagenet --task digits_motion --results runs/demo

Refused when the two records were made under different protocols (protocol_id) or evaluated
different samples: a paired test needs the same samples under the same protocol.
Prints each run's top-1 with a bootstrap 95% interval, the difference with its paired bootstrap
interval and p-value, and McNemar's exact test on the samples exactly one of them got right.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("a", help="record file, record label or encoder name")
    p.add_argument("b", help="record file, record label or encoder name")
    p.add_argument("--task", help="task, when A/B are names")
    p.add_argument("--results", default=None,
                   help="results root searched for names (default: $HARNESS_RESULTS, else runs)")
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)


def _find(ref: str, task: str | None, root: str):
    from pathlib import Path

    import results

    path = Path(ref)
    if path.suffix == ".json" and path.is_file():
        return path, results.read_record(path)
    root = results.default_root(root)
    store = results.ResultStore(root)
    hits = [r for r in store.records()
            if (task is None or r.get("task") == task)
            and ref in ((r.get("extra") or {}).get("label"), r["encoder"].get("name"))]
    if not hits:
        raise ValueError(f"no record named {ref!r}" + (f" on task {task!r}" if task else "")
                         + f" under {root}; pass a record file or check --results/--task")
    newest = max(hits, key=lambda r: r["created"])
    return Path(newest["_path"]), newest


def main(args) -> int:
    from results.predictions import correct, read_predictions
    from results.stats import align, bootstrap_ci, paired

    (pa, ra), (pb, rb) = _find(args.a, args.task, args.results), _find(args.b, args.task, args.results)
    if ra["protocol_id"] != rb["protocol_id"]:
        raise ValueError(f"the records were made under different protocols ({ra['protocol_id']} "
                         f"vs {rb['protocol_id']}): their numbers are not comparable")
    preds_a, preds_b = read_predictions(pa), read_predictions(pb)
    ia, ib = align(preds_a, preds_b)
    a, b = correct(preds_a)[ia], correct(preds_b)[ib]
    res = paired(a, b, n_boot=args.bootstrap, seed=args.seed)

    def name(r):
        return (r.get("extra") or {}).get("label") or r["encoder"]["name"]

    print(f"{ra['task']} ({ra['split']}), protocol {ra['protocol_id']}, {res.n} samples, top-1:")
    for label, x in ((name(ra), a), (name(rb), b)):
        lo, hi = bootstrap_ci(x, n_boot=args.bootstrap, seed=args.seed)
        print(f"  {label}: {100 * x.mean():.1f} (95% CI {100 * lo:.1f} to {100 * hi:.1f})")
    verdict = "significant" if res.significant else "not significant"
    print(f"  difference A - B: {100 * res.diff:+.1f} points (paired 95% CI {100 * res.ci[0]:+.1f} "
          f"to {100 * res.ci[1]:+.1f}, bootstrap p = {res.p_bootstrap:.3f}): {verdict} at 5%")
    print(f"  McNemar exact: {res.only_a} samples right for A only, {res.only_b} for B only, "
          f"p = {res.p_mcnemar:.3g}")
    return 0
