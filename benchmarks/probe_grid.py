"""One encoder pass for a grid of probe heads vs one run per head, side by side.

    .venv/bin/python benchmarks/probe_grid.py [--heads 20] [--epochs 3]

Makes a small digits set (6/2/4 videos per class) and runs `harness run` with the online data
path (cache_features=false: every epoch decodes and encodes, as K400 and SSv2 do): once with a
grid of H heads (V-JEPA 2's 5 lr x 4 wd), and H times with one head each (the same points),
then the grid again; prints wall times and the ratio. Each run is a separate process.
"""
from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LRS = [5e-3, 3e-3, 1e-3, 3e-4, 1e-4]
WDS = [0.01, 0.1, 0.4, 0.8]


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "run", *args], check=True,
                   capture_output=True, text=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heads", type=int, default=20, help="grid size, at most 20 (default 20)")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    points = list(itertools.product(LRS, WDS))[: a.heads]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        subprocess.run([sys.executable, "-m", "harness", "data", "make", "digits", "--out", str(data),
                        "--per-class", "6", "2", "4"], check=True, capture_output=True)
        common = ["--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
                  f"task.data.root={data}", f"task.optim.epochs={a.epochs}", "cache_features=false",
                  "--no-progress"]
        lrs = sorted({lr for lr, _ in points}, reverse=True)
        wds = sorted({wd for _, wd in points})
        grid = f"probe.grid={{lr: {lrs}, weight_decay: {wds}}}"
        first = run(common + ["--out", f"{tmp}/g1", grid])
        singles = [run(common + ["--out", f"{tmp}/s{i}", f"task.optim.lr={lr}",
                                 f"task.optim.weight_decay={wd}"]) for i, (lr, wd) in enumerate(points)]
        second = run(common + ["--out", f"{tmp}/g2", grid])
    grid_s = (first + second) / 2
    print(f"{len(points)} heads, {a.epochs} epochs, online data path, vjepa_tiny on CPU")
    print(f"  one run with a grid of {len(points)} heads: {grid_s:.1f} s (runs: {first:.1f}, {second:.1f})")
    print(f"  {len(points)} runs of one head:            {sum(singles):.1f} s (median run {sorted(singles)[len(singles) // 2]:.1f} s)")
    print(f"  speed-up: {sum(singles) / grid_s:.1f}x")


if __name__ == "__main__":
    main()
