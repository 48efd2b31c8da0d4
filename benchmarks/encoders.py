"""Per-encoder forward cost: clips/s, peak memory and GFLOPs per clip, side by side.

    .venv/bin/python benchmarks/encoders.py                       # tiny entries on CPU
    .venv/bin/python benchmarks/encoders.py vjepa_vitl --device cuda --batch 4

Each encoder runs in its own subprocess (random weights, eval mode, no grad), so its peak
resident memory (CPU) or peak allocated memory (CUDA) is its own. GFLOPs are counted with
`torch.utils.flop_counter` on the meta device at the same input. A few warm-up forwards are
discarded; the figure is the median of the timed ones. bf16 on CUDA (weights cast once), fp32 on
CPU, as `harness run` does.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TINY = ["vjepa_tiny", "ijepa_tiny", "vjepa_small", "mobilenet_v2_imagenet"]
FAMILIES = ["vjepa_vitl", "videomae_vitl", "videomaev2_vitg", "vjepa2_vitl", "ijepa_vith14",
            "timm:vit_small_patch16_224"]
# --tiny: every family's own code at a size a CPU runs in milliseconds (same blocks, fewer of
# them, narrower); the figures compare implementations, not the published models.
TINY_ARCH = {"embed_dim": 96, "depth": 2, "num_heads": 4, "resolution": 64, "mlp_hidden_dim": None}


def one(name: str, device: str, batch: int, repeats: int, frames: int | None,
        resolution: int | None, warmup: int = 2, tiny: bool = False) -> dict:
    import resource

    import torch

    import encoders
    from encoders.metadata import cost

    cfg = encoders.compose(name)
    if tiny:
        over = {k: v for k, v in TINY_ARCH.items() if v is not None or k in cfg["arch"]}
        over = {k: v for k, v in over.items() if v is not None}
        cfg["arch"].pop("mlp_hidden_dim", None)
        over["resolution"] = 4 * int(cfg["arch"]["patch_size"])  # a 4x4 grid of patches
        if cfg["modality"] == "video":
            over["num_frames"] = 8
        if cfg.get("family") == "timm":  # timm builds by model name: only the input shrinks
            over = {"resolution": over["resolution"]}
        if "img_size" in cfg["arch"]:
            over["img_size"] = over["resolution"]
        cfg = encoders.registry.validate_config({**cfg, "arch": {**cfg["arch"], **over}})
    arch = cfg["arch"]
    own_frames = int(arch.get("num_frames", 1)) if cfg["modality"] == "video" else 1
    T = frames or own_frames
    r = resolution or int(arch["resolution"])
    enc = encoders.from_config(cfg, random_init=True).to(device)
    bf16 = device.startswith("cuda")
    if bf16:
        enc.to(torch.bfloat16)
        torch.cuda.reset_peak_memory_stats()
    x = torch.randn(batch, 3, T, r, r, device=device,
                    dtype=torch.bfloat16 if bf16 else torch.float32)
    times = []
    with torch.no_grad():
        for i in range(repeats + warmup):
            if bf16:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            enc(x)
            if bf16:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    c = cost(cfg, frames=T, resolution=r)
    peak = (torch.cuda.max_memory_allocated() if bf16
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"encoder": name + (" (tiny)" if tiny else ""), "device": device, "precision": "bf16" if bf16 else "fp32",
            "clip": c["clip"], "batch": batch, "clips_per_s": batch / statistics.median(times),
            "peak_mib": peak / 2**20, "params_m": c["parameters"] / 1e6,
            "gflops_per_clip": c["gflops_per_clip"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoders", nargs="*", default=TINY)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frames", type=int, default=None, help="default: the entry's own")
    p.add_argument("--resolution", type=int, default=None, help="default: the entry's own")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards first (default 2)")
    p.add_argument("--tiny", action="store_true",
                   help="shrink each entry to 96 wide x 2 blocks at 64 px (8 frames): the "
                        "families' code at CPU-test size; default entries: one per family")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.encoders[0], a.device, a.batch, a.repeats, a.frames, a.resolution,
                             a.warmup, a.tiny)))
        return
    if a.tiny and a.encoders == TINY:
        a.encoders = FAMILIES
    rows = []
    for name in a.encoders:
        cmd = [sys.executable, __file__, name, "--one", "--device", a.device, "--batch", str(a.batch),
               "--repeats", str(a.repeats), "--warmup", str(a.warmup)] + (["--tiny"] if a.tiny else [])
        for flag in ("frames", "resolution"):
            if getattr(a, flag):
                cmd += [f"--{flag}", str(getattr(a, flag))]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'encoder':32} {'device':6} {'prec':5} {'clip':12} {'clips/s':>9} {'peak MiB':>9} "
          f"{'params M':>9} {'GFLOPs':>9}")
    for r in rows:
        print(f"{r['encoder']:32} {r['device']:6} {r['precision']:5} {r['clip']:12} "
              f"{r['clips_per_s']:9.2f} {r['peak_mib']:9.0f} {r['params_m']:9.1f} {r['gflops_per_clip']:9.2f}")


if __name__ == "__main__":
    main()
