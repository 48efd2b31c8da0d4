"""`harness demo`: pretrain, probe and compare tiny encoders on CPU, on data it makes."""
from __future__ import annotations

import argparse

EPILOG = """\
Makes data/digits if missing, pretrains three tiny encoders (video-latent V-JEPA, video-pixel,
image-latent) for the same number of steps, probes each plus a random-init floor (and an ImageNet
MobileNetV2 run frame by frame when its weights package is installed) on digits_motion and
digits_appearance, then prints the leaderboard and writes <out>/report.md and <out>/demo.png.
--budget 1.0 takes about 6 minutes on 2 CPU cores; 0.2 is a quick smoke run; 3 trains longer.
--seeds 3 repeats every probe run with seeds seed, seed+1, seed+2 (for the random-init floor the
seed also draws the encoder) and reports mean +- sd. The test splits (800 and 1,000 videos) put
the standard error of one top-1 at about 1-1.5 points; the probe seed adds about as much.
Every run of the demo reads the same videos: each process decodes them once and keeps them in
RAM (about 1 GiB a process).
Re-running resumes finished pretraining and probe runs from their saved state.
On a CPU the runs go two at a time, each in its own one-thread process (--jobs): a second
intra-op thread in one run costs time on 2 cores, a second process does not.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data", default="data/digits", help="digits data folder (default data/digits)")
    p.add_argument("--budget", type=float, default=1.0,
                   help="scale of pretraining steps, 450 per variant at 1.0 (default 1.0); "
                        "probes always use the tasks' own protocol")
    p.add_argument("--seeds", type=int, default=1,
                   help="probe runs per encoder and task, seeds seed..seed+N-1 (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete <out> first and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads for pretraining and probes (default: 1 on CPU, "
                        "where more threads cost CPU time without saving wall time; torch's "
                        "default on a GPU)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="runs (pretraining, probes, VoE scoring) side by side, each in its own "
                        "process (default: 2 on a CPU with 2 cores or more, else 1); the numbers "
                        "are the same for any N")


def main(args) -> int:
    if args.budget <= 0:
        raise ValueError("--budget must be positive (1.0 is about 6 minutes on 2 CPU cores)")
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    if args.torch_threads is not None and args.torch_threads < 1:
        raise ValueError("--torch-threads must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError("--jobs must be at least 1")
    from harness.demo import run_demo

    run_demo(out=args.out, data=args.data, budget=args.budget, seed=args.seed, seeds=args.seeds,
             progress=not args.no_progress, fresh=args.fresh, torch_threads=args.torch_threads,
             jobs=args.jobs)
    return 0
