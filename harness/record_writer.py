"""A run's record: assembled from the plan and the probe's result, written beside its
predictions (atomically, predictions first, so a record never names a missing file)."""
from __future__ import annotations

import glob
import shlex
from pathlib import Path

# Overrides that only say where things go or how they are shown: the reproduce command keeps
# them out so it stays runnable elsewhere; everything else (what changes a number) stays.
_PLACE_KEYS = ("out", "progress", "resume", "device")
_FLAG_KEYS = {"encoder", "task", "probe", "checkpoint", "probe_checkpoint", "random_init",
              "trust_checkpoint", "seed", "checkpoint_key"}


def make_run_record(plan, encoder, result, *, protocol: dict, identity: str,
                    overrides: list[str] | None, probe_info: dict | None, timings: dict) -> dict:
    import results
    from encoders.metadata import cost, describe

    spec, task = encoder.spec, plan.task
    metrics = dict(result.metrics)
    metrics["num_samples"] = result.num_evaluated
    metadata = describe(plan.encoder_cfg)
    # The input that ran: an image task on an image encoder is one frame per sample.
    frames = plan.image_frames or task.spec.sampling.frames_per_clip
    metadata["at_run_input"] = cost(plan.encoder_cfg, frames=frames,
                                    resolution=task.spec.resolution or spec.resolution)
    record = results.make_record(
        encoder={"name": spec.name, "label": plan.encoder_label, "family": spec.family,
                 "modality": spec.modality, "spec": spec.to_dict(), "config": plan.encoder_cfg,
                 "metadata": metadata},
        checkpoint=dict(encoder.checkpoint_info),
        task=task.spec.name,
        split=plan.split,
        protocol=protocol,
        metrics=metrics,
        data_problems=result.data_problems.to_dict(),
        timings=timings,
        seed=plan.seed,
        device=plan.device,
        world_size=plan.world_size,
        precision=result.precision,
        extra={"label": plan.settings.label, "run_id": identity,
               "command": reproduce_command(plan.c, overrides), "history": result.history,
               "preflight": plan.preflight, "probe_checkpoint": probe_info,
               "micro_batch_size": plan.train_data.micro_batch_size,
               "grid": result.heads, "chosen_head": result.chosen_head,
               "image_frames": plan.image_frames,
               "decoder": plan.preflight.get("decode_backend")},
    )
    record["protocol_departures"] = dict(plan.departures)
    record["runtime"] = runtime(plan)
    return record


def runtime(plan) -> dict:
    """How the run computed, beside what it computed: CPU numbers can move with the intra-op
    thread count and the CPU kernels torch dispatched to, so a record says both."""
    import torch

    return {"torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "loader_workers": plan.train_data.num_workers}


def write_run_record(plan, record: dict, predictions, identity: str) -> Path:
    """Predictions, then the record, into `<out>/records`; returns the record's path."""
    import results
    from common import failpoints

    records_dir = plan.settings.out / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    # The name's last 6 characters are the run identity's: a run killed between its predictions
    # and its record leaves predictions no record claims, which its re-run (holding the
    # identity's lock) recognises as its own and replaces.
    filename = results.record_filename(record)[:-len("xxxxxx.json")] + identity[:6] + ".json"
    _remove_unclaimed_predictions(records_dir, filename)
    if predictions:
        from results.predictions import predictions_path, write_predictions

        pred_path = predictions_path(records_dir / filename)
        write_predictions(pred_path, predictions, [p for p, _ in plan.task.entries(plan.split)])
        record["extra"]["predictions"] = pred_path.name
        failpoints.hit("record")  # between the predictions and the record
    path = results.write_record(record, records_dir, filename=filename)
    # After the rename, so the index never names a file that is not whole; a crash before this
    # line is repaired by the next read (it walks the folder).
    from results.index import note_written

    note_written(path, plan.settings.out)
    return path


def _remove_unclaimed_predictions(records_dir: Path, filename: str) -> None:
    """Predictions of this identity (same encoder, task, protocol, run-id suffix) whose record was
    never written: left by a run killed between the two files."""
    head, _, rest = filename.rpartition("__")
    suffix = rest[-len("xxxxxx.json"):-len(".json")]
    for npz in records_dir.glob(f"{glob.escape(head)}__*-{suffix}.predictions.npz"):
        if not npz.with_name(npz.name[:-len(".predictions.npz")] + ".json").exists():
            npz.unlink(missing_ok=True)


def reproduce_command(c: dict, overrides: list[str] | None = None) -> str:
    """The one-line command that reproduces this run: its flags and every `key=value` override,
    shell-quoted."""
    parts = ["harness", "run", "--encoder", c["encoder"]["name"], "--task", c["task"]["name"],
             "--probe", c["probe"]["kind"]]
    if c["checkpoint"]:
        parts += ["--checkpoint", str(c["checkpoint"])]
    if c.get("probe_checkpoint"):
        parts += ["--probe-checkpoint", str(c["probe_checkpoint"])]
    if c["random_init"]:
        parts.append("--random-init")
    if c.get("trust_checkpoint"):
        parts.append("--trust-checkpoint")
    parts += ["--seed", str(c["seed"])]
    if c.get("checkpoint_key"):
        parts += ["--checkpoint-key", str(c["checkpoint_key"])]
    for item in overrides or []:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in _FLAG_KEYS or key in _PLACE_KEYS or key.startswith("hydra"):
            continue
        parts.append(item)
    return shlex.join(parts)
