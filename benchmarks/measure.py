"""Wall time, peak memory and throughput of the main jobs, measured side by side in one run.

    python benchmarks/measure.py run        # one probe run: online augmentation vs cached features
    python benchmarks/measure.py pretrain   # JEPA pretraining clips/s: end to end vs model only
    python benchmarks/measure.py demo       # `harness demo` from scratch (fresh output folder)
    python benchmarks/measure.py tests      # the test suite (`pytest`)
    python benchmarks/measure.py memory     # one run with malloc's freed memory kept vs given back
    python benchmarks/measure.py all

Each job runs in a child process; peak memory is that child's max RSS (getrusage). Needs the
digits data (`harness data make digits --out data/digits`) except for `demo` and `tests`.
Speed is claimed here, never in tests.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def measure(cmd: list[str], label: str) -> dict:
    """Run `cmd`, return wall seconds and the peak RSS (MiB) of the process tree it started."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far; a smaller later child leaves it
    # unchanged, so each job is reported as "at most" when it did not raise the maximum.
    note = "" if peak > before else " (<= earlier job's peak)"
    result = {"label": label, "wall_s": wall, "peak_rss_mib": peak / 1024, "note": note,
              "stdout": proc.stdout}
    print(f"{label:<42} wall {wall:7.1f} s   peak RSS {peak / 1024:7.0f} MiB{note}")
    return result


def harness(*args: str) -> list[str]:
    return [str(BIN / "harness"), *args]


def bench_run(data: str) -> None:
    print("== one attentive-probe run: vjepa_tiny (random init) on digits_motion ==")
    with tempfile.TemporaryDirectory() as out:
        common = ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
                  "--no-progress", f"task.data.root={data}"]
        common += ["task.optim.epochs=10"]
        online = measure(harness(*common, "--out", f"{out}/a", "cache_features=false"),
                         "online augmentation (10 epochs)")
        cached = measure(harness(*common, "--out", f"{out}/b", "cache_features=true"),
                         "cached features (10 epochs)")
    print(f"cached / online wall-time ratio: {cached['wall_s'] / online['wall_s']:.3f} "
          f"({online['wall_s'] / cached['wall_s']:.1f}x faster)")


def bench_pretrain(data: str, steps: int = 180) -> None:
    """End to end with and without the decoded-frame cache, then the model alone.

    The digits pretraining set is 960 videos = 60 steps per epoch at batch 16: the cache fills
    during epoch 1, so per-step rates are medians over the later epochs, and walls include the
    first epoch's full decodes.
    """
    print(f"== JEPA pretraining throughput, vjepa_tiny, {steps} steps, batch 16 ==")
    rates = {}
    for label, cache in (("end to end, decoding every clip", "0"),
                         ("end to end, decoded-frame cache", "1024")):
        with tempfile.TemporaryDirectory() as out:
            measure(harness("pretrain", "--config", "vjepa_tiny", "--out", out, "--no-progress",
                            f"optim.total_steps={steps}", f"data.root={data}",
                            f"data.cache_decoded_mb={cache}"), label)
            rows = list(csv.DictReader(open(Path(out) / "metrics.csv")))
        rates[label] = statistics.median(float(r["clips_per_s"]) for r in rows[60:])
    code = (
        "import time, torch\n"
        "from encoders.jepa import load_config, resolve\n"
        "from encoders.jepa.trainer import JepaTrainer\n"
        "import tempfile\n"
        "cfg = resolve(load_config('vjepa_tiny'))\n"
        f"t = JepaTrainer(cfg, steps_per_epoch={steps}, out_dir=tempfile.mkdtemp(), progress=False)\n"
        "clips = torch.randn(16, 3, 8, 32, 32)\n"
        "for _ in range(5): t.train_step(clips)\n"
        "start = time.perf_counter()\n"
        f"for _ in range({steps}): t.train_step(clips)\n"
        f"print(16 * {steps} / (time.perf_counter() - start))\n"
    )
    model_only = float(measure([sys.executable, "-c", code], "model only (one in-memory batch)")
                       ["stdout"].strip().splitlines()[-1])
    for label, rate in rates.items():
        print(f"clips/s after epoch 1, {label}: {rate:.1f} (median per step); "
              f"{rate / model_only:.2f} of model only")
    print(f"clips/s model only {model_only:.1f}")


