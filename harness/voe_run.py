"""`harness run` on a violation-of-expectation task (`kind: voe`): the predictor's surprise on
every pair, no training.

The chain: the task's pairs (`tasks.voe`) -> each video's frames, cropped and resized as the
authors' loader does -> `encoders.surprise.surprise_curves` (sliding windows, every context
length) -> `video_scores` (mean and max per video, per context length and "min", the authors'
Filtered) -> `results.physics` metrics with bootstrap intervals, per property -> one record, the
per-video surprises beside it as its predictions file.

The protocol is the task's VoE spec (sampling, properties, split, the manifest's digest over
pair paths relative to the manifest's folder), the surprise settings
(`SurpriseProtocol.to_dict()`), the input (resolution, crop) and the metrics' settings. The
batch size (`eval_batch_size`) is not protocol: each window is its own item, so any batch size
gives batch 1's numbers.

The headline (`main_metric`) is the paper's: Garrido et al. 2025 plot "Relative Accuracy (avg)"
(pairwise accuracy on mean surprise) taking, per property, the best of its rows (each context
length and Filtered) and averaging over properties (figures.ipynb, `get_average_acc`). It picks
the context on the evaluation pairs themselves; `relative_mean` etc. (Filtered, all pairs) pick
nothing, and the record keeps both.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.voe_metrics import (
    ALPHA,
    MAIN_METRIC,
    N_BOOT,
    compute_metrics,
    write_surprises,
)

log = logging.getLogger("harness.voe")

# The authors' loader crops with random_resized_crop(scale=(1, 1), ratio=(1, 1)): the whole
# frame when it is square, else (its fallback) the central square; then a bilinear resize.
ASPECT_RANGE = (1.0, 1.0)
DEFAULT_BATCH = 8           # windows per encoder call when eval_batch_size is null
# Flags of a probe run that mean nothing here (no probe is trained or loaded).
PROBE_ONLY_FLAGS = {"probe": "--probe", "probe_checkpoint": "--probe-checkpoint",
                    "split": "--split"}
PROBE_ONLY_KEYS = ("probe", "probe_checkpoint", "micro_batch_size", "cache_features",
                   "feature_store", "encoder_chunk")


@dataclass
class VoEPlan:
    """Everything of a VoE run decided before the weights are read."""

    c: dict
    settings: object             # harness.settings.RunSettings
    encoder_cfg: dict
    encoder_label: str
    spec: object                 # tasks.voe.VoETaskSpec
    voe: object                  # tasks.voe.VoESet
    split: str
    manifest: Path
    resolution: int
    device: str
    batch_size: int
    max_failure_fraction: float
    predictor: dict              # predictor sizes set by the run (`+predictor={width: 48, ...}`)
    protocol: dict
    protocol_id: str
    departures: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.settings.seed


@dataclass
class VoEOutcome:
    record: dict
    path: Path
    reused: bool = False


def check_flags(args, overrides: list[str]) -> None:
    """A VoE run trains no probe: the flags and keys of one are an error that says so."""
    given = [flag for key, flag in PROBE_ONLY_FLAGS.items() if getattr(args, key, None)]
    refuse_probe_only(args.task, given + probe_only_keys(overrides))


def probe_only_keys(overrides: list[str]) -> list[str]:
    """The keys of `overrides` that only a probe run reads (`+task.train_fold`: `--split`)."""
    keys = [o.split("=", 1)[0] for o in overrides]
    return [k for k in keys if k.lstrip("+~").split(".")[0] in PROBE_ONLY_KEYS
            or k.lstrip("+~") == "task.train_fold"]


def refuse_probe_only(task, given: list[str]) -> None:
    if given:
        raise ValueError(f"task {task!r} is a violation-of-expectation task (kind voe): it "
                         f"scores the predictor's surprise and trains no probe, so "
                         f"{', '.join(sorted(set(given)))} do(es) not apply; drop them (the "
                         f"window batch is eval_batch_size=N)")


# ----- plan ------------------------------------------------------------------------------

def manifest_lines(voe, base: Path) -> list[str]:
    """One line per pair (and unpaired video): what the numbers are of, with paths relative
    to the manifest's folder, so the same data give the same protocol at any mount point."""
    lines = [f"{p.pair_id}\t{p.property}\t{_rel(p.possible.path, base)}\t{p.possible.start}\t"
             f"{_rel(p.impossible.path, base)}\t{p.impossible.start}\t{int(p.align_end)}"
             for p in sorted(voe.pairs, key=lambda p: p.pair_id)]
    lines += [f"-\t-\t{_rel(v.path, base)}\t{v.start}" for v in voe.videos]
    return lines


