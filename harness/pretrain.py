"""Glue for `harness pretrain`: a pretraining config + video manifests -> the JEPA trainer.

encoders/ (the trainer) and tasks/ (decoding, sampling, augmentation) never import each other;
this module joins them: it reads the manifests with the tasks package (labels ignored), builds a
training `VideoDataset` with the pretraining transform, shards it over the processes, and hands
the trainer a batch factory `make_batches(epoch, start_batch)`.

Data order and augmentation are functions of (seed, epoch, sample index) only, so a resumed run
sees exactly the clips the uninterrupted run would have seen, whatever `num_workers` is.
Unreadable videos are skipped, counted, logged and written to `<out>/data_problems.json`; past
`data.max_failure_fraction` the run stops with an error that names examples.

Several manifests with `data.manifest_weights` (the release's `datasets` + `datasets_weights`,
e.g. K710 + SSv2 + HowTo100M for VideoMix2M) are a weighted mix: each epoch's clips are drawn
with replacement, manifest d's videos each with probability w_d / (sum(w) * n_d), so d gives a
w_d / sum(w) share of the clips whatever its size. `<out>/config.json` holds the mix under
`data_mix`: each manifest's path, videos, weight, share and hashes. After training, rank 0 draws
`<out>/loss.png` from `<out>/metrics.csv` (`results.pretrain_plot`).

    from harness.pretrain import run_pretrain
    run_pretrain("vjepa_tiny", ["optim.total_steps=200", "data.root=data/digits"])
    # multi-process: torchrun --nproc_per_node 2 -m harness pretrain --config vjepa_tiny
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.pretrain_config import compose_pretrain_config

log = logging.getLogger(__name__)

MIN_SEEN_FOR_FAILURE_CHECK = 20  # don't stop a run on the first bad file of a tiny dataset
LOSS_PLOT_NAME = "loss.png"


def read_pretrain_manifests(cfg: dict) -> list[dict]:
    """Each manifest of `data.manifests` (relative to `data.root`): its entries, weight, hashes."""
    from common.digest import file_sha256
    from tasks.errors import DataError
    from tasks.manifest import manifest_sha256, read_manifest

    data = cfg["data"]
    root = Path(os.path.expanduser(str(data.get("root") or ".")))
    manifests = list(data.get("manifests") or [])
    if not manifests:
        raise DataError(f"pretraining config {cfg.get('name')!r} lists no data.manifests")
    weights = data.get("manifest_weights")
    parts = []
    for i, m in enumerate(manifests):
        path = Path(os.path.expanduser(str(m)))
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            hint = (" Make the digits videos with `harness data make digits --out data/digits` "
                    "(or set data.root=...)." if "digits" in str(path) else " Set data.root=... or data.manifests=[...].")
            raise DataError(f"pretraining manifest not found: {path}.{hint}")
        entries = read_manifest(path)
        if not entries:
            raise DataError(f"pretraining manifest {path} lists no videos; drop it from data.manifests")
        parts.append({"manifest": str(m), "path": str(path.resolve()), "entries": entries,
                      "weight": None if weights is None else float(weights[i]),
                      "sha256": manifest_sha256(entries, base=path.parent),
                      "file_sha256": file_sha256(path)})
    return parts


def read_pretrain_entries(cfg: dict) -> list[tuple[str, int]]:
    """All videos of `data.manifests` (relative to `data.root`), in manifest order."""
    return [e for part in read_pretrain_manifests(cfg) for e in part["entries"]]


def sample_weights(parts: list[dict]) -> list[float] | None:
    """Per-video sampling weights of a weighted mix (w_d / n_d each, as the release); None if unweighted."""
    if any(p["weight"] is None for p in parts):
        return None
    return [p["weight"] / len(p["entries"]) for p in parts for _ in p["entries"]]


def data_mix(parts: list[dict]) -> list[dict]:
    """What config.json records of the mix (no entries)."""
    total = sum(p["weight"] for p in parts) if all(p["weight"] is not None for p in parts) else None
    n_all = sum(len(p["entries"]) for p in parts)
    return [{"manifest": p["manifest"], "path": p["path"], "videos": len(p["entries"]),
             "weight": p["weight"],
             "share": (p["weight"] / total) if total else len(p["entries"]) / n_all,
             "sha256": p["sha256"], "file_sha256": p["file_sha256"]} for p in parts]


class SeededClips:
    """A dataset view whose item i of epoch e is drawn with torch seeded by (seed, e, i).

    The tasks' VideoDataset draws clip positions and augmentation from torch's generator; seeding
    per item makes them independent of worker count and of where a resumed run restarts.
    """

    def __init__(self, dataset, seed: int, epoch: int, indices: Sequence[int]):
        self.dataset, self.seed, self.epoch, self.indices = dataset, int(seed), int(epoch), list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        import torch

        index = self.indices[i]
        with torch.random.fork_rng(devices=[]):  # the CPU generator only (tasks.loading)
            torch.default_generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.dataset[index]


class PretrainData:
    """Epoch-seeded shuffling, rank sharding and batching of the pretraining videos.

    Per epoch: one permutation of all videos (seeded by seed and epoch, the same on every rank),
    cut to `steps_per_epoch * batch * world` (the release's drop_last), dealt round-robin to the
    ranks like DistributedSampler; each rank then batches its share in order.
    """

    def __init__(self, dataset, *, batch_size: int, rank: int, world_size: int, seed: int,
                 num_workers: int = 0, max_failure_fraction: float = 0.1,
                 weights: Sequence[float] | None = None):
        self.dataset = dataset
        if weights is not None and len(weights) != len(dataset):
            raise ValueError(f"{len(weights)} sampling weights for {len(dataset)} videos")
        self.weights = None if weights is None else list(weights)
        self.batch_size, self.rank, self.world = int(batch_size), int(rank), int(world_size)
        self.seed, self.num_workers = int(seed), int(num_workers)
        self.max_failure_fraction = float(max_failure_fraction)
        self.steps_per_epoch = len(dataset) // (self.batch_size * self.world)
        if self.steps_per_epoch < 1:
            from tasks.errors import DataError

            raise DataError(
                f"{len(dataset)} pretraining videos are fewer than one global batch "
                f"({self.batch_size} x {self.world} processes); lower data.batch_size")
        self.seen = 0
        self.failures: list[tuple[str, str]] = []

    def rank_indices(self, epoch: int) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))
        n = self.steps_per_epoch * self.batch_size * self.world
        if self.weights is not None:  # a weighted mix: draws with replacement (same on every rank)
            w = torch.tensor(self.weights, dtype=torch.float64)
            perm = torch.multinomial(w, n, replacement=True, generator=g).tolist()
        else:
            perm = torch.randperm(len(self.dataset), generator=g).tolist()[:n]
        return perm[self.rank:: self.world]

    def __call__(self, epoch: int, start_batch: int) -> Iterator:
        """Batches (B, 3, T, H, W) of this rank from `start_batch` on; None for an all-unreadable batch."""
        import torch
        from torch.utils.data import DataLoader

        from tasks import collate_clips

        indices = self.rank_indices(epoch)[start_batch * self.batch_size:]
        loader = DataLoader(SeededClips(self.dataset, self.seed, epoch, indices),
                            batch_size=self.batch_size, shuffle=False, drop_last=False,
                            num_workers=self.num_workers, collate_fn=collate_clips,
                            pin_memory=torch.cuda.is_available())
        for batch in loader:
            self._account(batch)
            video = batch["video"]
            # (B, S, V, 3, T, H, W) with one segment and one view in training.
            yield None if video is None else video[:, 0, 0]

    def _account(self, batch: dict) -> None:
        n_bad = len(batch["failures"])
        self.seen += n_bad + (0 if batch["video"] is None else len(batch["video"]))
        for path, error in batch["failures"]:
            log.warning("skipping unreadable video %s: %s", path, error)
        self.failures += batch["failures"]
        if self.seen >= MIN_SEEN_FOR_FAILURE_CHECK and len(self.failures) > self.max_failure_fraction * self.seen:
            from tasks.errors import DataError

            examples = "; ".join(f"{p} ({e})" for p, e in self.failures[:3])
            raise DataError(
                f"{len(self.failures)} of {self.seen} pretraining videos were unreadable, more than "
                f"data.max_failure_fraction={self.max_failure_fraction}; e.g. {examples}. Fix or drop "
                "them from the manifests, or raise data.max_failure_fraction")

    def problems(self) -> dict:
        return {"seen": self.seen, "unreadable": len(self.failures),
                "examples": [{"path": p, "error": e} for p, e in self.failures[:50]]}


def build_pretrain_dataset(cfg: dict, encoder_cfg: dict, frame_cache=None, parts: list[dict] | None = None):
    """The tasks package's training VideoDataset over the manifests, with the pretraining transform.

    `frame_cache`: a shared `FrameCache` to use instead of one sized by `data.cache_decoded_mb`;
    `parts`: the manifests as `read_pretrain_manifests` read them (read here when None)."""
    from tasks.dataset import VideoDataset
    from tasks.frame_cache import FrameCache
    from tasks.sampling import ClipSampler
    from tasks.transforms import TrainTransform

    data, aug, arch = cfg["data"], cfg["augmentation"], encoder_cfg["arch"]
    frames = int(data["num_frames"] or arch.get("num_frames", 1))
    resolution = int(data["resolution"] or arch["resolution"])
    sampler = ClipSampler(frames, int(data["frame_step"]), 1, placement="random")
    transform = TrainTransform(resolution, tuple(encoder_cfg["mean"]), tuple(encoder_cfg["std"]),
                               **_train_aug(aug))
    cache_mb = float(data.get("cache_decoded_mb") or 0)
    cache = frame_cache
    if cache is None and cache_mb > 0:
        cache = FrameCache(int(cache_mb * 2**20))
    parts = read_pretrain_manifests(cfg) if parts is None else parts
    entries = [e for part in parts for e in part["entries"]]
    return VideoDataset(entries, sampler=sampler, transform=transform,
                        split="pretrain", backend=str(data.get("backend") or "auto"),
                        frame_cache=cache)


def _train_aug(aug: dict) -> dict:
    out = {"horizontal_flip": bool(aug.get("horizontal_flip", False))}
    rrc = aug.get("random_resized_crop")
    if rrc:
        out["random_resized_crop"] = {"scale": list(rrc["scale"]), "ratio": list(rrc["ratio"])}
    return out


def run_pretrain(config: str | None, overrides: Sequence[str] = (), out_dir: str | os.PathLike | None = None,
                 resume: bool = True, progress: bool = True, frame_cache=None,
                 resume_from: str | os.PathLike | None = None, torch_threads="auto") -> Path:
    """Pretrain with a recipe of encoders/jepa/configs/pretrain (or a YAML path; None: vjepa_tiny,
    or the recipe a `pretrain=NAME` override selects) and Hydra `key=value` overrides (see
    `harness.pretrain_config`); returns the final checkpoint.

    Re-running with the same `out_dir` resumes from `<out_dir>/latest.pth.tar` (unless
    `resume=False`). Under torchrun each process trains its shard (DDP); rank 0 writes.
    `frame_cache`: decoded videos shared with other runs in this process (see `harness demo`).
    `resume_from`: a checkpoint (ours, or one the release's trainer wrote) to start from when
    `out_dir` holds none of its own.
    """
    import torch.distributed as dist

    from parallel import init_distributed

    cfg = compose_pretrain_config(config, overrides)
    if resume_from is not None and not Path(resume_from).is_file():
        raise FileNotFoundError(f"--resume-from {resume_from}: no such checkpoint file")
    out = Path(out_dir) if out_dir is not None else Path("runs") / "pretrain" / str(cfg["name"])
    joined_here = not dist.is_initialized()
    info = init_distributed(cfg["device"])
    from harness.runner import intra_op_threads
    from harness.runner import torch_threads as threads_set

    # The same thread rule as a probe run (`torch_threads`: auto or a number): one intra-op
    # thread on a CPU that loads in process.
    threads = intra_op_threads(torch_threads, device=str(info.device),
                               in_process_loading=int(cfg["data"]["num_workers"]) == 0)
    try:
        with threads_set(threads):
            return _train(cfg, out, info, resume=resume, progress=progress, frame_cache=frame_cache,
                          resume_from=resume_from)
    finally:
        if joined_here and dist.is_initialized():  # leave the process as we found it
            dist.destroy_process_group()


def _train(cfg: dict, out: Path, info, *, resume: bool, progress: bool, frame_cache=None,
           resume_from=None) -> Path:
    from encoders.jepa.model import build_encoder_config
    from encoders.jepa.trainer import JepaTrainer
    from parallel import gather_objects

    encoder_cfg = build_encoder_config(cfg)
    parts = read_pretrain_manifests(cfg)
    data = PretrainData(
        build_pretrain_dataset(cfg, encoder_cfg, frame_cache, parts=parts),
        batch_size=int(cfg["data"]["batch_size"]),
        rank=info.rank, world_size=info.world_size, seed=int(cfg["seed"]),
        num_workers=int(cfg["data"]["num_workers"]),
        max_failure_fraction=float(cfg["data"]["max_failure_fraction"]),
        weights=sample_weights(parts))
    trainer = JepaTrainer(cfg, data.steps_per_epoch, out, progress=progress, dist_info=info)
    if info.is_main:
        from common.atomic import atomic_write

        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dict(trainer.cfg, data_mix=data_mix(parts)), indent=2)
        atomic_write(out / "config.json", lambda f: f.write(text.encode("utf-8")))
    if resume_from is not None and not (resume and trainer.checkpoint_path.is_file()):
        trainer.load(resume_from)
        log.info("starting from %s at step %d", resume_from, trainer.step)
    path = trainer.fit(data, resume=resume)
    per_rank = gather_objects(data.problems())  # collective: every rank reports its shard
    if info.is_main:
        from encoders.jepa.reporting import METRICS_NAME
        from results.pretrain_plot import plot_loss

        plot_loss(out / METRICS_NAME, out / LOSS_PLOT_NAME, title=trainer.cfg.get("name") or "pretraining")
        problems = {"seen": sum(p["seen"] for p in per_rank),
                    "unreadable": sum(p["unreadable"] for p in per_rank),
                    "examples": [e for p in per_rank for e in p["examples"]][:50],
                    "world_size": info.world_size}
        from common.atomic import atomic_write

        text = json.dumps(problems, indent=2)
        atomic_write(out / "data_problems.json", lambda f: f.write(text.encode("utf-8")))
    return path