def bench_demo(budget: float) -> None:
    print(f"== harness demo --budget {budget} (fresh output; data made if missing) ==")
    with tempfile.TemporaryDirectory() as out:
        r = measure(harness("demo", "--out", out, "--budget", str(budget), "--no-progress"),
                    "harness demo")
        print(r["stdout"][-4000:])
        rates = {}
        for cfg in sorted((Path(out) / "pretrain").iterdir()):
            rows = list(csv.DictReader(open(cfg / "metrics.csv")))
            rates[cfg.name] = statistics.median(float(x["clips_per_s"]) for x in rows[5:])
        for name, rate in rates.items():
            print(f"pretraining {name:<22} {rate:6.1f} clips/s (median per step)")


def _child_usage(cmd: list[str], env: dict) -> dict:
    """Run `cmd`; its own wall, user and system CPU seconds, minor page faults and peak RSS
    (wait4: this child's, not the largest child's so far)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out[-3000:])
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed with exit code {proc.returncode}")
    return {"wall": time.perf_counter() - start, "user": usage.ru_utime, "sys": usage.ru_stime,
            "minflt": usage.ru_minflt, "rss_mib": usage.ru_maxrss / 1024}


def bench_memory(data: str, reps: int, encoder: str) -> None:
    """`harness run` with glibc's freed memory kept for reuse (`harness.host_memory`, the
    default) and given back to the kernel (HARNESS_KEEP_FREED_MEMORY=0), alternated, each run
    from scratch (no resume); the records' metrics must be equal."""
    import json

    print(f"== one run, {encoder} on digits_motion: freed memory kept vs given back, "
          f"{reps} rep(s) each, alternated ==")
    sides = {"kept": "1", "given back": "0"}
    rows: dict[str, list[dict]] = {k: [] for k in sides}
    metrics = {}
    with tempfile.TemporaryDirectory() as out:
        for rep in range(reps):
            for label, flag in (sides.items() if rep % 2 == 0 else reversed(sides.items())):
                folder = Path(out) / f"{label.replace(' ', '_')}{rep}"
                cmd = harness("run", "--encoder", encoder, "--task", "digits_motion",
                              "--no-progress", "--out", str(folder), f"task.data.root={data}",
                              *(["--random-init"] if encoder.startswith("vjepa") else []))
                env = {**os.environ, "HARNESS_KEEP_FREED_MEMORY": flag}
                r = _child_usage(cmd, env)
                rows[label].append(r)
                (record,) = (folder / "records").glob("*.json")
                metrics.setdefault(label, json.loads(record.read_text())["metrics"])
                print(f"  {label:<10} rep {rep}: wall {r['wall']:6.1f} s  user {r['user']:6.1f}"
                      f"  sys {r['sys']:5.1f}  CPU {r['user'] + r['sys']:6.1f} s  minor faults "
                      f"{r['minflt']:>10,}  peak RSS {r['rss_mib']:6.0f} MiB", flush=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "user", "sys", "minflt",
                                                                "rss_mib")}
           for k, v in rows.items()}
    for k, m in med.items():
        print(f"median {k:<10}: wall {m['wall']:6.1f} s, CPU {m['user'] + m['sys']:6.1f} s "
              f"(sys {m['sys']:.1f}), minor faults {m['minflt']:,.0f}, peak RSS "
              f"{m['rss_mib']:.0f} MiB")
    kept, back = med["kept"], med["given back"]
    print(f"given back / kept: wall {back['wall'] / kept['wall']:.2f}x, CPU "
          f"{(back['user'] + back['sys']) / (kept['user'] + kept['sys']):.2f}x; metrics equal: "
          f"{metrics['kept'] == metrics['given back']}")


def bench_tests() -> None:
    print("== test suite ==")
    r = measure([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], "pytest")
    print(r["stdout"].strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", choices=["run", "pretrain", "demo", "tests", "memory", "all"])
    p.add_argument("--data", default="data/digits")
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--reps", type=int, default=2, help="memory: runs of each side")
    p.add_argument("--encoder", default="mobilenet_v2_imagenet",
                   help="memory: the encoder of the run (vjepa_* at random init)")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    if args.job in ("run", "all"):
        bench_run(args.data)
    if args.job in ("pretrain", "all"):
        bench_pretrain(args.data)
    if args.job in ("demo", "all"):
        bench_demo(args.budget)
    if args.job in ("tests", "all"):
        bench_tests()
    if args.job == "memory":
        bench_memory(args.data, args.reps, args.encoder)


if __name__ == "__main__":
    main()
