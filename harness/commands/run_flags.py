"""The flags of `harness run`, shared with `harness launch` (which takes every one of them)."""
from __future__ import annotations

import argparse

from harness.config import quote_override

EPILOG = """\
Flags are sugar over Hydra overrides: --encoder X is encoder=X, --task Y is task=Y, --probe Z is
probe=Z, --checkpoint P is checkpoint=P, --out D is out=D. Any other key of the composed config
can be set as key=value, for example:

  harness run --encoder vjepa_tiny --random-init --task digits_motion task.optim.epochs=3
  harness run --encoder vjepa_vitl --checkpoint vitl16.pth.tar --task ssv2 task.data.root=/data/ssv2
  harness run --encoder vjepa_tiny --random-init --task digits_motion --show-config

Batches: task.optim.batch_size is the global batch of the protocol (the paper's 256);
micro_batch_size=N (not protocol) sets how many samples go through the encoder at once, and
gradients are accumulated to the global batch, so any device reproduces the protocol:

  harness run --encoder vjepa_vitl --checkpoint vitl16.pth.tar --task k400 micro_batch_size=4
  harness run --encoder vjepa_vitl --task k400 --dry-run     # cost before anything long starts

Before training, every file of the train and evaluation splits is checked to exist, the label
map is checked against class folders, and the first clip is decoded: all before the checkpoint
is read.

Where things go: the record is written atomically to <out>/records/; the probe's training state
is saved to <out>/state/ after every epoch and, within an epoch, at the first step boundary
after 5 minutes (state_save_every_s) since the last save; on SIGTERM (what SLURM sends before
preemption) or SIGUSR1 (its warning signal) it is saved at the next step and the run exits with
status 143. Re-running an interrupted command resumes from that state (to identical numbers);
re-running a finished command prints its record and does nothing; the same command started
while it runs refuses. The state file carries a checksum: a damaged one is refused.

Several GPUs: the same command under torchrun shards the batches and the evaluation split over
the ranks (the record equals a one-process run's):

  torchrun --nproc-per-node 8 -m harness.cli run --encoder vjepa_vitl --checkpoint vitl16.pth.tar --task k400

A cluster: `harness launch` (or --launcher slurm) submits through submitit.

Violation-of-expectation tasks (kind voe: physics_synth, intphys, grasp, inflevel, intphys2)
train no probe: the checkpoint's predictor (or VideoMAE's decoder) is scored by its surprise on
every pair, and the record holds the paper's pairwise accuracy (paper_relative_mean) with
bootstrap intervals; eval_batch_size=N sets the windows per encoder call (not protocol):

  harness data make physics --out data/physics
  harness run --encoder vjepa_tiny --checkpoint latest.pth.tar --task physics_synth
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--encoder", help="encoder name (see `harness encoders`)")
    p.add_argument("--task", help="task name (see `harness tasks`)")
    p.add_argument("--probe", choices=None, help="probe kind: attentive (default; a task may name its protocol's own: AVA's "
                        "roi_linear), attentive_v2, linear, knn or roi_linear")
    p.add_argument("--checkpoint", help="encoder checkpoint (.pth/.pth.tar/.pt/.safetensors); a "
                   "quoted glob ('ckpts/*.pth.tar') evaluates each in step order, skipping those "
                   "already recorded")
    p.add_argument("--checkpoint-key", help="top-level key in the checkpoint (default: the "
                   "encoder's, target_encoder for V-JEPA)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need pickle (runs code from the file: only for "
                        "files you trust)")
    p.add_argument("--random-init", action="store_true",
                   help="use a randomly initialised encoder (recorded as such)")
    p.add_argument("--out", help="results root (default: runs)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--no-resume", action="store_true", help="start over even if state exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--show-config", action="store_true",
                   help="print the composed config and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="check the data, then print the protocol, clip and forward counts, memory "
                        "per micro-batch and a time estimate from a short warm-up; train nothing")
    p.add_argument("--probe-checkpoint",
                   help="evaluate this trained probe (the release's `classifier` file) without "
                        "training one")
    p.add_argument("--split", help="train on a label-efficiency fold written by `harness data "
                   "split` (e.g. 10pct:seed1); its manifest hash enters the protocol")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="also look for task configs (NAME.yaml) in DIR (repeatable; also "
                        "$HARNESS_INCLUDE_PATH); `--task path/to/task.yaml` works too")
    p.add_argument("--launcher", choices=("slurm", "local"),
                   help="submit this run through submitit instead of running it here: slurm, or "
                        "local (this machine); `harness launch` has the resource options")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides")


def overrides_from_args(args) -> list[str]:
    flags = {
        "encoder": args.encoder, "task": args.task, "probe": args.probe,
        "checkpoint": args.checkpoint, "checkpoint_key": args.checkpoint_key,
        "out": args.out, "seed": args.seed, "device": args.device,
        "probe_checkpoint": getattr(args, "probe_checkpoint", None),
    }
    out = [f"{k}={quote_override(v)}" for k, v in flags.items() if v is not None]
    if getattr(args, "split", None):
        from tasks.native.splits import fold_override

        fold = fold_override(args.split)
        out.append(f"task.data.train={quote_override(fold['data']['train'])}")
        f = fold["train_fold"]
        out.append(f"+task.train_fold={{fraction: {f['fraction']!r}, seed: {f['seed']}}}")
    if args.trust_checkpoint:
        out.append("trust_checkpoint=true")
    if args.random_init:
        out.append("random_init=true")
    if args.no_resume:
        out.append("resume=false")
    if args.no_progress or getattr(args, "quiet", False):
        out.append("progress=false")
    return out + list(args.overrides)