def surprise_protocol(spec, target: str = "latent"):
    from encoders.surprise import SurpriseProtocol

    s = spec.sampling
    return SurpriseProtocol(frames_per_window=s.frames_per_clip, stride=s.stride,
                            context_frames=s.context_frames, frame_step=s.frame_step,
                            target=target)


def target_kind(encoder_cfg: dict) -> str:
    """The surprise targets an entry's family implies without reading weights: VideoMAE scores
    pixels (its decoder), JEPA entries latents. A `harness pretrain` file whose predictor
    predicts pixels is found when it is loaded (`with_target`)."""
    return "pixels" if encoder_cfg.get("family") == "videomae" else "latent"


def with_target(plan: VoEPlan, target: str) -> VoEPlan:
    """The plan with the surprise targets the loaded predictor has (its protocol and id)."""
    import dataclasses

    import results

    protocol = dict(plan.protocol)
    protocol["surprise"] = {**protocol["surprise"], "target": target}
    return dataclasses.replace(plan, protocol=protocol, protocol_id=results.protocol_id(protocol))


def plan_voe(cfg) -> VoEPlan:
    """Check the task config and read its pair manifest (every video checked to exist), before
    any weights are read."""
    import encoders
    import results
    from common.digest import lines_digest
    from harness import identity
    from harness.config import to_container
    from harness.plan import resolve_device
    from harness.settings import RunSettings
    from tasks.errors import DataError
    from tasks.voe import read_voe_manifest, voe_spec

    c = to_container(cfg)
    settings = RunSettings.from_config(c)
    task_cfg = dict(c["task"])
    spec = voe_spec(task_cfg)
    split = spec.eval_split
    manifest = spec.manifest_path(split)
    if not manifest.is_file():
        hint = ("`harness data make physics --out DIR`" if spec.name == "physics_synth"
                else f"`harness data prepare {spec.name} --root DIR`")
        raise DataError(f"task {spec.name!r}: no pair manifest at {manifest}; make it with "
                        f"{hint} and pass task.data.root=DIR")
    voe = read_voe_manifest(manifest)
    if not voe.pairs:
        raise DataError(f"{manifest} holds no labelled pairs to score")
    missing = [v.path for p in voe.pairs for v in (p.possible, p.impossible)
               if not os.path.exists(v.path)]
    mff = float(task_cfg.get("max_failure_fraction", 0.05))
    if missing and len(missing) > mff * 2 * len(voe.pairs):
        raise DataError(f"{len(missing)} of {2 * len(voe.pairs)} videos of {manifest} do not "
                        f"exist (first: {missing[0]}); is task.data.root right?")
    encoder_cfg = encoders.resolve_config(dict(c["encoder"]), settings.checkpoint)
    predictor = predictor_settings(c.get("predictor"))
    arch = encoder_cfg.get("arch") or {}
    resolution = int(spec.resolution or arch.get("resolution"))
    device = resolve_device(settings.device)
    surprise = surprise_protocol(spec, target_kind(encoder_cfg))
    task_protocol = {
        "kind": "voe", "name": spec.name, "split": split,
        "sampling": {**asdict(spec.sampling), "context_frames": list(spec.sampling.context_frames)},
        "properties": list(spec.properties),
        "manifests": {split: {"videos": 2 * len(voe.pairs) + len(voe.videos),
                              "pairs": len(voe.pairs),
                              "sha256": lines_digest(manifest_lines(voe, manifest.parent))}},
        "input": {"resolution": resolution, "frames_per_window": spec.sampling.frames_per_clip,
                  "crop": {"scale": [1.0, 1.0], "aspect_range": list(ASPECT_RANGE)},
                  "resize": "bilinear"},
    }
    protocol = {"protocol_version": results.PROTOCOL_VERSION, "task": task_protocol,
                "surprise": surprise.to_dict(),
                "metrics": {"main": MAIN_METRIC, "n_boot": N_BOOT, "alpha": ALPHA,
                            "interval": "percentile bootstrap over pairs"},
                "precision": "fp32"}
    return VoEPlan(c=c, settings=settings, encoder_cfg=encoder_cfg,
                   encoder_label=_label(identity.encoder_label(encoder_cfg), predictor),
                   spec=spec, voe=voe,
                   split=split, manifest=manifest, resolution=resolution, device=device,
                   batch_size=settings.eval_batch_size or DEFAULT_BATCH,
                   max_failure_fraction=mff, predictor=predictor, protocol=protocol,
                   protocol_id=results.protocol_id(protocol),
                   departures=_departures(task_cfg))


