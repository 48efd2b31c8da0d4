"""`harness demo`: the whole loop on CPU in minutes, on data it makes.

1. make the digits videos (if missing);
2. pretrain three tiny encoders for the same number of steps: video + latent targets (V-JEPA),
   video + pixel targets (VideoMAE-style), image + latent targets (I-JEPA-style);
3. probe each, plus a random-init encoder (the floor) and, when its weights package is installed,
   an ImageNet MobileNetV2 run frame by frame (a real model no one here trained), with the
   attentive probe on digits_motion and digits_appearance under one protocol per task;
4. score the V-JEPA tiny variants' predictors (latent and pixel targets, and random init) by
   their surprise on synthetic violation-of-expectation pairs (`harness data make physics`);
5. print the leaderboard and write a PNG chart and a markdown report.

Whatever the numbers say is the result: nothing here is tuned for one model to win.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

TASKS = ("digits_motion", "digits_appearance")


@dataclass
class DemoEntry:
    label: str                 # row name in the leaderboard
    encoder: str               # registry name
    pretrain_config: str | None = None
    random_init: bool = False
    checkpoint: str | None = None


def demo_entries() -> list[DemoEntry]:
    entries = [
        DemoEntry("video, latent targets (V-JEPA)", "vjepa_tiny", pretrain_config="vjepa_tiny"),
        DemoEntry("video, pixel targets (VideoMAE-style)", "vjepa_tiny",
                  pretrain_config="vjepa_tiny_pixels"),
        DemoEntry("image, latent targets (I-JEPA-style)", "ijepa_tiny",
                  pretrain_config="ijepa_tiny"),
        DemoEntry("random init (floor)", "vjepa_tiny", random_init=True),
    ]
    import encoders

    if "mobilenet_v2_imagenet" in encoders.names() and encoders.default_checkpoint(
            "mobilenet_v2_imagenet"):
        entries.append(DemoEntry("ImageNet supervised, frame-wise", "mobilenet_v2_imagenet"))
    return entries


def budget_settings(budget: float) -> dict:
    """Pretraining steps scale with --budget; 1.0 fits in about 6 minutes on 2 CPU cores (making the data included).

    The probes always use the tasks' own protocol (cached features make them cheap), so demo
    records are comparable with any `harness run` on the same task.
    """
    # The synthetic VoE set: at 1.0 `harness data make physics`'s default, 120 pairs of 32 frames
    # (made in ~7 s); the tiny predictors' surprise costs 0.1-0.3 s per pair (13 windows x 3
    # context lengths x 2 videos) on 2 cores, so its three scored entries add about a minute.
    return {"pretrain_steps": max(10, int(round(450 * budget))),
            "physics_pairs_per_property": max(2, int(round(40 * budget)))}


# Every pretraining and probe run of the demo reads the same ~3,600 digits videos (~1 GiB
# decoded); decoding them once instead of in each of the 13 runs saves minutes on 2 cores.
DECODED_CACHE_MB = 2048


def run_demo(out: str = "runs/demo", data: str = "data/digits", budget: float = 1.0,
             seed: int = 0, progress: bool = True, fresh: bool = False, seeds: int = 1,
             decoded_cache_mb: float = DECODED_CACHE_MB, torch_threads: int | None = None,
             jobs: int | None = None) -> dict:
    """`torch_threads`: torch's intra-op threads for pretraining and probes; None: the runs'
    `auto` (1 on CPU, where the demo loads its data in process; torch's default on a GPU).
    `jobs`: runs side by side, each in its own process (`harness.demo_jobs`); None: 2 on a CPU
    with 2 cores or more, else 1. The records are the same for any number."""
    from rich.console import Console

    from harness.demo_jobs import (
        Plan,
        default_jobs,
        make_physics_data,
        physics_overrides,
        probe_overrides,
        run_jobs,
    )
    from harness.plan import resolve_device
    from harness.runner import intra_op_threads

    console = Console()
    out_dir, data_dir = Path(out), Path(data)
    if fresh and out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    settings = budget_settings(budget)
    timings: dict[str, float] = {}
    t0 = time.time()

    console.rule("[bold]1/5 data: digits videos")
    if not (data_dir / "digits_motion" / "train.csv").exists() or not (
            data_dir / "digits_appearance" / "train.csv").exists():
        from tasks.digits import make_digits

        make_digits(data_dir, seed=seed, progress=progress)
    else:
        console.print(f"using existing {data_dir}")
        _warn_if_smaller_than_default(data_dir, console)
    timings["data_s"] = time.time() - t0

    entries = demo_entries()
    # Pretraining loads its clips in its own process (num_workers 0), like the probe runs: the
    # same thread rule (harness.runner.intra_op_threads) holds for both.
    device = resolve_device("auto")
    pretrain_threads = intra_op_threads(torch_threads or "auto", device=device,
                                        in_process_loading=True)
    jobs = int(jobs or default_jobs(device))
    settings["runtime"] = {**demo_runtime(pretrain_threads), "jobs": jobs}
    settings["seeds"] = list(range(seed, seed + int(seeds)))
    physics_dir = data_dir.parent / "physics"
    if any(e.encoder == "vjepa_tiny" for e in entries):
        make_physics_data(physics_dir, seed=seed, progress=progress,
                          pairs_per_property=settings["physics_pairs_per_property"])
    console.rule(f"[bold]2-4/5 pretraining ({settings['pretrain_steps']} steps each), attentive "
                 f"probes under the tasks' own protocol, the predictors' surprise on synthetic "
                 f"VoE pairs: {jobs} job{'s' if jobs > 1 else ''} at a time")
    t1 = time.time()
    run_progress = progress and jobs == 1

    def probe_runs(index: int, checkpoint: str | None) -> dict:
        entry = entries[index]
        return {(index, task, run_seed): probe_overrides(
                    entry, checkpoint, task=task, seed=run_seed, out_dir=out_dir,
                    data_dir=data_dir, progress=run_progress, torch_threads=torch_threads)
                for task in TASKS for run_seed in settings["seeds"]}

    def physics_run(index: int, checkpoint: str | None) -> list[str] | None:
        if entries[index].encoder != "vjepa_tiny":  # the entries that have a predictor
            return None
        return physics_overrides(entries[index], checkpoint, out_dir=out_dir, data_dir=physics_dir,
                                 seed=seed, progress=run_progress, torch_threads=torch_threads)

    def announce(kind, key, result, spent):
        if kind == "pretrain":
            entries[key].checkpoint = result
            console.print(f"pretrained {entries[key].label}: {result} ({spent:.0f} s)")
        elif kind == "probe":
            console.print(f"{entries[key[0]].label} on {key[1]}, seed {key[2]}: top-1 "
                          f"{result['metrics'].get('top1', float('nan')):.2f} ({spent:.0f} s)")
        else:
            console.print(f"{entries[key].label} on the VoE pairs ({spent:.0f} s)")

    # the entries that need no pretraining, last listed first: the frame-wise ImageNet runs
    # are about half of the demo's CPU time, so they start first and the short runs fill in
    order = [i for i in reversed(range(len(entries))) if not entries[i].pretrain_config]
    plan = Plan(pretrain={i: (e.pretrain_config,
                              [f"optim.total_steps={settings['pretrain_steps']}",
                               f"data.root={data_dir}", f"seed={seed}"],
                              str(out_dir / "pretrain" / e.pretrain_config))
                          for i, e in enumerate(entries) if e.pretrain_config},
                probes=probe_runs, physics=physics_run, order=order, torch_threads=torch_threads)
    from harness import output

    verbosity = {logging.DEBUG: 1, logging.INFO: 0}.get(output.level(), -1)
    by_key, physics_by_index, job_seconds = run_jobs(
        plan, jobs=jobs, cache_bytes=int(decoded_cache_mb * 2**20), verbosity=verbosity,
        progress=progress, announce=announce)
    # the records in the sequential order (entry, task, seed), whatever order they finished in
    records = [by_key[k] for k in sorted(
        by_key, key=lambda k: (k[0], TASKS.index(k[1]), k[2]))]
    physics = [physics_by_index[i] for i in sorted(physics_by_index)]
    timings["runs_s"] = time.time() - t1
    timings.update(job_seconds)

    console.rule("[bold]5/5 leaderboard")
    pretraining = pretraining_summary(entries, out_dir)
    summary = write_outputs(records, out_dir, settings, timings, console, pretraining, physics)
    timings["total_s"] = time.time() - t0
    summary["timings"] = timings
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    console.print(f"total {timings['total_s']:.0f} s; report {out_dir / 'report.md'}, "
                  f"chart {out_dir / 'demo.png'}")
    return summary


def _warn_if_smaller_than_default(data_dir: Path, console) -> None:
    """Data made by an older version (smaller splits) still runs, but its numbers are noisier and
    its protocol ids differ from the README's: say so, with the command that remakes it."""
    from tasks.digits import DEFAULT_PER_CLASS, TASKS

    for task, sizes in DEFAULT_PER_CLASS.items():
        manifest = data_dir / task / "test.csv"
        if not manifest.is_file():
            continue
        with open(manifest, encoding="utf-8") as f:
            videos = sum(1 for line in f if line.strip())
        if videos < sizes[2] * len(TASKS[task]):
            console.print(f"[yellow]{manifest} lists {videos} videos, fewer than the "
                          f"{sizes[2] * len(TASKS[task])} the demo makes now: its numbers will be "
                          f"noisier. Remake it with `rm -r {data_dir} && harness demo`.[/]")


def pretraining_summary(entries: list[DemoEntry], out_dir: Path) -> list[dict]:
    """Per pretrained variant, from its metrics.csv: final loss (mean of the last 10% of steps),
    the latent targets' effective rank at the first and last logged step (a fall means the
    features collapsed onto a few directions, which the loss alone does not show), the context
    gain (loss with the context zeroed minus the loss, mean of the last 10% of logged steps:
    how much the predictor uses what the encoder saw) and clips/s."""
    import pandas as pd

    rows = []
    for entry in entries:
        if not entry.pretrain_config:
            continue
        path = out_dir / "pretrain" / entry.pretrain_config / "metrics.csv"
        if not path.is_file():
            continue
        m = pd.read_csv(path)
        if m.empty:
            continue
        tail = m.tail(max(1, len(m) // 10))
        rank = m["target_rank"].dropna() if "target_rank" in m else pd.Series(dtype=float)
        gain = tail["context_gain"].dropna() if "context_gain" in tail else pd.Series(dtype=float)
        rows.append({
            "variant": entry.label, "config": entry.pretrain_config, "steps": int(m["step"].iloc[-1]),
            "final_loss": round(float(tail["loss"].mean()), 4),
            "target_rank_start": round(float(rank.iloc[0]), 1) if len(rank) else None,
            "target_rank_end": round(float(rank.iloc[-1]), 1) if len(rank) else None,
            "context_gain": round(float(gain.mean()), 4) if len(gain) else None,
            "clips_per_s": round(float(m["clips_per_s"].median()), 1),
        })
    return rows


def _physics_lines(records: list[dict]) -> list[str]:
    """The VoE metrics with their intervals, and each predictor against the random one on the
    same pairs (paired bootstrap and McNemar on per-pair hits, mean surprise)."""
    from harness.voe_metrics import surprise_rows
    from results.escape import markdown_escape
    from results.physics import compare, pairs_from_videos
    from results.predictions import record_predictions

    if not records:
        return []

    def label(r):
        return (r.get("extra") or {}).get("label") or r["encoder"]["name"]

    def cell(m, name, scale=1.0, digits=1):
        return (f"{scale * m[name]:.{digits}f} [{scale * m[name + '_lo']:.{digits}f}, "
                f"{scale * m[name + '_hi']:.{digits}f}]")

    n = records[0]["metrics"]["num_pairs"]
    lines = ["## Intuitive physics (violation of expectation)", "",
             (f"The predictor's surprise on {n} synthetic pairs (`harness data make physics`: "
             f"permanence, continuity, constancy), no training. Pairwise accuracy (%): the "
             f"possible video less surprising than its impossible twin; the paper's number takes "
             f"the best context length per property; the others use the minimum over context "
             f"lengths. 95% bootstrap intervals over pairs; chance is 50 (AUROC 0.5), except on "
             f"max surprise, where a tie counts as a miss (the authors' strict <) and a pair "
             f"whose largest surprise falls before the violation ties exactly."), "",
             "| predictor | paper's number | pairwise (mean) | pairwise (max) | AUROC (max) |",
             "|---|---|---|---|---|"]
    for r in records:
        m = r["metrics"]
        lines.append(f"| {markdown_escape(label(r))} | {cell(m, 'paper_relative_mean')} | "
                     f"{cell(m, 'relative_mean')} | {cell(m, 'relative_max')} | "
                     f"{cell(m, 'auroc_max', digits=2)} |")
    floor = next((r for r in records if "random init" in label(r)), None)
    for r in records:
        if floor is None or r is floor:
            continue
        try:
            a = pairs_from_videos(surprise_rows(record_predictions(r, r["_path"])))
            b = pairs_from_videos(surprise_rows(record_predictions(floor, floor["_path"])))
        except (OSError, ValueError):
            continue
        res = compare(a, b, "mean")
        lines.append("")
        lines.append(f"- {markdown_escape(label(r))} minus random init: {100 * res.diff:+.1f} "
                     f"points of pairwise accuracy on mean surprise (paired 95% CI "
                     f"{100 * res.ci[0]:+.1f} to {100 * res.ci[1]:+.1f}; McNemar p = "
                     f"{res.p_mcnemar:.2g}): "
                     f"{'significant' if res.significant else 'not significant'}")
    return lines + [""]


def write_outputs(records: list[dict], out_dir: Path, settings: dict, timings: dict,
                  console, pretraining: list[dict] | None = None,
                  physics: list[dict] | None = None) -> dict:
    import pandas as pd

    import results

    # The leaderboard shows the first seed's records (one per encoder and task); with more seeds
    # the mean +- sd table below summarises them all.
    first = [r for r in records if r["seed"] == settings["seeds"][0]] if settings.get("seeds") else records
    frame = results.records_frame(first)
    lb = results.leaderboard(frame, tasks=list(TASKS), metric="top1")
    # already laid out at 120 columns; run labels are text, never markup
    console.print(results.render(lb, "rich") or "", soft_wrap=True, markup=False)
    protocol_ids = sorted({r["protocol_id"] for r in records})

    runs = pd.DataFrame(
        [{"encoder": f"{r['encoder']['name']} {r['extra']['label']}", "task": r["task"],
          "seed": r["seed"], "top1": r["metrics"].get("top1")} for r in records])
    # One number per (encoder, task, seed): a re-run demo's newer record replaces the older.
    runs = runs.drop_duplicates(["encoder", "task", "seed"], keep="last")
    table = runs.pivot_table(index="encoder", columns="task", values="top1", aggfunc="mean")
    table = table.reindex(columns=list(TASKS)).sort_values(list(TASKS), ascending=False)
    spread = runs.pivot_table(index="encoder", columns="task", values="top1", aggfunc="std")
    spread = spread.reindex(index=table.index, columns=list(TASKS))
    n_seeds = len(settings.get("seeds") or [0])
    chart = out_dir / "demo.png"
    _plot(table, chart, protocol_ids, spread if n_seeds > 1 else None)

    from results.audit import describe, verdict

    # The transfer audit of the seed material: is the video encoder's gain on the temporal task
    # significant (and past the margin) where the image encoder holds up on the static one?
    audit = verdict(first, image="image, latent targets (I-JEPA-style)",
                    video="video, latent targets (V-JEPA)",
                    static_task="digits_appearance", temporal_task="digits_motion")
    lines = [
        "# harness demo report", "",
        f"Pretraining: {settings['pretrain_steps']} steps per variant; attentive probe under "
        f"each task's protocol. Protocol ids: {', '.join(protocol_ids)}.",
        "", f"Top-1 (%) on each task's test split (probe seed {settings.get('seeds', [0])[0]}):",
        "", results.render(lb, "markdown").rstrip(),
        *([] if lb.notes else ["", "Every encoder ran under the same protocol per task."]), "",
        *_standard_error_lines(records),
        *_paired_lines(records),
        *(_seed_lines(table, spread, settings["seeds"]) if n_seeds > 1 else []),
        *_pretraining_lines(pretraining or []),
        *_physics_lines(physics or []),
        "## Transfer audit", "", *describe(audit), "",
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), "",
        *([f"Computed with: {_runtime_text(settings['runtime'])}.", ""]
          if settings.get("runtime") else []),
        f"![results]({chart.name})", "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    return {"top1": table.round(2).to_dict(), "protocol_ids": protocol_ids,
            "top1_sd": spread.round(2).to_dict() if n_seeds > 1 else None,
            "seeds": settings.get("seeds"), "runtime": settings.get("runtime"),
            "pretraining": pretraining or [], "audit": audit,
            "physics": {((r.get("extra") or {}).get("label") or r["encoder"]["name"]): {
                k: v for k, v in r["metrics"].items() if "/" not in k}
                for r in physics or []}}


def demo_runtime(pretrain_threads: int | None) -> dict:
    """What the demo's numbers were computed with, beyond its code and data: torch's intra-op
    threads and CPU kernels move CPU numbers (each record says its own), and the videos are
    PyAV's FFmpeg and x264 (`tasks.digits.X264_PARAMS`) output."""
    import platform

    import av
    import torch

    from tasks.digits import X264_PARAMS

    return {"pretrain_torch_threads": pretrain_threads or torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "x264_params": X264_PARAMS, "machine": platform.machine()}


def _runtime_text(runtime: dict) -> str:
    from results.escape import markdown_escape

    return markdown_escape(", ".join(f"{k} {v}" for k, v in runtime.items()))


def _paired_lines(records: list[dict]) -> list[str]:
    """Each encoder against the random-init floor on the same test videos (same task, protocol
    and probe seed): top-1 with its bootstrap interval, the paired difference and McNemar."""
    from results.predictions import correct, read_predictions
    from results.stats import align, bootstrap_ci, paired

    def label(r):
        return (r.get("extra") or {}).get("label") or r["encoder"]["name"]

    lines = []
    for r in records:
        if "random init" in label(r) or not r.get("_path"):
            continue
        floor = next((f for f in records if "random init" in label(f) and f["task"] == r["task"]
                      and f["protocol_id"] == r["protocol_id"] and f["seed"] == r["seed"]), None)
        if floor is None:
            continue
        try:
            pa, pb = read_predictions(r["_path"]), read_predictions(floor["_path"])
            ia, ib = align(pa, pb)
        except (OSError, ValueError):
            continue  # records made before predictions were saved
        a, b = correct(pa)[ia], correct(pb)[ib]
        res = paired(a, b)
        lo, hi = bootstrap_ci(a)
        lines.append(f"- {r['task']}, {label(r)}: {100 * a.mean():.1f} (95% CI {100 * lo:.1f} to "
                     f"{100 * hi:.1f}); minus random init {100 * res.diff:+.1f} points (paired 95% CI "
                     f"{100 * res.ci[0]:+.1f} to {100 * res.ci[1]:+.1f}; McNemar p = {res.p_mcnemar:.2g}): "
                     f"{'significant' if res.significant else 'not significant'}")
    if not lines:
        return []
    return ["Against the random-init floor, paired on the same test videos (bootstrap of the "
            "videos, 2000 resamples; `harness compare` gives the same for any two records):", "",
            *lines, ""]


def _standard_error_lines(records: list[dict]) -> list[str]:
    """How far apart two numbers must be before they differ: the binomial standard error of one
    top-1 on each task's test split, at the worst case (50%)."""
    sizes = {}
    for r in records:
        seen = ((r.get("data_problems") or {}).get("seen") or {}).get("eval")
        if seen:
            sizes[r["task"]] = int(seen)
    if not sizes:
        return []
    parts = [f"{task} {n} videos, {100 * (0.25 / n) ** 0.5:.1f} points"
             for task, n in sorted(sizes.items())]
    return ["Standard error of one top-1 from the test split's size alone (at 50%): "
            + "; ".join(parts) + ". The probe's seed adds about as much again: differences "
            "smaller than both are not differences.", ""]


def _pretraining_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    dash = lambda v: "-" if v is None else v  # noqa: E731 (pixel targets have no target encoder)
    lines = ["Pretraining (target rank: effective rank of the latent targets, first -> last step; "
             "the random-init encoder starts near the first value, and a fall to a few means "
             "partial collapse. Context gain: loss with the encoder's context features zeroed "
             "minus the loss, over the last 10% of steps; near zero means the predictor ignores "
             "the context and the encoder learns nothing from it):", "",
             "| variant | steps | final loss | target rank | context gain | clips/s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['steps']} | {r['final_loss']} | "
              f"{dash(r['target_rank_start'])} -> {dash(r['target_rank_end'])} | "
              f"{dash(r.get('context_gain'))} | {r['clips_per_s']} |"
              for r in rows]
    return lines + [""]


def _seed_lines(table, spread, seeds: list[int]) -> list[str]:
    lines = [f"Mean +- sd of top-1 over seeds {', '.join(map(str, seeds))}:", "",
             "| encoder | " + " | ".join(table.columns) + " |", "|---" * (1 + len(table.columns)) + "|"]
    for enc in table.index:
        cells = [f"{table.loc[enc, t]:.1f} +- {spread.loc[enc, t]:.1f}" for t in table.columns]
        lines.append(f"| {enc} | " + " | ".join(cells) + " |")
    return lines + [""]


def _plot(table, path: Path, protocol_ids: list[str], spread=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = table.plot.barh(figsize=(8, 0.9 * len(table) + 1.5), xerr=spread, capsize=3)
    ax.set_xlabel("top-1 accuracy (%) - attentive probe, frozen encoder")
    ax.set_ylabel("")
    ax.set_title(f"harness demo\nprotocol ids {', '.join(protocol_ids)}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    plt.tight_layout()
    plt.savefig(path, dpi=120)
    plt.close()
