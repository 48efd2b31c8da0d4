"""`harness audit`: the transfer audit of an image encoder against a video encoder."""
from __future__ import annotations

import argparse

from harness.output import print_line

EPILOG = """\
  harness audit --image ijepa_tiny --video vjepa_tiny \\
      --static-task digits_appearance --temporal-task digits_motion --results runs/demo

--image / --video: a run label (`label=...` of the records), an encoder label (`vjepa_tiny
(depth 2)`) or an encoder name (its trained checkpoint; name the label when an encoder has
records of several checkpoints or architectures).
With --run, evaluations that have no record yet are run first (same probe and split for both
encoders: each task's own protocol), with --image-checkpoint / --video-checkpoint and any
key=value overrides (e.g. task.data.root=...). The verdict is written to
<results>/audits/ and its accepted_winner is `pending` until both tasks have results.
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from harness.commands.results import add_results_argument
    from results.audit import DEFAULT_MARGIN

    p.epilog = EPILOG
    p.add_argument("--image", required=True, help="image encoder: run label or encoder name")
    p.add_argument("--video", required=True, help="video encoder: run label or encoder name")
    p.add_argument("--static-task", required=True, help="static-semantic task (appearance)")
    p.add_argument("--temporal-task", required=True, help="temporal task (motion)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help=f"points the temporal gain must reach (default {DEFAULT_MARGIN:g})")
    add_results_argument(p)
    p.add_argument("--run", action="store_true", help="run the missing evaluations first")
    p.add_argument("--image-checkpoint", help="checkpoint of the image encoder (with --run)")
    p.add_argument("--video-checkpoint", help="checkpoint of the video encoder (with --run)")
    p.add_argument("--probe", default="attentive", help="probe for --run (default attentive)")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides for --run")


def _run_missing(args, root, records) -> None:
    from harness.config import quote_override as _quote
    from harness.config import compose_run
    from harness.runner import run_evaluation
    from results.audit import pick

    for who, ckpt in ((args.image, args.image_checkpoint), (args.video, args.video_checkpoint)):
        for task in (args.static_task, args.temporal_task):
            if pick(records, who, task):
                continue
            overrides = [f"encoder={who}", f"task={task}", f"probe={args.probe}",
                         f"out={_quote(root)}", "progress=false", *args.overrides]
            overrides.append(f"checkpoint={_quote(ckpt)}" if ckpt else "random_init=true")
            print_line(f"running {who} on {task}")
            run_evaluation(compose_run(overrides), overrides=overrides)


def main(args) -> int:
    import json

    import results
    from results.audit import describe, verdict
    from common.atomic import atomic_write
    from results.record import _safe

    root = results.default_root(args.results)
    store = results.ResultStore(root)
    records = store.records() if root.exists() else []
    if args.run:
        _run_missing(args, root, records)
        records = store.records()
    from harness.output import report_skipped

    report_skipped(store)
    v = verdict(records, image=args.image, video=args.video, static_task=args.static_task,
                temporal_task=args.temporal_task, margin=args.margin, n_boot=args.bootstrap)
    # Inside --results only: an `audits` folder that is a link leading elsewhere is refused,
    # a link at the file's name is replaced (never written through), faults are one line.
    from results.storage import folder_in, writing

    name = (f"audit__{_safe(args.image)}__{_safe(args.video)}__"
            f"{_safe(args.static_task)}__{_safe(args.temporal_task)}.json")
    out = folder_in(root, "audits") / name
    text = json.dumps(v, indent=2, sort_keys=True, default=str) + "\n"
    with writing(out):
        atomic_write(out, lambda f: f.write(text.encode("utf-8")))
    for line in describe(v):
        print_line(line)
    print_line(f"verdict written to {out}")
    return 0