def predictor_settings(value) -> dict:
    """`+predictor={width: 48, depth: 2, ...}`: the predictor's sizes where the file does not
    state them, or for a random init (the registry's default is the release's 384 x 12). They
    are the model's, so they enter the run's identity and label, not the protocol."""
    from encoders.predictors import OVERRIDE_KEYS

    if value in (None, {}):
        return {}
    if not isinstance(value, dict):  # a user's value: the CLI reports a ValueError as one line
        raise ValueError(f"predictor must be a mapping such as {{width: 48, depth: 2}}, got "  # noqa: TRY004
                         f"{value!r}")
    bad = sorted(set(value) - set(OVERRIDE_KEYS))
    if bad:
        raise ValueError(f"unknown predictor setting(s) {', '.join(bad)}; the settings are "
                         f"{', '.join(OVERRIDE_KEYS)}")
    return dict(value)


def _label(encoder_label: str, predictor: dict) -> str:
    if not predictor:
        return encoder_label
    return f"{encoder_label} + predictor ({', '.join(f'{k} {v}' for k, v in sorted(predictor.items()))})"


def _departures(task_cfg: dict) -> dict:
    from harness import identity

    return identity.departures(task_cfg, {})


# ----- frames ----------------------------------------------------------------------------

def crop_box(height: int, width: int, aspect_range=ASPECT_RANGE) -> tuple[int, int, int, int]:
    """(top, left, h, w): the fallback of the authors' `_get_param_spatial_crop` at scale 1,
    which their draws reach whenever the frame's aspect lies outside `aspect_range`."""
    ratio = width / height
    if ratio < min(aspect_range):
        w, h = width, round(width / min(aspect_range))
    elif ratio > max(aspect_range):
        h, w = height, round(height * max(aspect_range))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def video_tensor(frames: np.ndarray, resolution: int, mean, std):
    """uint8 `(T, H, W, 3)` -> normalised float `(3, T, R, R)` as the authors' VideoTransform
    makes it without augmentation: crop, bilinear resize of 0..255 floats, then (x - 255 mean)
    / (255 std)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).float().permute(3, 0, 1, 2)  # C T H W
    top, left, h, w = crop_box(x.shape[2], x.shape[3])
    x = x[:, :, top:top + h, left:left + w]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1) * 255.0
    return (x - m) / s


# ----- run -------------------------------------------------------------------------------

def run_key(plan: VoEPlan, checkpoint: dict) -> str:
    from harness import identity

    encoder = {**plan.encoder_cfg, "predictor": plan.predictor} if plan.predictor else \
        plan.encoder_cfg
    return identity.run_id(encoder, checkpoint, plan.spec.name, plan.split,
                           plan.protocol_id, plan.seed)


def score_pairs(plan: VoEPlan, models, protocol, *, progress: bool = False):
    """Per-video rows (pair, property, possible, name, path, scores) of every readable pair, and
    the pairs that could not be read ([(pair_id, error)])."""
    import torch

    from common.progress import Bar
    from encoders.surprise import surprise_curves, video_scores
    from tasks.voe import load_pair

    enc = models.context_encoder.spec
    s = plan.spec.sampling
    rows, failures = [], []
    with Bar(progress) as bar:
        task = bar.add(f"surprise {plan.spec.name}", total=len(plan.voe.pairs), info="")
        for pair in plan.voe.pairs:
            try:
                good, bad = load_pair(pair, frame_step=s.frame_step, max_frames=s.max_frames,
                                      backend=plan.spec.decoder)
                clips = [video_tensor(v, plan.resolution, enc.mean, enc.std) for v in (good, bad)]
            except Exception as err:  # noqa: BLE001 - a bad file of any kind is counted
                failures.append((pair.pair_id, f"{type(err).__name__}: {err}"[:300]))
                log.warning("pair %s skipped: %s", pair.pair_id, failures[-1][1])
                bar.update(task, advance=1)
                continue
            if clips[0].shape == clips[1].shape:
                scores = video_scores(surprise_curves(models, torch.stack(clips).to(plan.device),
                                                      protocol, batch_size=plan.batch_size).cpu(),
                                      protocol)
            else:  # videos of different lengths (no end alignment): each alone
                scores = [video_scores(surprise_curves(models, x[None].to(plan.device), protocol,
                                                       batch_size=plan.batch_size).cpu(),
                                       protocol)[0] for x in clips]
            for item, score in zip((pair.possible, pair.impossible), scores):
                rows.append({"pair": pair.pair_id, "property": pair.property,
                             "possible": item is pair.possible,
                             "name": item.name or Path(item.path).name,
                             "path": _rel(item.path, plan.manifest.parent), "scores": score})
            bar.update(task, advance=1)
    return rows, failures


def _rel(path: str, base: Path) -> str:
    """`path` relative to `base` (with `..` where it lies elsewhere), in / form."""
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return Path(path).as_posix()


def run_voe(cfg, overrides: list[str] | None = None) -> VoEOutcome:
    """Score every pair of the task's evaluation split; write and return the record. A run
    whose record exists (same encoder, weights, protocol and seed) is not redone."""
    import torch

    import results
    from encoders.surprise import load_models
    from harness import identity
    from harness.preflight import check_out_writable
    from harness.runner import intra_op_threads, torch_threads

    check_out_writable(cfg.out)
    plan = plan_voe(cfg)
    settings = plan.settings
    planned = identity.checkpoint_identity(plan.c)
    key = run_key(plan, planned)
    records_dir = settings.out / "records"
    done = identity.find_finished(records_dir, key) if settings.resume else None
    if done is not None:
        log.info("run %s already finished: %s", key, done)
        return VoEOutcome(record=results.read_record(done), path=done, reused=True)

    threads = intra_op_threads(settings.torch_threads, device=plan.device, in_process_loading=True)
    with torch_threads(threads):
        torch.manual_seed(plan.seed)
        models, target = load_models(
            plan.encoder_cfg["name"], settings.checkpoint, random_init=settings.random_init,
            seed=plan.seed, trust_checkpoint=settings.trust_checkpoint,
            predictor_overrides=plan.predictor or None,
            **identity.arch_differences(plan.encoder_cfg))
        if target != plan.protocol["surprise"]["target"]:
            # a pixel-target pretraining file: its protocol (and identity) say so
            plan = with_target(plan, target)
            key = run_key(plan, planned)
            done = identity.find_finished(records_dir, key) if settings.resume else None
            if done is not None:
                log.info("run %s already finished: %s", key, done)
                return VoEOutcome(record=results.read_record(done), path=done, reused=True)
        identity.check_loaded(planned, models.context_encoder.checkpoint_info)
        for m in (models.context_encoder, models.predictor, models.target_encoder):
            if m is not None:
                m.to(plan.device)
        log.info("run %s: encoder %s, task %s (%d pairs), protocol %s", key, plan.encoder_label,
                 plan.spec.name, len(plan.voe.pairs), plan.protocol_id)
        started = time.time()
        protocol = surprise_protocol(plan.spec, target)
        rows, failures = score_pairs(plan, models, protocol, progress=settings.progress)
        scored_s = time.time() - started
    n = len(plan.voe.pairs)
    if len(failures) > plan.max_failure_fraction * n or not rows:
        from tasks.errors import DataError

        raise DataError(f"{len(failures)} of {n} pairs could not be read (more than "
                        f"task.max_failure_fraction={plan.max_failure_fraction:g} of them); "
                        f"first: {failures[0][0]}: {failures[0][1]}")
    metrics, breakdown = compute_metrics(rows, protocol, seed=plan.seed)
    ran_threads = threads if threads is not None else torch.get_num_threads()
    record = make_record(plan, models, metrics, breakdown, failures, key, overrides,
                         {"surprise_s": scored_s, "wall_seconds": time.time() - started,
                          "pairs_per_s": len(rows) / 2 / max(scored_s, 1e-9)}, ran_threads)
    path = write_record(plan, record, rows, key)
    return VoEOutcome(record=record, path=path)


def make_record(plan, models, metrics, breakdown, failures, key, overrides, timings,
                threads: int) -> dict:
    """The run's record; `threads`: the intra-op threads the scoring ran with (restored since)."""
    import torch

    import results
    from harness.record_writer import reproduce_command

    enc = models.context_encoder
    spec = enc.spec
    checkpoint = dict(enc.checkpoint_info)
    command = reproduce_command(plan.c, overrides)
    # A VoE run has no probe: the reproduce command's `--probe <kind>` is left out.
    command = command.replace(f" --probe {plan.c['probe']['kind']}", "", 1)
    return {**results.make_record(
        encoder={"name": spec.name, "label": plan.encoder_label, "family": spec.family,
                 "modality": spec.modality, "spec": spec.to_dict(), "config": plan.encoder_cfg},
        checkpoint=checkpoint, task=plan.spec.name, split=plan.split, protocol=plan.protocol,
        metrics=metrics,
        data_problems={"unreadable_pairs": len(failures),
                       "examples": [f"{p}: {e}" for p, e in failures[:10]]},
        timings=timings, seed=plan.seed, device=plan.device, precision="fp32",
        extra={"label": plan.settings.label, "run_id": key, "command": command,
               "main_metric": MAIN_METRIC, "task_kind": "voe",
               "predictor": {"target": plan.protocol["surprise"]["target"],
                             "spec": _spec_dict(models.predictor)},
               "batch_size": plan.batch_size, "voe": breakdown}),
        "protocol_departures": dict(plan.departures),
        "runtime": {"torch_threads": threads,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "loader_workers": 0}}


