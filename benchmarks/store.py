"""The result store at lab scale: the index against the file scan, on synthetic stores.

Makes stores of N records (default 1k, 10k, 100k; `--sizes 1000000` for a million) by copying
one real record and varying its encoder, task and seed (each copy its own run: a new run id,
protocol id per task, creation time), then runs each command in a fresh process and prints its
wall time and peak RSS:

    leaderboard  `harness leaderboard --format plain`
    compare      `harness compare RUN_A RUN_B` (two records given predictions)
    table        `harness table vjepa-frozen`
    export       `harness results export store.csv`

each three ways: cold (no index yet: the first read builds it), warm (the index up to date),
and scan (every record file read and parsed: how every read worked before the index).

    .venv/bin/python benchmarks/store.py --record runs/demo/records/X.json --sizes 1000,10000
    .venv/bin/python benchmarks/store.py --sizes 100000 --only leaderboard --no-scan

Without --record a record is made by `results.make_record` with a protocol of the shape a
run writes (no predictions then: `compare` is skipped). The stores go under --dir (default a
temporary folder, removed at the end unless --keep); each record file is a few KB, so check
free disk first (`df -h`): 100k records take about 0.8 GB, 1M about 8 GB.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMMANDS = ("leaderboard", "compare", "table", "export")
ENCODERS, TASKS = 20, 10


def default_record() -> dict:
    from results import make_record

    protocol = {"protocol_version": 2, "precision": "fp32",
                "probe": {"kind": "attentive", "epochs": 20, "batch_size": 256, "lr": 5e-4},
                "task": {"name": "k400", "sampling": {"frames_per_clip": 16, "frame_step": 4,
                                                      "eval_segments": 8, "eval_views": 3},
                         "manifests": {"eval": {"videos": 1000, "sha256": "0" * 64}}}}
    return make_record(encoder={"name": "vjepa_vitl", "metadata": {"parameters": 3e8}},
                       checkpoint={"path": "/ckpt/a.pth", "sha256": "a" * 64, "step": 1},
                       task="k400", split="val", protocol=protocol,
                       metrics={"top1": 50.0, "top5": 80.0, "num_samples": 1000},
                       data_problems={}, timings={"wall_seconds": 100.0}, seed=0, device="cpu",
                       extra={"command": "harness run --encoder vjepa_vitl --task k400 "
                                         "task.data.root=/data/k400", "run_id": "0" * 16})


def make_store(root: Path, n: int, template: dict, predictions: Path | None) -> list[str]:
    """`n` record files under `root/records`; returns the run ids of the two records given a
    copy of the template's predictions (for compare)."""
    from common.digest import json_digest
    from results.predictions import predictions_path
    from results.record import protocol_id, record_filename

    folder = root / "records"
    folder.mkdir(parents=True, exist_ok=True)
    start = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    protocols = {}
    for t in range(TASKS):
        protocol = copy.deepcopy(template.get("protocol") or {})
        task_part = protocol.setdefault("task", {})
        if isinstance(task_part, dict):
            task_part["name"] = f"task{t}"
        protocols[t] = (protocol, protocol_id(protocol))
    compared = []
    for i in range(n):
        enc, task, seed = i % ENCODERS, (i // ENCODERS) % TASKS, i // (ENCODERS * TASKS)
        rec = copy.deepcopy(template)
        rec["encoder"]["name"] = f"enc{enc:02d}"
        rec["encoder"].pop("label", None)
        rec["task"] = f"task{task}"
        rec["protocol"], rec["protocol_id"] = protocols[task]
        rec["seed"] = seed
        rec["created"] = (start + _dt.timedelta(seconds=i)).isoformat(timespec="microseconds")
        rec["metrics"] = {**rec["metrics"], "top1": float((i * 7919) % 1000) / 10}
        extra = rec.setdefault("extra", {})
        extra["run_id"] = json_digest({"i": i}, 16)
        extra.pop("predictions", None)
        path = folder / record_filename(rec)
        if predictions is not None and i in (0, 1):  # two encoders, one task and seed
            shutil.copyfile(predictions, predictions_path(path))
            extra["predictions"] = predictions_path(path).name
            compared.append(extra["run_id"])
        path.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
        # Modified when created, as in a store that grew over months (the index stats again
        # the files modified in its last minutes: a store made a moment ago is all recent).
        when = (start + _dt.timedelta(seconds=i)).timestamp()
        os.utime(path, (when, when))
    return compared


def reused(root: Path) -> list[str]:
    """The compared run ids of a kept store (the records given predictions)."""
    out = []
    for npz in sorted((root / "records").glob("*.predictions.npz")):
        rec = json.loads(npz.with_name(npz.name.replace(".predictions.npz", ".json")).read_text())
        out.append(rec["extra"]["run_id"])
    return out


def child(argv: list[str]) -> None:
    """Run one command (stdout discarded) and print this process's peak RSS in KB."""
    import contextlib
    import io
    import resource

    scan = argv[0] == "scan"
    import results.store

    if scan:  # how every read worked before the index: every file read on every call
        results.store.ResultStore.__init__.__kwdefaults__["scan"] = True
    from harness.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv[1:])
    print(json.dumps({"rc": rc, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),
          file=sys.__stdout__)


def measure(mode: str, args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one command in a fresh process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", mode, *args], cwd=REPO, check=False,
                         capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    try:
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.stderr.write(out.stderr[-2000:])
        return wall, float("nan"), out.returncode
    return wall, info["rss_kb"] / 1024, info["rc"]


def command_args(name: str, root: Path, compared: list[str], out: Path) -> list[str] | None:
    if name == "leaderboard":
        return ["leaderboard", "--results", str(root), "--format", "plain"]
    if name == "compare":
        return ["compare", *compared, "--results", str(root)] if len(compared) == 2 else None
    if name == "table":
        return ["table", "vjepa-frozen", "--results", str(root)]
    return ["results", "export", str(out), "--results", str(root)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--record", help="a real record file to copy (its predictions too)")
    p.add_argument("--dir", help="where the stores go (default: a temporary folder)")
    p.add_argument("--only", help="comma-separated commands (default: all)")
    p.add_argument("--no-scan", action="store_true", help="skip the file-scan runs")
    p.add_argument("--modes", default="cold,warm,scan",
                   help="comma-separated modes to run of cold, warm, scan (default: all; a warm "
                        "run without a cold one first uses the index the store holds)")
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--reuse", action="store_true",
                   help="use a store of the same size kept under --dir by an earlier --keep")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child)
    from results.index import INDEX_NAME
    from results.predictions import predictions_path

    if args.record:
        template = json.loads(Path(args.record).read_text())
        pred = predictions_path(Path(args.record))
        predictions = pred if pred.is_file() else None
    else:
        template, predictions = default_record(), None
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="store-bench-"))
    names = args.only.split(",") if args.only else list(COMMANDS)
    print(f"{'records':>8} {'command':<12} {'mode':<5} {'wall s':>8} {'peak MB':>8}  rc",
          flush=True)
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            root = base / f"store{n}"
            if args.reuse and root.is_dir():
                compared = reused(root)
                print(f"# {n} records reused under {root}", flush=True)
            else:
                if root.exists():
                    shutil.rmtree(root)
                t0 = time.perf_counter()
                compared = make_store(root, n, template, predictions)
                print(f"# {n} records made in {time.perf_counter() - t0:.1f} s under {root}",
                      flush=True)
            for name in names:
                cmd = command_args(name, root, compared, base / f"export{n}.csv")
                if cmd is None:
                    print(f"{n:>8} {name:<12} skipped (no record with predictions: --record)")
                    continue
                modes = [m for m in args.modes.split(",") if not (args.no_scan and m == "scan")]
                for mode in modes:
                    if mode == "cold":
                        for suffix in ("", "-wal", "-shm"):
                            Path(str(root / INDEX_NAME) + suffix).unlink(missing_ok=True)
                    wall, rss, rc = measure(mode, cmd)
                    print(f"{n:>8} {name:<12} {mode:<5} {wall:>8.2f} {rss:>8.0f}  {rc}",
                          flush=True)
            if not args.keep:
                shutil.rmtree(root)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
