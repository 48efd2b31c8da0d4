"""`harness pretrain --config vjepa_tiny [key=value ...]`: JEPA pretraining in this repo."""
from __future__ import annotations

import argparse

EPILOG = """\
Recipes are the Hydra group `pretrain` in encoders/jepa/configs/pretrain/ (vjepa_tiny: video
latent targets, vjepa_tiny_pixels: VideoMAE-style pixel targets, ijepa_tiny: image latent
targets, vjepa_vitl: the paper's ViT-L recipe), composed over encoders/jepa/configs/defaults.yaml
(every key and its default); --config also takes a path to a YAML file. Any key can be
overridden as key=value, as in `harness run`, e.g. optim.total_steps=200 data.batch_size=8
optim.ema=[0.99,1.0]; --show-config prints the composed config.
Checkpoints (release layout: encoder, predictor, target_encoder, opt, ...) are written atomically
to <out>/latest.pth.tar; re-running the same command resumes. With checkpoint_layout=release (the
default) the release's app/vjepa/train.py resumes them, and --resume-from jepa-latest.pth.tar
continues a run the release's trainer wrote (at the start of the epoch after its last).
Several data.manifests with data.manifest_weights=[w1,w2,...] are a weighted mix (the release's
datasets + datasets_weights); <out>/config.json records it under data_mix with each manifest's
hash. <out>/metrics.csv logs per step loss, lr, wd, EMA momentum, clips/s and target_rank, the
effective rank of the latent targets: a fall to a few means the features collapsed (the run
warns), which the loss alone does not show; and context_gain, the loss with the context features zeroed minus the loss: near zero means the
predictor ignores the context (raise optim.predictor_lr_scale).
data.cache_decoded_mb=N keeps decoded videos in RAM (per process) for small datasets.
Evaluate the result with:

  harness run --encoder vjepa_tiny --checkpoint <out>/latest.pth.tar --task digits_motion

Multi-process: torchrun --nproc_per_node N -m harness pretrain --config ...
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--config", help="pretraining recipe (a name of encoders/jepa/configs/pretrain/, "
                   "or a path to a YAML file; default vjepa_tiny); pretrain=NAME works too")
    p.add_argument("--out", help="output folder (default runs/pretrain/<config>)")
    p.add_argument("--no-resume", action="store_true", help="start over, ignoring a checkpoint")
    p.add_argument("--resume-from", metavar="CKPT",
                   help="start from this checkpoint (ours or the release's) when <out> has none")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--show-config", action="store_true", help="print the composed config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def main(args) -> int:
    if args.show_config:
        from omegaconf import OmegaConf

        from harness.pretrain_config import compose_pretrain_config

        cfg = compose_pretrain_config(args.config, list(args.overrides))
        print(OmegaConf.to_yaml(OmegaConf.create(cfg)), end="")
        return 0
    from harness.pretrain import run_pretrain

    path = run_pretrain(args.config, list(args.overrides), out_dir=args.out,
                        resume=not args.no_resume, progress=not args.no_progress,
                        resume_from=args.resume_from)
    print(f"checkpoint: {path}")
    return 0
