"""Does pretraining beat random init? Pretrained checkpoints against the same encoder at random
init, under one long attentive-probe (or linear-probe) protocol, side by side in one run.

    python benchmarks/pretraining_margin.py \
        --checkpoint "V-JEPA 450 steps=runs/demo/pretrain/vjepa_tiny/latest.pth.tar" \
        [--checkpoint NAME=PATH ...] [--encoder vjepa_tiny] [--arch KEY=VALUE ...] \
        [--probe attentive|linear] [--copies 16] [--epochs 100] [--probe-seeds 2] [--shots 0] \
        [--tasks digits_motion,digits_appearance] [--data data/digits]

Why a script and not `harness demo`: the demo's probe (4 cached copies, 50 epochs) fits its
10-minute budget but is far from converged (random init on digits_appearance: 35.5% there, 43%
with 16 copies and 100 epochs, 47% with 200), so its differences mix feature quality with how
fast a probe learns. Here the augmented training clips (the task's own augmentation, K draws per video) are made
once per task and shared by every encoder, so a long probe costs ~25 s per encoder and task
on 2 CPU cores. The probe is the task's attentive probe and optimiser; only the number of cached
copies and epochs (and, with --shots, the labelled videos per class) differ from the task YAML.
`--probe linear` swaps in the linear probe (same optimiser): it learns no features of its own, so
it shows what the encoder's features hold; its mean over tokens discards their time order, so it
says nothing about digits_motion.

Prints test top-1 (mean and sd over probe seeds) per encoder and task, and each checkpoint's
difference from random init with the standard error of that difference (test-split sampling
and probe-seed spread). Needs the digits data: `harness data make digits --out data/digits`.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import encoders  # noqa: E402
import probes  # noqa: E402
import tasks  # noqa: E402
from probes.feature_cache import TokenBatches, TokenCache  # noqa: E402
from probes.forward import encode_views  # noqa: E402
from tasks.frame_cache import FrameCache  # noqa: E402

RANDOM = "random init"


def parse_checkpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--checkpoint takes NAME=PATH, got {item!r}")
        if not Path(path).is_file():
            raise SystemExit(f"--checkpoint {name}: no file at {path}")
        out[name] = path
    return out


def parse_arch(items: list[str]) -> dict:
    """`--arch KEY=VALUE` items as registry overrides `{"arch": {KEY: VALUE}}` (YAML values)."""
    import yaml

    arch = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--arch takes KEY=VALUE, got {item!r}")
        arch[key] = yaml.safe_load(value)
    return {"arch": arch} if arch else {}


def collect(dataset, batch_size: int = 64) -> list[dict]:
    """One unshuffled pass over a dataset, kept as the loader's batches."""
    return list(DataLoader(dataset, batch_size=batch_size, shuffle=False,
                           collate_fn=tasks.collate_clips))


def augmented_copies(task, spec, copies: int, seed: int, frame_cache) -> list[list[dict]]:
    """`copies` augmented passes over the train split, pass k seeded by (seed, k) like
    `probes.feature_cache.encode_copies`, made once and shared by every encoder."""
    train_set = task.dataset("train", train=True, mean=spec.mean, std=spec.std,
                             resolution=spec.resolution, frame_cache=frame_cache)
    passes = []
    for k in range(copies):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + k)
            passes.append(collect(train_set))
    return passes


@torch.no_grad()
def encode_passes(encoder, passes: list[list[dict]]) -> TokenCache:
    start = time.perf_counter()
    per_pass = [torch.cat([encode_views(encoder, b["video"][:, :, :1]) for b in p]) for p in passes]
    labels = torch.cat([torch.as_tensor(b["label"]).long() for b in passes[0]])
    return TokenCache(torch.cat(per_pass, dim=1), labels, [], time.perf_counter() - start)