def _spec_dict(predictor) -> dict:
    spec = getattr(predictor, "spec", None)
    return spec.to_dict() if hasattr(spec, "to_dict") else {}


def write_record(plan: VoEPlan, record: dict, rows: list[dict], key: str) -> Path:
    """The per-video surprises (`<record>.predictions.npz`, kind voe), then the record, into
    `<out>/records`; the name ends in the run identity's first 6 digits like other runs'."""
    import results
    from results.predictions import predictions_path

    records_dir = plan.settings.out / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    filename = results.record_filename(record)[:-len("xxxxxx.json")] + key[:6] + ".json"
    pred_path = predictions_path(records_dir / filename)
    write_surprises(pred_path, rows)
    record["extra"]["predictions"] = pred_path.name
    path = results.write_record(record, records_dir, filename=filename)
    try:
        from results.index import note_written
    except ImportError:  # the index is optional to this writer: a read walks the folder
        return path
    note_written(path, plan.settings.out)
    return path


# ----- dry run ---------------------------------------------------------------------------

def describe(plan: VoEPlan) -> list[str]:
    """What `--dry-run` prints: the pairs, the windows, the protocol; nothing is scored."""
    s = plan.spec.sampling
    props = {}
    for p in plan.voe.pairs:
        props[p.property] = props.get(p.property, 0) + 1
    return [
        f"task {plan.spec.name} ({plan.split}): {len(plan.voe.pairs)} pairs from {plan.manifest}",
        "  " + ", ".join(f"{k} {v}" for k, v in sorted(props.items())),
        (f"encoder {plan.encoder_label} at {plan.resolution} px; surprise targets "
         f"{plan.protocol['surprise']['target']}"),
        f"frame step {s.frame_step}" + (f" within the first {s.max_frames} frames" if s.max_frames else "")
        + f", windows of {s.frames_per_clip} frames every {s.stride}, context lengths "
        f"{list(s.context_frames)}; {plan.batch_size} windows per encoder call",
        f"protocol_id {plan.protocol_id}; the record goes to {plan.settings.out / 'records'}",
        ("headline: the paper's relative accuracy on mean surprise (best curve per property, "
         "averaged over properties); Filtered metrics with intervals beside it"),
    ]