def few_shot(cache: TokenCache, shots: int, seed: int) -> TokenCache:
    """`shots` training videos per class, drawn with a fixed seed (the same for every encoder)."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in cache.labels.unique().tolist():
        idx = torch.nonzero(cache.labels == c)[:, 0]
        keep.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
    keep = torch.cat(keep)
    return TokenCache(cache.tokens[keep], cache.labels[keep], [], cache.seconds)


def probe_once(encoder, task, cache: TokenCache, eval_batches: list[dict], epochs: int,
               seed: int, kind: str = "attentive") -> float:
    spec = encoder.spec
    optim = probes.OptimConfig.from_dict(dict(task.spec.optim, epochs=epochs))
    torch.manual_seed(seed)
    heads = {"num_heads": spec.num_heads} if kind == "attentive" else {}
    probe = probes.build(kind, embed_dim=spec.embed_dim, num_classes=task.num_classes, **heads)
    train = TokenBatches(cache, optim.batch_size, shuffle=True, pick_copy=True)
    result = probes.train_probe(encoder, probe, train, eval_batches, optim, progress=False)
    return float(result.metrics["top1"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="a pretraining checkpoint to compare with random init (repeatable)")
    ap.add_argument("--encoder", default="vjepa_tiny")
    ap.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE",
                    help="encoder arch override for every row, random init included "
                         "(repeatable), e.g. --arch patch_size=4 for checkpoints pretrained "
                         "with encoder_overrides={arch: {patch_size: 4}}")
    ap.add_argument("--tasks", default="digits_motion,digits_appearance")
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--copies", type=int, default=16, help="augmented copies per train video")
    ap.add_argument("--epochs", type=int, default=100, help="probe epochs")
    ap.add_argument("--probe-seeds", type=int, default=2)
    ap.add_argument("--probe", choices=("attentive", "linear"), default="attentive",
                    help="attentive (the tasks' protocol) or linear (mean-pooled tokens: learns "
                         "no features of its own; blind to time order, so not for digits_motion)")
    ap.add_argument("--shots", type=int, default=0,
                    help="labelled train videos per class (0: the whole train split)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the augmented copies")
    args = ap.parse_args(argv)
    checkpoints = parse_checkpoints(args.checkpoint)
    frame_cache = FrameCache(2 << 30)
    arch = parse_arch(args.arch)
    models = {RANDOM: encoders.build(args.encoder, random_init=True, seed=0, **arch)}
    for name, path in checkpoints.items():
        models[name] = encoders.build(args.encoder, checkpoint=path, **arch)
    spec = models[RANDOM].spec
    results: dict[tuple[str, str], list[float]] = {}
    eval_sizes = {}
    for task_name in args.tasks.split(","):
        task = tasks.build(task_name, root=args.data)
        t0 = time.perf_counter()
        passes = augmented_copies(task, spec, args.copies, args.seed, frame_cache)
        eval_batches = collect(task.dataset(task.spec.data["eval_split"], train=False,
                                            mean=spec.mean, std=spec.std,
                                            resolution=spec.resolution, frame_cache=frame_cache))
        eval_sizes[task_name] = sum(len(b["label"]) for b in eval_batches)
        print(f"{task_name}: {args.copies} augmented copies of the train split made in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        for name, model in models.items():
            t0 = time.perf_counter()
            cache = encode_passes(model, passes)
            if args.shots:
                cache = few_shot(cache, args.shots, args.seed)
            scores = [probe_once(model, task, cache, eval_batches, args.epochs, s, args.probe)
                      for s in range(args.probe_seeds)]
            results[(name, task_name)] = scores
            print(f"  {name:<28} top-1 {statistics.mean(scores):5.1f} "
                  f"({', '.join(f'{s:.1f}' for s in scores)}) in {time.perf_counter() - t0:.0f} s",
                  flush=True)
        del passes, eval_batches
    print_table(results, models, args, eval_sizes)


def print_table(results, models, args, eval_sizes) -> None:
    task_names = args.tasks.split(",")
    shots = f"{args.shots} labelled videos per class" if args.shots else "all labelled videos"
    arch = f" ({', '.join(args.arch)})" if args.arch else ""
    print(f"\n{args.encoder}{arch}, {args.probe} probe, {args.copies} augmented copies, {args.epochs} "
          f"epochs, {args.probe_seeds} probe seeds, {shots}: test top-1 mean (sd)")
    print(f"{'encoder':<28}" + "".join(f"{t:>32}" for t in task_names))
    for name in models:
        cells = []
        for t in task_names:
            s = results[(name, t)]
            cell = f"{statistics.mean(s):.1f} ({statistics.stdev(s) if len(s) > 1 else 0:.1f})"
            if name != RANDOM:
                diff, se = difference(s, results[(RANDOM, t)], eval_sizes[t])
                cell += f"  {diff:+.1f} +- {se:.1f}"
            cells.append(f"{cell:>32}")
        print(f"{name:<28}" + "".join(cells))
    print("(+- : standard error of the difference from random init: test-split sampling and "
          "probe-seed spread)")


def difference(a: list[float], b: list[float], n: int) -> tuple[float, float]:
    """Mean difference a - b in points, and its standard error: binomial sampling of an
    n-video test split for each side plus the probe-seed variance of each mean."""
    ma, mb = statistics.mean(a), statistics.mean(b)
    var = sum(m / 100 * (1 - m / 100) / n * 1e4 for m in (ma, mb))
    for s in (a, b):
        if len(s) > 1:
            var += statistics.variance(s) / len(s)
    return ma - mb, math.sqrt(var)


if __name__ == "__main__":
    main()
